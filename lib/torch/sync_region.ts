/**
 * The one mechanism behind noGrad/enableGrad, autocast and sdpaKernel: run a synchronous fn with some
 * libtorch state switched (enter returns what to restore), and restore it afterwards, also when fn
 * throws. The state is per thread (grad mode, autocast) or process-wide (attention backends), so an
 * async fn would leak it across its awaits: a returned Promise is refused (after restoring).
 */
import { argError } from './errors.js';

export function syncRegion<S, T>(what: string, fn: () => T, enter: () => S, exit: (prev: S) => void): T {
  if (typeof fn !== 'function') throw argError('type', `${what}: fn must be a function`);
  const prev = enter();
  let r: T;
  try {
    r = fn();
  } finally {
    exit(prev);
  }
  if (r instanceof Promise) throw argError('type', `${what}: fn must be synchronous (the state it sets would leak across awaits); wrap the synchronous part`);
  return r;
}

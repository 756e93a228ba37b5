/** ATen operators resolved once, by name and overload, to ids for the native dispatcher. */
import { native } from './native.js';
import { argError } from './errors.js';

const cache = new Map<string, number>();

/** Returns a function that yields the operator id, resolving it on first use. */
export function op(name: string, overload = ''): () => number {
  // checked here because the cache key below would turn a Symbol into an untyped TypeError
  if (typeof name !== 'string' || typeof overload !== 'string') throw argError('type', 'operator name and overload must be strings');
  let id = -1;
  return () => {
    if (id >= 0) return id;
    const key = `${name}.${overload}`;
    id = cache.get(key) ?? native.resolveOp(name, overload);
    cache.set(key, id);
    return id;
  };
}

/** Whether this libtorch has the operator (e.g. scaled_dot_product_attention only on 2.x). */
export function hasOp(name: string, overload = ''): boolean {
  try {
    op(name, overload)();
    return true;
  } catch {
    return false;
  }
}

/** The operator's schema as libtorch prints it, for docs and error messages. */
export function schemaOf(name: string, overload = ''): string {
  return native.opSchema(op(name, overload)()) as string;
}

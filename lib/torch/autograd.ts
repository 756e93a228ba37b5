/** Autograd: grad mode and torch.autograd.grad. Tensor.backward lives on Tensor. */
import { native } from './native.js';
import { argError } from './errors.js';
import { Tensor, _wrap as wrap, handleOf } from './tensor.js';

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  const prev = native.setGradEnabled(enabled) as boolean;
  try {
    const r = fn();
    if (r instanceof Promise) throw argError('type', 'noGrad/enableGrad take a synchronous function (grad mode is per thread and would leak across awaits)');
    return r;
  } finally {
    native.setGradEnabled(prev);
  }
}

/** Runs fn with gradient recording off (like `with torch.no_grad()`). Synchronous fns only. */
export function noGrad<T>(fn: () => T): T {
  return withGradMode(false, fn);
}
/** Runs fn with gradient recording on (inside a noGrad region). */
export function enableGrad<T>(fn: () => T): T {
  return withGradMode(true, fn);
}
export function isGradEnabled(): boolean {
  return native.isGradEnabled() as boolean;
}
export function setGradEnabled(on: boolean): boolean {
  return native.setGradEnabled(on) as boolean;
}

export interface GradOptions {
  gradOutputs?: (Tensor | null)[];
  retainGraph?: boolean;
  createGraph?: boolean;
  allowUnused?: boolean;
}

/** d(outputs)/d(inputs), returned rather than accumulated. createGraph enables double backward. */
export function grad(outputs: Tensor | Tensor[], inputs: Tensor | Tensor[], o: GradOptions = {}): (Tensor | null)[] {
  const outs = Array.isArray(outputs) ? outputs : [outputs];
  const ins = Array.isArray(inputs) ? inputs : [inputs];
  const gos = o.gradOutputs ? o.gradOutputs.map((g) => (g === null ? null : handleOf(g, 'gradOutputs'))) : null;
  const hs = native.grad(outs.map((t) => handleOf(t, 'outputs')), ins.map((t) => handleOf(t, 'inputs')), gos,
    o.retainGraph, o.createGraph ?? false, o.allowUnused ?? false) as (number | null)[];
  return hs.map((h) => (h === null ? null : wrap(h)));
}

/** Accumulates gradients of several outputs at once. */
export function backward(tensors: Tensor[], grads?: (Tensor | null)[], o: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
  native.backward(tensors.map((t) => handleOf(t, 'tensors')), grads ? grads.map((g) => (g ? handleOf(g, 'grads') : null)) : null, o.retainGraph, o.createGraph ?? false);
}

/** Autograd: grad mode and torch.autograd.grad. Tensor.backward lives on Tensor. */
import { native } from './native.js';
import { argError } from './errors.js';
import { Tensor, _wrap as wrap, handleOf } from './tensor.js';
import { op } from './ops.js';
import type { Handle } from './native_binding.js';
import { syncRegion } from './sync_region.js';
import { isFloating } from './dtype.js';

function withGradMode<T>(enabled: boolean, fn: () => T): T {
  return syncRegion(`${enabled ? 'enableGrad' : 'noGrad'}(fn)`, fn, () => native.setGradEnabled(enabled) as boolean, (prev) => native.setGradEnabled(prev));
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
  if (typeof on !== 'boolean') throw argError('type', 'setGradEnabled: expected a boolean');
  return native.setGradEnabled(on) as boolean;
}

export interface GradOptions {
  gradOutputs?: (Tensor | null)[];
  retainGraph?: boolean;
  createGraph?: boolean;
  allowUnused?: boolean;
}

export interface BackwardOptions {
  retainGraph?: boolean;
  createGraph?: boolean;
}

// Argument checks happen here, in TypeScript, so that every misuse is a TypeError with a code
// before anything reaches C++.
function handles(x: unknown, what: string, allowNull: false): number[];
function handles(x: unknown, what: string, allowNull: boolean): (number | null)[];
function handles(x: unknown, what: string, allowNull: boolean): (number | null)[] {
  const xs = Array.isArray(x) ? x : [x];
  return xs.map((t) => (allowNull && (t === null || t === undefined) ? null : handleOf(t, what)));
}

function options<T extends object>(o: unknown, what: string, keys: readonly string[]): T {
  if (o === undefined) return {} as T;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw argError('type', `${what}: options must be an object`);
  for (const k of keys) {
    const v = (o as Record<string, unknown>)[k];
    if (v !== undefined && typeof v !== 'boolean') throw argError('type', `${what}: option ${k} must be a boolean`);
  }
  return o as T;
}

function optionalList(x: unknown, what: string): (number | null)[] | null {
  if (x === undefined || x === null) return null;
  if (!Array.isArray(x)) throw argError('type', `${what}: expected an array of Tensors (or null entries)`);
  return handles(x, what, true);
}

/** d(outputs)/d(inputs), returned rather than accumulated. createGraph enables double backward. */
export function grad(outputs: Tensor | Tensor[], inputs: Tensor | Tensor[], opts: GradOptions = {}): (Tensor | null)[] {
  const o = options<GradOptions>(opts, 'autograd.grad', ['retainGraph', 'createGraph', 'allowUnused']);
  const gos = optionalList(o.gradOutputs, 'autograd.grad gradOutputs');
  const hs = native.grad(handles(outputs, 'autograd.grad outputs', false), handles(inputs, 'autograd.grad inputs', false), gos,
    o.retainGraph, o.createGraph ?? false, o.allowUnused ?? false) as (number | null)[];
  return hs.map((h) => (h === null ? null : wrap(h)));
}

/** Accumulates gradients of several outputs at once (like torch.autograd.backward). */
export function backward(tensors: Tensor | Tensor[], grads?: (Tensor | null)[] | null, opts: BackwardOptions = {}): void {
  const o = options<BackwardOptions>(opts, 'autograd.backward', ['retainGraph', 'createGraph']);
  native.backward(handles(tensors, 'autograd.backward tensors', false), optionalList(grads, 'autograd.backward grads'),
    o.retainGraph, o.createGraph ?? false);
}

/**
 * backward() on a worker thread, with the caller's grad mode and autocast state. Do not read or
 * change the inputs' .grad until the promise settles. Errors (bad arguments included) reject.
 */
export async function backwardAsync(tensors: Tensor | Tensor[], grads?: (Tensor | null)[] | null, opts: BackwardOptions = {}): Promise<void> {
  const o = options<BackwardOptions>(opts, 'autograd.backwardAsync', ['retainGraph', 'createGraph']);
  await native.backwardAsync(handles(tensors, 'autograd.backwardAsync tensors', false),
    optionalList(grads, 'autograd.backwardAsync grads'), o.retainGraph, o.createGraph ?? false);
}

// ---- forward-mode AD (torch.autograd.forward_ad) ---------------------------------------------------

const MAKE_DUAL = op('aten::_make_dual');
const UNPACK_DUAL = op<[primal: Handle, tangent: Handle | null]>('aten::_unpack_dual');
const ZEROS_LIKE = op('aten::zeros_like');

/**
 * Python's `torch.func.jvp(fn, primals, tangents)` by forward-mode AD: runs fn once on dual tensors
 * (primal + tangent) inside a fresh dual level, returns its output and the Jacobian-vector product
 * J·tangents, both ordinary tensors owned by the caller. Every op on the way needs a forward
 * derivative; the fused scaled-dot-product-attention kernels have none (see sdpaKernel).
 */
export function jvp(fn: (...primals: Tensor[]) => Tensor, primals: Tensor[], tangents: Tensor[]): { output: Tensor; jvp: Tensor } {
  if (typeof fn !== 'function') throw argError('type', 'autograd.jvp(fn, primals, tangents): fn must be a function');
  const ps = handles(primals, 'autograd.jvp primals', false) as number[];
  const ts = handles(tangents, 'autograd.jvp tangents', false) as number[];
  if (ps.length !== ts.length) throw argError('type', `autograd.jvp: ${ps.length} primals but ${ts.length} tangents`);
  for (const [i, t] of [...primals, ...tangents].entries()) {
    if (!isFloating(t.dtype)) {
      throw argError('type', `autograd.jvp: ${i < primals.length ? `primal ${i}` : `tangent ${i - primals.length}`} is ${t.dtype}; forward-mode AD needs floating-point tensors`, 'E_DTYPE');
    }
  }
  const level = native.forwardAdEnter() as number;
  const temps: Tensor[] = [];
  try {
    const duals = ps.map((p, i) => {
      const d = wrap(native.call(MAKE_DUAL(), p, ts[i], level) as number);
      temps.push(d);
      return d;
    });
    const out = fn(...duals);
    if (!(out instanceof Tensor)) throw argError('type', 'autograd.jvp: fn must return a Tensor');
    const [ph, th] = native.call(UNPACK_DUAL(), out._h, level) as [number, number | null];
    const primal = wrap(ph);
    temps.push(primal);
    // detached copies that outlive the level (its exit strips tangents from every dual of it); an
    // output that does not depend on the primals has no tangent: its JVP is 0
    if (th === null || th === undefined) return { output: primal.detach(), jvp: wrap(native.call(ZEROS_LIKE(), ph) as number) };
    const tangent = wrap(th);
    temps.push(tangent);
    return { output: primal.detach(), jvp: tangent.detach() };
  } finally {
    for (const t of temps) t.dispose();
    native.forwardAdExit(level);
  }
}

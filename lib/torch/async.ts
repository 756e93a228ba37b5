/**
 * Async variants of expensive calls: they run on libuv's thread pool (Napi::AsyncWorker) and carry
 * the caller's grad mode and autocast state into the worker, so they compute exactly what the
 * synchronous call would.
 *
 * The native side holds its own reference to every input while the call is in flight, so disposing
 * an input before the promise settles is safe (the memory is released when the call finishes).
 * Every failure, including a bad argument, arrives as a rejected promise, never as a synchronous
 * throw.
 */
import { native } from './native.js';
import { argError } from './errors.js';
import { op } from './ops.js';
import type { OpArg, OpResult } from './native_binding.js';
import { Tensor, _wrap as wrap, handleOf } from './tensor.js';
import { pair, type Conv2dOptions } from './functional.js';

const O = { matmul: op('aten::matmul'), conv2d: op('aten::conv2d'), linear: op('aten::linear'), clone: op('aten::clone') };

async function one(start: () => Promise<number>): Promise<Tensor> {
  return wrap(await start());
}

export function matmulAsync(a: Tensor, b: Tensor): Promise<Tensor> {
  return one(() => native.callAsync(O.matmul(), handleOf(a, 'matmulAsync a'), handleOf(b, 'matmulAsync b')));
}
export function linearAsync(input: Tensor, weight: Tensor, bias?: Tensor | null): Promise<Tensor> {
  return one(() => native.callAsync(O.linear(), handleOf(input, 'linearAsync input'), handleOf(weight, 'linearAsync weight'),
    bias ? handleOf(bias, 'linearAsync bias') : null));
}
export function conv2dAsync(input: Tensor, weight: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Promise<Tensor> {
  return one(() => native.callAsync(O.conv2d(), handleOf(input, 'conv2dAsync input'), handleOf(weight, 'conv2dAsync weight'),
    bias ? handleOf(bias, 'conv2dAsync bias') : null, pair(o.stride, 1), pair(o.padding, 0), pair(o.dilation, 1), o.groups ?? 1));
}
export function cloneAsync(t: Tensor): Promise<Tensor> {
  return one(() => native.callAsync(O.clone(), handleOf(t, 'cloneAsync')));
}

const typesCache = new Map<number, { args: string[]; returns: string[] }>();

function containsTensor(v: unknown, depth = 0): boolean {
  if (v instanceof Tensor) return true;
  return Array.isArray(v) && depth < 4 && v.some((x) => containsTensor(x, depth + 1));
}

/**
 * Converts one argument by its schema type. A Tensor goes where the schema has a Tensor and
 * nowhere else: a tensor is a number (its handle) to the native side, so a Tensor given for an
 * `int[]` would silently become a size, and a number given for a Tensor would name some tensor.
 */
function toNative(type: string, a: unknown, what: string): OpArg {
  const optional = /^Tensor\?$/.test(type) || /^Tensor\?\[\]$/.test(type);
  if (type === 'Tensor' || type === 'Tensor?') {
    if (a instanceof Tensor) return a._h;
    if (type === 'Tensor?' && (a === null || a === undefined)) return null;
    if (a === undefined) return undefined; // missing: the native side reports it (or uses the default)
    throw argError('type', `${what}: expected a Tensor for type ${type}`);
  }
  if (type === 'Tensor[]' || type === 'Tensor?[]') {
    if (!Array.isArray(a)) throw argError('type', `${what}: expected an array of Tensors for type ${type}`);
    return a.map((x) => {
      if (x instanceof Tensor) return x._h;
      if (optional && (x === null || x === undefined)) return null;
      throw argError('type', `${what}: expected an array of Tensors for type ${type}`);
    });
  }
  if (containsTensor(a)) throw argError('type', `${what}: a Tensor was given where the schema expects ${type}`);
  // any other value goes to the native converter as is: it checks it against the schema type (TypeError)
  return a as OpArg;
}

/** Wraps the handles among an op's results, guided by the schema's return types. */
function wrapResult(types: string[], r: unknown): unknown {
  const wrapOne = (type: string, v: unknown): unknown => {
    if (v === null || v === undefined) return v;
    if (type === 'Tensor' || type === 'Tensor?') return wrap(v as number);
    if (type === 'Tensor[]') return (v as number[]).map(wrap);
    return v;
  };
  if (types.length === 1) return wrapOne(types[0]!, r);
  return types.map((t, i) => wrapOne(t, (r as unknown[])[i]));
}

/**
 * Any ATen operator by name and overload, off the main thread: callOpAsync('aten::mm', '', a, b).
 * Tensor arguments are Tensors; Tensor results are Tensors (several results: an array), other
 * results are JS values.
 */
export async function callOpAsync(name: string, overload: string, ...args: unknown[]): Promise<Tensor | Tensor[] | unknown> {
  if (typeof name !== 'string' || typeof overload !== 'string') throw argError('type', 'callOpAsync(name, overload, ...args): name and overload must be strings');
  const id = op<OpResult>(name, overload)(); // any operator: the results are wrapped by the schema's return types
  let types = typesCache.get(id);
  if (!types) typesCache.set(id, (types = native.opTypes(id) as { args: string[]; returns: string[] }));
  if (args.length > types.args.length) {
    throw argError('type', `callOpAsync: ${name}${overload ? '.' + overload : ''} takes ${types.args.length} arguments, got ${args.length}`);
  }
  const raw = args.map((a, i) => toNative(types.args[i]!, a, `callOpAsync ${name} argument ${i}`));
  const r = (await native.callAsync(id, ...raw)) as unknown;
  return wrapResult(types.returns, r);
}

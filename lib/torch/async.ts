/**
 * Async variants of expensive calls: they run on libuv's thread pool (Napi::AsyncWorker) and carry
 * the caller's grad mode and autocast state into the worker, so they compute exactly what the
 * synchronous call would. Inputs must stay alive (not disposed) until the promise settles.
 */
import { native } from './native.js';
import { op } from './ops.js';
import { Tensor, _wrap as wrap, handleOf } from './tensor.js';
import { type Conv2dOptions } from './functional.js';

const O = { matmul: op('aten::matmul'), conv2d: op('aten::conv2d'), linear: op('aten::linear'), clone: op('aten::clone') };

async function one(p: Promise<number>): Promise<Tensor> {
  return wrap(await p);
}

export function matmulAsync(a: Tensor, b: Tensor): Promise<Tensor> {
  return one(native.callAsync(O.matmul(), handleOf(a, 'a'), handleOf(b, 'b')));
}
export function linearAsync(input: Tensor, weight: Tensor, bias?: Tensor | null): Promise<Tensor> {
  return one(native.callAsync(O.linear(), handleOf(input), handleOf(weight), bias ? handleOf(bias) : null));
}
const pair = (v: number | [number, number] | undefined, d: number): number[] => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);
export function conv2dAsync(input: Tensor, weight: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Promise<Tensor> {
  return one(native.callAsync(O.conv2d(), handleOf(input), handleOf(weight), bias ? handleOf(bias) : null, pair(o.stride, 1), pair(o.padding, 0), pair(o.dilation, 1), o.groups ?? 1));
}
export function cloneAsync(t: Tensor): Promise<Tensor> {
  return one(native.callAsync(O.clone(), handleOf(t)));
}

/**
 * Any ATen operator by name and overload, off the main thread: callOpAsync('aten::mm', '', a, b).
 * Tensor arguments are Tensors; a Tensor result is a Tensor, several results an array.
 */
export async function callOpAsync(name: string, overload: string, ...args: unknown[]): Promise<Tensor | Tensor[] | unknown> {
  const raw = args.map((a) => (a instanceof Tensor ? a._h : Array.isArray(a) ? a.map((x) => (x instanceof Tensor ? x._h : x)) : a));
  const schema = native.opSchema(op(name, overload)()) as string;
  const r = (await native.callAsync(op(name, overload)(), ...raw)) as unknown;
  const returnsTensors = /->\s*\(?\s*Tensor/.test(schema);
  if (!returnsTensors) return r;
  return Array.isArray(r) ? (r as number[]).map(wrap) : wrap(r as number);
}

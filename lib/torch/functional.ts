/** Free functions over tensors: joining, selection, and the neural-network ops (torch.nn.functional). */
import { native } from './native.js';
import { op } from './ops.js';
import type { Handle } from './native_binding.js';
import { argError } from './errors.js';
import { Tensor, _wrap as wrap, _wrapAll as wrapAll, handleOf, type TensorOrScalar } from './tensor.js';

const O = {
  cat: op('aten::cat'), stack: op('aten::stack'), where: op('aten::where', 'self'),
  whereSO: op('aten::where', 'ScalarOther'), whereSS: op('aten::where', 'ScalarSelf'), whereS: op('aten::where', 'Scalar'),
  linear: op('aten::linear'), conv2d: op('aten::conv2d'), layerNorm: op('aten::layer_norm'), groupNorm: op('aten::group_norm'),
  cosineSimilarity: op('aten::cosine_similarity'), dropout: op('aten::dropout'), embedding: op('aten::embedding'),
  mseLoss: op('aten::mse_loss'), crossEntropy: op('aten::cross_entropy_loss'), avgPool2d: op('aten::avg_pool2d'),
  maxPool2d: op('aten::max_pool2d'), pad: op('aten::constant_pad_nd'), interpolateNearest: op('aten::upsample_nearest2d', 'vec'),
  einsum: op('aten::einsum'), broadcastTensors: op<Handle[]>('aten::broadcast_tensors'), pixelShuffle: op('aten::pixel_shuffle'),
  sdpaMath: op<[Handle, Handle]>('aten::_scaled_dot_product_attention_math'),
  interpolateBilinear: op('aten::upsample_bilinear2d', 'vec'), trace: op('aten::trace'),
  eigh: op<[eigenvalues: Handle, eigenvectors: Handle]>('aten::linalg_eigh'),
};

function handles(ts: Tensor[], what: string): number[] {
  if (!Array.isArray(ts)) throw argError('type', `${what}: expected an array of tensors`);
  if (ts.length === 0) throw argError('range', `${what}: expected a non-empty array of tensors`, 'E_SHAPE');
  return ts.map((t, i) => handleOf(t, `${what}[${i}]`));
}

export function cat(tensors: Tensor[], dim = 0): Tensor {
  return wrap(native.call(O.cat(), handles(tensors, 'cat'), dim));
}
export function stack(tensors: Tensor[], dim = 0): Tensor {
  return wrap(native.call(O.stack(), handles(tensors, 'stack'), dim));
}
/** Elementwise choice: x where condition, else y. Numbers go in as Scalars, so they promote as in
 *  Python (an int tensor with 0.5 gives float32). */
export function where(condition: Tensor, x: TensorOrScalar, y: TensorOrScalar): Tensor {
  const c = handleOf(condition, 'where condition');
  const xt = x instanceof Tensor, yt = y instanceof Tensor;
  if (!xt) checkScalar(x, 'where x');
  if (!yt) checkScalar(y, 'where y');
  if (xt) return wrap(yt ? native.call(O.where(), c, x._h, y._h) : native.call(O.whereSO(), c, x._h, y));
  if (yt) return wrap(native.call(O.whereSS(), c, x, y._h));
  return wrap(native.call(O.whereS(), c, x, y));
}

function checkScalar(v: unknown, what: string): void {
  if (typeof v !== 'number' && typeof v !== 'boolean') throw argError('type', `${what}: expected a Tensor or a number, got ${v === null ? 'null' : typeof v}`);
}
export function broadcastTensors(...tensors: Tensor[]): Tensor[] {
  return wrapAll(native.call(O.broadcastTensors(), handles(tensors, 'broadcastTensors')));
}
export function einsum(equation: string, ...operands: Tensor[]): Tensor {
  return wrap(native.call(O.einsum(), equation, handles(operands, 'einsum')));
}

// ---- nn.functional ---------------------------------------------------------------------------------
/** x @ weight^T + bias */
export function linear(input: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return wrap(native.call(O.linear(), handleOf(input, 'linear input'), handleOf(weight, 'linear weight'), bias ? handleOf(bias, 'linear bias') : null));
}
export interface Conv2dOptions {
  stride?: number | [number, number];
  padding?: number | [number, number];
  dilation?: number | [number, number];
  groups?: number;
}
/** A 2-D size argument: one number for both dims, or [h, w]; undefined takes the default. */
export const pair = (v: number | [number, number] | undefined, d: number): number[] => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);
export function conv2d(input: Tensor, weight: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Tensor {
  return wrap(native.call(O.conv2d(), handleOf(input, 'conv2d input'), handleOf(weight, 'conv2d weight'), bias ? handleOf(bias, 'conv2d bias') : null,
    pair(o.stride, 1), pair(o.padding, 0), pair(o.dilation, 1), o.groups ?? 1));
}
export function layerNorm(input: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return wrap(native.call(O.layerNorm(), handleOf(input, 'layerNorm input'), normalizedShape, weight ? handleOf(weight) : null, bias ? handleOf(bias) : null, eps, true));
}
export function groupNorm(input: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return wrap(native.call(O.groupNorm(), handleOf(input, 'groupNorm input'), numGroups, weight ? handleOf(weight) : null, bias ? handleOf(bias) : null, eps, true));
}
export function cosineSimilarity(x1: Tensor, x2: Tensor, dim = 1, eps = 1e-8): Tensor {
  return wrap(native.call(O.cosineSimilarity(), handleOf(x1, 'x1'), handleOf(x2, 'x2'), dim, eps));
}
/** x itself once it is known to be a Tensor (a typed TypeError otherwise, not "x.f is not a function"). */
function tensorArg(x: unknown, what: string): Tensor {
  handleOf(x, what);
  return x as Tensor;
}
export function softmax(x: Tensor, dim: number): Tensor {
  return tensorArg(x, 'softmax').softmax(dim);
}
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return tensorArg(x, 'logSoftmax').logSoftmax(dim);
}
export function silu(x: Tensor): Tensor { return tensorArg(x, 'silu').silu(); }
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor { return tensorArg(x, 'gelu').gelu(approximate); }
export function relu(x: Tensor): Tensor { return tensorArg(x, 'relu').relu(); }
export function sigmoid(x: Tensor): Tensor { return tensorArg(x, 'sigmoid').sigmoid(); }
export function dropout(x: Tensor, p = 0.5, training = true): Tensor {
  if (!(p >= 0 && p <= 1)) throw argError('range', `dropout: p must be in [0, 1], got ${p}`);
  return wrap(native.call(O.dropout(), handleOf(x, 'dropout input'), p, training));
}
export function embedding(weight: Tensor, indices: Tensor): Tensor {
  return wrap(native.call(O.embedding(), handleOf(weight, 'embedding weight'), handleOf(indices, 'embedding indices')));
}
const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;
export function mseLoss(input: Tensor, target: Tensor, reduction: keyof typeof REDUCTION = 'mean'): Tensor {
  return wrap(native.call(O.mseLoss(), handleOf(input), handleOf(target), REDUCTION[reduction]));
}
/** Cross entropy of logits (N, C) against class indices (N) (int64) or probabilities. */
export function crossEntropy(logits: Tensor, target: Tensor, o: { reduction?: keyof typeof REDUCTION; labelSmoothing?: number; ignoreIndex?: number } = {}): Tensor {
  return wrap(native.call(O.crossEntropy(), handleOf(logits), handleOf(target), null, REDUCTION[o.reduction ?? 'mean'], o.ignoreIndex ?? -100, o.labelSmoothing ?? 0));
}
export function avgPool2d(x: Tensor, kernel: number | [number, number], stride?: number | [number, number]): Tensor {
  return wrap(native.call(O.avgPool2d(), handleOf(x), pair(kernel, 1), stride === undefined ? pair(kernel, 1) : pair(stride, 1)));
}
export function maxPool2d(x: Tensor, kernel: number | [number, number], stride?: number | [number, number]): Tensor {
  return wrap(native.call(O.maxPool2d(), handleOf(x), pair(kernel, 1), stride === undefined ? pair(kernel, 1) : pair(stride, 1)));
}
/** Constant padding; pad lists (before, after) pairs from the last dim backwards, like F.pad. */
export function pad(x: Tensor, padding: number[], value = 0): Tensor {
  return wrap(native.call(O.pad(), handleOf(x), padding, value));
}
export function interpolateNearest(x: Tensor, size: [number, number]): Tensor {
  return wrap(native.call(O.interpolateNearest(), handleOf(x), size, null));
}
/** Bilinear resize of (N, C, H, W) to size (F.interpolate(mode='bilinear', antialias=False)). */
export function interpolateBilinear(x: Tensor, size: [number, number], alignCorners = false): Tensor {
  return wrap(native.call(O.interpolateBilinear(), handleOf(x, 'interpolateBilinear input'), size, alignCorners, null));
}
/** The sum of a matrix's diagonal (torch.trace), a 0-dim tensor. */
export function trace(a: Tensor): Tensor {
  return wrap(native.call(O.trace(), handleOf(a, 'trace')));
}
/** Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix, from its lower (uplo 'L') or upper triangle (torch.linalg.eigh). */
export function eigh(a: Tensor, uplo: 'L' | 'U' = 'L'): { values: Tensor; vectors: Tensor } {
  const [w, v] = native.call(O.eigh(), handleOf(a, 'eigh'), uplo);
  return { values: wrap(w), vectors: wrap(v) };
}
export function pixelShuffle(x: Tensor, factor: number): Tensor {
  return wrap(native.call(O.pixelShuffle(), handleOf(x), factor));
}

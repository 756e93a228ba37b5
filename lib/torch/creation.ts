/** Creating tensors: from JS data, filled, ranges and random. */
import { native } from './native.js';
import { op } from './ops.js';
import { argError } from './errors.js';
import { type DType, type Device, DTYPE_CODE, DTYPE_SIZE, dtypeCode, isFloating, normalizeDtype, normalizeDevice } from './dtype.js';
import { Tensor, _wrap as wrap, handleOf, type NestedArray, type Scalar } from './tensor.js';

export interface TensorOptions {
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}

const O = {
  zeros: op('aten::zeros'), ones: op('aten::ones'), full: op('aten::full'), empty: op('aten::empty', 'memory_format'),
  arange: op('aten::arange', 'start_step'), linspace: op('aten::linspace'), randn: op('aten::randn'), rand: op('aten::rand'),
  randint: op('aten::randint', 'low'), randperm: op('aten::randperm'), eye: op('aten::eye'),
  zerosLike: op('aten::zeros_like'), onesLike: op('aten::ones_like'), fullLike: op('aten::full_like'), emptyLike: op('aten::empty_like'),
  randnLike: op('aten::randn_like'), randLike: op('aten::rand_like'), randintLike: op('aten::randint_like', 'low_dtype'),
  scalarTensor: op('aten::scalar_tensor'),
};

function checkSize(shape: unknown, what: string): number[] {
  const s = typeof shape === 'number' ? [shape] : shape;
  if (!Array.isArray(s)) throw argError('type', `${what}: shape must be an array of integers`);
  let numel = 1;
  for (const d of s) {
    if (typeof d !== 'number' || !Number.isInteger(d)) throw argError('type', `${what}: shape must hold integers, got ${String(d)}`);
    if (d < 0) throw argError('range', `${what}: negative size ${d} in shape [${s.join(', ')}]`, 'E_SHAPE');
    numel *= d;
  }
  if (numel > 2 ** 48) throw argError('range', `${what}: shape [${s.join(', ')}] has too many elements`, 'E_OOM');
  return s as number[];
}

function opts(o: TensorOptions | undefined): [number | undefined, string | undefined] {
  return [o?.dtype === undefined ? undefined : dtypeCode(o.dtype), o?.device === undefined ? undefined : normalizeDevice(o.device)];
}

function finish(t: Tensor, o: TensorOptions | undefined): Tensor {
  if (o?.requiresGrad) t.requiresGrad_(true);
  return t;
}

type ShapeArg = number[] | number;

export function zeros(shape: ShapeArg, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.zeros(), checkSize(shape, 'zeros'), dt, undefined, dev)), o);
}
export function ones(shape: ShapeArg, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.ones(), checkSize(shape, 'ones'), dt, undefined, dev)), o);
}
export function full(shape: ShapeArg, value: Scalar, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  if (typeof value !== 'number' && typeof value !== 'boolean') throw argError('type', 'full: value must be a number or boolean');
  // a whole-number fill would infer int64: default to float32 like torch.full(..., 1.0)
  const dtype = dt ?? (typeof value === 'boolean' ? DTYPE_CODE.bool : DTYPE_CODE.float32);
  return finish(wrap(native.call(O.full(), checkSize(shape, 'full'), value, dtype, undefined, dev)), o);
}
export function empty(shape: ShapeArg, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.empty(), checkSize(shape, 'empty'), dt, undefined, dev)), o);
}
/** arange(end), arange(start, end), arange(start, end, step), each optionally followed by options;
 *  integer arguments give int64 like torch. */
export function arange(end: number, o?: TensorOptions): Tensor;
export function arange(start: number, end: number, o?: TensorOptions): Tensor;
export function arange(start: number, end: number | undefined, step?: number, o?: TensorOptions): Tensor;
export function arange(...args: (number | undefined | TensorOptions)[]): Tensor {
  const last = args[args.length - 1];
  const o = typeof last === 'object' && last !== null ? (args.pop() as TensorOptions) : undefined;
  const [a, b, c] = args as (number | undefined)[];
  const [start, stop] = b === undefined ? [0, a] : [a, b];
  const step = c ?? 1;
  for (const v of [start, stop, step]) if (typeof v !== 'number' || !Number.isFinite(v)) throw argError('type', 'arange: arguments must be finite numbers');
  if (step === 0) throw argError('range', 'arange: step must be nonzero');
  if ((stop! - start!) / step > 2 ** 40) throw argError('range', 'arange: too many elements', 'E_OOM');
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.arange(), start, stop, step, dt, undefined, dev)), o);
}
export function linspace(start: number, end: number, steps: number, o?: TensorOptions): Tensor {
  if (!Number.isInteger(steps) || steps < 0) throw argError('range', 'linspace: steps must be a non-negative integer');
  if (steps > 2 ** 40) throw argError('range', 'linspace: too many steps', 'E_OOM');
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.linspace(), start, end, steps, dt, undefined, dev)), o);
}
export function randn(shape: ShapeArg, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randn(), checkSize(shape, 'randn'), dt, undefined, dev)), o);
}
export function rand(shape: ShapeArg, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.rand(), checkSize(shape, 'rand'), dt, undefined, dev)), o);
}
/** Integers uniform in [low, high): randint(low, high, shape) or randint(high, shape). */
export function randint(high: number, shape: ShapeArg, o?: TensorOptions): Tensor;
export function randint(low: number, high: number, shape: ShapeArg, o?: TensorOptions): Tensor;
export function randint(a: number, b: number | ShapeArg, c?: ShapeArg | TensorOptions, d?: TensorOptions): Tensor {
  const short = typeof b !== 'number';
  const [low, high, shape, o] = short ? [0, a, b, c as TensorOptions | undefined] : [a, b, c as ShapeArg, d];
  if (!Number.isInteger(low) || !Number.isInteger(high)) throw argError('type', 'randint: low and high must be integers');
  if (high <= low) throw argError('range', `randint: high (${high}) must be greater than low (${low})`);
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randint(), low, high, checkSize(shape, 'randint'), dt, undefined, dev)), o);
}
export function randperm(n: number, o?: TensorOptions): Tensor {
  if (!Number.isInteger(n) || n < 0) throw argError('range', 'randperm: n must be a non-negative integer');
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randperm(), n, dt, undefined, dev)), o);
}
export function eye(n: number, o?: TensorOptions): Tensor {
  if (!Number.isInteger(n) || n < 0) throw argError('range', 'eye: n must be a non-negative integer');
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.eye(), n, dt, undefined, dev)), o);
}
export function zerosLike(t: Tensor, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.zerosLike(), handleOf(t, 'zerosLike'), dt, undefined, dev)), o);
}
export function onesLike(t: Tensor, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.onesLike(), handleOf(t, 'onesLike'), dt, undefined, dev)), o);
}
export function fullLike(t: Tensor, value: Scalar, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.fullLike(), handleOf(t, 'fullLike'), value, dt, undefined, dev)), o);
}
export function emptyLike(t: Tensor, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.emptyLike(), handleOf(t, 'emptyLike'), dt, undefined, dev)), o);
}
export function randnLike(t: Tensor, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randnLike(), handleOf(t, 'randnLike'), dt, undefined, dev)), o);
}
export function randLike(t: Tensor, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randLike(), handleOf(t, 'randLike'), dt, undefined, dev)), o);
}
export function randintLike(t: Tensor, low: number, high: number, o?: TensorOptions): Tensor {
  if (high <= low) throw argError('range', `randintLike: high (${high}) must be greater than low (${low})`);
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.randintLike(), handleOf(t, 'randintLike'), low, high, dt, undefined, dev)), o);
}
export function scalarTensor(value: Scalar, o?: TensorOptions): Tensor {
  const [dt, dev] = opts(o);
  return finish(wrap(native.call(O.scalarTensor(), value, dt ?? (typeof value === 'boolean' ? DTYPE_CODE.bool : DTYPE_CODE.float32), undefined, dev)), o);
}

type TypedArray = Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array | Uint8ClampedArray;

function typedDtype(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof BigInt64Array) return 'int64';
  return 'uint8';
}

function isTypedArray(x: unknown): x is TypedArray {
  return ArrayBuffer.isView(x) && !(x instanceof DataView) && !(x instanceof Uint16Array) && !(x instanceof Uint32Array) && !(x instanceof BigUint64Array);
}

/**
 * torch.tensor(data): nested arrays of numbers/booleans, or a TypedArray (copied; give `shape` to
 * shape it). Numbers infer float32 unless all are integers (int64); booleans infer bool.
 */
export function tensor(data: NestedArray<number | boolean> | TypedArray, o: TensorOptions & { shape?: number[] } = {}): Tensor {
  // options first, so a bad one fails before anything is allocated
  if (o === null || typeof o !== 'object') throw argError('type', 'tensor: options must be an object');
  if (o.dtype !== undefined) normalizeDtype(o.dtype);
  if (o.device !== undefined) normalizeDevice(o.device);
  if (isTypedArray(data)) {
    const shape = o.shape ? checkSize(o.shape, 'tensor') : [data.length];
    const src = typedDtype(data);
    const t = wrap(native.fromData(data, dtypeCode(src), shape, true));
    return finish(convert(t, src, o), o);
  }
  if (ArrayBuffer.isView(data)) throw argError('type', 'tensor: Uint16Array/Uint32Array/BigUint64Array are not supported; convert first', 'E_DTYPE');
  const shape: number[] = [];
  let probe: unknown = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0];
  }
  const numel = shape.reduce((a, b) => a * b, 1);
  const flat: (number | boolean)[] = new Array(numel);
  let k = 0, allBool = true, allInt = true;
  const walk = (x: unknown, dim: number): void => {
    if (dim === shape.length) {
      if (typeof x === 'number') {
        allBool = false;
        if (!Number.isInteger(x)) allInt = false;
      } else if (typeof x !== 'boolean') {
        throw argError('type', `tensor: elements must be numbers or booleans, got ${x === null ? 'null' : Array.isArray(x) ? 'a ragged nested array' : typeof x}`);
      }
      flat[k++] = x;
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[dim]) throw argError('range', `tensor: ragged nested array at depth ${dim} (expected length ${shape[dim]})`, 'E_SHAPE');
    for (const e of x) walk(e, dim + 1);
  };
  walk(data, 0);
  // As Python: no elements -> float32; only booleans -> bool; integers (booleans count as 0/1, like
  // [True, 2]) -> int64; any fraction -> float32. JS cannot tell 2.0 from 2, so whole floats give int64.
  const inferred: DType = numel === 0 ? 'float32' : allBool ? 'bool' : allInt ? 'int64' : 'float32';
  const dtype = o.dtype !== undefined ? normalizeDtype(o.dtype) : inferred;
  // The buffer handed to libtorch holds the values exactly (or rounded as Python's torch rounds them);
  // libtorch then converts it to `dtype`.
  let buf: TypedArray, src: DType;
  if (dtype === 'bool') {
    buf = Uint8Array.from(flat, (v) => (v !== 0 && v !== false ? 1 : 0)); // NaN is true, as bool(nan)
    src = 'bool';
  } else if (dtype === 'float64' || (!allInt && !isFloating(dtype))) {
    // fractions for an integer dtype truncate toward zero, as in Python
    buf = Float64Array.from(flat, Number);
    src = 'float64';
  } else if (isFloating(dtype)) {
    // Python stores each float through a C float before float16/bfloat16 too, so this rounds the same
    buf = Float32Array.from(flat, Number);
    src = 'float32';
  } else {
    buf = BigInt64Array.from(flat, (v) => {
      if (typeof v === 'number' && Math.abs(v) >= 2 ** 63) throw argError('range', `tensor: ${v} does not fit in int64`, 'E_DTYPE');
      return BigInt(v);
    });
    src = 'int64';
  }
  const t = wrap(native.fromData(buf, dtypeCode(src), shape, true));
  return finish(convert(t, src, { ...o, dtype }), o);
}

function convert(t: Tensor, src: DType, o: TensorOptions): Tensor {
  const want = o.dtype !== undefined ? normalizeDtype(o.dtype) : src;
  if (want === src && (o.device === undefined || o.device === 'cpu')) return t;
  try {
    return t.to({ dtype: want, device: o.device ?? 'cpu' });
  } finally {
    t.dispose();
  }
}

/**
 * A tensor over existing memory. With copy: false (the default) the tensor shares the buffer when
 * its offset is aligned for the dtype (zero-copy; the buffer is kept alive by the tensor); otherwise
 * it is copied. Writes through either side are visible to the other when shared.
 */
export function fromBuffer(buffer: ArrayBuffer | ArrayBufferView, dtype: DType, shape?: number[], o: { copy?: boolean } = {}): Tensor {
  if (!(buffer instanceof ArrayBuffer) && !ArrayBuffer.isView(buffer)) throw argError('type', 'fromBuffer: expected an ArrayBuffer or a TypedArray/Buffer');
  const code = dtypeCode(dtype);
  // no shape: 1-d over the whole view (a byte count that does not divide fails in fromData)
  const s = shape === undefined ? [Math.floor(buffer.byteLength / DTYPE_SIZE[normalizeDtype(dtype)])] : checkSize(shape, 'fromBuffer');
  return wrap(native.fromData(buffer, code, s, o.copy ?? false));
}

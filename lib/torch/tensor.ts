/**
 * Tensor: a typed handle to a libtorch tensor. Methods call ATen operators through the native
 * dispatcher (ops.ts), so autograd, autocast and devices behave as in Python's torch.
 */
import { op, hot as native } from './ops.js';
import type { Handle } from './native_binding.js';
import { adopt, forget } from './scope.js';
import { argError } from './errors.js';
import { type DType, type Device, dtypeCode, dtypeFromCode, normalizeDevice } from './dtype.js';
import { formatTensor, PRINT, type RawValue } from './format.js';

export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | Scalar;
/** One index of t.index(...): a number selects, a slice string ('1:3', '::2', ':'), '...', null (new axis),
 *  a {start, stop, step} slice, or an index / boolean-mask Tensor (or number array). */
export type IndexSpec = number | string | null | { start?: number; stop?: number; step?: number } | Tensor | number[] | boolean[];
export type NestedArray<T> = T | NestedArray<T>[];

const O = {
  add: op('aten::add', 'Tensor'), addS: op('aten::add', 'Scalar'),
  sub: op('aten::sub', 'Tensor'), subS: op('aten::sub', 'Scalar'), rsubS: op('aten::rsub', 'Scalar'),
  mul: op('aten::mul', 'Tensor'), mulS: op('aten::mul', 'Scalar'),
  div: op('aten::div', 'Tensor'), divS: op('aten::div', 'Scalar'), divMode: op('aten::div', 'Tensor_mode'), divSMode: op('aten::div', 'Scalar_mode'),
  remainder: op('aten::remainder', 'Tensor'), remainderS: op('aten::remainder', 'Scalar'),
  pow: op('aten::pow', 'Tensor_Tensor'), powS: op('aten::pow', 'Tensor_Scalar'),
  neg: op('aten::neg'), abs: op('aten::abs'), exp: op('aten::exp'), log: op('aten::log'), sqrt: op('aten::sqrt'),
  rsqrt: op('aten::rsqrt'), sin: op('aten::sin'), cos: op('aten::cos'), tan: op('aten::tan'), atan: op('aten::atan'),
  atan2: op('aten::atan2'), tanh: op('aten::tanh'), sigmoid: op('aten::sigmoid'), silu: op('aten::silu'),
  gelu: op('aten::gelu'), relu: op('aten::relu'), sign: op('aten::sign'), floor: op('aten::floor'), ceil: op('aten::ceil'),
  round: op('aten::round'), square: op('aten::square'), reciprocal: op('aten::reciprocal'), log1p: op('aten::log1p'),
  expm1: op('aten::expm1'), erf: op('aten::erf'),
  softmax: op('aten::softmax', 'int'), logSoftmax: op('aten::log_softmax', 'int'),
  matmul: op('aten::matmul'), bmm: op('aten::bmm'), mm: op('aten::mm'),
  clamp: op('aten::clamp'), clampT: op('aten::clamp', 'Tensor'), clamp_: op('aten::clamp_'),
  nanToNum: op('aten::nan_to_num'), maximum: op('aten::maximum'), minimum: op('aten::minimum'),
  eq: op('aten::eq', 'Tensor'), eqS: op('aten::eq', 'Scalar'), ne: op('aten::ne', 'Tensor'), neS: op('aten::ne', 'Scalar'),
  lt: op('aten::lt', 'Tensor'), ltS: op('aten::lt', 'Scalar'), le: op('aten::le', 'Tensor'), leS: op('aten::le', 'Scalar'),
  gt: op('aten::gt', 'Tensor'), gtS: op('aten::gt', 'Scalar'), ge: op('aten::ge', 'Tensor'), geS: op('aten::ge', 'Scalar'),
  logicalNot: op('aten::logical_not'), logicalAnd: op('aten::logical_and'), logicalOr: op('aten::logical_or'),
  isnan: op('aten::isnan'), isfinite: op('aten::isfinite'),
  sumAll: op('aten::sum'), sumDim: op('aten::sum', 'dim_IntList'), meanAll: op('aten::mean'), meanDim: op('aten::mean', 'dim'),
  maxAll: op('aten::max'), maxDim: op<[Handle, Handle]>('aten::max', 'dim'), minAll: op('aten::min'), minDim: op<[Handle, Handle]>('aten::min', 'dim'),
  argmax: op('aten::argmax'), argmin: op('aten::argmin'), vnorm: op('aten::linalg_vector_norm'),
  varAll: op('aten::var'), varDim: op('aten::var', 'dim'), stdAll: op('aten::std'), stdDim: op('aten::std', 'dim'),
  prod: op('aten::prod'), cumsum: op('aten::cumsum'), all: op('aten::all'), any: op('aten::any'),
  amax: op('aten::amax'), amin: op('aten::amin'), logsumexp: op('aten::logsumexp'),
  add_: op('aten::add_', 'Tensor'), addS_: op('aten::add_', 'Scalar'), sub_: op('aten::sub_', 'Tensor'), subS_: op('aten::sub_', 'Scalar'),
  mul_: op('aten::mul_', 'Tensor'), mulS_: op('aten::mul_', 'Scalar'), div_: op('aten::div_', 'Tensor'), divS_: op('aten::div_', 'Scalar'),
  lerp_: op('aten::lerp_', 'Scalar'), lerpT_: op('aten::lerp_', 'Tensor'), lerp: op('aten::lerp', 'Scalar'), lerpT: op('aten::lerp', 'Tensor'),
  copy_: op('aten::copy_'), zero_: op('aten::zero_'), fill_: op('aten::fill_', 'Scalar'), fillT_: op('aten::fill_', 'Tensor'),
  sqrt_: op('aten::sqrt_'), addcmul_: op('aten::addcmul_'), addcdiv_: op('aten::addcdiv_'), normal_: op('aten::normal_'),
  uniform_: op('aten::uniform_'), clampT_: op('aten::clamp_', 'Tensor'),
  view: op('aten::view'), reshape: op('aten::reshape'), permute: op('aten::permute'), transpose: op('aten::transpose', 'int'),
  unsqueeze: op('aten::unsqueeze'), squeezeAll: op('aten::squeeze'), squeezeDim: op('aten::squeeze', 'dim'),
  flatten: op('aten::flatten', 'using_ints'), expand: op('aten::expand'), repeat: op('aten::repeat'),
  contiguous: op('aten::contiguous'), clone: op('aten::clone'), detach: op('aten::detach'),
  unbind: op<Handle[]>('aten::unbind', 'int'), chunk: op<Handle[]>('aten::chunk'), split: op<Handle[]>('aten::split', 'Tensor'),
  splitSizes: op<Handle[]>('aten::split_with_sizes'), narrow: op('aten::narrow'), gather: op('aten::gather'),
  select: op('aten::select', 'int'), slice: op('aten::slice', 'Tensor'), index: op('aten::index', 'Tensor'),
  indexPut_: op('aten::index_put_'), maskedFill: op('aten::masked_fill', 'Scalar'), maskedFillT: op('aten::masked_fill', 'Tensor'),
  where: op('aten::where', 'self'), whereSO: op('aten::where', 'ScalarOther'), flip: op('aten::flip'), roll: op('aten::roll'), tril: op('aten::tril'), triu: op('aten::triu'),
  indexSelect: op('aten::index_select'), scatter: op('aten::scatter', 'src'), sort: op<[Handle, Handle]>('aten::sort'), topk: op<[Handle, Handle]>('aten::topk'),
  to: op('aten::to', 'dtype_layout'), t: op('aten::t'), mT: op('aten::transpose', 'int'),
  nonzero: op('aten::nonzero'), outer: op('aten::outer'), cat: op('aten::cat'), newFull: op('aten::new_full'),
} as const;

function wrap(h: number): Tensor {
  return new Tensor(h);
}

function wrapAll(hs: number[]): Tensor[] {
  return hs.map(wrap);
}

/** The handle of a Tensor argument, with a clear TypeError for anything else. */
export function handleOf(x: unknown, what = 'argument'): number {
  if (x instanceof Tensor) return x._h;
  throw argError('type', `${what}: expected a Tensor, got ${describe(x)}`);
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (Array.isArray(x)) return 'an array';
  return typeof x === 'object' ? (x as object).constructor?.name ?? 'object' : `${typeof x} ${String(x)}`;
}

function checkScalar(x: unknown, what: string): Scalar {
  if (typeof x === 'number' || typeof x === 'boolean') return x;
  throw argError('type', `${what}: expected a Tensor or a number, got ${describe(x)}`);
}

function dims(d: number | number[] | undefined): number[] | undefined {
  return d === undefined ? undefined : typeof d === 'number' ? [d] : d;
}

function parseSlice(s: string): { start?: number; stop?: number; step?: number } {
  const parts = s.split(':');
  if (parts.length < 2 || parts.length > 3) throw argError('type', `invalid slice '${s}' (expected 'start:stop[:step]')`);
  const num = (p: string | undefined): number | undefined => {
    if (p === undefined || p.trim() === '') return undefined;
    const v = Number(p);
    if (!Number.isInteger(v)) throw argError('type', `invalid slice '${s}'`);
    return v;
  };
  return { start: num(parts[0]), stop: num(parts[1]), step: num(parts[2]) };
}

export class Tensor {
  /** @internal native handle; -1 once disposed */
  _h: number;
  /** @internal set by torch.keep() */
  _kept = false;
  /** @internal GC-backstop registration state (scope.ts) */
  _reg: boolean | undefined = undefined;
  private _shape: number[] | undefined;
  private _dtype: DType | undefined;

  /** @internal use torch.tensor() and the other creation functions */
  constructor(handle: number) {
    this._h = handle;
    adopt(this);
  }

  // ---- lifetime -------------------------------------------------------------------------------
  /** Frees the native tensor now. Idempotent; any later use throws TorchError E_DISPOSED. */
  dispose(): void {
    if (this._h < 0) return;
    forget(this);
    native.free(this._h);
    this._h = -1;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  get isDisposed(): boolean {
    return this._h < 0;
  }

  // ---- properties -----------------------------------------------------------------------------
  get shape(): number[] {
    return (this._shape ??= native.shape(this._h) as number[]).slice();
  }
  get dtype(): DType {
    return (this._dtype ??= dtypeFromCode(native.dtype(this._h)));
  }
  get device(): Device {
    return native.device(this._h) as Device;
  }
  get dim(): number {
    return (this._shape ??= native.shape(this._h) as number[]).length;
  }
  get numel(): number {
    return (this._shape ??= native.shape(this._h) as number[]).reduce((a, b) => a * b, 1);
  }
  size(d?: number): number | number[] {
    const s = this.shape;
    if (d === undefined) return s;
    if (!Number.isInteger(d)) throw argError('type', `size(): dim must be an integer, got ${describe(d)}`);
    const i = d < 0 ? d + s.length : d;
    if (i < 0 || i >= s.length) throw argError('range', `size(${d}): dimension out of range for ${s.length}-d tensor`, 'E_INDEX');
    return s[i]!;
  }
  get strides(): number[] {
    return native.strides(this._h) as number[];
  }
  get isContiguous(): boolean {
    return (native.info(this._h) as { isContiguous: boolean }).isContiguous;
  }
  get isLeaf(): boolean {
    return (native.info(this._h) as { isLeaf: boolean }).isLeaf;
  }
  /** Name of the autograd node that produced this tensor, or null. */
  get gradFn(): string | null {
    return (native.info(this._h) as { gradFn: string | null }).gradFn;
  }
  get requiresGrad(): boolean {
    return native.requiresGrad(this._h) as boolean;
  }
  requiresGrad_(on = true): this {
    native.setRequiresGrad(this._h, on);
    return this;
  }
  /** The accumulated gradient (a new Tensor handle each read, sharing memory), or null. */
  get grad(): Tensor | null {
    const h = native.getGrad(this._h) as number | null;
    return h === null ? null : wrap(h);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this._h, g === null ? null : handleOf(g, 'grad'));
  }

  // ---- conversion -----------------------------------------------------------------------------
  /** .to('cuda'), .to('float16'), .to({device, dtype, copy, nonBlocking}). */
  to(target: Device | DType | { device?: Device; dtype?: DType; copy?: boolean; nonBlocking?: boolean }): Tensor {
    let device: string | undefined, dtype: number | undefined, copy = false, nonBlocking = false;
    if (typeof target === 'string') {
      if (/^(cpu|cuda)/.test(target)) device = normalizeDevice(target);
      else dtype = dtypeCode(target);
    } else if (target && typeof target === 'object') {
      if (target.device !== undefined) device = normalizeDevice(target.device);
      if (target.dtype !== undefined) dtype = dtypeCode(target.dtype);
      copy = target.copy ?? false;
      nonBlocking = target.nonBlocking ?? false;
    } else throw argError('type', `to(): expected a device, a dtype or {device, dtype}, got ${describe(target)}`);
    return wrap(native.call(O.to(), this._h, dtype, undefined, device, undefined, nonBlocking, copy));
  }
  float(): Tensor { return this.to('float32'); }
  double(): Tensor { return this.to('float64'); }
  half(): Tensor { return this.to('float16'); }
  bfloat16(): Tensor { return this.to('bfloat16'); }
  long(): Tensor { return this.to('int64'); }
  int(): Tensor { return this.to('int32'); }
  bool(): Tensor { return this.to('bool'); }
  cpu(): Tensor { return this.to('cpu'); }
  cuda(index?: number): Tensor { return this.to(index === undefined ? 'cuda' : `cuda:${index}`); }

  /** The single element as a number (boolean for bool tensors). */
  item(): number {
    return native.item(this._h) as number;
  }
  /** The elements in row-major order: float16/bfloat16 as Float32Array, int64 as BigInt64Array, bool as Uint8Array. */
  toTypedArray(): Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array {
    const d = this.dtype;
    if (d === 'float16' || d === 'bfloat16') {
      const f = this.to('float32');
      try { return f.toTypedArray(); } finally { f.dispose(); }
    }
    const buf = native.toBuffer(this._h) as ArrayBuffer;
    switch (d) {
      case 'float32': return new Float32Array(buf);
      case 'float64': return new Float64Array(buf);
      case 'int64': return new BigInt64Array(buf);
      case 'int32': return new Int32Array(buf);
      case 'int16': return new Int16Array(buf);
      case 'int8': return new Int8Array(buf);
      default: return new Uint8Array(buf);
    }
  }
  /** Nested JS arrays of numbers (booleans for bool tensors); a number for 0-d tensors. */
  toArray(): NestedArray<number> | NestedArray<boolean> {
    const flat = this.flatValues();
    const shape = this.shape;
    if (shape.length === 0) return flat[0]!;
    const build = (dim: number, offset: number, stride: number): NestedArray<number | boolean> => {
      const n = shape[dim]!;
      const inner = stride / n;
      const out: NestedArray<number | boolean>[] = [];
      for (let i = 0; i < n; i++) out.push(dim === shape.length - 1 ? flat[offset + i]! : build(dim + 1, offset + i * inner, inner));
      return out;
    };
    return build(0, 0, flat.length) as NestedArray<number>;
  }
  private flatValues(): (number | boolean)[] {
    const ta = this.toTypedArray();
    if (this.dtype === 'bool') return Array.from(ta as Uint8Array, (x) => x !== 0);
    if (ta instanceof BigInt64Array) return Array.from(ta, (x) => Number(x));
    return Array.from(ta as Float32Array);
  }
  /** The values as a typed array without copying twice (int64 stays BigInt, so it prints exactly). */
  private rawValues(): ArrayLike<RawValue> {
    const ta = this.toTypedArray();
    return ta as ArrayLike<RawValue>;
  }
  /** torch's repr: tensor([[1.0000, 2.5000]], dtype=torch.float64). See format.ts. */
  toString(): string {
    if (this._h < 0) return 'tensor(<disposed>)';
    const shape = this.shape;
    const summarized = shape.reduce((a, b) => a * b, 1) > PRINT.threshold;
    const temps: Tensor[] = [];
    try {
      // Cut every long dim to its edges natively first, so a big tensor costs a few copies of
      // small slices, not a read of every element.
      let data: Tensor = this;
      if (summarized) {
        const e = PRINT.edgeItems;
        for (let d = 0; d < shape.length; d++) {
          const n = shape[d]!;
          if (n <= 2 * e) continue;
          const head = data.narrow(d, 0, e), tail = data.narrow(d, n - e, e);
          temps.push(head, tail);
          data = wrap(native.call(O.cat(), [head._h, tail._h], d));
          temps.push(data);
        }
      }
      return formatTensor({
        values: data.rawValues(), shape, dtype: this.dtype, summarized, device: this.device,
        requiresGrad: this.requiresGrad, gradFn: this.gradFn,
      });
    } finally {
      for (const t of temps) t.dispose();
    }
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }

  // ---- arithmetic (broadcasting; numbers are scalars) ---------------------------------------------
  add(other: TensorOrScalar, alpha: number = 1): Tensor {
    return wrap(other instanceof Tensor ? native.call(O.add(), this._h, other._h, alpha) : native.call(O.addS(), this._h, checkScalar(other, 'add'), alpha));
  }
  sub(other: TensorOrScalar, alpha: number = 1): Tensor {
    return wrap(other instanceof Tensor ? native.call(O.sub(), this._h, other._h, alpha) : native.call(O.subS(), this._h, checkScalar(other, 'sub'), alpha));
  }
  /** other - this */
  rsub(other: Scalar): Tensor {
    return wrap(native.call(O.rsubS(), this._h, checkScalar(other, 'rsub')));
  }
  mul(other: TensorOrScalar): Tensor {
    return wrap(other instanceof Tensor ? native.call(O.mul(), this._h, other._h) : native.call(O.mulS(), this._h, checkScalar(other, 'mul')));
  }
  div(other: TensorOrScalar, roundingMode?: 'trunc' | 'floor'): Tensor {
    if (roundingMode !== undefined) {
      return wrap(other instanceof Tensor ? native.call(O.divMode(), this._h, other._h, roundingMode) : native.call(O.divSMode(), this._h, checkScalar(other, 'div'), roundingMode));
    }
    return wrap(other instanceof Tensor ? native.call(O.div(), this._h, other._h) : native.call(O.divS(), this._h, checkScalar(other, 'div')));
  }
  remainder(other: TensorOrScalar): Tensor {
    return wrap(other instanceof Tensor ? native.call(O.remainder(), this._h, other._h) : native.call(O.remainderS(), this._h, checkScalar(other, 'remainder')));
  }
  pow(exponent: TensorOrScalar): Tensor {
    return wrap(exponent instanceof Tensor ? native.call(O.pow(), this._h, exponent._h) : native.call(O.powS(), this._h, checkScalar(exponent, 'pow')));
  }
  neg(): Tensor { return wrap(native.call(O.neg(), this._h)); }
  abs(): Tensor { return wrap(native.call(O.abs(), this._h)); }
  exp(): Tensor { return wrap(native.call(O.exp(), this._h)); }
  log(): Tensor { return wrap(native.call(O.log(), this._h)); }
  sqrt(): Tensor { return wrap(native.call(O.sqrt(), this._h)); }
  rsqrt(): Tensor { return wrap(native.call(O.rsqrt(), this._h)); }
  sin(): Tensor { return wrap(native.call(O.sin(), this._h)); }
  cos(): Tensor { return wrap(native.call(O.cos(), this._h)); }
  tan(): Tensor { return wrap(native.call(O.tan(), this._h)); }
  atan(): Tensor { return wrap(native.call(O.atan(), this._h)); }
  atan2(other: Tensor): Tensor { return wrap(native.call(O.atan2(), this._h, handleOf(other, 'atan2'))); }
  tanh(): Tensor { return wrap(native.call(O.tanh(), this._h)); }
  sigmoid(): Tensor { return wrap(native.call(O.sigmoid(), this._h)); }
  silu(): Tensor { return wrap(native.call(O.silu(), this._h)); }
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return wrap(native.call(O.gelu(), this._h, approximate)); }
  relu(): Tensor { return wrap(native.call(O.relu(), this._h)); }
  sign(): Tensor { return wrap(native.call(O.sign(), this._h)); }
  floor(): Tensor { return wrap(native.call(O.floor(), this._h)); }
  ceil(): Tensor { return wrap(native.call(O.ceil(), this._h)); }
  round(): Tensor { return wrap(native.call(O.round(), this._h)); }
  square(): Tensor { return wrap(native.call(O.square(), this._h)); }
  reciprocal(): Tensor { return wrap(native.call(O.reciprocal(), this._h)); }
  log1p(): Tensor { return wrap(native.call(O.log1p(), this._h)); }
  expm1(): Tensor { return wrap(native.call(O.expm1(), this._h)); }
  erf(): Tensor { return wrap(native.call(O.erf(), this._h)); }
  softmax(dim: number, dtype?: DType): Tensor {
    return wrap(native.call(O.softmax(), this._h, dim, dtype === undefined ? undefined : dtypeCode(dtype)));
  }
  logSoftmax(dim: number, dtype?: DType): Tensor {
    return wrap(native.call(O.logSoftmax(), this._h, dim, dtype === undefined ? undefined : dtypeCode(dtype)));
  }
  matmul(other: Tensor): Tensor { return wrap(native.call(O.matmul(), this._h, handleOf(other, 'matmul'))); }
  mm(other: Tensor): Tensor { return wrap(native.call(O.mm(), this._h, handleOf(other, 'mm'))); }
  bmm(other: Tensor): Tensor { return wrap(native.call(O.bmm(), this._h, handleOf(other, 'bmm'))); }
  outer(other: Tensor): Tensor { return wrap(native.call(O.outer(), this._h, handleOf(other, 'outer'))); }
  /** Bounds are both numbers or both tensors (null/undefined skips one), as Python allows. */
  clamp(min?: number | Tensor | null, max?: number | Tensor | null): Tensor {
    if (min instanceof Tensor || max instanceof Tensor) {
      clampBounds(min, max, 'clamp');
      return wrap(native.call(O.clampT(), this._h, min instanceof Tensor ? min._h : undefined, max instanceof Tensor ? max._h : undefined));
    }
    if ((min === undefined || min === null) && (max === undefined || max === null)) throw argError('type', 'clamp: give at least one of min and max');
    return wrap(native.call(O.clamp(), this._h, min ?? undefined, max ?? undefined));
  }
  nanToNum(nan?: number, posinf?: number, neginf?: number): Tensor {
    return wrap(native.call(O.nanToNum(), this._h, nan, posinf, neginf));
  }
  maximum(other: Tensor): Tensor { return wrap(native.call(O.maximum(), this._h, handleOf(other, 'maximum'))); }
  minimum(other: Tensor): Tensor { return wrap(native.call(O.minimum(), this._h, handleOf(other, 'minimum'))); }
  lerp(end: Tensor, weight: TensorOrScalar): Tensor {
    return wrap(weight instanceof Tensor ? native.call(O.lerpT(), this._h, handleOf(end, 'lerp'), weight._h) : native.call(O.lerp(), this._h, handleOf(end, 'lerp'), checkScalar(weight, 'lerp')));
  }

  // ---- comparisons and logic ----------------------------------------------------------------------
  eq(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.eq(), this._h, o._h) : native.call(O.eqS(), this._h, checkScalar(o, 'eq'))); }
  ne(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.ne(), this._h, o._h) : native.call(O.neS(), this._h, checkScalar(o, 'ne'))); }
  lt(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.lt(), this._h, o._h) : native.call(O.ltS(), this._h, checkScalar(o, 'lt'))); }
  le(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.le(), this._h, o._h) : native.call(O.leS(), this._h, checkScalar(o, 'le'))); }
  gt(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.gt(), this._h, o._h) : native.call(O.gtS(), this._h, checkScalar(o, 'gt'))); }
  ge(o: TensorOrScalar): Tensor { return wrap(o instanceof Tensor ? native.call(O.ge(), this._h, o._h) : native.call(O.geS(), this._h, checkScalar(o, 'ge'))); }
  logicalNot(): Tensor { return wrap(native.call(O.logicalNot(), this._h)); }
  logicalAnd(o: Tensor): Tensor { return wrap(native.call(O.logicalAnd(), this._h, handleOf(o, 'logicalAnd'))); }
  logicalOr(o: Tensor): Tensor { return wrap(native.call(O.logicalOr(), this._h, handleOf(o, 'logicalOr'))); }
  isnan(): Tensor { return wrap(native.call(O.isnan(), this._h)); }
  isfinite(): Tensor { return wrap(native.call(O.isfinite(), this._h)); }
  /** True when every element is nonzero (a JS boolean). */
  allTrue(): boolean { const t = wrap(native.call(O.all(), this._h)); try { return Boolean(t.item()); } finally { t.dispose(); } }
  anyTrue(): boolean { const t = wrap(native.call(O.any(), this._h)); try { return Boolean(t.item()); } finally { t.dispose(); } }

  // ---- reductions --------------------------------------------------------------------------------
  sum(dim?: number | number[], keepdim = false, dtype?: DType): Tensor {
    const dt = dtype === undefined ? undefined : dtypeCode(dtype);
    return wrap(dim === undefined ? native.call(O.sumAll(), this._h, dt) : native.call(O.sumDim(), this._h, dims(dim), keepdim, dt));
  }
  mean(dim?: number | number[], keepdim = false, dtype?: DType): Tensor {
    const dt = dtype === undefined ? undefined : dtypeCode(dtype);
    return wrap(dim === undefined ? native.call(O.meanAll(), this._h, dt) : native.call(O.meanDim(), this._h, dims(dim), keepdim, dt));
  }
  prod(dtype?: DType): Tensor { return wrap(native.call(O.prod(), this._h, dtype === undefined ? undefined : dtypeCode(dtype))); }
  cumsum(dim: number, dtype?: DType): Tensor { return wrap(native.call(O.cumsum(), this._h, dim, dtype === undefined ? undefined : dtypeCode(dtype))); }
  /** max() over all elements; max(dim) returns {values, indices}. */
  max(): Tensor;
  max(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  max(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return wrap(native.call(O.maxAll(), this._h));
    const [v, i] = native.call(O.maxDim(), this._h, dim, keepdim) as [number, number];
    return { values: wrap(v), indices: wrap(i) };
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  min(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return wrap(native.call(O.minAll(), this._h));
    const [v, i] = native.call(O.minDim(), this._h, dim, keepdim) as [number, number];
    return { values: wrap(v), indices: wrap(i) };
  }
  amax(dim: number | number[] = [], keepdim = false): Tensor { return wrap(native.call(O.amax(), this._h, dims(dim), keepdim)); }
  amin(dim: number | number[] = [], keepdim = false): Tensor { return wrap(native.call(O.amin(), this._h, dims(dim), keepdim)); }
  logsumexp(dim: number | number[], keepdim = false): Tensor { return wrap(native.call(O.logsumexp(), this._h, dims(dim), keepdim)); }
  argmax(dim?: number, keepdim = false): Tensor { return wrap(native.call(O.argmax(), this._h, dim, keepdim)); }
  argmin(dim?: number, keepdim = false): Tensor { return wrap(native.call(O.argmin(), this._h, dim, keepdim)); }
  /** Vector p-norm over all elements or the given dims (torch.linalg.vector_norm). */
  norm(p = 2, dim?: number | number[], keepdim = false): Tensor {
    return wrap(native.call(O.vnorm(), this._h, p, dims(dim), keepdim));
  }
  /** Variance (unbiased by default, as torch). */
  var(dim?: number | number[], keepdim = false, unbiased = true): Tensor {
    return wrap(dim === undefined ? native.call(O.varAll(), this._h, unbiased) : native.call(O.varDim(), this._h, dims(dim), unbiased, keepdim));
  }
  std(dim?: number | number[], keepdim = false, unbiased = true): Tensor {
    return wrap(dim === undefined ? native.call(O.stdAll(), this._h, unbiased) : native.call(O.stdDim(), this._h, dims(dim), unbiased, keepdim));
  }
  sort(dim = -1, descending = false): { values: Tensor; indices: Tensor } {
    const [v, i] = native.call(O.sort(), this._h, dim, descending) as [number, number];
    return { values: wrap(v), indices: wrap(i) };
  }
  topk(k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
    const [v, i] = native.call(O.topk(), this._h, k, dim, largest, sorted) as [number, number];
    return { values: wrap(v), indices: wrap(i) };
  }

  // ---- in place -----------------------------------------------------------------------------------
  // callVoid: the op's result is `this`; converting it would leave an extra handle in the table.
  add_(other: TensorOrScalar, alpha: number = 1): this {
    native.callVoid(other instanceof Tensor ? O.add_() : O.addS_(), this._h, other instanceof Tensor ? other._h : checkScalar(other, 'add_'), alpha);
    return this;
  }
  sub_(other: TensorOrScalar, alpha: number = 1): this {
    native.callVoid(other instanceof Tensor ? O.sub_() : O.subS_(), this._h, other instanceof Tensor ? other._h : checkScalar(other, 'sub_'), alpha);
    return this;
  }
  mul_(other: TensorOrScalar): this {
    native.callVoid(other instanceof Tensor ? O.mul_() : O.mulS_(), this._h, other instanceof Tensor ? other._h : checkScalar(other, 'mul_'));
    return this;
  }
  div_(other: TensorOrScalar): this {
    native.callVoid(other instanceof Tensor ? O.div_() : O.divS_(), this._h, other instanceof Tensor ? other._h : checkScalar(other, 'div_'));
    return this;
  }
  /** this += weight * (end - this) */
  lerp_(end: Tensor, weight: TensorOrScalar): this {
    native.callVoid(weight instanceof Tensor ? O.lerpT_() : O.lerp_(), this._h, handleOf(end, 'lerp_'), weight instanceof Tensor ? weight._h : checkScalar(weight, 'lerp_'));
    return this;
  }
  copy_(src: Tensor, nonBlocking = false): this {
    native.callVoid(O.copy_(), this._h, handleOf(src, 'copy_'), nonBlocking);
    return this;
  }
  zero_(): this { native.callVoid(O.zero_(), this._h); return this; }
  fill_(value: TensorOrScalar): this {
    native.callVoid(value instanceof Tensor ? O.fillT_() : O.fill_(), this._h, value instanceof Tensor ? value._h : checkScalar(value, 'fill_'));
    return this;
  }
  clamp_(min?: number | Tensor | null, max?: number | Tensor | null): this {
    if (min instanceof Tensor || max instanceof Tensor) {
      clampBounds(min, max, 'clamp_');
      native.callVoid(O.clampT_(), this._h, min instanceof Tensor ? min._h : undefined, max instanceof Tensor ? max._h : undefined);
    } else {
      if ((min === undefined || min === null) && (max === undefined || max === null)) throw argError('type', 'clamp_: give at least one of min and max');
      native.callVoid(O.clamp_(), this._h, min ?? undefined, max ?? undefined);
    }
    return this;
  }
  sqrt_(): this { native.callVoid(O.sqrt_(), this._h); return this; }
  /** this += value * t1 * t2 */
  addcmul_(t1: Tensor, t2: Tensor, value = 1): this { native.callVoid(O.addcmul_(), this._h, handleOf(t1), handleOf(t2), value); return this; }
  /** this += value * t1 / t2 */
  addcdiv_(t1: Tensor, t2: Tensor, value = 1): this { native.callVoid(O.addcdiv_(), this._h, handleOf(t1), handleOf(t2), value); return this; }
  normal_(mean = 0, std = 1): this { native.callVoid(O.normal_(), this._h, mean, std); return this; }
  uniform_(from = 0, to = 1): this { native.callVoid(O.uniform_(), this._h, from, to); return this; }

  // ---- shape ---------------------------------------------------------------------------------------
  view(...shape: number[] | [number[]]): Tensor { return wrap(native.call(O.view(), this._h, sizeList(shape, 'view', -1))); }
  reshape(...shape: number[] | [number[]]): Tensor { return wrap(native.call(O.reshape(), this._h, sizeList(shape, 'reshape', -1))); }
  permute(...order: number[] | [number[]]): Tensor { return wrap(native.call(O.permute(), this._h, sizeList(order, 'permute', -Infinity))); }
  transpose(dim0: number, dim1: number): Tensor { return wrap(native.call(O.transpose(), this._h, dim0, dim1)); }
  /** 2-D transpose. */
  t(): Tensor { return wrap(native.call(O.t(), this._h)); }
  /** Transpose of the last two dims. */
  get mT(): Tensor { return wrap(native.call(O.mT(), this._h, -2, -1)); }
  unsqueeze(dim: number): Tensor { return wrap(native.call(O.unsqueeze(), this._h, dim)); }
  squeeze(dim?: number): Tensor { return wrap(dim === undefined ? native.call(O.squeezeAll(), this._h) : native.call(O.squeezeDim(), this._h, dim)); }
  flatten(startDim = 0, endDim = -1): Tensor { return wrap(native.call(O.flatten(), this._h, startDim, endDim)); }
  expand(...shape: number[] | [number[]]): Tensor { return wrap(native.call(O.expand(), this._h, sizeList(shape, 'expand', -1), false)); }
  expandAs(other: Tensor): Tensor { handleOf(other, 'expandAs'); return this.expand(other.shape); }
  repeat(...repeats: number[] | [number[]]): Tensor { return wrap(native.call(O.repeat(), this._h, sizeList(repeats, 'repeat', 0))); }
  contiguous(): Tensor { return wrap(native.call(O.contiguous(), this._h)); }
  clone(): Tensor { return wrap(native.call(O.clone(), this._h)); }
  /** A tensor sharing storage, cut from the autograd graph. */
  detach(): Tensor { return wrap(native.call(O.detach(), this._h)); }
  unbind(dim = 0): Tensor[] { return wrapAll(native.call(O.unbind(), this._h, dim)); }
  chunk(chunks: number, dim = 0): Tensor[] {
    if (!(chunks >= 1)) throw argError('range', `chunk: chunks must be a positive integer, got ${String(chunks)}`);
    return wrapAll(native.call(O.chunk(), this._h, chunks, dim));
  }
  /** split(2) into pieces of 2; split([1, 3]) into pieces of those sizes. */
  split(sizes: number | number[], dim = 0): Tensor[] {
    for (const n of typeof sizes === 'number' ? [sizes] : Array.isArray(sizes) ? sizes : []) {
      if (n < 0) throw argError('range', `split: negative size ${n}`, 'E_SHAPE');
    }
    return wrapAll(typeof sizes === 'number' ? native.call(O.split(), this._h, sizes, dim) : native.call(O.splitSizes(), this._h, sizes, dim));
  }
  narrow(dim: number, start: number, length: number): Tensor {
    if (length < 0) throw argError('range', `narrow: negative length ${length}`, 'E_SHAPE');
    return wrap(native.call(O.narrow(), this._h, dim, start, length));
  }
  gather(dim: number, index: Tensor): Tensor { return wrap(native.call(O.gather(), this._h, dim, handleOf(index, 'gather index'), false)); }
  scatter(dim: number, index: Tensor, src: Tensor): Tensor { return wrap(native.call(O.scatter(), this._h, dim, handleOf(index), handleOf(src))); }
  indexSelect(dim: number, index: Tensor): Tensor { return wrap(native.call(O.indexSelect(), this._h, dim, handleOf(index, 'indexSelect index'))); }
  select(dim: number, index: number): Tensor { return wrap(native.call(O.select(), this._h, dim, index)); }
  slice(dim: number, start?: number, end?: number, step = 1): Tensor { return wrap(native.call(O.slice(), this._h, dim, start, end, step)); }
  flip(...d: number[] | [number[]]): Tensor { return wrap(native.call(O.flip(), this._h, flatShape(d))); }
  roll(shifts: number | number[], d: number | number[]): Tensor { return wrap(native.call(O.roll(), this._h, dims(shifts), dims(d))); }
  tril(diagonal = 0): Tensor { return wrap(native.call(O.tril(), this._h, diagonal)); }
  triu(diagonal = 0): Tensor { return wrap(native.call(O.triu(), this._h, diagonal)); }
  nonzero(): Tensor { return wrap(native.call(O.nonzero(), this._h)); }
  maskedFill(mask: Tensor, value: TensorOrScalar): Tensor {
    return wrap(value instanceof Tensor ? native.call(O.maskedFillT(), this._h, handleOf(mask, 'mask'), value._h) : native.call(O.maskedFill(), this._h, handleOf(mask, 'mask'), checkScalar(value, 'maskedFill')));
  }
  /** where(cond, this, other): elements of this where cond, else of other. */
  where(condition: Tensor, other: TensorOrScalar): Tensor {
    // a number goes in as a Scalar so it promotes like Python's (int tensor, 0.5 -> float)
    if (other instanceof Tensor) return wrap(native.call(O.where(), handleOf(condition, 'where condition'), this._h, other._h));
    return wrap(native.call(O.whereSO(), handleOf(condition, 'where condition'), this._h, checkScalar(other, 'where')));
  }

  /**
   * Python-style indexing: t.index(0), t.index(':', '1:3'), t.index('...', null), t.index(mask),
   * t.index(':', idxTensor). Numbers select (and drop the dim), slices keep it, null adds a dim,
   * Tensors (int64 indices or bool masks) index like torch's advanced indexing.
   */
  index(...specs: IndexSpec[]): Tensor {
    const { view, tensorIdx, temps } = this.basicIndex(specs);
    let advanced = false;
    try {
      if (!tensorIdx.some((x) => x !== null)) return view === this ? this.alias() : view;
      advanced = true;
      return wrap(native.call(O.index(), view._h, tensorIdx.map((t) => (t === null ? null : t._h))));
    } finally {
      for (const t of temps) t.dispose();
      // the basic-indexing view is an intermediate once advanced indexing ran (or failed)
      if (advanced && view !== this) view.dispose();
    }
  }
  /** In-place assignment through an index: t.indexPut_([':', 0], value). */
  indexPut_(specs: IndexSpec[], value: TensorOrScalar, accumulate = false): this {
    if (!Array.isArray(specs)) throw argError('type', 'indexPut_: specs must be an array of indices, e.g. [":", 0]', 'E_INDEX');
    if (!(value instanceof Tensor)) checkScalar(value, 'indexPut_');
    const { view, tensorIdx, temps } = this.basicIndex(specs);
    let v: Tensor | null = null;
    try {
      if (tensorIdx.some((x) => x !== null)) {
        // a number becomes a 0-d tensor of this dtype and device (it broadcasts to any index result)
        v = value instanceof Tensor ? value : wrap(native.call(O.newFull(), this._h, [], value));
        native.callVoid(O.indexPut_(), view._h, tensorIdx.map((t) => (t === null ? null : t._h)), v._h, accumulate);
      } else if (value instanceof Tensor) {
        native.callVoid(accumulate ? O.add_() : O.copy_(), view._h, value._h, accumulate ? 1 : false);
      } else {
        native.callVoid(accumulate ? O.addS_() : O.fill_(), view._h, value, ...(accumulate ? [1] : []));
      }
      return this;
    } finally {
      for (const t of temps) t.dispose();
      if (view !== this) view.dispose();
      if (v !== null && v !== value) v.dispose();
    }
  }
  private alias(): Tensor {
    return wrap(native.call(O.slice(), this._h, 0, undefined, undefined, 1));
  }
  private basicIndex(specs: IndexSpec[]): { view: Tensor; tensorIdx: (Tensor | null)[]; temps: Set<Tensor> } {
    const temps = new Set<Tensor>();
    let view: Tensor = this;
    const tensorIdx: (Tensor | null)[] = [];
    const consumes = (s: IndexSpec): number => (s === null || s === '...' ? 0 : s instanceof Tensor ? (s.dtype === 'bool' ? s.dim : 1) : 1);
    const used = specs.reduce<number>((a, s) => a + consumes(s), 0);
    if (specs.filter((s) => s === '...').length > 1) throw argError('type', "index: at most one '...'", 'E_INDEX');
    const nd = this.dim;
    if (used > nd) throw argError('range', `index: too many indices (${used}) for a ${nd}-d tensor`, 'E_INDEX');
    let d = 0;
    const step = (next: Tensor): void => {
      if (view !== this) temps.add(view);
      view = next;
    };
    try {
    for (const s of specs) {
      if (s === '...') {
        const skip = nd - used;
        for (let i = 0; i < skip; i++) { tensorIdx.push(null); d++; }
      } else if (s === null) {
        step(view.unsqueeze(d));
        tensorIdx.push(null);
        d++;
      } else if (typeof s === 'number') {
        if (!Number.isInteger(s)) throw argError('type', `index: ${s} is not an integer`, 'E_INDEX');
        step(view.select(d, s));
      } else if (typeof s === 'string' || (typeof s === 'object' && !(s instanceof Tensor) && !Array.isArray(s))) {
        const sl = typeof s === 'string' ? parseSlice(s) : s;
        const st = sl.step ?? 1;
        if (!Number.isInteger(st) || st <= 0) throw argError('range', 'index: slice step must be a positive integer', 'E_INDEX');
        step(view.slice(d, sl.start, sl.stop, st));
        tensorIdx.push(null);
        d++;
      } else {
        const t = Array.isArray(s) ? tensorFromIndexArray(s) : s;
        if (t !== s) temps.add(t);
        if (!(t instanceof Tensor)) throw argError('type', 'index: unsupported index', 'E_INDEX');
        tensorIdx.push(t);
        const k = t.dtype === 'bool' ? t.dim : 1;
        for (let i = 1; i < k; i++) tensorIdx.push(null);
        d += k;
      }
    }
    } catch (e) {
      // a bad index part way through: free the views made so far
      for (const t of temps) t.dispose();
      if (view !== this) view.dispose();
      throw e;
    }
    // trailing nulls are implicit for aten::index; drop them so a mask spanning dims works
    while (tensorIdx.length && tensorIdx[tensorIdx.length - 1] === null) tensorIdx.pop();
    // bool masks spanning k dims take one slot in aten::index, not k
    const compact: (Tensor | null)[] = [];
    for (let i = 0; i < tensorIdx.length; i++) {
      const t = tensorIdx[i]!;
      compact.push(t);
      if (t !== null && t.dtype === 'bool') i += t.dim - 1;
    }
    return { view, tensorIdx: compact, temps };
  }

  // ---- autograd -------------------------------------------------------------------------------------
  /** Accumulates gradients into the leaves. grad is needed for non-scalar tensors. */
  backward(grad?: Tensor | null, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    if (opts === null || typeof opts !== 'object') throw argError('type', 'backward: options must be an object');
    native.backward([this._h], grad ? [handleOf(grad, 'grad')] : null, opts.retainGraph, opts.createGraph ?? false);
  }
}

/** A tensor bound with a number bound would silently drop the number in aten::clamp.Tensor. */
function clampBounds(min: unknown, max: unknown, what: string): void {
  for (const b of [min, max]) {
    if (b !== undefined && b !== null && !(b instanceof Tensor)) {
      throw argError('type', `${what}: min and max must be both numbers or both tensors (give a tensor for each, or null)`);
    }
  }
}

function flatShape(args: number[] | [number[]]): number[] {
  if (args.length === 1 && Array.isArray(args[0])) return args[0];
  return args as number[];
}

/** Sizes for view/reshape/expand/repeat/permute: integers not below `min` (-1 = infer), checked here
 *  so a JS mistake is a TypeError/RangeError rather than a libtorch message. */
function sizeList(args: number[] | [number[]], what: string, min: number): number[] {
  const s = flatShape(args);
  for (let i = 0; i < s.length; i++) {
    const d = s[i];
    if (typeof d !== 'number' || !Number.isInteger(d)) throw argError('type', `${what}: expected integers, got ${describe(d)}`);
    if (d < min) throw argError('range', `${what}: invalid size ${d} in [${s.join(', ')}]`, 'E_SHAPE');
  }
  return s;
}

function tensorFromIndexArray(a: (number | boolean)[]): Tensor {
  if (a.length > 0 && a.every((x) => typeof x === 'boolean')) {
    // a JS boolean array is a mask, like a Python list of bools
    return wrap(native.fromData(Uint8Array.from(a, (x) => (x ? 1 : 0)), dtypeCode('bool'), [a.length], true));
  }
  const flat = new BigInt64Array(a.length);
  for (let i = 0; i < a.length; i++) {
    if (!Number.isInteger(a[i])) throw argError('type', 'index: arrays used as indices must hold integers', 'E_INDEX');
    flat[i] = BigInt(a[i]!);
  }
  return wrap(native.fromData(flat, dtypeCode('int64'), [a.length], true));
}

export { wrap as _wrap, wrapAll as _wrapAll, O as _ops };

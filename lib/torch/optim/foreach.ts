/**
 * ATen's multi-tensor (`_foreach_*`) operators over lists of tensors: one native call per math step
 * for a whole parameter group, as PyTorch's foreach optimizers do. On CPU each runs ATen's own
 * per-tensor kernel, so results are bit-identical to torch.optim's single-tensor and foreach paths.
 *
 * Scalars follow the dispatcher's rule (a whole JS number becomes an integer Scalar); every kernel
 * here converts its Scalar to the tensor dtype first, so 1 and 1.0 give the same bits.
 */
import { native } from '../native.js';
import { op } from '../ops.js';
import type { Handle } from '../native_binding.js';
import { Tensor } from '../tensor.js';
import { dtypeCode, DTYPE_CODE } from '../dtype.js';
import { libtorchAtLeast } from '../state.js';

// The in-place _foreach_*_ operators return nothing (undefined); _foreach_add and _foreach_sqrt a Tensor[].
const O = {
  mulScalar_: op<undefined>('aten::_foreach_mul_', 'Scalar'),
  mulOne_: op('aten::mul_', 'Scalar'),
  mulOneT_: op('aten::mul_', 'Tensor'),
  addScalar_: op<undefined>('aten::_foreach_add_', 'Scalar'),
  addList_: op<undefined>('aten::_foreach_add_', 'List'),
  lerpScalar_: op<undefined>('aten::_foreach_lerp_', 'Scalar'),
  divScalars_: op<undefined>('aten::_foreach_div_', 'ScalarList'),
  sqrt: op<Handle[]>('aten::_foreach_sqrt'),
  addList: op<Handle[]>('aten::_foreach_add', 'List'),
  addcmul_: op<undefined>('aten::_foreach_addcmul_', 'Scalar'),
  addcdivScalars_: op<undefined>('aten::_foreach_addcdiv_', 'ScalarList'),
  zero_: op<undefined>('aten::_foreach_zero_'),
  sqrtOut: op('aten::sqrt', 'out'),
  addcdivOut: op('aten::addcdiv', 'out'),
  clone: op('aten::clone'),
  scalarTensor: op('aten::scalar_tensor'),
};

/** Handles of a tensor list (a disposed tensor makes the native call throw E_DISPOSED). */
export function handles(ts: readonly Tensor[]): number[] {
  const hs = new Array<number>(ts.length);
  for (let i = 0; i < ts.length; i++) hs[i] = ts[i]!._h;
  return hs;
}

/** ts[i] *= s */
export function mulScalar_(ts: readonly Tensor[], s: number): void {
  native.call(O.mulScalar_(), handles(ts), s);
}
/**
 * ts[i] *= s one tensor at a time, as torch.optim's single-tensor path (the CPU default) does with
 * `t.mul_(s)`. Python passes a float to mul_ as a 0-dim float64 tensor (aten::mul_.Tensor), and on
 * libtorch 2.x the bfloat16/float16 kernel then multiplies by s itself, while aten::mul_.Scalar (and
 * _foreach_mul_) first rounds s to the tensor's dtype (0.95 → 0.94921875 in bfloat16). float32 and
 * float64 take the Scalar overload: there both give the same bits.
 */
export function mulScalarEach_(ts: readonly Tensor[], s: number): void {
  let scalar: Tensor | null = null;
  const torch2 = libtorchAtLeast(2, 0); // 1.13: both overloads give Python's bits
  try {
    for (const t of ts) {
      if (!torch2 || t.dtype === 'float32' || t.dtype === 'float64') native.callVoid(O.mulOne_(), t._h, s);
      else native.callVoid(O.mulOneT_(), t._h, (scalar ??= new Tensor(native.call(O.scalarTensor(), s, DTYPE_CODE.float64)))._h);
    }
  } finally {
    scalar?.dispose();
  }
}
/** ts[i] += s */
export function addScalar_(ts: readonly Tensor[], s: number): void {
  native.call(O.addScalar_(), handles(ts), s);
}
/** ts[i] += alpha * others[i] (vectorised as fma(others, alpha, ts), like Tensor.add_) */
export function addList_(ts: readonly Tensor[], others: readonly Tensor[], alpha: number): void {
  native.call(O.addList_(), handles(ts), handles(others), alpha);
}
/** ts[i] += weight * (ends[i] - ts[i]) (ATen's lerp kernel) */
export function lerp_(ts: readonly Tensor[], ends: readonly Tensor[], weight: number): void {
  native.call(O.lerpScalar_(), handles(ts), handles(ends), weight);
}
/** New tensors ts[i] + alpha * others[i]; the caller owns them. */
export function addList(ts: readonly Tensor[], others: readonly Tensor[], alpha: number): Tensor[] {
  return (native.call(O.addList(), handles(ts), handles(others), alpha) as number[]).map((h) => new Tensor(h));
}
/** ts[i] += value * t1[i] * t2[i] */
export function addcmul_(ts: readonly Tensor[], t1: readonly Tensor[], t2: readonly Tensor[], value: number): void {
  native.call(O.addcmul_(), handles(ts), handles(t1), handles(t2), value);
}
/** ts[i] += values[i] * t1[i] / t2[i] */
export function addcdiv_(ts: readonly Tensor[], t1: readonly Tensor[], t2: readonly Tensor[], values: readonly number[]): void {
  native.call(O.addcdivScalars_(), handles(ts), handles(t1), handles(t2), values);
}
/** ts[i] /= s[i] */
export function divScalars_(ts: readonly Tensor[], s: readonly number[]): void {
  native.call(O.divScalars_(), handles(ts), s);
}
/** New tensors sqrt(ts[i]); the caller owns them. */
export function sqrt(ts: readonly Tensor[]): Tensor[] {
  return (native.call(O.sqrt(), handles(ts)) as number[]).map((h) => new Tensor(h));
}
export function zero_(ts: readonly Tensor[]): void {
  if (ts.length) native.call(O.zero_(), handles(ts));
}
/** New tensors, copies of ts (the caller owns them). */
export function cloneAll(ts: readonly Tensor[]): Tensor[] {
  return ts.map((t) => new Tensor(native.call(O.clone(), t._h)));
}

/**
 * New tensors sqrt(src[i]) / divisors[i] + eps, by torch's own sequence (_foreach_sqrt, _foreach_div_,
 * then the add, here in place on the fresh tensors: same kernel). Used off the CPU, where ATen's
 * multi-tensor kernels are fused and round differently from the per-tensor ones (e.g. CUDA divides
 * by a scalar through its reciprocal), so only the same sequence gives torch's bits there.
 */
export function sqrtDivAdd(src: readonly Tensor[], divisors: readonly number[], eps: number): Tensor[] {
  const d = sqrt(src);
  try {
    divScalars_(d, divisors);
    addScalar_(d, eps);
    return d;
  } catch (e) {
    for (const t of d) t.dispose();
    throw e;
  }
}

/**
 * out[i] = sqrt(src[i]) / divisor[i] + eps, written into preallocated `out` tensors (CPU only).
 *
 * torch.optim computes the same value as `_foreach_add(_foreach_div_(_foreach_sqrt(v), c), eps)`,
 * which allocates two parameter-sized temporaries and walks memory four times. Here sqrt goes
 * straight into `out`, and the division and the addition are one addcdiv kernel:
 * addcdiv(self=eps, t1=out, t2=c, value=1) evaluates eps + (1 * out) / c, i.e. the same two IEEE
 * roundings (x / c, then + eps) as div_ followed by add, with 1 * x exact. eps and c are 0-d
 * tensors of out's dtype broadcast over `out`; rounding them to that dtype first is what the Scalar
 * overloads do for float32 and float64 on the CPU (the only case callers use this for).
 */
export function sqrtDivAddInto(out: readonly Tensor[], src: readonly Tensor[], divisors: readonly number[], eps: number): void {
  const made: number[] = [];
  const scalars = new Map<string, Tensor>();
  // callers pass CPU tensors only, so dtype and value identify a scalar
  const scalarOf = (v: number, like: Tensor): Tensor => {
    const key = `${like.dtype}:${v}`;
    let t = scalars.get(key);
    if (!t) {
      t = new Tensor(native.call(O.scalarTensor(), v, dtypeCode(like.dtype)));
      scalars.set(key, t);
    }
    return t;
  };
  try {
    for (let i = 0; i < out.length; i++) {
      const o = out[i]!;
      made.push(native.call(O.sqrtOut(), src[i]!._h, o._h) as number);
      const e = scalarOf(eps, o), c = scalarOf(divisors[i]!, o);
      made.push(native.call(O.addcdivOut(), e._h, o._h, c._h, 1, o._h) as number);
    }
  } finally {
    // the out= overloads return a new handle to `out`: release them, not the tensors
    if (made.length) native.freeMany(made);
    for (const t of scalars.values()) t.dispose();
  }
}

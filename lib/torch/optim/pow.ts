/**
 * Python's float `**` for Adam's bias corrections 1 - beta^k.
 *
 * Python computes `beta ** step` with libm's pow(); V8's Math.pow (and `**`) gives different last
 * bits for about 6% of (beta, k) pairs (0.9 ** 4 is 0.6561000000000001 in JS, 0.6561 in Python),
 * and even a correctly rounded pow differs from glibc's in rare cases. For float32 parameters the
 * difference almost never survives rounding the step size to float32, but for float64 parameters it
 * changes the update's last bit. So the power is taken by libm itself: ATen's CPU pow kernel on
 * 0-d float64 tensors evaluates std::pow(double, double) (a single element never reaches the
 * vectorised path), which is the same glibc pow Python calls.
 */
import { native } from '../native.js';
import { op } from '../ops.js';
import { DTYPE_CODE } from '../dtype.js';

const O = { pow: op('aten::pow', 'Tensor_Tensor'), scalarTensor: op('aten::scalar_tensor') };

/** base ** exponent exactly as Python's float power (libm pow). */
export function libmPow(base: number, exponent: number): number {
  const hs: number[] = [];
  try {
    const b = native.call(O.scalarTensor(), base, DTYPE_CODE.float64) as number;
    hs.push(b);
    const e = native.call(O.scalarTensor(), exponent, DTYPE_CODE.float64) as number;
    hs.push(e);
    const r = native.call(O.pow(), b, e) as number;
    hs.push(r);
    return native.item(r) as number;
  } finally {
    native.freeMany(hs);
  }
}

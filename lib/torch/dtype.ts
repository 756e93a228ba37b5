/** dtypes and devices, and their codes in libtorch (c10::ScalarType values, stable across versions). */
import { argError, TorchError } from './errors.js';
import { native } from './native.js';

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

export const DTYPE_CODE: Readonly<Record<DType, number>> = {
  uint8: 0,
  int8: 1,
  int16: 2,
  int32: 3,
  int64: 4,
  float16: 5,
  float32: 6,
  float64: 7,
  bool: 11,
  bfloat16: 15,
};

const CODE_DTYPE: (DType | undefined)[] = [];
for (const [k, v] of Object.entries(DTYPE_CODE)) CODE_DTYPE[v] = k as DType;

export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  uint8: 1, int8: 1, int16: 2, int32: 4, int64: 8, float16: 2, float32: 4, float64: 8, bool: 1, bfloat16: 2,
};

/** Python-style aliases accepted wherever a dtype is. */
const ALIASES: Record<string, DType> = {
  float: 'float32', double: 'float64', half: 'float16', long: 'int64', int: 'int32', short: 'int16',
  f32: 'float32', f64: 'float64', f16: 'float16', bf16: 'bfloat16', i64: 'int64', i32: 'int32', u8: 'uint8',
};

export function dtypeCode(d: DType | string): number {
  const c = (DTYPE_CODE as Record<string, number>)[d] ?? (ALIASES[d] !== undefined ? DTYPE_CODE[ALIASES[d]!] : undefined);
  if (c === undefined) throw argError('type', `unknown dtype '${String(d)}' (expected one of ${Object.keys(DTYPE_CODE).join(', ')})`, 'E_DTYPE');
  return c;
}

export function normalizeDtype(d: DType | string): DType {
  return CODE_DTYPE[dtypeCode(d)]!;
}

export function dtypeFromCode(code: number): DType {
  const d = CODE_DTYPE[code];
  if (!d) throw argError('range', `unsupported dtype code ${code}`, 'E_DTYPE');
  return d;
}

export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

export function normalizeDevice(d: string): Device {
  if (typeof d !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(d)) {
    throw argError('range', `invalid device '${String(d)}' (expected 'cpu', 'cuda' or 'cuda:N')`, 'E_DEVICE');
  }
  if (d !== 'cpu') checkCuda(d);
  return d as Device;
}

// CUDA devices cannot appear while the process runs, so ask libtorch once.
let cudaDevices: number | undefined;

/** A CUDA device request on a machine without it fails here with E_DEVICE (libtorch's own messages
 *  for this vary by build: "not linked with support", "Could not run ... 'CUDA' backend"). */
function checkCuda(d: string): void {
  cudaDevices ??= native.cudaIsAvailable() ? (native.cudaDeviceCount() as number) : 0;
  const index = d === 'cuda' ? 0 : Number(d.slice(5));
  if (index < cudaDevices) return;
  throw new TorchError(
    cudaDevices === 0
      ? `device '${d}' is not available: this libtorch has no CUDA support or no GPU is visible`
      : `device '${d}' is not available: there ${cudaDevices === 1 ? 'is 1 CUDA device' : `are ${cudaDevices} CUDA devices`}`,
    'E_DEVICE',
  );
}

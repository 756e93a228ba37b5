/** Process-wide state: RNG, threads, autocast, CUDA. */
import { native } from './native.js';
import { argError } from './errors.js';
import { type DType, type Device, dtypeCode, normalizeDevice } from './dtype.js';
import { Tensor, _wrap as wrap } from './tensor.js';

/** Seeds the CPU generator and every CUDA device's. */
export function manualSeed(seed: number | bigint): void {
  if (typeof seed === 'number' && (!Number.isInteger(seed) || seed < 0)) throw argError('range', 'manualSeed: seed must be a non-negative integer');
  native.manualSeed(seed);
}

/** The generator state of a device as bytes (save it to resume a run exactly). */
export function getRngState(device: Device = 'cpu'): Uint8Array {
  const t = wrap(native.getRngState(normalizeDevice(device)));
  try {
    return t.toTypedArray() as Uint8Array;
  } finally {
    t.dispose();
  }
}

export function setRngState(state: Uint8Array, device: Device = 'cpu'): void {
  if (!(state instanceof Uint8Array)) throw argError('type', 'setRngState: state must be a Uint8Array from getRngState');
  const t = wrap(native.fromData(state, dtypeCode('uint8'), [state.length], true));
  try {
    native.setRngState(normalizeDevice(device), t._h);
  } finally {
    t.dispose();
  }
}

export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw argError('range', 'setNumThreads: n must be a positive integer');
  native.setNumThreads(n);
}
export function getNumThreads(): number {
  return native.getNumThreads() as number;
}
/** Must be called before any inter-op parallel work starts (libtorch's rule). */
export function setNumInteropThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw argError('range', 'setNumInteropThreads: n must be a positive integer');
  native.setNumInteropThreads(n);
}
/** libtorch's description of its thread pools and BLAS/OpenMP backends. */
export function parallelInfo(): string {
  return native.parallelInfo() as string;
}

export const cuda = {
  isAvailable(): boolean {
    return native.cudaIsAvailable() as boolean;
  },
  deviceCount(): number {
    return native.cudaDeviceCount() as number;
  },
  synchronize(device?: number): void {
    native.cudaSynchronize(device);
  },
};

export interface AutocastOptions {
  dtype?: DType;
  device?: 'cpu' | 'cuda';
  enabled?: boolean;
}

/**
 * Runs fn under automatic mixed precision, like `with torch.autocast(device, dtype)`: matmuls and
 * convolutions run in dtype (bfloat16 on CPU; bfloat16 or float16 on CUDA), precision-sensitive ops
 * stay in float32. fn must be synchronous (autocast state is per thread); async native calls started
 * inside fn carry the state into their worker thread.
 */
export function autocast<T>(o: AutocastOptions, fn: () => T): T {
  const device = o.device ?? 'cpu';
  const dtype = o.dtype ?? (device === 'cpu' ? 'bfloat16' : 'float16');
  const prev = native.autocastEnter(device, dtypeCode(dtype), o.enabled ?? true) as [boolean, number];
  let r: T;
  try {
    r = fn();
  } catch (e) {
    native.autocastExit(device, prev[0], prev[1]);
    throw e;
  }
  if (r instanceof Promise) {
    throw (native.autocastExit(device, prev[0], prev[1]), argError('type', 'autocast(fn): fn must be synchronous; wrap the synchronous part'));
  }
  native.autocastExit(device, prev[0], prev[1]);
  return r;
}

export function isAutocastEnabled(device: 'cpu' | 'cuda' = 'cpu'): boolean {
  return (native.autocastState(device) as [boolean, number])[0];
}

export function buildInfo(): { torchVersion: string; torchMajor: number; torchMinor: number; sourceHash: string; cudaBuild: boolean; napiVersion: number } {
  return native.buildInfo();
}

export type { Tensor };

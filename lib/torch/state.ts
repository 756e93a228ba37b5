/** Process-wide state: RNG, threads, autocast, CUDA. */
import { native } from './native.js';
import { argError } from './errors.js';
import { syncRegion } from './sync_region.js';
import { type DType, type Device, dtypeCode, normalizeDevice } from './dtype.js';
import { Tensor, _wrap as wrap } from './tensor.js';

/** Seeds the CPU generator and every CUDA device's. */
export function manualSeed(seed: number | bigint): void {
  if (typeof seed === 'number' && (!Number.isSafeInteger(seed) || seed < 0)) throw argError('range', 'manualSeed: seed must be a non-negative safe integer (pass a BigInt for larger seeds)');
  if (typeof seed === 'bigint' && (seed < 0n || seed >= 2n ** 64n)) throw argError('range', 'manualSeed: a BigInt seed must be in [0, 2^64)');
  if (typeof seed !== 'number' && typeof seed !== 'bigint') throw argError('type', 'manualSeed: seed must be an integer');
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

// More threads than this is never useful and would make OpenMP start that many.
const MAX_THREADS = 1024;

export function setNumThreads(n: number): void {
  if (typeof n !== 'number') throw argError('type', 'setNumThreads: n must be an integer');
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw argError('range', `setNumThreads: n must be an integer in [1, ${MAX_THREADS}]`);
  native.setNumThreads(n);
}
export function getNumThreads(): number {
  return native.getNumThreads() as number;
}
/** Must be called before any inter-op parallel work starts (libtorch's rule). */
export function setNumInteropThreads(n: number): void {
  if (typeof n !== 'number') throw argError('type', 'setNumInteropThreads: n must be an integer');
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw argError('range', `setNumInteropThreads: n must be an integer in [1, ${MAX_THREADS}]`);
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
  if (o === null || typeof o !== 'object') throw argError('type', 'autocast(options, fn): options must be an object such as { dtype: \'bfloat16\' }');
  const device = o.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw argError('range', `autocast: device must be 'cpu' or 'cuda', got ${String(device)}`, 'E_DEVICE');
  const dtype = o.dtype ?? (device === 'cpu' ? 'bfloat16' : 'float16');
  // restored even when fn throws, so an exception never leaves autocast switched on
  return syncRegion('autocast(options, fn)', fn, () => native.autocastEnter(device, dtypeCode(dtype), o.enabled ?? true) as [boolean, number],
    (prev) => native.autocastExit(device, prev[0], prev[1]));
}

export function isAutocastEnabled(device: 'cpu' | 'cuda' = 'cpu'): boolean {
  return (native.autocastState(device) as [boolean, number])[0];
}

export function buildInfo(): { torchVersion: string; torchMajor: number; torchMinor: number; sourceHash: string; cudaBuild: boolean; napiVersion: number } {
  return native.buildInfo();
}

let linked: { major: number; minor: number } | undefined;
/**
 * Whether the linked libtorch is at least major.minor. TypeScript code that follows torch's *Python*
 * math (optimizers) uses it to follow the torch release whose libtorch it runs on; everything in
 * C++ keeps its version differences in native/compat.h.
 */
export function libtorchAtLeast(major: number, minor: number): boolean {
  if (!linked) {
    const b = native.buildInfo() as { torchMajor: number; torchMinor: number };
    linked = { major: b.torchMajor, minor: b.torchMinor };
  }
  return linked.major > major || (linked.major === major && linked.minor >= minor);
}

export type { Tensor };

/** Scaled-dot-product attention backends (libtorch ≥ 2.0), as Python's torch.nn.attention.SDPBackend. */
export type SdpaBackend = 'math' | 'flash' | 'efficient' | 'cudnn';
const SDPA_BITS: Record<SdpaBackend, number> = { math: 1, flash: 2, efficient: 4, cudnn: 8 };

/**
 * Runs fn with only the given attention backends enabled, like Python's
 * `with torch.nn.attention.sdpa_kernel([...])`, and restores the previous set after. The switches are
 * process-wide (as in Python): keep fn synchronous. ['math'] makes scaled_dot_product_attention
 * twice differentiable and forward-mode differentiable (the fused kernels are neither). On
 * libtorch 1.13, which has no such op, it just runs fn.
 */
export function sdpaKernel<T>(backends: SdpaBackend[], fn: () => T): T {
  if (!Array.isArray(backends) || backends.some((b) => !(b in SDPA_BITS))) {
    throw argError('type', `sdpaKernel: backends must be a list of ${Object.keys(SDPA_BITS).map((k) => `'${k}'`).join(', ')}`);
  }
  return syncRegion('sdpaKernel(backends, fn)', fn, () => {
    const prev = native.sdpBackends() as number;
    native.setSdpBackends(backends.reduce((m, b) => m | SDPA_BITS[b], 0));
    return prev;
  }, (prev) => native.setSdpBackends(prev));
}

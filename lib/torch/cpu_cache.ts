/**
 * The CPU block cache (native/cpu_cache.cpp): CPU tensor buffers of `minBytes` (1 MiB) or more are
 * mmapped once and reused for later tensors of (nearly) their size, like PyTorch's CUDA caching
 * allocator does on the GPU. A training step that repeats the previous one's shapes then runs without
 * page faults, and the process holds about its peak in use instead of a glibc heap that grows step
 * after step (docs/memory.md, "Training-step memory").
 *
 * Installed when the addon loads (lib/torch/native.ts, cpuCacheWanted) unless TIM_TORCH_CPU_CACHE=off (then libtorch's own allocator,
 * i.e. glibc malloc, serves every block). `torch.cpuCache.stats()` reports it; `emptyCache()` gives
 * every cached block back to the kernel (e.g. after a sampling phase with other shapes).
 */
import { native } from './native.js';
import type { CpuCacheStats as NativeCpuCacheStats } from './native_binding.js';

/** The cache's accounting. */
export interface CpuCacheStats extends NativeCpuCacheStats {
  /** whether the cache serves CPU blocks in this process */
  installed: boolean;
  /** bytes of blocks held by live tensors */
  inUseBytes: number;
  /** bytes of free blocks kept for reuse */
  cachedBytes: number;
  /** most bytes in use since the start or resetPeakStats() */
  peakInUseBytes: number;
  /** most bytes in use + cached since the start or resetPeakStats() */
  peakReservedBytes: number;
  /** requests served from a cached block / by a new mapping */
  hits: number;
  misses: number;
  /** blocks mapped from and unmapped back to the kernel */
  mapped: number;
  unmapped: number;
}

export function stats(): CpuCacheStats {
  return native.cpuCacheStats();
}

/** Unmaps every cached (free) block; blocks in use are untouched. */
export function emptyCache(): void {
  native.cpuCacheEmpty();
}

/** Starts the peak figures again from what is in use (and cached) now. */
export function resetPeakStats(): void {
  native.cpuCacheResetPeaks();
}

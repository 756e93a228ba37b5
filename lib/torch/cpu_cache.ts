/**
 * The CPU block cache (native/cpu_cache.cpp): CPU tensor buffers of `minBytes` (1 MiB) or more are
 * mmapped once and reused for later tensors of (nearly) their size, like PyTorch's CUDA caching
 * allocator does on the GPU. A training step that repeats the previous one's shapes then runs without
 * page faults, and the process holds about its peak in use instead of a glibc heap that grows step
 * after step (docs/memory.md, "Training-step memory").
 *
 * Installed when the addon loads (lib/torch/native.ts, cpuCacheWanted) unless TIM_TORCH_CPU_CACHE=off
 * (then libtorch's own allocator, i.e. glibc malloc, serves every block). `torch.cpuCache.stats()`
 * reports it; `emptyCache()` gives every cached block back to the kernel (e.g. after a sampling phase
 * with other shapes).
 */
import { native } from './native.js';
import type { CpuCacheStats } from './native_binding.js';

export type { CpuCacheStats };

/** What the cache holds and has done (bytes in use and cached, peaks, hits and misses). */
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

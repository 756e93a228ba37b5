/**
 * The CPU block cache (native/cpu_cache.cpp): CPU tensor buffers of `minBytes` (1 MiB) or more are
 * mmapped once and reused for later tensors of (nearly) their size, like PyTorch's CUDA caching
 * allocator does on the GPU. A training step that repeats the previous one's shapes then runs without
 * page faults, and the process holds about its peak in use instead of a glibc heap that grows step
 * after step (docs/memory.md, "Training-step memory").
 *
 * Installed when the addon loads (lib/torch/native.ts, cpuCacheWanted) unless TIM_TORCH_CPU_CACHE=off
 * (then libtorch's own allocator, i.e. glibc malloc, serves every block). `torch.cpuCache.stats()`
 * reports it.
 *
 * Between training steps the cache holds the whole step's working set, free. `trim()` (the Trainer
 * calls it after every optimizer step) gives back what is over a budget: every byte unmapped is
 * page-faulted and zeroed again by the kernel when the next step needs it (~0.7 ms per MiB on the
 * machines measured), every byte kept is resident between steps. The default budget, half of the
 * peak in use, was chosen by measurement (docs/memory.md, "Between steps"): it keeps the memory held
 * between steps near what PyTorch's glibc heap keeps, for a tenth of the step time that emptying
 * the cache costs.
 */
import { native } from './native.js';
import { TorchError, argError } from './errors.js';
import type { CpuCacheStats } from './native_binding.js';

export type { CpuCacheStats };

/** The default of `trim()`'s budget, as a fraction of the peak bytes in use (TIM_TORCH_CPU_CACHE_KEEP overrides it). */
export const DEFAULT_KEEP_FRACTION = 0.5;

/**
 * The fraction of the peak in use that `trim()` keeps cached by default: TIM_TORCH_CPU_CACHE_KEEP
 * (a number >= 0, e.g. 0 = give everything back between steps, 1.25 = never trim), else 0.5.
 */
export function keepFraction(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.TIM_TORCH_CPU_CACHE_KEEP;
  if (v === undefined || v === '') return DEFAULT_KEEP_FRACTION;
  const f = Number(v);
  if (!/^\s*[0-9.eE+-]+\s*$/.test(v) || !Number.isFinite(f) || f < 0) {
    throw new TorchError(`TIM_TORCH_CPU_CACHE_KEEP must be a number >= 0 (a fraction of the peak bytes in use), got '${v}'`, 'E_RANGE');
  }
  return f;
}

/** What the cache holds and has done (bytes in use and cached, peaks, hits and misses). */
export function stats(): CpuCacheStats {
  return native.cpuCacheStats();
}

/**
 * Gives cached (free) blocks back to the kernel, least recently freed first, until at most
 * `maxCachedBytes` stay cached. Without an argument the budget is keepFraction() × the peak bytes in
 * use. Blocks in use are untouched. Returns the bytes given back. Call it between training steps, not
 * inside one (a step reuses what the previous step freed).
 */
export function trim(maxCachedBytes?: number): number {
  let max: number;
  if (maxCachedBytes === undefined) {
    max = Math.floor(keepFraction() * native.cpuCacheStats().peakInUseBytes);
  } else {
    if (typeof maxCachedBytes !== 'number' || !Number.isInteger(maxCachedBytes) || maxCachedBytes < 0) {
      throw argError(typeof maxCachedBytes === 'number' ? 'range' : 'type', `cpuCache.trim: maxCachedBytes must be an integer >= 0, got ${String(maxCachedBytes)}`);
    }
    max = maxCachedBytes;
  }
  return native.cpuCacheTrim(Math.min(max, Number.MAX_SAFE_INTEGER));
}

/** Unmaps every cached (free) block; blocks in use are untouched (trim(0)). */
export function emptyCache(): void {
  native.cpuCacheTrim(0);
}

/** Starts the peak figures again from what is in use (and cached) now. */
export function resetPeakStats(): void {
  native.cpuCacheResetPeaks();
}

/**
 * The glibc malloc thresholds the package sets at load (lib/torch/native.ts defaultMallocTuning,
 * native mallocTune; why: docs/benchmarks.md "Why the malloc thresholds"): the environment rules, the
 * native argument checks, and the effect (a chain of 16 MiB intermediates is served from the heap
 * instead of being mapped and page-faulted in again on every call) in fresh child processes, since
 * the thresholds are process-wide.
 */
import { describe, expect, it } from 'vitest';
import { MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD, defaultMallocTuning, native } from '../lib/torch/native.js';
import { TorchError } from '../lib/torch/errors.js';
import { faultChain } from './helpers/fault_chain.js';


describe('defaultMallocTuning (environment rules)', () => {
  const tuned = { mmapThreshold: MALLOC_MMAP_THRESHOLD, trimThreshold: MALLOC_TRIM_THRESHOLD };

  it('tunes by default, with glibc-acceptable values', () => {
    expect(defaultMallocTuning({})).toEqual(tuned);
    expect(MALLOC_MMAP_THRESHOLD).toBe(32 * 2 ** 20);
    expect(MALLOC_TRIM_THRESHOLD).toBeGreaterThanOrEqual(2 * MALLOC_MMAP_THRESHOLD);
    expect(defaultMallocTuning({ TIM_TORCH_MALLOC: 'tuned' })).toEqual(tuned);
  });

  it("leaves glibc alone when asked, when the defaults are off, or when the user set glibc's own variables", () => {
    expect(defaultMallocTuning({ TIM_TORCH_MALLOC: 'default' })).toBeUndefined();
    expect(defaultMallocTuning({ TIM_TORCH_NO_ENV_DEFAULTS: '1' })).toBeUndefined();
    expect(defaultMallocTuning({ TIM_TORCH_NO_ENV_DEFAULTS: '0' })).toEqual(tuned);
    expect(defaultMallocTuning({ MALLOC_MMAP_THRESHOLD_: '131072' })).toBeUndefined();
    expect(defaultMallocTuning({ MALLOC_TRIM_THRESHOLD_: '131072' })).toBeUndefined();
    // an explicit 'tuned' wins over the blanket switch
    expect(defaultMallocTuning({ TIM_TORCH_MALLOC: 'tuned', TIM_TORCH_NO_ENV_DEFAULTS: '1' })).toEqual(tuned);
  });

  it('rejects an unknown value with a typed error', () => {
    let err: unknown;
    try { defaultMallocTuning({ TIM_TORCH_MALLOC: 'jemalloc' }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(TorchError);
    expect((err as TorchError).code).toBe('E_RANGE');
    expect((err as Error).message).toMatch(/TIM_TORCH_MALLOC.*'jemalloc'/);
  });
});

describe('native.mallocTune', () => {
  it('checks its arguments', () => {
    for (const bad of [[-1, 0], [0, -1], [1.5, 0], [2 ** 31, 0], ['1', 0], [undefined, 0]]) {
      let err: unknown;
      // @ts-expect-error: bad arguments on purpose (the typed binding refuses them)
      try { native.mallocTune(...bad); } catch (e) { err = e; }
      expect(err, JSON.stringify(bad)).toBeInstanceOf(RangeError);
      expect((err as TorchError).code).toBe('E_RANGE');
      expect((err as Error).message).toMatch(/^mallocTune: (mmap|trim)Threshold must be an integer number of bytes/);
    }
  });

  it('applies the thresholds (glibc: true)', () => {
    // the same values the package set at load: this changes nothing for the rest of the run
    expect(native.mallocTune(MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD)).toBe(true);
  });
});

describe('effect on a chain of large intermediates (child processes)', () => {
  const faultsPerCall = (env: NodeJS.ProcessEnv): number => faultChain(env).faults;

  it('the tuned process re-faults a small fraction of the pages its intermediates span', () => {
    // the package defaults: none of the variables that would switch the tuning off
    const env = { ...process.env };
    for (const k of ['TIM_TORCH_MALLOC', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'TIM_TORCH_NO_ENV_DEFAULTS']) delete env[k];
    // glibc serves every block: the CPU block cache (which would keep these 16 MiB blocks itself) is off
    env.TIM_TORCH_CPU_CACHE = 'off';
    const tuned = faultsPerCall(env);
    // median over 11 calls after warm-up; 4 intermediates of 16 MiB = 16,384 pages per call if each were
    // mapped afresh (measured: 0 tuned; 0-15,000 per call with glibc's defaults, depending on its dynamic
    // threshold, so only the tuned count is asserted)
    expect(tuned).toBeLessThan(0.1 * 4 * 4096);
  }, 60_000);
});

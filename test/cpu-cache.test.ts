/**
 * The CPU block cache (native/cpu_cache.cpp, lib/torch/cpu_cache.ts): blocks of 1 MiB or more are
 * mapped once and reused; stats account for them; trim/emptyCache give them back (least recently
 * freed first, down to a budget whose default is a fraction of the peak in use); values are right in
 * reused blocks; frees from other threads (async ops) are safe; the environment switch and its
 * error, and the effect (no page faults for a repeated chain of large intermediates), in child
 * processes since the allocator is process-wide.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { CPU_CACHE_HUGE_BYTES, CPU_CACHE_MIN_BYTES, CPU_CACHE_SLACK, cpuCacheHugePages, cpuCacheSlack, cpuCacheWanted, native } from '../lib/torch/native.js';
import { TorchError } from '../lib/torch/errors.js';
import { DEFAULT_KEEP_FRACTION, keepFraction } from '../lib/torch/cpu_cache.js';
import { faultChain } from './helpers/fault_chain.js';

const repo = resolve(__dirname, '..');
const MiB = 2 ** 20;

describe('CPU block cache', () => {
  it('is installed by default and accounts for a large block through its life', () => {
    const s0 = torch.cpuCache.stats();
    expect(s0.installed).toBe(true);
    const t = torch.zeros([3 * MiB / 4]); // 3 MiB of float32
    const s1 = torch.cpuCache.stats();
    expect(s1.inUseBytes - s0.inUseBytes).toBe(3 * MiB);
    t.dispose();
    const s2 = torch.cpuCache.stats();
    expect(s2.inUseBytes).toBe(s0.inUseBytes);
    expect(s2.cachedBytes).toBeGreaterThanOrEqual(3 * MiB);
    expect(s2.peakInUseBytes).toBeGreaterThanOrEqual(s1.inUseBytes);
  });

  it('reuses a freed block for the next tensor of its size, with correct values', () => {
    torch.scope(() => torch.ones([MiB]).sum().item()); // leaves a 4 MiB block cached
    const before = torch.cpuCache.stats();
    const v = torch.scope(() => {
      const z = torch.zeros([MiB]); // a reused block: must read as zeros, not the ones it held
      const r = torch.arange(0, MiB, 1, { dtype: 'float32' });
      return [z.abs().sum().item(), r.max().item(), r.min().item()];
    });
    const after = torch.cpuCache.stats();
    expect(v).toEqual([0, MiB - 1, 0]);
    expect(after.hits).toBeGreaterThan(before.hits);
  });

  it('serves small blocks from malloc', () => {
    const before = torch.cpuCache.stats();
    torch.scope(() => torch.ones([CPU_CACHE_MIN_BYTES / 4 - 1024]).sum().item());
    const after = torch.cpuCache.stats();
    expect(after.hits + after.misses).toBe(before.hits + before.misses);
  });

  it('emptyCache unmaps every cached block and leaves blocks in use alone', () => {
    const keep = torch.randn([2 * MiB]); // 8 MiB in use
    const sumOf = (t: torch.Tensor): number => torch.scope(() => t.sum().item());
    const before = sumOf(keep);
    torch.scope(() => torch.randn([3 * MiB]).sum().item()); // 12 MiB cached
    const mid = torch.cpuCache.stats();
    expect(mid.cachedBytes).toBeGreaterThan(0);
    torch.cpuCache.emptyCache();
    const s = torch.cpuCache.stats();
    expect(s.cachedBytes).toBe(0);
    expect(s.inUseBytes).toBe(mid.inUseBytes);
    expect(s.unmapped).toBeGreaterThan(mid.unmapped);
    expect(sumOf(keep)).toBe(before); // its block was not unmapped or reused
    keep.dispose();
    torch.cpuCache.resetPeakStats();
    const r = torch.cpuCache.stats();
    expect(r.peakInUseBytes).toBe(r.inUseBytes);
  });

  it('trim(max) gives back the least recently freed blocks until at most max bytes stay cached', () => {
    torch.cpuCache.emptyCache();
    const a = torch.zeros([2 * MiB]); // 8 MiB
    const b = torch.zeros([3 * MiB]); // 12 MiB
    const c = torch.zeros([4 * MiB]); // 16 MiB
    a.dispose(); b.dispose(); c.dispose(); // freed in this order: a is the least recently freed
    const s0 = torch.cpuCache.stats();
    expect(s0.cachedBytes).toBe(36 * MiB);
    expect(torch.cpuCache.trim(30 * MiB)).toBe(8 * MiB); // a goes: 28 MiB stay
    expect(torch.cpuCache.stats().cachedBytes).toBe(28 * MiB);
    expect(torch.cpuCache.trim(28 * MiB)).toBe(0); // within the budget: nothing to do
    expect(torch.cpuCache.trim(16 * MiB)).toBe(12 * MiB); // b goes, c (exactly the budget) stays
    const s1 = torch.cpuCache.stats();
    expect(s1.cachedBytes).toBe(16 * MiB);
    expect(s1.unmapped - s0.unmapped).toBe(2);
    // the block that stayed is the one reused
    const hits = s1.hits;
    torch.scope(() => torch.ones([4 * MiB]).sum().item());
    expect(torch.cpuCache.stats().hits).toBe(hits + 1);
    for (const bad of [-1, 1.5, NaN, '8'] as unknown[]) {
      expect(() => torch.cpuCache.trim(bad as number)).toThrow(/maxCachedBytes must be an integer >= 0/);
    }
    torch.cpuCache.emptyCache();
  });

  it('trim() keeps the default fraction of the peak in use', () => {
    torch.cpuCache.emptyCache();
    torch.cpuCache.resetPeakStats();
    const base = torch.cpuCache.stats().inUseBytes;
    const ts = Array.from({ length: 8 }, () => torch.zeros([MiB])); // 8 blocks of 4 MiB live at once
    for (const t of ts) t.dispose();
    const s = torch.cpuCache.stats();
    expect(s.peakInUseBytes - base).toBe(32 * MiB);
    expect(s.cachedBytes).toBe(32 * MiB);
    torch.cpuCache.trim();
    const budget = Math.floor(DEFAULT_KEEP_FRACTION * s.peakInUseBytes);
    const after = torch.cpuCache.stats().cachedBytes;
    expect(after).toBeLessThanOrEqual(budget);
    expect(after).toBeGreaterThan(budget - 4 * MiB); // blocks go one at a time: no more than needed
    torch.cpuCache.emptyCache();
  });

  it('frees from the thread pool (async ops) are safe and accounted', async () => {
    const base = torch.cpuCache.stats().inUseBytes;
    const a = torch.randn([1024, 1024]);
    const outs = await Promise.all(Array.from({ length: 8 }, () => torch.matmulAsync(a, a)));
    const sums = outs.map((o) => o.sum().item());
    for (const o of outs) o.dispose();
    a.dispose();
    expect(new Set(sums).size).toBe(1);
    expect(torch.cpuCache.stats().inUseBytes).toBe(base);
  });

  it('keeps what it reserves near the peak in use when shapes change', () => {
    torch.cpuCache.emptyCache();
    torch.cpuCache.resetPeakStats();
    for (let n = 1; n <= 24; n++) torch.scope(() => torch.ones([n * MiB / 2]).sum().item()); // 2, 4, ... 48 MiB, one at a time
    const s = torch.cpuCache.stats();
    // without eviction every size would stay cached (600 MiB); the rule keeps in use + cached <= 5/4 of the peak in use
    expect(s.peakReservedBytes).toBeLessThanOrEqual(1.25 * s.peakInUseBytes + 4096);
    torch.cpuCache.emptyCache();
  });
});

describe('TIM_TORCH_CPU_CACHE', () => {
  it('TIM_TORCH_CPU_CACHE and TIM_TORCH_CPU_CACHE_HUGEPAGES: on by default, off on request, anything else a typed error', () => {
    for (const [name, read] of [['TIM_TORCH_CPU_CACHE', cpuCacheWanted], ['TIM_TORCH_CPU_CACHE_HUGEPAGES', cpuCacheHugePages]] as const) {
      expect(read({})).toBe(true);
      expect(read({ [name]: 'on' })).toBe(true);
      expect(read({ [name]: 'off' })).toBe(false);
      for (const bad of ['yes', '1']) {
        let err: unknown;
        try { read({ [name]: bad }); } catch (e) { err = e; }
        expect(err).toBeInstanceOf(TorchError);
        expect((err as TorchError).code).toBe('E_RANGE');
        expect((err as Error).message).toContain(`${name} must be 'on' (the default) or 'off', got '${bad}'`);
      }
    }
  });

  it('TIM_TORCH_CPU_CACHE_SLACK sets the slack; a bad value is a typed error, in JS and in the native check', () => {
    expect(cpuCacheSlack({})).toBe(CPU_CACHE_SLACK);
    expect(cpuCacheSlack({ TIM_TORCH_CPU_CACHE_SLACK: '0' })).toBe(0);
    expect(cpuCacheSlack({ TIM_TORCH_CPU_CACHE_SLACK: '0.125' })).toBe(0.125);
    for (const v of ['-0.1', '5', 'lots', 'NaN']) {
      let err: unknown;
      try { cpuCacheSlack({ TIM_TORCH_CPU_CACHE_SLACK: v }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(TorchError);
      expect((err as TorchError).code).toBe('E_RANGE');
      expect((err as Error).message).toMatch(/TIM_TORCH_CPU_CACHE_SLACK must be a number in \[0, 4\]/);
    }
    for (const bad of [-1, 4.5, Number.NaN, undefined]) {
      expect(() => native.cpuCacheInstall(CPU_CACHE_MIN_BYTES, bad as number, CPU_CACHE_HUGE_BYTES)).toThrow(/slack must be a number in \[0, 4\]/);
    }
  });

  it('the slack bounds how much larger a reused block may be than the request', () => {
    const reuses = (slack: number): boolean => {
      native.cpuCacheInstall(CPU_CACHE_MIN_BYTES, slack, CPU_CACHE_HUGE_BYTES);
      try {
        torch.cpuCache.trim(0);
        torch.scope(() => torch.zeros([5 * MiB]).sum().item()); // leaves one 20 MiB block cached
        const before = torch.cpuCache.stats();
        torch.scope(() => torch.zeros([Math.round(4.2 * MiB)]).sum().item()); // 16.8 MiB: the cached block is 19% larger
        return torch.cpuCache.stats().hits > before.hits;
      } finally {
        native.cpuCacheInstall(CPU_CACHE_MIN_BYTES, cpuCacheSlack(), cpuCacheHugePages() ? CPU_CACHE_HUGE_BYTES : 0);
        torch.cpuCache.trim(0);
      }
    };
    expect(reuses(0.25)).toBe(true);
    expect(reuses(0.125)).toBe(false);
  });

  it('TIM_TORCH_CPU_CACHE_KEEP sets the default budget of trim(); a bad value is a typed error', () => {
    expect(keepFraction({})).toBe(DEFAULT_KEEP_FRACTION);
    expect(keepFraction({ TIM_TORCH_CPU_CACHE_KEEP: '0' })).toBe(0);
    expect(keepFraction({ TIM_TORCH_CPU_CACHE_KEEP: '1.25' })).toBe(1.25);
    for (const v of ['-1', 'half', 'Infinity', '1,5']) {
      let err: unknown;
      try { keepFraction({ TIM_TORCH_CPU_CACHE_KEEP: v }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(TorchError);
      expect((err as TorchError).code).toBe('E_RANGE');
      expect((err as Error).message).toMatch(/TIM_TORCH_CPU_CACHE_KEEP must be a number >= 0/);
    }
  });

  const child = (extra: NodeJS.ProcessEnv) => {
    const env = { ...process.env, ...extra };
    for (const k of ['MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_']) delete env[k];
    // glibc's own thresholds, so that only the cache can keep the pages: 16 MiB blocks are then mmapped per use
    env.TIM_TORCH_MALLOC = 'default';
    return faultChain(env);
  };

  it('with the cache, a repeated chain of 16 MiB intermediates runs without re-faulting its pages', () => {
    const on = child({ TIM_TORCH_CPU_CACHE: 'on' });
    expect(on.installed).toBe(true);
    expect(on.faults).toBeLessThan(0.05 * 4 * 4096);
    const off = child({ TIM_TORCH_CPU_CACHE: 'off' });
    expect(off.installed).toBe(false);
  }, 60_000);

  it('the native check refuses a huge-page threshold that is not 0 or an integer >= 2 MiB', () => {
    for (const bad of [-1, 4096, 2 ** 20, 2 ** 21 + 0.5, Number.NaN, undefined]) {
      expect(() => native.cpuCacheInstall(CPU_CACHE_MIN_BYTES, CPU_CACHE_SLACK, bad as number)).toThrow(/hugeBytes must be 0 or an integer number of bytes >= 2 MiB/);
    }
  });

  const hugeChild = (mode: 'on' | 'off') => JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'test', 'fixtures', 'huge-pages-child.mts')], {
    cwd: repo, env: { ...process.env, TIM_TORCH_CPU_CACHE: 'on', TIM_TORCH_CPU_CACHE_HUGEPAGES: mode }, encoding: 'utf8',
  }).trim().split('\n').at(-1)!) as { hugeMapped: number; mapped: number; anonHuge: number; faults: number; first: number; second: number };

  it('large blocks are advised to use huge pages: where the kernel grants them, a block faulted in again costs a fraction of the faults', () => {
    const n = 16 * 2 ** 20;
    const on = hugeChild('on');
    const off = hugeChild('off');
    for (const r of [on, off]) { expect(r.first).toBe(n); expect(r.second).toBe(3 * n); }
    expect(on.hugeMapped).toBeGreaterThanOrEqual(1);
    expect(off.hugeMapped).toBe(0);
    const pages = (64 * 2 ** 20) / 4096;
    expect(off.faults).toBeGreaterThan(0.9 * pages); // 4 KiB pages: one fault each
    const thp = (() => { try { return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))![1]; } catch { return 'never'; } })();
    if (thp !== 'never') {
      // the kernel may refuse a huge page when its memory is fragmented, but not all 32 of them
      expect(on.anonHuge).toBeGreaterThan(0);
      expect(on.faults).toBeLessThan(0.5 * off.faults);
    } else {
      expect(on.anonHuge).toBe(0); // the advice is harmless where THP is off
    }
  }, 60_000);

  it('a bad value stops the load with one clear message', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', `import(${JSON.stringify(join(repo, 'lib', 'index.ts'))})`], {
      cwd: repo, env: { ...process.env, TIM_TORCH_CPU_CACHE: 'maybe' }, encoding: 'utf8',
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/TIM_TORCH_CPU_CACHE must be 'on' \(the default\) or 'off', got 'maybe'/);
  }, 60_000);
});

/**
 * A training step must not grow the process's memory from step to step while the tensors it holds
 * stay the same (issue "Training step memory and time"; docs/memory.md, "Training-step memory").
 * A small TiM trains for 20 steps in a fresh child process (RSS of this test process would mix in
 * other tests' memory); after warm-up (TorchScript's profiling runs, AdamW's lazily created state,
 * the allocator settling) the live tensors must be flat and the RSS must not keep growing.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

interface Row { step: number; rss: number; live: number }

describe('training-step memory', () => {
  it('RSS stays flat across steps while live tensors are flat', () => {
    const steps = 20, warm = 5;
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/train-memory-child.mts', String(steps)], {
      encoding: 'utf8', timeout: 110_000, env: process.env,
    });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Row);
    expect(rows).toHaveLength(steps);
    const after = rows.slice(warm);
    // live tensors: the same after every step once AdamW's state exists (step 1 on)
    expect(new Set(rows.slice(1).map((x) => x.live)).size, JSON.stringify(rows.map((x) => x.live))).toBe(1);
    // RSS after warm-up: no growth beyond 5% (+16 MiB of slack for the JS heap and allocator noise)
    const base = after[0]!.rss, last = Math.max(...after.slice(-5).map((x) => x.rss));
    expect(last - base, `RSS MiB per step: ${rows.map((x) => x.rss.toFixed(0)).join(' ')}`).toBeLessThan(0.05 * base + 16);
  });
});

/**
 * Checkpoint loading: tim-torch's memory-mapped safetensors reader versus Python's torch.load of the
 * same tensors saved with torch.save, side by side in one run.
 *
 *   node --import tsx bench/safetensors-load.ts [--size-mb 1024] [--runs 3]
 *
 * Both files are written to a temporary folder (deleted at the end) and read once before timing,
 * so both sides read from the page cache. Each run interleaves Node and Python; medians are
 * reported. Two workloads: "touch" reads one element of every tensor (what a lazy, mmap-backed
 * load costs before the weights are used), "read all" sums every tensor (every byte paged in).
 * Python's time excludes interpreter start and `import torch`. One intra-op thread on both sides.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { torch } from '../lib/index.js';

const PYTHON = process.env.TIM_TORCH_PYTHON ?? '/usr/bin/python3';
const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const arg = (name: string, d: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : d;
};
const sizeMb = arg('size-mb', 1024);
const runs = arg('runs', 3);
const ROWS = 1024, COLS = 1024; // 4 MiB float32 tensors, like large weight matrices
const n = Math.max(1, Math.round((sizeMb * 2 ** 20) / (ROWS * COLS * 4)));

torch.setNumThreads(1);
const dir = mkdtempSync(join(tmpdir(), 'tim-bench-st-'));
const stPath = join(dir, 'weights.safetensors');
const ptPath = join(dir, 'weights.pt');

function py(...args: string[]): string {
  return execFileSync(PYTHON, [join(here, 'safetensors-load.py'), ...args], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, maxBuffer: 1 << 20,
  });
}

function nodeLoad(mode: 'one' | 'all', lazy: boolean): { ms: number; check: number } {
  const t0 = performance.now();
  const r = torch.load(stPath, { lazy });
  let check = 0;
  for (const t of Object.values(r)) {
    if (mode === 'one') {
      const flat = t.reshape([-1]);
      const e = flat.index(0);
      check += e.item();
      e.dispose();
      flat.dispose();
    } else {
      const s = t.sum();
      check += s.item();
      s.dispose();
    }
  }
  const ms = performance.now() - t0;
  for (const t of Object.values(r)) t.dispose();
  return { ms, check };
}

function pyLoad(mode: 'one' | 'all'): { ms: number; check: number } {
  return JSON.parse(py('load', ptPath, mode)) as { ms: number; check: number };
}

const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  // The same tensors on both sides: tensor i is filled with i.
  const rec: Record<string, torch.Tensor> = {};
  for (let i = 0; i < n; i++) rec[`blocks.${String(i).padStart(4, '0')}.weight`] = torch.full([ROWS, COLS], i);
  torch.save(rec, stPath);
  for (const t of Object.values(rec)) t.dispose();
  py('write', ptPath, String(n), String(ROWS), String(COLS));
  const mib = (p: string): string => (statSync(p).size / 2 ** 20).toFixed(0);
  console.log(`safetensors-load: ${n} float32 tensors [${ROWS}, ${COLS}]; safetensors ${mib(stPath)} MiB, torch.save ${mib(ptPath)} MiB; ${runs} runs, medians, 1 thread`);

  // warm the page cache for both files (and check both sides see the same values)
  const wantOne = (n * (n - 1)) / 2;
  const w1 = nodeLoad('one', true), w2 = pyLoad('one');
  if (w1.check !== wantOne || w2.check !== wantOne) throw new Error(`value mismatch: node ${w1.check}, python ${w2.check}, want ${wantOne}`);

  const rows: [string, number[], number[]][] = [
    ['load + touch every tensor', [], []],
    ['load + read every byte', [], []],
    ['  (lazy: false, copy) + touch', [], []],
  ];
  for (let r = 0; r < runs; r++) {
    // interleaved, alternating who goes first
    const order = r % 2 === 0 ? ['node', 'py'] : ['py', 'node'];
    for (const who of order) {
      if (who === 'node') {
        rows[0]![1].push(nodeLoad('one', true).ms);
        const all = nodeLoad('all', true);
        if (all.check !== wantOne * ROWS * COLS) throw new Error(`node sum mismatch ${all.check}`);
        rows[1]![1].push(all.ms);
        rows[2]![1].push(nodeLoad('one', false).ms);
      } else {
        const one = pyLoad('one');
        rows[0]![2].push(one.ms);
        rows[2]![2].push(one.ms);
        const all = pyLoad('all');
        if (all.check !== wantOne * ROWS * COLS) throw new Error(`python sum mismatch ${all.check}`);
        rows[1]![2].push(all.ms);
      }
    }
  }
  const pad = (s: string, w: number): string => s.padStart(w);
  console.log(`${'workload'.padEnd(32)}${pad('tim-torch ms', 14)}${pad('python ms', 12)}${pad('ratio', 9)}  goal`);
  const summary: Record<string, { node: number; python: number; ratio: number }> = {};
  for (const [name, nodeMs, pyMs] of rows) {
    const a = median(nodeMs), b = median(pyMs);
    const ratio = b / a;
    summary[name.trim()] = { node: a, python: b, ratio };
    const goal = name.startsWith('load +') ? (ratio >= 2 ? '>= 2x: met' : '>= 2x: MISSED') : '';
    console.log(`${name.padEnd(32)}${pad(a.toFixed(1), 14)}${pad(b.toFixed(1), 12)}${pad(ratio.toFixed(1) + 'x', 9)}  ${goal}`);
  }
  if (argv.includes('--json')) console.log(JSON.stringify({ name: 'safetensors-load', tensors: n, sizeMb, runs, summary }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}

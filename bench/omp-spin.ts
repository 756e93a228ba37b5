/**
 * How long idle OpenMP workers spin, measured on the demo's network: a TiM forward (no grad) and a
 * forward + backward at batch 64 (patch 8, hidden 192, depth 6: many small parallel ops, where the
 * cost of waking sleeping workers shows), in fresh Node processes under each policy, and the official
 * network's eager forward + backward in Python (test/fixtures/tim_reference.py, TIM_TORCH_PYTHON, with
 * Python's own environment) as the reference. Processes run round-robin, so load bursts hit every
 * policy alike; medians per policy over the rounds.
 *
 *   TIM_TORCH_ADDON=<addon> npx tsx bench/omp-spin.ts [--rounds 3] [--threads 2] [--reps 10] [--load N]
 *
 * --load N runs N busy processes (a spinning loop each) during the measurements: a shared machine, the
 * case for which the package once chose PASSIVE (spinning workers competing with other processes).
 *
 * Policies (libgomp reads them once, at load, so each needs its own process):
 *   GOMP_SPINCOUNT=10000   the package default (lib/torch/native.ts envDefaults)
 *   OMP_WAIT_POLICY=PASSIVE  the package's earlier default: workers sleep at once
 *   unset                  libgomp's own default (300,000 spins)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

import { benchDir, cliArgs, median } from './harness.js';
import { writeFileAtomic } from '../lib/torch/io/atomic.js';

const a = cliArgs();
const threads = a.num('threads') ?? 2;
const reps = a.num('reps') ?? 10;

if (a.flag('child')) {
  const { TiM, torch } = await import('../lib/index.js');
  const { demoNetwork } = await import('../lib/cli/demo/recipe.js');
  const { fromOfficialConfig } = await import('../lib/tim/network/config.js');
  torch.setNumThreads(threads);
  torch.manualSeed(0);
  const model = TiM.create(fromOfficialConfig(demoNetwork('demo')), { init: 'official' });
  model.train();
  const B = 64;
  const x = torch.randn([B, 1, 32, 32]), y = torch.randint(0, 10, [B], { dtype: 'int64' });
  const t = torch.rand([B]), r = torch.rand([B]).mul(t);
  const time = (f: () => void): number => {
    for (let i = 0; i < 3; i++) f();
    const ms: number[] = [];
    for (let i = 0; i < reps; i++) { const t0 = performance.now(); f(); ms.push(performance.now() - t0); }
    return median(ms);
  };
  const fwd = time(() => torch.scope(() => torch.noGrad(() => { model.forward(x, t, r, y); })));
  const fb = time(() => torch.scope(() => {
    model.forward(x, t, r, y).square().mean().backward();
  }));
  process.stdout.write(JSON.stringify({ fwd, fb }) + '\n');
  process.exit(0);
}

const PY = `
import sys, time, json, torch
sys.path.insert(0, sys.argv[1])
from tim_reference import TiM
torch.set_num_threads(${threads}); torch.manual_seed(0)
m = TiM(**json.loads(sys.argv[2])); m.train()
B = 64
x = torch.randn(B, 1, 32, 32); y = torch.randint(0, 10, (B,)); t = torch.rand(B); r = torch.rand(B) * t
def tm(f):
    for _ in range(3): f()
    ms = []
    for _ in range(${reps}):
        t0 = time.perf_counter(); f(); ms.append((time.perf_counter() - t0) * 1e3)
    return sorted(ms)[len(ms) // 2]
def fwd():
    with torch.no_grad(): m(x, t, r, y)
def fb():
    m(x, t, r, y).square().mean().backward()
print(json.dumps({"fwd": tm(fwd), "fb": tm(fb)}))
`;

const { appliedEnvDefaults } = await import('../lib/torch/native.js');
const { demoNetwork } = await import('../lib/cli/demo/recipe.js');
const base = { ...process.env };
for (const k of Object.keys(appliedEnvDefaults)) delete base[k];
delete base.OMP_WAIT_POLICY;
delete base.GOMP_SPINCOUNT;
const policies: { label: string; env: NodeJS.ProcessEnv }[] = [
  { label: 'GOMP_SPINCOUNT=10000 (package)', env: { ...base, GOMP_SPINCOUNT: '10000' } },
  { label: 'OMP_WAIT_POLICY=PASSIVE', env: { ...base, OMP_WAIT_POLICY: 'PASSIVE' } },
  { label: 'unset (libgomp: 300,000 spins)', env: { ...base, TIM_TORCH_NO_ENV_DEFAULTS: '1', TIM_TORCH_NUM_THREADS: String(threads) } },
];
const python = process.env.TIM_TORCH_PYTHON ?? join(benchDir, '..', '.venv', 'torch2', 'bin', 'python');
const rounds = a.num('rounds') ?? 3;
const load = a.num('load') ?? 0;
const burners: ChildProcess[] = Array.from({ length: load }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
process.on('exit', () => burners.forEach((b) => b.kill('SIGKILL')));
const res: Record<string, { fwd: number[]; fb: number[] }> = {};
const add = (k: string, v: { fwd: number; fb: number }): void => {
  res[k] ??= { fwd: [], fb: [] };
  res[k]!.fwd.push(v.fwd);
  res[k]!.fb.push(v.fb);
};
for (let round = 0; round < rounds; round++) {
  for (const p of policies) {
    const out = spawnSync(process.execPath, ['--import', 'tsx', join(benchDir, 'omp-spin.ts'), '--child', '--threads', String(threads), '--reps', String(reps)], { env: p.env, encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`child (${p.label}) failed: ${out.stderr}`);
    add(p.label, JSON.parse(out.stdout.trim().split('\n').pop()!) as { fwd: number; fb: number });
  }
  const py = spawnSync(python, ['-c', PY, join(benchDir, '..', 'test', 'fixtures'), JSON.stringify(demoNetwork('demo'))], { env: base, encoding: 'utf8' });
  if (py.status !== 0) throw new Error(`python failed: ${py.stderr}`);
  add('Python eager (its own environment)', JSON.parse(py.stdout.trim()) as { fwd: number; fb: number });
}
burners.forEach((b) => b.kill('SIGKILL'));
const ref = res[policies[0]!.label]!;
const lines = [`OpenMP wait policy, demo network (batch 64), ${threads} threads, ${rounds} rounds x ${reps} reps, ${load} busy processes beside, medians; ratio = policy / package default`, '',
  '| policy | forward ms | ratio | forward+backward ms | ratio |', '|---|---:|---:|---:|---:|'];
for (const [k, v] of Object.entries(res)) {
  lines.push(`| ${k} | ${median(v.fwd).toFixed(1)} | ${(median(v.fwd) / median(ref.fwd)).toFixed(2)} | ${median(v.fb).toFixed(1)} | ${(median(v.fb) / median(ref.fb)).toFixed(2)} |`);
}
const text = lines.join('\n') + '\n';
process.stdout.write(text);
const { buildInfo } = await import('../lib/torch/state.js');
const tag = buildInfo().torchVersion.startsWith('1.') ? '1.13' : '2.x';
writeFileAtomic(join(benchDir, 'results', `omp-spin-${tag}${load ? `-load${load}` : ''}.json`), JSON.stringify({ name: 'omp-spin', date: new Date().toISOString(), threads, rounds, reps, load, text, libtorch: buildInfo().torchVersion, results: res }, null, 1) + '\n');

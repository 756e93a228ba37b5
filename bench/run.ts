/**
 * Benchmark entry: `npm run bench [-- --quick] [-- --only perop,threads] [-- --out DIR]`.
 * Each benchmark runs Node and Python (Debian python3-torch, same libtorch) side by side in one run,
 * interleaved, and reports medians; tables go to stdout, results to bench/results/<name>.json.
 */
import { formatTable, writeResult, benchDir, type Options, type Result } from './harness.js';
import { join } from 'node:path';
import { existsSync } from 'node:fs';

type Bench = { run(o: Options): Promise<Result> };
/** The default suite (the foundation benchmarks). */
const BENCHES: Record<string, () => Promise<Bench>> = {
  perop: () => import('./perop.js'),
  throughput: () => import('./throughput.js'),
  memory: () => import('./memory.js'),
  threads: () => import('./threads.js'),
};
/**
 * Longer or machine-specific benchmarks, run by name (`--only jvp`); any other bench/<name>.ts that
 * exports run(options) can be named too. jvp writes jvp-<libtorch major.minor>.json; cuda needs a GPU
 * (it writes a result saying it was skipped otherwise).
 */
const EXTRA: Record<string, string> = {
  'jvp': "JVP derivative 'forward' vs 'double-backward', attention 'math' vs 'sdpa' (one process, A/B)",
  'train-step': 'TiM training step vs Python (fp32, bf16, memory)',
  'sampler': 'sample() images/s vs the official sampler in Python, 1 and 8 NFE',
  'tim-forward-backward': 'TiM forward + backward vs the eager Python model',
  'cuda': 'GPU: TiM-XL/2 bf16 training step and 1/8-NFE sampling vs Python (scripts/gpu-check.sh)',
};
const load = (name: string): Promise<Bench> => {
  if (BENCHES[name]) return BENCHES[name]!();
  if (!/^[\w-]+$/.test(name) || !existsSync(join(benchDir, `${name}.ts`))) {
    const extra = Object.entries(EXTRA).map(([k, v]) => `  ${k}: ${v}`).join('\n');
    throw new Error(`unknown benchmark '${name}' (default suite: ${Object.keys(BENCHES).join(', ')}; by name:\n${extra}\nor any bench/<name>.ts exporting run())`);
  }
  return import(`./${name}.js`) as Promise<Bench>;
};

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(`--${name}`);
const value = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
};

const quick = flag('quick');
const only = value('only')?.split(',') ?? Object.keys(BENCHES);
const out = value('out') ?? join(benchDir, 'results');
const t0 = performance.now();
let misses = 0;
for (const name of only) {
  const r = await (await load(name)).run({ quick });
  misses += r.rows.filter((x) => x.status === 'MISS').length;
  console.log(formatTable(r));
  console.log(`  -> ${writeResult(r, out)}\n`);
}
console.log(`bench: ${only.length} benchmark(s) in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${misses} goal(s) missed${quick ? ' (quick mode: small sizes, not for quoting)' : ''}`);

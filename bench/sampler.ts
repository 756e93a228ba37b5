/**
 * Sampling throughput (images/s) of the any-step sampler, tim-torch's sample() versus a Python
 * implementation of the official TiM sampler (bench/py/sampler.py), side by side in one run on the
 * same libtorch and the same intra-op thread count, at 1 and 8 NFE. Goal: throughput ratio >= 1.0.
 *
 *   npx tsx bench/sampler.ts [--quick] [--threads N] [--out DIR]
 *
 * The network is a small C2I TiM built by TiM.create (official init, random weights) and saved as
 * TorchScript; Python runs torch.jit.load of that very archive, so both sides execute the same graph
 * and the comparison measures the sampler around it. Both sides start from the same z and labels
 * (written to files) and their final samples are compared. Calls alternate one by one, and which side
 * goes first alternates too. The goal row compares images per CPU-second (process CPU time, one
 * intra-op thread on each side), which a loaded machine distorts far less than wall time; wall-time
 * medians and best calls are reported beside it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TiM, torch, transports } from '../lib/index.js';
import { sample, type SampleOptions } from '../lib/tim/sampling/sampler.js';
import { formatTable, median, newResult, ratioRow, writeResult, type Options, type Result, startPyScript, cliArgs } from './harness.js';

/** A small TiM: 256 wide, 6 blocks, 16×16×4 latents in 2×2 patches (64 tokens). */
const SMALL = {
  inputSize: 16, patchSize: 2, inChannels: 4, hiddenSize: 256, depth: 6, numHeads: 4, encoderDepth: 2, zDim: 64,
  projectorDim: 256, numClasses: 1000, qkNorm: true, newCondition: 't-r', useNewEmbed: true, distanceAware: true,
  loraHiddenSize: 128,
} as const;

/** The sampler settings of each case: the official script's guidance (scale 1.5, window 0..1). */
const RUNS = {
  nfe1: { num_steps: 1, cfg_scale: 1.5, cfg_low: 0.0, cfg_high: 1.0, stochasticity_ratio: 0.0, sample_type: 'transition' },
  nfe8: { num_steps: 8, cfg_scale: 1.5, cfg_low: 0.0, cfg_high: 1.0, stochasticity_ratio: 0.0, sample_type: 'transition' },
} as const;

interface PyWorker {
  info: Record<string, unknown>;
  run(name: string, reps: number, finalPath: string): Promise<{ ms: number[]; cpu: number[] }>;
  close(): void;
}

async function startPython(cfg: Record<string, unknown>): Promise<PyWorker> {
  const py = await startPyScript('py/sampler.py', cfg);
  return {
    info: py.info,
    async run(name, reps, finalPath) {
      const r = await py.request(JSON.stringify({ run: name, reps, final: finalPath }));
      return { ms: r.ms as number[], cpu: r.cpu_ms as number[] };
    },
    close: () => py.close(JSON.stringify({ quit: true })),
  };
}

function options(name: keyof typeof RUNS, z: torch.Tensor, y: torch.Tensor): SampleOptions {
  const r = RUNS[name];
  return {
    z, y, numSteps: r.num_steps, cfgScale: r.cfg_scale, cfgLow: r.cfg_low, cfgHigh: r.cfg_high,
    stochasticityRatio: r.stochasticity_ratio, sampleType: r.sample_type,
  };
}

export async function run(o: Options): Promise<Result> {
  const threads = o.threads ?? 1;
  const batch = o.quick ? 2 : 8;
  const calls1 = o.quick ? 2 : 30;
  const calls8 = o.quick ? 2 : 14;
  torch.setNumThreads(threads);
  const dir = mkdtempSync(join(tmpdir(), 'tim-bench-sampler-'));
  // eval mode, as the official sampling script (sample() would switch to it for the run anyway)
  const model = TiM.create(SMALL).eval();
  const ot = new transports.OTFM();
  torch.manualSeed(0);
  const z = torch.randn([batch, SMALL.inChannels, SMALL.inputSize, SMALL.inputSize]);
  const y = torch.randint(0, SMALL.numClasses, [batch], { dtype: 'int64' });
  const r = newResult('sampler', `sample(): images/s, batch ${batch}, small TiM (${(model.numParameters() / 1e6).toFixed(1)}M params, 16x16x4 latents)`, o.quick,
    { threads, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? null, batch, calls: { nfe1: calls1, nfe8: calls8 }, cfg: '1.5 on [cond; uncond], window 0..1', transport: 'OTFM', python: 'official sampler algorithm (bench/py/sampler.py) over torch.jit.load of our saved TiM' });
  let py: PyWorker | null = null;
  try {
    model.save(join(dir, 'tim.pt'));
    writeFileSync(join(dir, 'z.bin'), z.toTypedArray() as Float32Array);
    writeFileSync(join(dir, 'y.bin'), y.toTypedArray() as BigInt64Array);
    py = await startPython({
      model: join(dir, 'tim.pt'), z: join(dir, 'z.bin'), y: join(dir, 'y.bin'), shape: z.shape, threads, null_class: SMALL.numClasses, runs: RUNS,
    });
    for (const name of Object.keys(RUNS) as (keyof typeof RUNS)[]) {
      const opts = options(name, z, y);
      const finalPy = join(dir, `${name}.py.bin`);
      const node: number[] = [], python: number[] = [], nodeCpu: number[] = [], pyCpu: number[] = [];
      const nodeRound = (n: number, into: number[], intoCpu: number[]): void => {
        for (let i = 0; i < n; i++) {
          const c0 = process.cpuUsage();
          const t0 = performance.now();
          sample(model, ot, opts).dispose();
          into.push(performance.now() - t0);
          const c = process.cpuUsage(c0);
          intoCpu.push((c.user + c.system) / 1000);
        }
      };
      const pyRound = async (): Promise<void> => {
        const r = await py!.run(name, 1, finalPy);
        python.push(...r.ms);
        pyCpu.push(...r.cpu);
      };
      // untimed warm-up on both sides (the first TorchScript calls profile and optimise the graph)
      nodeRound(2, [], []);
      await py.run(name, 2, finalPy);
      // one call at a time, alternating which side goes first: on a shared machine the load drifts
      // over seconds, and fine interleaving gives both sides the same conditions
      const calls = RUNS[name].num_steps === 1 ? calls1 : calls8;
      for (let k = 0; k < calls; k++) {
        if (k % 2 === 0) { nodeRound(1, node, nodeCpu); await pyRound(); }
        else { await pyRound(); nodeRound(1, node, nodeCpu); }
      }
      const steps = RUNS[name].num_steps;
      const ips = (ms: number): number => batch / (ms / 1000);
      // Per CPU-second (one intra-op thread): on a shared, oversubscribed machine wall time mostly
      // measures how long each process waited for a core; CPU time measures the work. On an idle
      // machine with one thread the two coincide.
      r.rows.push(ratioRow(`${steps} NFE, images/CPU-s (median)`, ips(median(nodeCpu)), ips(median(pyCpu)), { min: 1.0, text: 'ratio >= 1.0' }, 'img/s'));
      r.rows.push(ratioRow(`${steps} NFE, images/s wall (median)`, ips(median(node)), ips(median(python)), { text: 'info' }, 'img/s'));
      r.rows.push(ratioRow(`${steps} NFE, images/s wall (best call)`, ips(Math.min(...node)), ips(Math.min(...python)), { text: 'info' }, 'img/s'));
      // same z, same graph: the two samplers must agree
      const mine = sample(model, ot, opts);
      const theirs = torch.fromBuffer(readFileSync(finalPy), 'float32', mine.shape, { copy: true });
      const diff = torch.scope(() => mine.sub(theirs).abs().max().item());
      mine.dispose();
      theirs.dispose();
      r.notes.push(`${steps} NFE: final samples (same z, same graph) differ by max ${diff.toExponential(2)}`);
      r.notes.push(`${steps} NFE: per-call wall ms, Node ${node.map((x) => x.toFixed(0)).join(' ')}; Python ${python.map((x) => x.toFixed(0)).join(' ')}`);
      r.notes.push(`${steps} NFE: per-call CPU ms, Node ${nodeCpu.map((x) => x.toFixed(0)).join(' ')}; Python ${pyCpu.map((x) => x.toFixed(0)).join(' ')}`);
    }
    r.notes.push(`Python: torch ${String(py.info.torch)}, threads ${String(py.info.threads)}; Node threads ${torch.getNumThreads()}`);
  } finally {
    py?.close();
    model.dispose();
    z.dispose();
    y.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).str;
  const res = await run({ quick: argv.includes('--quick'), threads: val('threads') ? Number(val('threads')) : undefined });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, val('out'))}`);
}

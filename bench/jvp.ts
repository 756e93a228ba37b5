/**
 * Two implementation choices of libtorch 2.x, each measured side by side in one process (A, B, B, A,
 * ... after warm-up; medians; the ratio is the median of per-rep B/A ratios):
 *
 *   JVP derivative   jvpDerivative (lib/tim/objective/derivative.ts) with jvpMethod 'forward' (forward-mode AD,
 *                    torch.autograd.jvp) vs 'double-backward', on the transition rows of a batch; and
 *                    a whole TransitionLoss (derivativeType 'jvp') forward + backward with each method.
 *   attention        TiM forward + backward with attention 'sdpa' (aten::scaled_dot_product_attention)
 *                    vs 'math' (the TorchScript softmax(q kᵀ) v), same weights. libtorch 2.x only: 1.13
 *                    has no SDPA op, the rows say so.
 *
 * Both sides of every comparison run in the same process with the same intra-op thread count, on a
 * TiM of hidden 256, depth 4, 4 heads, patch 2, 32×32×4 latents (256 tokens), batch 16 by default.
 * The two JVP methods must agree (max |difference| printed in the notes), and so must the two
 * attention implementations. The result is written as jvp-<libtorch major.minor>.json.
 *
 *   npx tsx bench/jvp.ts [--quick] [--hidden 256] [--depth 4] [--heads 4] [--patch 2] [--input 32]
 *       [--batch 16] [--threads 1] [--reps 8] [--out DIR]
 */
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { TiM, torch, TransitionLoss, transports } from '../lib/index.js';
import { defaultAttention, preset, type TiMConfig } from '../lib/tim/network/index.js';
import { jvpDerivative, jvpMethodDefault, type JvpMethod } from '../lib/tim/objective/derivative.js';
import { pathAt } from '../lib/tim/objective/loss.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { formatTable, median, newResult, pairedRatio, writeResult, type Result, type Row, cliArgs } from './harness.js';

export interface JvpBenchOptions {
  quick: boolean;
  hidden?: number; depth?: number; heads?: number; patch?: number; input?: number; batch?: number;
  threads?: number; reps?: number;
}

interface Samples { wall: number[]; cpu: number[] }

/** `reps` timed calls of a and b, alternating which goes first, after `warmup` untimed calls of each. */
function abTime(a: () => void, b: () => void, reps: number, warmup: number): { a: Samples; b: Samples } {
  for (let i = 0; i < warmup; i++) { a(); b(); }
  const res = { a: { wall: [] as number[], cpu: [] as number[] }, b: { wall: [] as number[], cpu: [] as number[] } };
  const one = (fn: () => void, s: Samples): void => {
    const c0 = process.cpuUsage(); const t0 = performance.now();
    fn();
    s.wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0); s.cpu.push((c.user + c.system) / 1e3);
  };
  for (let r = 0; r < reps; r++) {
    if (r % 2 === 0) { one(a, res.a); one(b, res.b); } else { one(b, res.b); one(a, res.a); }
  }
  return res;
}

/** Rows for one A/B comparison: wall and CPU medians, ratio B/A (paired). Columns: A, B. */
function abRows(name: string, s: { a: Samples; b: Samples }): Row[] {
  const row = (what: string, a: number[], b: number[]): Row => ({
    case: `${name}, ${what}`, node: median(a), python: median(b), unit: 'ms', ratio: pairedRatio(b, a), goal: 'info', status: 'INFO',
  });
  return [row('wall (median)', s.a.wall, s.b.wall), row('CPU time (median)', s.a.cpu, s.b.cpu)];
}

const ms = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(' ');

export async function run(o: JvpBenchOptions): Promise<Result> {
  const threads = o.threads ?? 1;
  const batch = o.batch ?? 16;
  const reps = o.reps ?? (o.quick ? 2 : 8);
  const warmup = o.quick ? 1 : 2;
  torch.setNumThreads(threads);
  const info = torch.buildInfo();
  const version = `${info.torchMajor}.${info.torchMinor}`;
  const hasSdpa = torch.libtorchAtLeast(2, 0);
  const config: TiMConfig = {
    ...preset('TiM-B/4'), hiddenSize: o.hidden ?? 256, depth: o.depth ?? 4, numHeads: o.heads ?? 4, patchSize: o.patch ?? 2,
    inputSize: o.input ?? 32, inChannels: 4, numClasses: 10, encoderDepth: Math.min(2, o.depth ?? 4), classDropoutProb: 0.1,
    zDim: 64, projectorDim: 128,
  };
  const r = newResult(`jvp-${version}`, `JVP derivative 'forward' vs 'double-backward'; attention 'math' vs 'sdpa' (libtorch ${info.torchVersion}; TiM hidden ${config.hiddenSize}, depth ${config.depth}, patch ${config.patchSize}, ${config.inputSize}x${config.inputSize}x4, batch ${batch}, CPU)`, o.quick,
    { libtorch: info.torchVersion, hidden: config.hiddenSize, depth: config.depth, heads: config.numHeads, patch: config.patchSize, input: config.inputSize, batch, threads, reps, warmup,
      jvpMethodDefault: jvpMethodDefault(), env: Object.fromEntries(['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'OMP_WAIT_POLICY'].map((k) => [k, process.env[k] ?? null])) });
  r.columns = ['A ms', 'B ms'];
  r.notes.push('each row: A vs B in one process, same threads; ratio = median of per-rep B/A (> 1: A is faster)');

  // Random weights everywhere (the official init zeroes the adaLN gates, which makes the blocks trivial).
  torch.manualSeed(0);
  const model = TiM.create(config);
  model.train();
  torch.scope(() => {
    const rec: Record<string, Tensor> = {};
    for (const [k, p] of model.namedParameters()) rec[k] = torch.randn(p.shape).mul(0.02);
    model.loadStateDict(rec);
  });
  const attention = defaultAttention(); // what TiM.create picked for 'auto'
  const transport = new transports.OTFM({ pMean: -0.4, pStd: 1.0 });
  const data = torch.scope(() => {
    const x = torch.randn([batch, 4, config.inputSize, config.inputSize]);
    const z = torch.randn([batch, 4, config.inputSize, config.inputSize]);
    const t = torch.rand([batch]).mul(0.8).add(0.1);
    const rr = t.mul(torch.rand([batch]));
    const { xT, vT } = pathAt(transport, x, z, t);
    return torch.keep({ x, z, t, r: rr, xT, vT, y: torch.randint(0, config.numClasses, [batch], { dtype: 'int64' }) });
  });
  const params = model.parameters();
  try {
    // ---- 1. the derivative alone, every row a transition row -----------------------------------------
    const network = (xT: Tensor, tIn: Tensor, rIn: Tensor, y: Tensor): Tensor => model.forward(xT, tIn, rIn, y);
    const derivative = (m: JvpMethod): Tensor => jvpDerivative({ network, transport, ...data, nDiffusion: 0, jvpMethod: m }).dFdvdt;
    torch.scope(() => {
      const f = derivative('forward'), d = derivative('double-backward');
      const diff = f.sub(d).abs().max().item(), scale = f.abs().max().item();
      r.notes.push(`derivative agreement: max |forward − double-backward| ${diff.toExponential(2)} (max |dF/dt| ${scale.toExponential(2)})`);
    });
    const der = abTime(() => torch.scope(() => { derivative('forward'); }), () => torch.scope(() => { derivative('double-backward'); }), reps, warmup);
    r.rows.push(...abRows(`jvpDerivative, ${batch} transition rows: A forward, B double-backward`, der));
    r.notes.push(`jvpDerivative wall ms, forward: ${ms(der.a.wall)}; double-backward: ${ms(der.b.wall)}`);

    // ---- 2. a whole loss step with each method (train-step settings: diffusion 0.5, consistency 0.1) ---
    const loss = (m: JvpMethod): TransitionLoss => new TransitionLoss(transport, {
      diffusionRatio: 0.5, consistencyRatio: 0.1, derivativeType: 'jvp', jvpMethod: m, weightTimeType: 'sqrt', weightTimeTangent: true,
    });
    const lf = loss('forward'), ld = loss('double-backward');
    const lossStep = (l: TransitionLoss): void => torch.scope(() => {
      l.compute({ model, x: data.x, z: data.z, y: data.y, useDirLoss: true }).weightedLoss.backward();
      for (const p of params) p.grad = null;
    });
    const step = abTime(() => lossStep(lf), () => lossStep(ld), reps, warmup);
    r.rows.push(...abRows(`TransitionLoss jvp + backward, batch ${batch}: A forward, B double-backward`, step));
    r.notes.push(`loss step wall ms, forward: ${ms(step.a.wall)}; double-backward: ${ms(step.b.wall)}`);
    const faster = median(der.a.cpu) <= median(der.b.cpu) ? 'forward' : 'double-backward';
    r.notes.push(`faster JVP method on libtorch ${info.torchVersion} (derivative CPU time): ${faster}; jvpMethodDefault() is '${jvpMethodDefault()}'`);

    // ---- 3. attention: sdpa vs math, forward + backward --------------------------------------------
    if (!hasSdpa) {
      // Only the math path exists: time it alone (no B side).
      const alone: number[] = [];
      for (let i = 0; i < warmup + reps; i++) {
        const t0 = performance.now();
        torch.scope(() => { model.forward(data.xT, data.t, data.r, data.y).square().mean().backward(); for (const p of params) p.grad = null; });
        if (i >= warmup) alone.push(performance.now() - t0);
      }
      r.rows.push({ case: `TiM fwd+bwd, batch ${batch}: A math, B sdpa (n/a on ${version}), wall (median)`, node: median(alone), python: null, unit: 'ms', ratio: null, goal: `info: no SDPA op in libtorch ${version}`, status: 'INFO' });
      r.notes.push(`attention: libtorch ${info.torchVersion} has only the math path (the model runs '${attention}')`);
      // Asking for sdpa here must fail, not silently fall back.
      try { TiM.create(config, { attention: 'sdpa' }).dispose(); r.notes.push("attention 'sdpa' on this libtorch: built (unexpected)"); } catch (e) { r.notes.push(`attention 'sdpa' on this libtorch: refused (${(e as Error).message.replace(/\s+/g, ' ').slice(0, 100)})`); }
    } else {
      const make = (impl: 'math' | 'sdpa'): TiM => {
        const m = TiM.create(config, { attention: impl });
        m.train();
        torch.scope(() => { m.loadStateDict(model.stateDict()); });
        return m;
      };
      const mm = make('math'), ms_ = make('sdpa');
      const pm = mm.parameters(), ps = ms_.parameters();
      try {
        const fb = (m: TiM, ps_: Tensor[]) => (): void => torch.scope(() => {
          m.forward(data.xT, data.t, data.r, data.y).square().mean().backward();
          for (const p of ps_) p.grad = null;
        });
        torch.scope(() => {
          const a = mm.forward(data.xT, data.t, data.r, data.y), b = ms_.forward(data.xT, data.t, data.r, data.y);
          r.notes.push(`attention agreement: max |math − sdpa| forward output ${a.sub(b).abs().max().item().toExponential(2)}`);
        });
        const att = abTime(fb(mm, pm), fb(ms_, ps), reps, warmup);
        r.rows.push(...abRows(`TiM fwd+bwd, batch ${batch}: A math, B sdpa`, att));
        r.notes.push(`attention fwd+bwd wall ms, math: ${ms(att.a.wall)}; sdpa: ${ms(att.b.wall)}`);
        const fwd = abTime(() => torch.scope(() => { torch.noGrad(() => mm.forward(data.xT, data.t, data.r, data.y)); }),
          () => torch.scope(() => { torch.noGrad(() => ms_.forward(data.xT, data.t, data.r, data.y)); }), reps, warmup);
        r.rows.push(...abRows(`TiM forward (no grad), batch ${batch}: A math, B sdpa`, fwd));
      } finally {
        for (const p of [...pm, ...ps]) p.dispose();
        mm.dispose(); ms_.dispose();
      }
    }
    r.notes.push(`model: ${(model.numParameters() / 1e6).toFixed(1)}M params, default attention '${attention}'; threads ${torch.getNumThreads()}; CPU ${os.cpus()[0]?.model ?? '?'}`);
  } finally {
    for (const p of params) p.dispose();
    for (const t of Object.values(data)) t.dispose();
    model.dispose();
  }
  r.machine.loadavg = os.loadavg().map((x) => +x.toFixed(2));
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const val = cliArgs(argv).num;
  const res = await run({
    quick: argv.includes('--quick'), hidden: val('hidden'), depth: val('depth'), heads: val('heads'), patch: val('patch'), input: val('input'),
    batch: val('batch'), threads: val('threads'), reps: val('reps'),
  });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, cliArgs(argv).str('out'))}`);
}

/**
 * CUDA. Which half runs depends on the machine, and each half asserts real behaviour:
 *
 * - no usable CUDA device (CPU-only libtorch, or a CUDA build on a machine without a GPU — CI and
 *   the development VM): every way of asking for 'cuda' fails at once with a TorchError of code
 *   E_DEVICE (tensors, creation, modules, TiM, autocast, synchronize), the failed request changes
 *   nothing (the model still runs on the CPU), no tensor leaks; NCCL is absent from CPU-only builds.
 *   With TIM_TORCH_EXPECT_CUDA_BUILD=1 (CI's CUDA leg) the addon must be a CUDA build with NCCL.
 * - a CUDA device (scripts/gpu-check.sh runs this file there): the golden forward and sampler cases
 *   on CUDA in float32, bf16 autocast training steps (finite loss, parameters move), a 1-rank NCCL
 *   all-reduce, live tensors back to their count after each.
 *
 * Tolerances on CUDA are looser than the CPU's 2e-6 / 1e-5: libtorch enables TF32 for cuDNN
 * convolutions by default (the patch embedding), and CUDA kernels reduce in another order.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, sample, torch, transports, EMA, TransitionLoss, VAE } from '../lib/index.js';
import { TorchError } from '../lib/torch/errors.js';
import * as dist from '../lib/torch/distributed/process_group.js';
import { freePort } from '../lib/torch/distributed/process_group.js';
import { preset, type TiMConfig } from '../lib/tim/network/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { get, GOLDEN_DIR, loadGolden, maxAbsDiff, type GoldenCase } from './helpers/golden.js';

const HAS_CUDA = torch.cuda.isAvailable();
/** Abs tolerance for the golden forward on CUDA (CPU: 2e-6): TF32 convolutions + reduction order. */
const CUDA_TOL_FORWARD = 5e-3;
/** Abs tolerance for the golden sampler trajectories on CUDA (CPU: 1e-5). */
const CUDA_TOL_SAMPLER = 1e-2;

/** A small C2I TiM: builds in a second. */
const TINY: TiMConfig = {
  ...preset('TiM-B/4'), inputSize: 8, patchSize: 2, inChannels: 4, hiddenSize: 32, depth: 2, numHeads: 2, encoderDepth: 1, zDim: 16,
  projectorDim: 32, numClasses: 10,
};

/** Runs a body in a scope and checks that it left the live tensor count where it was. */
function leakFree(fn: () => void | Promise<void>): () => Promise<void> {
  return async () => {
    const before = torch.memory().liveTensors;
    await torch.scopeAsync(async () => { await fn(); });
    expect(torch.memory().liveTensors, 'live tensors').toBe(before);
  };
}

/** The TorchError fn throws (failing the test when it does not throw, or throws something else). */
function torchErrorOf(fn: () => unknown): TorchError {
  let caught: unknown = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a TorchError').toBeInstanceOf(TorchError);
  return caught as TorchError;
}

describe('build info', () => {
  it('reports whether the addon was built against a CUDA libtorch, and CUDA availability agrees with the device count', () => {
    const info = torch.buildInfo();
    expect(typeof info.cudaBuild).toBe('boolean');
    const n = torch.cuda.deviceCount();
    expect(Number.isInteger(n) && n >= 0).toBe(true);
    expect(HAS_CUDA).toBe(n > 0);
    // A CPU-only libtorch can never see a device.
    if (!info.cudaBuild) expect(HAS_CUDA).toBe(false);
    // CI's CUDA leg (a pip torch 2.14 + CUDA 13 build made without a GPU) sets this: the build must say
    // it is one, on a libtorch 2.x, with NCCL compiled in (pip: nvidia/nccl's header)
    if (process.env.TIM_TORCH_EXPECT_CUDA_BUILD === '1') {
      expect(info.cudaBuild).toBe(true);
      expect(info.torchMajor).toBeGreaterThanOrEqual(2);
      expect(dist.isAvailable('nccl')).toBe(true);
    }
    expect(dist.isAvailable('gloo')).toBe(true);
    console.log(`cuda: build ${info.cudaBuild}, available ${HAS_CUDA}, devices ${n}, libtorch ${info.torchVersion}`);
  });
});

describe.runIf(!HAS_CUDA)('without a CUDA device: every request for cuda fails with E_DEVICE', () => {
  it('tensors: .to, .cuda, creation options, cuda:N', leakFree(() => {
    const x = torch.ones([2, 3]);
    for (const f of [
      () => x.to('cuda'), () => x.to('cuda:0'), () => x.to('cuda:1'), () => x.cuda(), () => x.to({ device: 'cuda', dtype: 'float16' }),
      () => torch.zeros([2], { device: 'cuda' }), () => torch.randn([2], { device: 'cuda' }), () => torch.tensor([1, 2], { device: 'cuda' }), () => torch.getRngState('cuda'),
    ]) {
      const e = torchErrorOf(f);
      expect(e.code).toBe('E_DEVICE');
      expect(e.message).toMatch(/cuda/);
    }
    // The source tensor is untouched and still on the CPU.
    expect(x.device).toBe('cpu');
    expect(x.sum().item()).toBe(6);
  }));

  it('a TiM (and its TorchScript module) refuses .to("cuda") and keeps working on the CPU', leakFree(() => {
    using model = TiM.create(TINY);
    model.eval();
    const x = torch.randn([2, 4, 8, 8]), t = torch.tensor([0.9, 0.5]), r = torch.tensor([0.4, 0.5]), y = torch.tensor([3, 7]);
    const before = torch.noGrad(() => model.forward(x, t, r, y));
    expect(torchErrorOf(() => model.to('cuda')).code).toBe('E_DEVICE');
    expect(torchErrorOf(() => model.module.to({ device: 'cuda', dtype: 'bfloat16' })).code).toBe('E_DEVICE');
    expect(torchErrorOf(() => TiM.create(TINY, { device: 'cuda' })).code).toBe('E_DEVICE');
    for (const p of model.parameters()) { expect(p.device).toBe('cpu'); expect(p.dtype).toBe('float32'); p.dispose(); }
    const after = torch.noGrad(() => model.forward(x, t, r, y));
    expect(maxAbsDiff(after, before)).toBe(0);
  }));

  it('VAE.load(dir, { device: "cuda" }) fails with E_DEVICE and holds nothing', leakFree(() => {
    for (const name of ['vae_kl_a', 'vae_dc_a']) {
      expect(torchErrorOf(() => VAE.load(join(GOLDEN_DIR, name), { device: 'cuda' })).code, name).toBe('E_DEVICE');
    }
  }));

  it('autocast on cuda and cuda.synchronize fail; CPU autocast still works and the state is restored', leakFree(() => {
    let ran = false;
    const e = torchErrorOf(() => torch.autocast({ device: 'cuda', dtype: 'bfloat16' }, () => { ran = true; }));
    expect(e.code).toBe('E_DEVICE');
    expect(ran).toBe(false);
    expect(torch.isAutocastEnabled('cuda')).toBe(false);
    expect(torchErrorOf(() => torch.cuda.synchronize()).code).toBe('E_DEVICE');
    const a = torch.randn([4, 4]);
    expect(torch.autocast({ device: 'cpu', dtype: 'bfloat16' }, () => a.matmul(a)).dtype).toBe('bfloat16');
    expect(torch.isAutocastEnabled('cpu')).toBe(false);
  }));

  it('NCCL: a CPU-only build has none, and init with it is refused', async () => {
    if (torch.buildInfo().cudaBuild) {
      // A CUDA build may carry NCCL; without a device there is nothing to run it on.
      expect(typeof dist.isAvailable('nccl')).toBe('boolean');
      return;
    }
    expect(dist.isAvailable('nccl')).toBe(false);
    const e = await dist.init({ backend: 'nccl', rank: 0, worldSize: 1, env: {}, masterPort: await freePort(), timeoutMs: 5000 })
      .then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(TorchError);
    expect((e as TorchError).code).toBe('E_DIST');
    expect(dist.isInitialized()).toBe(false);
  });
});

describe.runIf(HAS_CUDA)('on a CUDA device', () => {
  it('VAEs (AutoencoderKL, AutoencoderDC) encode and decode on cuda as on the CPU, float32 and bf16', leakFree(() => {
    for (const name of ['vae_kl_a', 'vae_dc_a']) {
      using cpu = VAE.load(join(GOLDEN_DIR, name));
      using gpu = VAE.load(join(GOLDEN_DIR, name), { device: 'cuda' });
      using half = VAE.load(join(GOLDEN_DIR, name), { device: 'cuda', dtype: 'bfloat16' });
      const f = cpu.downsampleFactor;
      const images = torch.rand([2, 3, 4 * f, 6 * f]).mul(2).sub(1);
      const z = cpu.encode(images).mean;
      const zGpu = gpu.encode(images.to('cuda')).mean;
      expect(String(zGpu.device)).toMatch(/^cuda/);
      const decoded = cpu.decode(z), decodedGpu = gpu.decode(z.to('cuda')), decodedBf16 = half.decode(z.to({ device: 'cuda', dtype: 'bfloat16' }));
      const errs = { encode: maxAbsDiff(zGpu.cpu(), z), decode: maxAbsDiff(decodedGpu.cpu(), decoded), decodeBf16: maxAbsDiff(decodedBf16.float().cpu(), decoded) };
      console.log(`${name} on cuda, max |diff| from the CPU:`, JSON.stringify(errs));
      expect(errs.encode, name).toBeLessThanOrEqual(CUDA_TOL_FORWARD);
      expect(errs.decode, name).toBeLessThanOrEqual(CUDA_TOL_FORWARD);
      expect(errs.decodeBf16, name).toBeLessThanOrEqual(0.1);
    }
  }));

  describe('golden forward on cuda, float32', () => {
    let inputs: Record<string, Tensor>, golden: Record<string, Tensor>;
    beforeAll(() => {
      const dir = join(GOLDEN_DIR, 'forward');
      inputs = torch.load(join(dir, 'inputs.safetensors'), { lazy: false });
      golden = torch.load(join(dir, 'outputs.safetensors'), { lazy: false });
    });
    afterAll(() => { for (const t of [...Object.values(inputs ?? {}), ...Object.values(golden ?? {})]) t.dispose(); });

    it('out and h_proj (square and non-square) within tolerance, on the device', leakFree(() => {
      using model = TiM.load(join(GOLDEN_DIR, 'forward', 'weights.safetensors'));
      model.eval().to('cuda');
      for (const p of model.parameters()) { expect(String(p.device)).toMatch(/^cuda/); p.dispose(); }
      const dev = (k: string): Tensor => get(inputs, k).to('cuda');
      const [x, t, r, y, xs] = ['x', 't', 'r', 'y', 'x_nonsquare'].map(dev) as [Tensor, Tensor, Tensor, Tensor, Tensor];
      const a = torch.noGrad(() => model.forward(x, t, r, y, { returnZs: true }));
      const b = torch.noGrad(() => model.forward(xs, t, r, y, { returnZs: true }));
      expect(String(a.out.device)).toMatch(/^cuda/);
      const errs = {
        out: maxAbsDiff(a.out.cpu(), get(golden, 'out')), hProj: maxAbsDiff(a.hProj.cpu(), get(golden, 'h_proj')),
        outNonSquare: maxAbsDiff(b.out.cpu(), get(golden, 'out_nonsquare')), hProjNonSquare: maxAbsDiff(b.hProj.cpu(), get(golden, 'h_proj_nonsquare')),
      };
      console.log('golden forward on cuda, max |diff|:', JSON.stringify(errs));
      for (const [k, v] of Object.entries(errs)) expect(v, k).toBeLessThanOrEqual(CUDA_TOL_FORWARD);
    }));
  });

  describe('golden sampler on cuda, float32', () => {
    let g: GoldenCase;
    beforeAll(() => { g = loadGolden('sampler'); });
    afterAll(() => g?.dispose());

    it('every golden run: final sample and F_pred within tolerance', leakFree(() => {
      using model = TiM.load(join(GOLDEN_DIR, 'sampler', 'weights.safetensors'));
      model.to('cuda');
      const ot = new transports.OTFM({ pMean: -0.4, pStd: 1.0 });
      const dev = (k: string): Tensor => get(g.inputs, k).to('cuda');
      const z = dev('z'), y = dev('y'), yNull = dev('y_null');
      let worst = { traj: 0, fPred: 0 };
      const runs = Object.entries<Record<string, any>>(g.meta.runs);
      expect(runs.length).toBe(32);
      for (const [name, run] of runs) {
        torch.scope(() => {
          // the trajectory (z first) and the per-step F, collected through onStep
          const traj: Tensor[] = [z.float()], fs: Tensor[] = [];
          const last = sample(model, ot, {
            z, y, yNull, numSteps: run.num_steps, tMax: 1.0, tMin: 0.0, cfgScale: run.cfg_scale, cfgLow: 0.0, cfgHigh: 0.6,
            stochasticityRatio: run.stochasticity_ratio, sampleType: run.sample_type,
            noise: run.eps_input ? dev(run.eps_input) : undefined,
            onStep: ({ x, F }) => { traj.push(x.float()); fs.push(F.clone()); },
          });
          expect(String(last.device), name).toMatch(/^cuda/);
          const dT = maxAbsDiff(torch.stack(traj, 0).cpu(), get(g.outputs, `${name}/traj`));
          const dF = maxAbsDiff(torch.stack(fs, 0).cpu(), get(g.outputs, `${name}/F_pred`));
          worst = { traj: Math.max(worst.traj, dT), fPred: Math.max(worst.fPred, dF) };
          expect(dT, `${name}/traj`).toBeLessThanOrEqual(CUDA_TOL_SAMPLER);
          expect(dF, `${name}/F_pred`).toBeLessThanOrEqual(CUDA_TOL_SAMPLER);
        });
      }
      console.log('golden sampler on cuda, worst max |diff| over 32 runs:', JSON.stringify(worst));
    }));
  });

  it('bf16 autocast training steps on cuda: finite loss, every trained parameter moves, memory flat', leakFree(() => {
    torch.manualSeed(0);
    using model = TiM.create({ ...TINY, hiddenSize: 64, numHeads: 4 }, { init: 'official', device: 'cuda' });
    model.train();
    const ema = new EMA(model, { decay: 0.999 });
    const params = model.parameters();
    const start = params.map((p) => p.detach().clone());
    const opt = new torch.optim.AdamW(params, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.01, eps: 1e-6 });
    const loss = new TransitionLoss(new transports.OTFM({ pMean: -0.4, pStd: 1.0 }), {
      diffusionRatio: 0.5, consistencyRatio: 0.1, derivativeType: 'dde', weightTimeType: 'sqrt', weightTimeTangent: true,
    });
    const x = torch.randn([8, 4, 8, 8], { device: 'cuda' });
    const y = torch.randint(0, 10, [8], { dtype: 'int64', device: 'cuda' });
    const losses: number[] = [];
    let live = -1;
    for (let i = 0; i < 4; i++) {
      torch.scope(() => {
        const out = torch.autocast({ device: 'cuda', dtype: 'bfloat16' }, () => {
          const o = loss.compute({ model, x, z: torch.randnLike(x), y, useDirLoss: true });
          expect(o.fPred.dtype).toBe('bfloat16');
          return o;
        });
        out.weightedLoss.backward();
        losses.push(out.weightedLoss.item());
      });
      torch.nn.utils.clipGradNorm_(params, 1.0);
      opt.step();
      opt.zeroGrad({ setToNone: true });
      ema.update(model);
      torch.cuda.synchronize();
      // after the first step (optimizer state allocated), the live count stays put
      if (i === 1) live = torch.memory().liveTensors;
      if (i > 1) expect(torch.memory().liveTensors, `live tensors after step ${i}`).toBe(live);
    }
    console.log('bf16 cuda steps, loss:', losses.map((v) => v.toFixed(4)).join(' '));
    for (const v of losses) expect(Number.isFinite(v)).toBe(true);
    expect(torch.memory().bytes.cuda).toBeGreaterThan(0);
    // The official init zeroes some layers that get no gradient until others move; count the ones that moved.
    const moved = params.filter((p, i) => torch.scope(() => p.sub(start[i]!).abs().max().item()) > 0).length;
    expect(moved).toBeGreaterThan(params.length / 2);
    for (const p of params) expect(Number.isFinite(torch.scope(() => p.float().abs().max().item()))).toBe(true);
    opt.dispose(); ema.dispose();
    for (const t of [...params, ...start]) t.dispose();
  }));

  it('NCCL: a 1-rank process group all-reduces CUDA tensors (sum, avg) and is destroyed cleanly', leakFree(async () => {
    expect(dist.isAvailable('nccl')).toBe(true);
    await dist.init({ backend: 'nccl', rank: 0, worldSize: 1, env: {}, masterPort: await freePort(), timeoutMs: 60_000 });
    try {
      expect(dist.backend()).toBe('nccl');
      expect(dist.worldSize()).toBe(1);
      const a = torch.arange(0, 6, 1, { dtype: 'float32', device: 'cuda' });
      await dist.allReduce(a, 'sum');
      expect(Array.from(a.cpu().toTypedArray() as Float32Array)).toEqual([0, 1, 2, 3, 4, 5]);
      const b = torch.full([1 << 20], 3, { dtype: 'float32', device: 'cuda' });
      await dist.allReduce(b, 'avg');
      expect(b.sum().item()).toBe(3 * (1 << 20));
      expect(String(b.device)).toMatch(/^cuda/);
    } finally {
      await dist.destroy();
    }
    expect(dist.isInitialized()).toBe(false);
  }));
});

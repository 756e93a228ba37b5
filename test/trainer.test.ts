/**
 * The trainer: official-layout configs (parsing, defaults, scale_lr, typed errors), checkpoint
 * files (atomic directories, latest, pruning, stale temporaries), metrics.jsonl, and real training
 * steps on tiny models: gradient accumulation, clipping, the LR warmup, EMA, sample grids that leave
 * the RNG untouched, bf16 autocast, latents in the official format, resume in-process (bit-exact),
 * and live tensors flat over steps and back to zero after close().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { torch } from '../lib/index.js';
import { Trainer } from '../lib/tim/train/trainer.js';
import { parseTrainConfig, readTrainConfig, effectiveLearningRate, transportFromOfficialConfig } from '../lib/tim/train/config.js';
import {
  writeCheckpoint, listCheckpoints, latestCheckpoint, pruneCheckpoints, removeStaleTemps, resolveResume, readCheckpointState,
} from '../lib/tim/train/checkpoints.js';
import { MetricsLog, progressLine, formatDuration } from '../lib/tim/train/progress.js';
import { ShardedOrder } from '../lib/tim/data/sampler.js';

const FIXTURE = 'test/fixtures/tiny-train.yaml';
let root: string;

function fixtureDoc(): Record<string, any> {
  return parseYaml(readFileSync(FIXTURE, 'utf8')) as Record<string, any>;
}

/** The tiny fixture with overrides applied to its sections. */
function doc(patch: { network?: object; training?: object; data?: object; model?: object } = {}): Record<string, any> {
  const d = fixtureDoc();
  Object.assign(d.model.network.params, patch.network ?? {});
  Object.assign(d.training, patch.training ?? {});
  Object.assign(d.data, patch.data ?? {});
  Object.assign(d.model, patch.model ?? {});
  return d;
}

function quiet(): { write: (s: string) => void; lines: string[] } {
  const lines: string[] = [];
  return { write: (s) => lines.push(s), lines };
}

function sha(path: string): string {
  return readFileSync(path).toString('base64');
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'tim-trainer-test-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('config (official layout)', () => {
  it('reads the fixture: network, transport, loss, data, training with official defaults', () => {
    const c = readTrainConfig(FIXTURE);
    expect(c.network.inChannels).toBe(1);
    expect(c.network.numClasses).toBe(10);
    expect(c.network.classDropoutProb).toBe(0.1);
    expect(c.transport.target).toBe('tim.schedulers.transports.OT_FM');
    expect(c.transitionLoss.weight_time_type).toBe('sqrt');
    expect(c.data.batchSize).toBe(8);
    expect(c.training.gradientAccumulationSteps).toBe(2);
    expect(c.training.optimizer).toEqual({ name: 'AdamW', params: { betas: [0.9, 0.95], weight_decay: 0.01, eps: 1e-6 } });
    expect(c.training.sampleSteps).toBe(3); // from validation_steps
    expect(c.ignored).toEqual(expect.arrayContaining(['model.vae_dir', 'model.enc_dir', 'training.tracker', 'data.dataloader.num_workers']));
    // scale_lr: 2e-4 · (8 · 1 process · 2 accumulation) / 16
    expect(effectiveLearningRate(c)).toBeCloseTo(2e-4, 15);
    const unscaled = parseTrainConfig(doc({ training: { scale_lr: false, learning_rate: 3e-4 } }));
    expect(effectiveLearningRate(unscaled)).toBe(3e-4);
    const scaled = parseTrainConfig(doc({ training: { learning_rate: 1e-4, learning_rate_base_batch_size: 256 }, data: { dataloader: { batch_size: 64 } } }));
    expect(effectiveLearningRate(scaled)).toBeCloseTo((1e-4 * 64 * 2) / 256, 15);
  });

  it('accepts the official tim_b_p4.yaml layout unchanged (every section and key)', () => {
    // configs/c2i/tim_b_p4.yaml of github WZDTHU/TiM, keys and values as published
    const official = `
model:
  transport:
    target: tim.schedulers.transports.OT_FM
    params: {P_mean: -0.4, P_std: 1.0, sigma_d: 1.0}
  transition_loss: {diffusion_ratio: 0.5, consistency_ratio: 0.1, derivative_type: dde, differential_epsilon: 0.005, weight_time_type: sqrt, weight_time_tangent: True}
  network:
    target: tim.models.c2i.tim_model.TiM
    params: {input_size: 32, patch_size: 4, in_channels: 4, class_dropout_prob: 0.1, num_classes: 1000, depth: 12, hidden_size: 768, num_heads: 12,
             encoder_depth: 4, qk_norm: True, z_dim: 768, new_condition: t-r, use_new_embed: True, distance_aware: True, lora_hidden_size: 256}
  vae_dir: stabilityai/sd-vae-ft-ema
  enc_dir: checkpoints/radio/radio-v2.5-b_half.pth.tar
  proj_coeff: 1.0
  use_ema: True
  ema_decay: 0.9999
data:
  data_type: latent
  dataset: {latent_dir: datasets/imagenet1k/sd-vae-ft-ema-256x256, image_dir: datasets/imagenet1k/images/train, image_size: 256}
  dataloader: {num_workers: 16, batch_size: 256}
training:
  tracker: null
  max_train_steps: 100000
  checkpointing_steps: 2000
  checkpoints_total_limit: 2
  resume_from_checkpoint: latest
  learning_rate: 1.0e-4
  learning_rate_base_batch_size: 256
  scale_lr: True
  lr_scheduler: constant
  lr_warmup_steps: 0
  gradient_accumulation_steps: 1
  optimizer: {target: torch.optim.AdamW, params: {betas: [0.9, 0.95], weight_decay: 1.0e-2, eps: 1.0e-6}}
  max_grad_norm: 1.0
  proportion_empty_prompts: 0.0
  mixed_precision: bf16
  allow_tf32: True
  validation_steps: 500
  checkpoint_list: [100000, 200000, 300000]
`;
    const c = parseTrainConfig(parseYaml(official));
    expect(c.network.hiddenSize).toBe(768);
    expect(c.network.depth).toBe(12);
    expect(c.training.mixedPrecision).toBe('bf16');
    expect(c.training.resumeFromCheckpoint).toBe('latest');
    expect(c.training.checkpointList).toEqual([100000, 200000, 300000]);
    expect(c.projCoeff).toBe(1);
    expect(c.emaDecay).toBe(0.9999);
    expect(effectiveLearningRate(c)).toBeCloseTo(1e-4, 15);
    const tr = transportFromOfficialConfig(c.transport);
    expect(tr.name).toBe('OTFM');
    // its data does not exist here: a typed error naming the folder, before any model is built
    try {
      Trainer.create({ config: c, outDir: join(root, 'official'), write: () => {} });
      expect.unreachable();
    } catch (e) {
      expect((e as Error).message).toContain('datasets/imagenet1k/sd-vae-ft-ema-256x256');
      expect(['E_IO', 'E_DATA']).toContain((e as { code?: string }).code);
    }
  });

  it('rejects bad configs with typed errors', () => {
    const bad = (d: unknown, re: RegExp) => {
      try {
        parseTrainConfig(d);
        expect.unreachable();
      } catch (e) {
        expect((e as { code?: string }).code).toBe('E_CONFIG');
        expect((e as Error).message).toMatch(re);
      }
    };
    bad(null, /mapping/);
    bad({ ...doc(), extra: 1 }, /unknown key 'extra'/);
    bad(doc({ training: { learnig_rate: 1 } }), /training\.learnig_rate/);
    bad(doc({ training: { optimizer: { target: 'torch.optim.LBFGS' } } }), /LBFGS/);
    bad(doc({ training: { lr_scheduler: 'exp' } }), /lr_scheduler/);
    bad(doc({ training: { mixed_precision: 'fp8' } }), /mixed_precision/);
    bad(doc({ training: { max_train_steps: 0 } }), /max_train_steps/);
    bad(doc({ training: { gradient_accumulation_steps: 1.5 } }), /gradient_accumulation_steps/);
    bad(doc({ data: { dataloader: { batch_size: 'big' } } }), /batch_size/);
    bad(doc({ model: { transport: { target: 'tim.schedulers.transports.Nope' } } }), /Nope/);
    bad(doc({ model: { transport: { target: 'tim.schedulers.transports.OT_FM', params: { P_meen: 0 } } } }), /P_meen/);
    bad(doc({ model: { network: { target: 'x', params: { depth: 2 } } } }), /model\.network/);
    bad(doc({ training: { sample_classes: [11] } }), /sample_classes/);
    expect(() => readTrainConfig(join(root, 'missing.yaml'))).toThrow(/cannot read/);
    writeFileSync(join(root, 'broken.yaml'), 'model: [unclosed');
    expect(() => readTrainConfig(join(root, 'broken.yaml'))).toThrow(/not valid YAML/);
  });

  it('rejects bad trainer options and fp16 on the CPU', () => {
    expect(() => Trainer.create({ config: doc(), outDir: join(root, 'x'), mixedPrecision: 'fp16', device: 'cpu' })).toThrow(/fp16 needs CUDA/);
    expect(() => Trainer.create({ config: doc(), outDir: '' })).toThrow(TypeError);
    expect(() => Trainer.create({ config: doc(), outDir: join(root, 'x'), maxSteps: 0 })).toThrow(RangeError);
    expect(() => Trainer.create({ config: doc(), outDir: join(root, 'x'), bogus: 1 } as never)).toThrow(/unknown option 'bogus'/);
    expect(() => Trainer.create({ config: doc({ model: { transition_loss: { diffusion_ratio: 2 } } }), outDir: join(root, 'x') })).toThrow(/transition_loss/);
  });
});

describe('checkpoint files', () => {
  it('writes whole directories atomically; latest, resume, pruning and stale temporaries', () => {
    const out = join(root, 'ckpt');
    const st = (step: number) => ({ format: 'tim-torch.train' as const, version: 1 as const, step });
    for (const s of [2, 4, 6]) writeCheckpoint(out, st(s), (d) => writeFileSync(join(d, 'a.bin'), String(s)));
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2, 4, 6]);
    expect(latestCheckpoint(out)!.step).toBe(6);
    // a failing writer leaves nothing: no step dir, no temp dir
    expect(() => writeCheckpoint(out, st(8), () => { throw new Error('disk full'); })).toThrow(/disk full/);
    expect(readdirSync(join(out, 'checkpoints')).sort()).toEqual(['2', '4', '6']);
    // a killed run's leftovers: a temp dir and a step dir without state.json are not checkpoints
    mkdirSync(join(out, 'checkpoints', '.tmp-10-123'));
    mkdirSync(join(out, 'checkpoints', '12'));
    expect(latestCheckpoint(out)!.step).toBe(6);
    // (the step folder without state.json holds no file of its own: a half-pruned leftover, removed too)
    expect(removeStaleTemps(out).sort()).toEqual(['.tmp-10-123', '12']);
    expect(resolveResume(out, 'latest')!.step).toBe(6);
    expect(resolveResume(out, '4')!.dir).toBe(join(out, 'checkpoints', '4'));
    expect(() => resolveResume(out, '12')).toThrow(/not a complete checkpoint/);
    expect(resolveResume(join(root, 'empty-run'), 'latest')).toBeNull();
    // rewriting an existing step replaces it whole
    writeCheckpoint(out, st(4), (d) => writeFileSync(join(d, 'a.bin'), 'again'));
    expect(readFileSync(join(out, 'checkpoints', '4', 'a.bin'), 'utf8')).toBe('again');
    expect(readCheckpointState(join(out, 'checkpoints', '4')).step).toBe(4);
    // keep the newest 2, never the protected step 2
    expect(pruneCheckpoints(out, 1, [2])).toEqual([4]);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2, 6]);
    expect(pruneCheckpoints(out, null)).toEqual([]);
    writeFileSync(join(out, 'checkpoints', '6', 'state.json'), '{"format":"other"}');
    expect(() => readCheckpointState(join(out, 'checkpoints', '6'))).toThrow(/not a tim-torch training state/);
  });

  it('metrics.jsonl: appended lines; a resume drops the lines past its step and a torn last line', () => {
    const p = join(root, 'm.jsonl');
    const log = new MetricsLog(p);
    for (let s = 1; s <= 5; s++) log.add({ step: s, loss: s / 10 });
    log.flush();
    log.close();
    writeFileSync(p, readFileSync(p, 'utf8') + '{"step":6,"lo');
    const resumed = new MetricsLog(p, 3);
    resumed.add({ step: 4, loss: 0.44 });
    resumed.close();
    const lines = readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss: number });
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4]);
    expect(lines[3]!.loss).toBe(0.44);
    // a fresh run in the same folder starts a fresh log
    new MetricsLog(p).close();
    expect(readFileSync(p, 'utf8')).toBe('');
  });

  it('progress line shows step, loss terms, lr, it/s and ETA', () => {
    const line = progressLine({ step: 12, loss: 0.5, loss_weighted: 0.4, loss_denoising: 0.9, loss_projector: 0.1, lr: 1e-4, grad_norm: 0.25, it_s: 2.5, sps: 40 }, 100, 3725);
    expect(line).toBe('step 12/100 [12%] loss 0.5000 (w 0.4000 den 0.9000 proj 0.1000) gnorm 0.2500 lr 1.00e-4 | 2.50 it/s | ETA 1:02:05');
    expect(formatDuration(NaN)).toBe('--:--');
  });
});

describe('training steps', () => {
  it('accumulation, warmup lr, clipping, EMA; live tensors flat over steps and zero after close', async () => {
    const before = torch.memory().liveTensors;
    const q = quiet();
    const tr = Trainer.create({ config: doc(), outDir: join(root, 'steps'), resume: null, write: q.write, prefetch: 0 });
    expect(tr.accumulation).toBe(2);
    const ema0 = torch.scope(() => tr.ema!.module.stateDict()['final_layer.linear.weight']!.sum().item());
    const m1 = await tr.trainStep();
    const live = torch.memory().liveTensors;
    // warmup: lr(step 0) = 0, then base·1/2, then base
    expect(m1.lr).toBe(0);
    expect(m1.step).toBe(1);
    // two micro-batches of 8 per optimizer step
    expect(tr.loader.state).toEqual({ epoch: 0, index: 16, seed: 0 });
    expect(m1.grad_norm).toBeGreaterThan(0);
    expect(Number.isFinite(m1.loss)).toBe(true);
    // after each step the CPU block cache is trimmed to its budget (TIM_TORCH_CPU_CACHE_KEEP × the
    // peak in use; 0 here): a free 16 MiB block left in the cache before the step is gone after it
    torch.scope(() => torch.zeros([4 * 2 ** 20]).sum().item());
    expect(torch.cpuCache.stats().cachedBytes).toBeGreaterThanOrEqual(16 * 2 ** 20);
    process.env.TIM_TORCH_CPU_CACHE_KEEP = '0';
    let m2;
    try {
      m2 = await tr.trainStep();
    } finally {
      delete process.env.TIM_TORCH_CPU_CACHE_KEEP;
    }
    expect(torch.cpuCache.stats().cachedBytes).toBe(0);
    const m3 = await tr.trainStep();
    expect(m2.lr).toBeCloseTo(1e-4, 15);
    expect(m3.lr).toBeCloseTo(2e-4, 15);
    expect(torch.memory().liveTensors).toBe(live);
    tr.sampleGrids();
    expect(torch.memory().liveTensors).toBe(live);
    // the model moved (lr > 0 since step 2) and the EMA followed it a little
    const ema3 = torch.scope(() => tr.ema!.module.stateDict()['final_layer.linear.weight']!.sum().item());
    expect(ema3).not.toBe(ema0);
    expect(tr.ema!.updates).toBe(3);
    // the optimizer counted 3 steps, not 6 micro-batches
    const st = tr.optimizer.stateDict();
    expect((st.meta.state['0'] as { step: number }).step).toBe(3);
    for (const v of Object.values(st.tensors)) v.dispose();
    await tr.close();
    expect(torch.memory().liveTensors).toBe(before);
    await tr.close(); // idempotent
    await expect(tr.trainStep()).rejects.toThrow(/closed/);
  });

  it('trainStep({ emaDecay }) uses that decay for this step\'s EMA update: ema·d + p·(1 − d), one pass', async () => {
    const q = quiet();
    const tr = Trainer.create({ config: doc(), outDir: join(root, 'ema-decay'), resume: null, write: q.write, prefetch: 0 });
    try {
      const key = 'final_layer.linear.weight';
      // two ordinary steps (warmup: lr 0, then > 0), so that the model has moved away from the EMA
      await tr.trainStep();
      await tr.trainStep();
      const emaBefore = torch.keep(tr.ema!.module.stateDict()[key]!.clone());
      await tr.trainStep({ emaDecay: 0.25 });
      torch.scope(() => {
        const p = tr.model.module.stateDict()[key]!;
        const expected = emaBefore.mul(0.25).add(p.mul(0.75));
        const got = tr.ema!.module.stateDict()[key]!;
        // the decays 0.25 and the default (0.9999) give clearly different EMAs here
        expect(p.sub(emaBefore).abs().max().item()).toBeGreaterThan(1e-5);
        expect(got.sub(expected).abs().max().item()).toBeLessThan(1e-7);
      });
      expect(tr.ema!.updates).toBe(3);
      emaBefore.dispose();
      // the EMA's own decay is unchanged for the next step, and a bad value is a typed error before any work
      expect(tr.ema!.decay).not.toBe(0.25);
      await expect(tr.trainStep({ emaDecay: 1.5 })).rejects.toThrow(/emaDecay/);
      expect(tr.step).toBe(3);
    } finally {
      await tr.close();
    }
  });

  it('label dropout and noise as the official trainer: randn_like(x), then rand(B) < p → null class', async () => {
    for (const p of [0.5, 0.9, 0]) {
      const q = quiet();
      const tr = Trainer.create({
        config: doc({ network: { class_dropout_prob: p }, training: { gradient_accumulation_steps: 1 } }),
        outDir: join(root, `drop-${p}`), resume: null, write: q.write, prefetch: 0,
      });
      const seen: { yIn: number[]; z: number[] }[] = [];
      const compute = tr.loss.compute.bind(tr.loss);
      (tr.loss as { compute: typeof compute }).compute = (inp) => {
        const arr = (t: import('../lib/torch/tensor.js').Tensor) => Array.from(t.toTypedArray() as ArrayLike<number | bigint>, Number);
        seen.push({ yIn: arr(inp.y), z: arr(inp.z) });
        return compute(inp);
      };
      const rng = torch.getRngState();
      await tr.trainStep();
      // replay the draws from the same RNG state: noise first, then the dropout coins
      const { z, drop } = torch.scope(() => {
        torch.setRngState(rng);
        const zz = torch.randn([8, 1, 32, 32]);
        const u = torch.rand([8]);
        return { z: Array.from(zz.toTypedArray() as Float32Array), drop: Array.from(u.lt(p).toTypedArray() as Uint8Array, Boolean) };
      });
      // the last call is the real micro-batch (the first step of a process is preceded by two
      // warm-up micro-batches, whose draws are undone: the replay below checks that too)
      expect(seen).toHaveLength(3);
      const s0 = seen[2]!;
      expect(s0.z).toEqual(z);
      // labels of the batch: the first 8 samples of epoch 0 in the official order, read back
      const ds = tr.loader.dataset;
      const first = new ShardedOrder(ds.length, { seed: 0, rank: 0, worldSize: 1, shuffle: true }).slice(0).subarray(0, 8);
      const buf = new Float32Array(32 * 32);
      const labels: number[] = [];
      for (const idx of first) labels.push(await ds.load(idx, buf, 0));
      expect(s0.yIn).toEqual(labels.map((l, i) => (p > 0 && drop[i] ? 10 : l)));
      if (p === 0) expect(s0.yIn).toEqual(labels);
      else expect(s0.yIn).toContain(10);
      await tr.close();
    }
  });

  it('clipping off reports no norm; sample grids are PNGs and leave the RNG untouched', async () => {
    const q = quiet();
    const tr = Trainer.create({ config: doc({ training: { max_grad_norm: 0, sample_classes: [0, 3, 10], sample_num_steps: [1, 3] } }), outDir: join(root, 'grids'), resume: null, write: q.write, prefetch: 0 });
    const m = await tr.trainStep();
    expect(m.grad_norm).toBeNull();
    const rng = torch.getRngState();
    const files = tr.sampleGrids();
    expect(Buffer.from(torch.getRngState()).equals(Buffer.from(rng))).toBe(true);
    expect(files.map((f) => f.split('/').pop())).toEqual(['0000001_steps1.png', '0000001_steps3.png']);
    for (const f of files) {
      const b = readFileSync(f);
      expect(b.subarray(1, 4).toString()).toBe('PNG');
      // 3 images of 32x32 in a row, 2-pixel padding: width 3·34 + 2, height 36
      expect(b.readUInt32BE(16)).toBe(104);
      expect(b.readUInt32BE(20)).toBe(36);
    }
    await tr.close();
  });

  it('bf16 autocast: the network runs in bfloat16, the step stays finite and close to float32', async () => {
    const q = quiet();
    const run = async (mp: 'no' | 'bf16') => {
      // no warmup: step 1 moves the zero-initialized output layer, so step 2's prediction is not 0
      const tr = Trainer.create({ config: doc({ training: { gradient_accumulation_steps: 1, lr_warmup_steps: 0 } }), outDir: join(root, `bf-${mp}`), resume: null, mixedPrecision: mp, write: q.write, prefetch: 0 });
      await tr.trainStep();
      const m = await tr.trainStep();
      const dtype = torch.scope(() => {
        const x = torch.randn([2, 1, 32, 32]), t = torch.tensor([0.5, 0.7]), y = torch.tensor([1, 2], { dtype: 'int64' });
        return torch.autocast({ dtype: 'bfloat16', enabled: mp === 'bf16' }, () => tr.model.forward(x, t, t.mul(0.5), y).dtype);
      });
      await tr.close();
      return { m, dtype };
    };
    const f32 = await run('no');
    const bf = await run('bf16');
    expect(f32.dtype).toBe('float32');
    expect(bf.dtype).toBe('bfloat16');
    expect(Number.isFinite(bf.m.loss)).toBe(true);
    // (the weighted loss is ~mean(time weight) by its adaptive weighting; the denoising term shows the precision)
    expect(bf.m.loss_denoising).not.toBe(f32.m.loss_denoising);
    expect(Math.abs(bf.m.loss_denoising - f32.m.loss_denoising) / f32.m.loss_denoising).toBeLessThan(0.02);
  });

  it('official latent folders (data_type latent) train, and resume in-process is bit-exact', async () => {
    // 12 latent files in the official format: latent (2, 4, 8, 8) (image and flip), label float32
    const latents = join(root, 'latents');
    torch.manualSeed(5);
    for (let i = 0; i < 12; i++) {
      const dir = join(latents, `n0${i % 3}`);
      mkdirSync(dir, { recursive: true });
      torch.scope(() => torch.save({ latent: torch.randn([2, 4, 8, 8]), label: torch.tensor(i % 3, { dtype: 'float32' }) }, join(dir, `img${i}.safetensors`)));
    }
    const d = doc({
      network: { input_size: 8, patch_size: 2, in_channels: 4, num_classes: 3, hidden_size: 32, depth: 2, z_dim: 16, lora_hidden_size: 8 },
      data: { data_type: 'latent', dataset: { latent_dir: latents, image_dir: 'unused', image_size: 64 }, dataloader: { batch_size: 4 } },
      training: { checkpointing_steps: 2, checkpoints_total_limit: 3, validation_steps: 0, gradient_accumulation_steps: 1, max_train_steps: 4 },
      model: { transport: { target: 'tim.schedulers.transports.OT_FM', params: { P_mean: -0.4, P_std: 1.0, enhance_target: true, w_gt: 1.0, w_cond: 0.5, w_start: 0.0, w_end: 1.0 } } },
    });
    const q = quiet();
    const full = Trainer.create({ config: d, outDir: join(root, 'lat-full'), resume: null, write: q.write });
    const r = await full.train();
    await full.close();
    expect(r.step).toBe(4);
    expect(listCheckpoints(join(root, 'lat-full')).map((c) => c.step)).toEqual([2, 4]);
    const metrics = readFileSync(join(root, 'lat-full', 'metrics.jsonl'), 'utf8').trim().split('\n');
    expect(metrics).toHaveLength(4);

    const half = Trainer.create({ config: d, outDir: join(root, 'lat-half'), resume: null, maxSteps: 2, write: q.write });
    expect((await half.train()).step).toBe(2);
    await half.close();
    const rest = Trainer.create({ config: d, outDir: join(root, 'lat-half'), resume: 'latest', write: q.write });
    expect(rest.step).toBe(2);
    expect(rest.resumedFrom).toBe(join(root, 'lat-half', 'checkpoints', '2'));
    await rest.train();
    await rest.close();
    for (const f of ['model', 'ema', 'optimizer']) {
      expect(sha(join(root, 'lat-half', 'checkpoints', '4', `${f}.safetensors`))).toBe(sha(join(root, 'lat-full', 'checkpoints', '4', `${f}.safetensors`)));
    }
    expect(readFileSync(join(root, 'lat-half', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss))
      .toEqual(metrics.map((l) => JSON.parse(l).loss));
    // a checkpoint of another network is refused
    const other = doc({ network: { input_size: 8, patch_size: 2, in_channels: 4, num_classes: 3, hidden_size: 16, depth: 2, z_dim: 16, lora_hidden_size: 8 },
      data: d.data, training: d.training, model: { transport: d.model.transport } });
    expect(() => Trainer.create({ config: other, outDir: join(root, 'lat-half'), resume: 'latest', write: q.write })).toThrow(/another network config/);
    expect(existsSync(join(root, 'lat-full', 'config.yaml'))).toBe(true);
  });
});

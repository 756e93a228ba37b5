/**
 * Text-to-image training end to end (projects/train/trainer_t2i.py over the official data layout):
 * a tiny captioned dataset in two aspect buckets (jsonl + packed buckets), the tiny random Gemma-3
 * (gemma3_legacy + the tiny tokenizer) and the tiny DC-AE (vae_dc_a) run online; `tim train` writes
 * checkpoints, and a run stopped at step 2 and resumed in a fresh process ends with the bytes of an
 * uninterrupted run. Also the empty-prompt proportion on a seeded draw and typed errors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../lib/torch/index.js';
import { Trainer } from '../lib/tim/train/trainer.js';
import { dropCaptions } from '../lib/tim/train/t2i_step.js';
import type { T2IBatchLoader } from '../lib/tim/data/t2i_data.js';
import { makeT2IDataset } from './helpers/t2i_dataset.js';
import { GOLDEN_DIR, repoRoot } from './helpers/golden.js';

const TMP = mkdtempSync(join(tmpdir(), 'tim-t2i-train-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
const GEMMA = join(TMP, 'gemma');
const VAE_DIR = join(GOLDEN_DIR, 'vae_dc_a');
const STEPS = 12;
let ds: ReturnType<typeof makeT2IDataset>;

/** configs/t2i/tim_xl_p1_t2i.yaml with a tiny network (cap_feat_dim 32: the tiny Gemma-3; in_channels 4: vae_dc_a). */
function config(over: { jsonl?: string; capFeatDim?: number; textEncoder?: string | null; pEmpty?: number; enhance?: boolean } = {}): string {
  return `model:
  transport:
    target: tim.schedulers.transports.OT_FM
    params: {P_mean: 0.0, P_std: 1.6, sigma_d: 1.0${over.enhance ? ', enhance_target: True, w_gt: 0.75, w_cond: 0.25' : ''}}
  transition_loss:
    diffusion_ratio: 0.5
    consistency_ratio: 0.1
    derivative_type: dde
    differential_epsilon: 0.005
    weight_time_type: sqrt
    weight_time_tangent: True
  network:
    target: tim.models.t2i.tim_model.TiM
    params: {input_size: 8, patch_size: 1, in_channels: 4, depth: 2, hidden_size: 32, cap_feat_dim: ${over.capFeatDim ?? 32}, num_heads: 2,
      encoder_depth: 1, qk_norm: True, z_dim: 16, projector_dim: 32, new_condition: t-r, use_new_embed: True, distance_aware: True}
  vae_dir: ${VAE_DIR}
${over.textEncoder === null ? '' : `  text_encoder_dir: ${over.textEncoder ?? GEMMA}\n`}  proportion_empty_prompts: ${over.pEmpty ?? 0.5}
  use_last_hidden_state: True
  max_seq_length: 16
  enc_dir: checkpoints/radio/radio-v2.5-b_half.pth.tar
  proj_coeff: 1.0
  use_ema: True
  ema_decay: 0.9999
data:
  data_type: image_ms
  dataset: {root_dir: ${ds.rootDir}, packed_json: ${ds.packedJson}, jsonl_dir: ${over.jsonl ?? ds.jsonlDir}}
  dataloader: {num_workers: 4, batch_size: 2}
training:
  tracker: null
  max_train_steps: ${STEPS}
  checkpointing_steps: 2
  checkpoints_total_limit: 2
  resume_from_checkpoint: latest
  learning_rate: 1.0e-3
  learning_rate_base_batch_size: 512
  scale_lr: False
  lr_scheduler: constant
  optimizer: {target: torch.optim.AdamW, params: {betas: [0.9, 0.95], weight_decay: 1.0e-2, eps: 1.0e-6}}
  max_grad_norm: 1.0
  mixed_precision: 'no'
  validation_steps: 500
  checkpoint_list: []
`;
}

let cfgPath: string;
beforeAll(() => {
  mkdirSync(GEMMA, { recursive: true });
  copyFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'config.json'), join(GEMMA, 'config.json'));
  copyFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'model.safetensors'), join(GEMMA, 'model.safetensors'));
  copyFileSync(join(repoRoot, 'test', 'fixtures', 'text', 'tiny-tokenizer.json'), join(GEMMA, 'tokenizer.json'));
  copyFileSync(join(repoRoot, 'test', 'fixtures', 'text', 'tiny-tokenizer_config.json'), join(GEMMA, 'tokenizer_config.json'));
  ds = makeT2IDataset(join(TMP, 'ds'));
  cfgPath = join(TMP, 't2i.yaml');
  // the YAML names no text encoder: tim train --text-encoder gives it
  writeFileSync(cfgPath, config({ textEncoder: null }));
});

/** `tim train` in its own process (node --import tsx: one process, so a SIGKILL reaches the trainer). */
function timProcess(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stderr: string; stdout: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/tim.ts', 'train', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '', stdout = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
  return { child, done: new Promise((res) => child.on('exit', (code, signal) => res({ code, signal, stderr, stdout }))) };
}
const tim = (args: string[]) => timProcess(args).done;

const bytes = (dir: string) => Object.fromEntries(['model', 'ema', 'optimizer'].map((f) => [f, readFileSync(join(dir, `${f}.safetensors`))]));

describe('T2I training', () => {
  it('the empty-prompt draw: torch.rand(B) < p on a seeded run gives the proportion p', () => {
    const saved = torch.getRngState();
    try {
      torch.manualSeed(0);
      let empty = 0, n = 0;
      for (let i = 0; i < 200; i++) {
        const r = dropCaptions(Array.from({ length: 32 }, (_, k) => `caption ${k}`), 0.1);
        empty += r.captions.filter((c) => c === '').length;
        expect(r.dropped).toBe(r.captions.filter((c) => c === '').length);
        n += 32;
      }
      // 6400 draws: binomial sd 0.0037
      expect(Math.abs(empty / n - 0.1)).toBeLessThan(0.012);
      expect(dropCaptions(['a', 'b'], 0).captions).toEqual(['a', 'b']);
      expect(dropCaptions(['a', 'b'], 1).captions).toEqual(['', '']);
    } finally {
      torch.setRngState(saved);
    }
  });

  it('tim train: checkpoints, and a run SIGKILLed after its first checkpoint and resumed ends bit-identical', async () => {
    const a = join(TMP, 'a'), b = join(TMP, 'b');
    const common = ['--config', cfgPath, '--text-encoder', GEMMA, '--vae', VAE_DIR, '--device', 'cpu', '--threads', '1'];
    const full = await tim([...common, '--out', a]);
    expect(full.code, full.stderr).toBe(0);
    expect(full.stderr).toContain('text to image: 6 captioned images in 5 packed batches, empty prompts 0.5');
    const summary = JSON.parse(full.stdout.trim().split('\n').pop()!);
    expect(summary.step).toBe(STEPS);
    expect(Number.isFinite(summary.metrics.loss)).toBe(true);
    const state = JSON.parse(readFileSync(join(a, 'checkpoints', String(STEPS), 'state.json'), 'utf8'));
    // 12 packed batches: two epochs of 5 and 2 of the third
    expect(state.data).toMatchObject({ epoch: 2, index: 2, seed: 0, samples: 12 });

    // killed (SIGKILL: no chance to write anything more) once its step-2 checkpoint is complete
    const killed = timProcess([...common, '--out', b]);
    const ck2 = join(b, 'checkpoints', '2', 'state.json');
    await new Promise<void>((res, rej) => {
      const poll = setInterval(() => {
        if (existsSync(ck2)) {
          clearInterval(poll);
          killed.child.kill('SIGKILL');
          res();
        }
      }, 5);
      void killed.done.then((r) => { clearInterval(poll); if (!existsSync(ck2)) rej(new Error(`exited before its first checkpoint: ${r.stderr}`)); else res(); });
    });
    const k = await killed.done;
    expect(k.signal).toBe('SIGKILL');
    const left = readdirSync(join(b, 'checkpoints')).filter((d) => /^\d+$/.test(d)).map(Number);
    expect(Math.max(...left)).toBeLessThan(STEPS); // killed mid-run
    const rest = await tim([...common, '--out', b, '--resume', 'latest']);
    expect(rest.code, rest.stderr).toBe(0);
    expect(rest.stderr).toContain(`resumed at step ${Math.max(...left)}`);
    const [ba, bb] = [bytes(join(a, 'checkpoints', String(STEPS))), bytes(join(b, 'checkpoints', String(STEPS)))];
    for (const k of Object.keys(ba)) expect(Buffer.compare(ba[k]!, bb[k]!), k).toBe(0);
    // and training changed the weights
    expect(Buffer.compare(readFileSync(join(a, 'checkpoints', String(STEPS - 2), 'model.safetensors')), ba.model!)).not.toBe(0);
  }, 600_000);

  it('counts the empty prompts it draws; both buckets train; nothing stays alive after close', async () => {
    const out = join(TMP, 'inproc');
    const before = torch.memory().liveTensors;
    const t = Trainer.create({ config: yamlDoc(config({ pEmpty: 0.5 })), outDir: out, device: 'cpu', write: () => {}, maxSteps: 3 });
    try {
      const shapes: string[] = [];
      const data = t.data as T2IBatchLoader;
      const next = data.next.bind(data);
      data.next = async () => {
        const b = await next();
        shapes.push(b.images.shape.slice(2).join('x'));
        return b;
      };
      for (let i = 0; i < 3; i++) expect(Number.isFinite((await t.trainStep()).loss)).toBe(true);
      expect(new Set(shapes)).toEqual(new Set(['64x32', '32x64']));
      const s = t.t2i!.stats;
      // randperm(5, seed 0) = [4, 0, 1, ...]: packed batches [1, 2], [0, 1], [3, 4]
      expect(s.captions).toBe(6);
      expect(s.empty).toBeGreaterThanOrEqual(0);
      expect(s.empty).toBeLessThanOrEqual(s.captions);
      expect(() => t.loader).toThrow(expect.objectContaining({ code: 'E_STATE' }));
    } finally {
      await t.close();
    }
    expect(torch.memory().liveTensors, 'live tensors after a T2I run and close').toBe(before);
  }, 300_000);

  it('mixed_precision bf16 (the official T2I setting) trains with finite losses', async () => {
    const t = Trainer.create({ config: yamlDoc(config()), outDir: join(TMP, 'bf16'), device: 'cpu', write: () => {}, maxSteps: 2, mixedPrecision: 'bf16' });
    try {
      for (let i = 0; i < 2; i++) {
        const m = await t.trainStep();
        expect(Number.isFinite(m.loss) && m.loss > 0).toBe(true);
      }
    } finally {
      await t.close();
    }
  }, 300_000);

  it('enhance_target: the EMA target against the null caption (y_null cut to the batch length) changes the loss', async () => {
    const losses: number[] = [];
    for (const enhance of [false, true]) {
      const t = Trainer.create({ config: yamlDoc(config({ enhance })), outDir: join(TMP, `enh-${enhance}`), device: 'cpu', write: () => {}, maxSteps: 2 });
      try {
        losses.push((await t.trainStep()).loss_denoising);
      } finally {
        await t.close();
      }
    }
    expect(losses.every(Number.isFinite)).toBe(true);
    // same seed, data and draws: only the target differs
    expect(losses[1]).not.toBe(losses[0]);
  }, 300_000);

  it('bad data and mismatched pieces are typed errors before training', () => {
    const bad = join(TMP, 'bad.jsonl');
    writeFileSync(bad, '{"image_file": "x.png", "captions": "not a list", "bucket": "1-64x64"}\n');
    const create = (c: string) => () => Trainer.create({ config: JSON.parse(JSON.stringify(yamlDoc(c))), outDir: join(TMP, 'err'), device: 'cpu', write: () => {} });
    expect(create(config({ jsonl: bad }))).toThrow(expect.objectContaining({ code: 'E_DATA', message: expect.stringContaining('captions') }));
    expect(create(config({ textEncoder: null }))).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('--text-encoder') }));
    expect(create(config({ capFeatDim: 40 }))).toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('cap_feat_dim is 40') }));
    // a T2I network on C2I data, and C2I data_type names for T2I: E_CONFIG naming image_ms
    const latentData = yamlDoc(config()) as { data: Record<string, unknown> };
    latentData.data = { data_type: 'latent', dataset: { latent_dir: join(TMP, 'none') }, dataloader: { batch_size: 2 } };
    expect(() => Trainer.create({ config: latentData, outDir: join(TMP, 'err-latent'), device: 'cpu', write: () => {} }))
      .toThrow(expect.objectContaining({ code: 'E_CONFIG', message: expect.stringContaining('image_ms') }));
    // --text-encoder on a class-conditional config is a mistake, not silently ignored
    const c2i = yamlDoc(readFileSync('test/fixtures/tiny-train.yaml', 'utf8'));
    expect(() => Trainer.create({ config: c2i, outDir: join(TMP, 'err-c2i'), device: 'cpu', write: () => {}, textEncoder: GEMMA }))
      .toThrow(expect.objectContaining({ code: 'E_OPTION', message: expect.stringContaining('text-to-image') }));
  });
});

import { parse as parseYaml } from 'yaml';
function yamlDoc(text: string): Record<string, unknown> {
  return parseYaml(text) as Record<string, unknown>;
}

/**
 * `tim sample --ckpt <file|checkpoint|run> [--config <yaml>] --steps 1,2,4,8 --out <dir>`: samples a
 * class-conditional TiM at several step counts in one call (lib/tim/sampling/sampler.ts), writing a PNG per
 * image, a grid per step count and a samples file `tim eval --samples` reads (docs/sampler.md).
 *
 *   <out>/nfe-<N>/<class>-<i>.png   image i of that class (i zero-padded), N = each --steps value
 *   <out>/grid-nfe<N>.png           a row per class: its first min(n, 16) images
 *   <out>/nfe-<N>.safetensors       images float32 (count, C, H, W) in [-1, 1], labels int64, class-major
 *
 * Image i of class c starts from noise seeded by (--seed, c, i) alone, so the same seed gives the
 * same images whatever the step count, the batch size, or which other classes are asked for: grids
 * of different step counts compare cell by cell.
 */
import { existsSync, mkdirSync, statSync, statfsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/tensor.js';
import { TorchError } from '../torch/errors.js';
import type { Device } from '../torch/dtype.js';
import { TiM, checkpointKind, torchScriptRefused } from '../tim/network/model.js';
import type { TiMConfig } from '../tim/network/index.js';
import { sample, decodeLatents } from '../tim/sampling/sampler.js';
import { parseModelConfig } from '../tim/train/config.js';
import { readConfigDocument } from '../tim/config_file.js';
import { isObject } from '../torch/check.js';
import type { Transport } from '../tim/transports/transport.js';
import { STATE_FILE, latestCheckpoint, readCheckpointState } from '../tim/train/checkpoints.js';
import { fsError } from '../tim/train/run_lock.js';
import { AtomicFile } from '../torch/io/atomic.js';
import { evaluationRun } from './sample_run.js';
import { makeGrid, savePng } from '../torch/io/image.js';
import { ProgressDisplay, formatDuration } from '../tim/train/progress.js';
import {
  UsageError, choiceOption, deviceOption, intListOption, intOption, numberListOption, numberOption, type CommandSpec, type Parsed,
} from './args.js';

export const SAMPLE: CommandSpec = {
  name: 'sample',
  brief: 'sample a TiM: step-count sweeps (PNGs, grids, samples files) or resumable --num runs (PNGs, .npz)',
  summary: 'Sample a class-conditional Transition Model with the any-step sampler at each of several step counts, from the same noise, writing a PNG per image, a grid per step count and a samples file for `tim eval`.',
  usage: '--ckpt <path> --out <dir>',
  positionals: [0, 0],
  details: [
    'Files under --out, for each step count N of --steps (image i of class c; i zero-padded):',
    '  nfe-<N>/<c>-<i>.png      one PNG per image',
    '  grid-nfe<N>.png          a row per class (--class order): its first min(n, 16) images',
    '  nfe-<N>.safetensors      images float32 (count, C, H, W) in [-1, 1], labels int64 (count), class-major;',
    '                           what `tim eval --samples` reads (metadata: the sampling settings)',
    '--ckpt is a weights file (.safetensors, .bin, .pt state dict), a checkpoint folder <run>/checkpoints/<step> (its',
    'ema.safetensors unless --weights model) or a run folder (its newest checkpoint). --config defaults to the',
    'run folder\'s config.yaml. Image i of class c starts from noise seeded by (--seed, c, i) alone: the same',
    'for every step count and batch size. Latent models (in_channels other than 1 and 3) need --decoder.',
    'A TorchScript --ckpt (a .pt saved by tim) is code that runs when it loads: refused unless --allow-torchscript.',
    'An official release file (c2i_model_256.safetensors) loads as the official init_from_ckpt does for it: missing',
    'projector.* weights (the REPA head, training only) are accepted with a note; any other missing or unknown key is an error.',
    '',
    'Evaluation runs (--num N, one --steps value): N images, labels from --labels over --class (default every class),',
    'image i from noise seeded by (--seed, its label, i). Files under --out:',
    '  images/<i>.png           image i (6 digits, as the official sample_c2i_ddp.py names them)',
    '  run.json                 the settings and every label; progress.json: images done (written after each batch)',
    '  samples.npz              uint8 (N, H, W, 3) under arr_0, what the ADM evaluator reads (built from the PNGs)',
    'Run the same command again after a kill: it goes on from progress.json (a different run in the folder is an error).',
    '--decoder is a TorchScript module by definition: naming it is trusting its code (docs/security.md).',
    'See docs/sampler.md.',
  ].join('\n'),
  options: {
    ckpt: { value: true, arg: 'path', help: 'weights file, checkpoint folder <run>/checkpoints/<step>, or run folder (newest checkpoint)' },
    config: { value: true, arg: 'yaml', help: 'official-layout config (model.network, model.transport); default <run>/config.yaml' },
    weights: { value: true, arg: 'ema|model', help: 'which weights of a checkpoint folder (default ema when present)' },
    out: { value: true, arg: 'dir', help: 'output folder (created if missing; files of the same names are replaced)' },
    class: { value: true, arg: 'list', help: 'class labels, comma-separated (default: every class)' },
    steps: { value: true, arg: 'list', help: 'sampler step counts (NFE), comma-separated (default 1,2,4,8)' },
    n: { value: true, arg: 'N', help: 'images per class (default 16)' },
    cfg: { value: true, arg: 'scale', help: 'classifier-free guidance scale, 1 = none (default 1)' },
    'cfg-interval': { value: true, arg: 'lo,hi', help: 'guidance applies for lo·t_max < t < hi·t_max (default 0,1)' },
    stochasticity: { value: true, arg: 's', help: 'stochasticity ratio of the OT-FM step (default 0: deterministic)' },
    'sample-type': { value: true, arg: 'transition|diffusion', help: 'r = t_next (transition, default) or r = t (diffusion)' },
    't-max': { value: true, arg: 't', help: 'start of the time grid (default: the transport\'s T_max)' },
    't-min': { value: true, arg: 't', help: 'end of the time grid (default: the transport\'s T_min)' },
    seed: { value: true, arg: 'N', help: 'noise seed (default 0)' },
    batch: { value: true, arg: 'N', help: 'images per sampler call (default 64; guidance doubles the network batch)' },
    decoder: { value: true, arg: 'model.pt', help: 'TorchScript decoder latents -> images in [-1, 1] (a latent model needs it or --vae)' },
    vae: { value: true, arg: 'dir', help: 'diffusers VAE folder (config.json + weights: SD-VAE, DC-AE) decoding the official-normalised latents' },
    'vae-slice': { value: true, arg: 'N', help: 'decode N latents at a time (the official slice_vae is 1; default: the whole batch)' },
    dtype: { value: true, arg: 'fp32|bf16', help: 'the network\'s dtype while sampling (default fp32; the official sampler uses bf16); the VAE stays fp32' },
    num: { value: true, arg: 'N', help: 'an evaluation run of N images at one step count: <out>/images/<i>.png and <out>/samples.npz, resumable (see below)' },
    labels: { value: true, arg: 'random|balanced', help: 'with --num: labels drawn uniformly (seeded, default) or classes in turn' },
    'no-npz': { value: false, help: 'with --num: no samples.npz at the end' },
    'latent-std': { value: true, arg: 'x', help: 'the decoder sees latents·x + mean (SD-VAE: 5.4945 = 1/0.18215; default 1)' },
    'latent-mean': { value: true, arg: 'x', help: 'see --latent-std (default 0)' },
    'allow-torchscript': { value: false, help: '--ckpt may be a TorchScript archive: runs its code (only for files you trust)' },
    'no-safetensors': { value: false, help: 'write PNGs and grids only (no nfe-<N>.safetensors; it is streamed to disk, so this saves disk, not memory)' },
    device: { value: true, arg: 'cpu|cuda', help: 'default: cuda when available' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};

/** Columns of a grid: the first this many images of each class. */
const GRID_COLUMNS = 16;

/** The command line, checked: everything that does not need the model. */
export interface SampleSettings {
  ckpt: string;
  config: string | null;
  weights: 'ema' | 'model' | null;
  out: string;
  /** null: every class of the model */
  classes: number[] | null;
  steps: number[];
  n: number;
  cfg: number;
  cfgInterval: [number, number];
  stochasticity: number;
  sampleType: 'transition' | 'diffusion';
  tMax: number | null;
  tMin: number | null;
  seed: number;
  batch: number;
  decoder: string | null;
  vae: string | null;
  vaeSlice: number | null;
  dtype: 'float32' | 'bfloat16';
  /** an evaluation run of this many images (null: the per-class sweep) */
  num: number | null;
  labelMode: 'random' | 'balanced';
  npz: boolean;
  latentStd: number | null;
  latentMean: number | null;
  safetensors: boolean;
  allowTorchScript: boolean;
  device: Device | null;
  threads: number | null;
}

/** Parses and checks the flags; every malformed one is a UsageError (exit 2) naming it. */
export function sampleSettings(p: Parsed): SampleSettings {
  const C = 'sample';
  const str = (k: string): string | null => {
    const v = p.options[k];
    if (v === undefined) return null;
    if (typeof v !== 'string' || v === '') throw new UsageError(`--${k} needs a value`, C);
    return v;
  };
  const ckpt = str('ckpt');
  if (ckpt === null) throw new UsageError('--ckpt <path> is required (a weights file, a checkpoint folder or a run folder)', C);
  const out = str('out');
  if (out === null) throw new UsageError('--out <dir> is required', C);
  const weights = choiceOption(p, 'weights', C, ['ema', 'model']) ?? null;
  // ddiffusion: the official name of the diffusion sampler, accepted but not advertised
  const sampleType = choiceOption(p, 'sample-type', C, ['transition', 'diffusion', 'ddiffusion'], ['transition', 'diffusion']) ?? 'transition';
  const interval = numberListOption(p, 'cfg-interval', C, 2, 'two numbers lo,hi') ?? [0, 1];
  const [lo, hi] = interval as [number, number];
  if (!(lo >= 0 && hi <= 1 && lo <= hi)) throw new UsageError(`--cfg-interval must be lo,hi with 0 <= lo <= hi <= 1, got '${String(p.options['cfg-interval'])}'`, C);
  const tMax = numberOption(p, 't-max', C) ?? null;
  const tMin = numberOption(p, 't-min', C) ?? null;
  if (tMax !== null && tMin !== null && !(tMax > tMin)) throw new UsageError(`--t-max (${tMax}) must be greater than --t-min (${tMin})`, C);
  const decoder = str('decoder');
  const latentStd = numberOption(p, 'latent-std', C) ?? null;
  const latentMean = numberOption(p, 'latent-mean', C) ?? null;
  if (decoder === null && (latentStd !== null || latentMean !== null)) throw new UsageError('--latent-std and --latent-mean scale the input of --decoder; pass --decoder', C);
  const vae = str('vae');
  if (vae !== null && decoder !== null) throw new UsageError('--vae and --decoder both decode latents; pass one', C);
  const vaeSlice = intOption(p, 'vae-slice', C, 1) ?? null;
  if (vaeSlice !== null && vae === null) throw new UsageError('--vae-slice applies to --vae', C);
  const dtype = choiceOption(p, 'dtype', C, ['fp32', 'bf16', 'float32', 'bfloat16'], ['fp32', 'bf16']) ?? 'fp32';
  const num = intOption(p, 'num', C, 1, 10_000_000) ?? null;
  const labelMode = choiceOption(p, 'labels', C, ['random', 'balanced']) ?? null;
  const steps = intListOption(p, 'steps', C, 1, 10_000);
  if (num !== null) {
    if (p.options.n !== undefined) throw new UsageError('--n (images per class) is for the per-class sweep; with --num N the run has N images in all', C);
    if (steps === undefined) throw new UsageError('--num needs --steps N: the one step count (NFE) of the run', C);
    if (steps.length !== 1) throw new UsageError(`--num samples at one step count; --steps has ${steps.length} (${steps.join(',')})`, C);
    if (p.options['no-safetensors']) throw new UsageError('--no-safetensors is for the per-class sweep; --num writes PNGs and samples.npz (--no-npz)', C);
  } else {
    if (labelMode !== null) throw new UsageError('--labels applies to --num runs', C);
    if (p.options['no-npz']) throw new UsageError('--no-npz applies to --num runs', C);
  }
  const device = deviceOption(p, 'device', C) ?? null;
  return {
    ckpt,
    config: str('config'),
    weights,
    out,
    classes: intListOption(p, 'class', C, 0) ?? null,
    steps: steps ?? [1, 2, 4, 8],
    n: intOption(p, 'n', C, 1, 1_000_000) ?? 16,
    cfg: numberOption(p, 'cfg', C, 1) ?? 1,
    cfgInterval: [lo, hi],
    stochasticity: numberOption(p, 'stochasticity', C, 0) ?? 0,
    sampleType: sampleType === 'transition' ? 'transition' : 'diffusion',
    tMax,
    tMin,
    seed: intOption(p, 'seed', C, 0) ?? 0,
    batch: intOption(p, 'batch', C, 1) ?? 64,
    decoder,
    vae,
    vaeSlice,
    dtype: dtype === 'bf16' || dtype === 'bfloat16' ? 'bfloat16' : 'float32',
    num,
    labelMode: labelMode ?? 'random',
    npz: !p.options['no-npz'],
    latentStd,
    latentMean,
    safetensors: !p.options['no-safetensors'],
    allowTorchScript: p.options['allow-torchscript'] === true,
    device,
    threads: intOption(p, 'threads', C, 1) ?? null,
  };
}

// ---- what --ckpt names -------------------------------------------------------------------------

export interface CheckpointSource {
  /** the weights file to load */
  weights: string;
  /** 'ema' / 'model' when taken from a checkpoint folder, else null */
  which: 'ema' | 'model' | null;
  /** the checkpoint folder and its step, when known */
  checkpoint: string | null;
  step: number | null;
  /** the run folder (holding checkpoints/ and config.yaml), when the weights are inside one */
  run: string | null;
}

/** The run folder above a checkpoint folder <run>/checkpoints/<step>, or null. */
function runOf(checkpointDir: string): string | null {
  const parent = dirname(checkpointDir);
  return basename(parent) === 'checkpoints' ? dirname(parent) : null;
}

function isCheckpointDir(dir: string): boolean {
  return [STATE_FILE, 'ema.safetensors', 'model.safetensors'].some((f) => existsSync(join(dir, f)));
}

function stepOf(dir: string): number | null {
  try {
    return readCheckpointState(dir).step;
  } catch {
    // a folder of weights without a training state still samples; only the step is unknown
    return /^\d+$/.test(basename(dir)) ? Number(basename(dir)) : null;
  }
}

/**
 * The weights `--ckpt` names: a file as it is; a checkpoint folder's ema.safetensors (or
 * model.safetensors when there is no EMA, or as `weights` says); a run folder's newest complete
 * checkpoint. A missing path or file is a TorchError (E_IO) naming it.
 */
export function resolveCheckpoint(path: string, weights: 'ema' | 'model' | null = null): CheckpointSource {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new TorchError(`--ckpt '${path}': no such file or folder`, 'E_IO');
  }
  if (st.isFile()) {
    if (weights !== null) throw new UsageError(`--weights picks the file of a checkpoint folder; '${path}' is a file`, 'sample');
    const dir = dirname(path);
    const inCheckpoint = isCheckpointDir(dir) && runOf(dir) !== null;
    return { weights: path, which: null, checkpoint: inCheckpoint ? dir : null, step: inCheckpoint ? stepOf(dir) : null, run: inCheckpoint ? runOf(dir) : null };
  }
  if (!st.isDirectory()) throw new TorchError(`--ckpt '${path}' is neither a file nor a folder`, 'E_IO');
  let dir = path;
  if (existsSync(join(path, 'checkpoints'))) {
    const latest = latestCheckpoint(path);
    if (!latest) throw new TorchError(`--ckpt '${path}': the run folder has no complete checkpoint under ${join(path, 'checkpoints')}`, 'E_IO');
    dir = latest.dir;
  } else if (!isCheckpointDir(path)) {
    const hint = existsSync(join(path, 'train', 'checkpoints')) ? ` (the run folder may be ${join(path, 'train')})` : '';
    throw new TorchError(`--ckpt '${path}' is a folder but neither a run folder (checkpoints/) nor a checkpoint folder ({ema,model}.safetensors)${hint}`, 'E_IO');
  }
  const which = weights ?? (existsSync(join(dir, 'ema.safetensors')) ? 'ema' : 'model');
  const file = join(dir, `${which}.safetensors`);
  if (!existsSync(file)) throw new TorchError(`--ckpt '${path}': no ${which} weights, '${file}' does not exist`, 'E_IO');
  return { weights: file, which, checkpoint: dir, step: stepOf(dir), run: runOf(dir) };
}

// ---- the config ---------------------------------------------------------------------------------

/**
 * The network and the transport of an official-layout config (model.network, model.transport; the
 * data and training sections are not read). A missing model.transport is OT-FM, as for the trainer.
 */
export function readSampleConfig(path: string): { network: TiMConfig; transport: Transport } {
  const doc = readConfigDocument(path);
  const model = isObject(doc) && isObject(doc.model) ? doc.model : null;
  if (!model || !isObject(model.network)) {
    throw new TorchError(`config '${path}' has no model.network: tim sample reads the official layout (model.network {target, params}, model.transport {target, params})`, 'E_CONFIG');
  }
  try {
    return parseModelConfig(doc);
  } catch (e) {
    (e as Error).message = `config '${path}': ${(e as Error).message}`;
    throw e;
  }
}

// ---- noise ------------------------------------------------------------------------------------------

const M64 = (1n << 64n) - 1n;

/** SplitMix64's finalizer: a well-spread 64-bit value for each input (Steele, Lea & Flood 2014). */
function splitmix64(x: bigint): bigint {
  let z = (x + 0x9e3779b97f4a7c15n) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  return z ^ (z >> 31n);
}

/** The RNG seed of image `index` of class `label` under `seed` (a 64-bit value for torch.manualSeed). */
export function imageSeed(seed: number, label: number, index: number): bigint {
  return splitmix64(splitmix64(splitmix64(BigInt(seed)) ^ BigInt(label)) ^ BigInt(index));
}

/**
 * The starting noise of a batch of images: for each, torch.manualSeed(imageSeed(seed, label, index)),
 * then z = randn(shape) and, when `numSteps` > 0, the per-step draws eps = randn([numSteps, ...shape])
 * (used by the steps that are stochastic). Returns z (B, ...shape) and eps (numSteps, B, ...shape) or
 * null. Moves the global CPU generator (the caller saves and restores it).
 */
export function imageNoise(seed: number, labels: readonly number[], indices: readonly number[], shape: readonly number[], numSteps = 0): { z: Tensor; eps: Tensor | null } {
  return torch.scope(() => {
    const zs: Tensor[] = [];
    const eps: Tensor[] = [];
    for (let k = 0; k < labels.length; k++) {
      torch.manualSeed(imageSeed(seed, labels[k]!, indices[k]!));
      zs.push(torch.randn([...shape]));
      if (numSteps > 0) eps.push(torch.randn([numSteps, ...shape]));
    }
    return { z: torch.stack(zs, 0), eps: numSteps > 0 ? torch.stack(eps, 1) : null };
  });
}

// ---- the command --------------------------------------------------------------------------------

export interface NfeOutput {
  nfe: number;
  images: string;
  grid: string;
  samples: string | null;
  seconds: number;
}

/**
 * The command: checks the flags, finds the weights and the config, loads the model (and decoder)
 * and samples each step count. Progress goes to `write` (default stderr, one line rewritten in place
 * on a terminal); a JSON summary to `print`. Returns the exit status.
 */
export async function runSample(p: Parsed, print: (s: string) => void, write?: (s: string) => void): Promise<number> {
  const s = sampleSettings(p);
  const C = 'sample';
  // What the flags name must exist before anything is loaded (exit 1, naming the file).
  const src = resolveCheckpoint(s.ckpt, s.weights);
  const runConfig = src.run !== null && existsSync(join(src.run, 'config.yaml')) ? join(src.run, 'config.yaml') : null;
  const configPath = s.config ?? runConfig;
  if (configPath === null) {
    throw new TorchError(
      `no config for '${src.weights}': pass --config <yaml> (the official layout: model.network and model.transport)` +
      (src.run !== null ? `; the run folder '${src.run}' has no config.yaml` : '; the weights are not inside a run folder whose config.yaml could be used'),
      'E_CONFIG',
    );
  }
  if (!existsSync(configPath)) throw new TorchError(`--config '${configPath}': no such file`, 'E_IO');
  if (s.decoder !== null && !existsSync(s.decoder)) throw new TorchError(`--decoder '${s.decoder}': no such file`, 'E_IO');
  if (s.vae !== null && !existsSync(s.vae)) throw new TorchError(`--vae '${s.vae}': no such folder`, 'E_IO');
  const { network, transport } = readSampleConfig(configPath);

  if (network.variant !== 'c2i') throw new TorchError(`the config '${configPath}' is a ${network.variant.toUpperCase()} model: sample it from prompts (--prompt TEXT or --prompts FILE, with --text-encoder DIR and --vae DIR)`, 'E_CONFIG');
  // Flags that are wrong for this model are usage errors too.
  const classes = s.classes ?? Array.from({ length: network.numClasses }, (_, i) => i);
  const bad = classes.find((c) => c >= network.numClasses);
  if (bad !== undefined) throw new UsageError(`--class ${bad} is out of range: the model has ${network.numClasses} classes (0 to ${network.numClasses - 1})`, C);
  if (s.decoder === null && s.vae === null && network.inChannels !== 1 && network.inChannels !== 3) {
    throw new UsageError(`--vae <dir> or --decoder <model.pt> is required: the model samples ${network.inChannels}-channel latents (in_channels ${network.inChannels}), not images; pass a diffusers VAE folder or a TorchScript decoder (latents -> images in [-1, 1])`, C);
  }
  const tMax = s.tMax ?? transport.tMax;
  const tMin = s.tMin ?? transport.tMin;
  if (!(tMax > tMin)) throw new UsageError(`the time grid must run from --t-max down to --t-min, got t_max ${tMax}, t_min ${tMin} (transport ${transport.name}: ${transport.tMax} to ${transport.tMin})`, C);

  if (s.threads !== null) torch.setNumThreads(s.threads);
  const device: Device = s.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');

  if (!s.allowTorchScript && checkpointKind(src.weights) === 'torchscript') throw torchScriptRefused(src.weights, 'tim sample --ckpt', '--allow-torchscript');
  const display = new ProgressDisplay(write ?? ((x) => process.stderr.write(x)), write === undefined && Boolean(process.stderr.isTTY));
  const model = loadSampleModel(src.weights, network, configPath, { device, dtype: s.dtype, allowTorchScript: s.allowTorchScript }, (line) => display.message(line));
  let decoder: ImageDecoder | null = null;
  const saved = torch.getRngState();
  let summary: Record<string, unknown>;
  try {
    decoder = await loadImageDecoder(s, network, device);
    // only now that everything loaded, so a failed start leaves no empty output folder behind
    try {
      mkdirSync(s.out, { recursive: true });
    } catch (e) {
      throw new TorchError(`--out '${s.out}': cannot create the folder: ${(e as Error).message}`, 'E_IO');
    }
    const count = s.num !== null ? `${s.num.toLocaleString('en-US')} images (${s.labelMode} labels over ${classes.length} class${classes.length === 1 ? '' : 'es'})` : `${classes.length} class${classes.length === 1 ? '' : 'es'} × ${s.n}`;
    display.message(
      `tim sample: ${src.weights}${src.which ? ` (${src.which}${src.step !== null ? `, step ${src.step}` : ''})` : ''}, config ${configPath}, ` +
      `${model.numParameters().toLocaleString('en-US')} parameters, ${device}${s.dtype === 'bfloat16' ? ', bf16' : ''}${decoder ? `, decoder ${decoder.name}` : ''}; ${count}, steps ${s.steps.join(',')}` +
      (s.cfg > 1 ? `, cfg ${s.cfg} on (${s.cfgInterval.join(', ')})` : '') + (s.stochasticity > 0 ? `, stochasticity ${s.stochasticity}` : ''),
    );
    if (s.stochasticity > 0 && transport.name !== 'OTFM') display.message(`tim sample: note: --stochasticity applies to the OT-FM step only; ${transport.name} steps are deterministic`);
    const job: SweepJob = { s, model, transport, decoder, classes, tMax, tMin, device, src, display };
    const base = { ckpt: src.weights, weights: src.which, step: src.step, config: configPath, device, dtype: s.dtype, seed: s.seed, out: s.out };
    if (s.num !== null) {
      const r = await evaluationRun(job, configPath);
      summary = { ...base, num: s.num, labels: s.labelMode, classes: classes.length, ...r, seconds: Number(r.seconds.toFixed(3)) };
    } else {
      display.message(sizeEstimate(s, model.config, classes.length, s.out, decoder?.imageShape ?? null));
      const results: NfeOutput[] = [];
      for (const nfe of s.steps) results.push(await sampleAtSteps(job, nfe));
      summary = { ...base, classes, n: s.n, nfe: results.map((r) => ({ ...r, seconds: Number(r.seconds.toFixed(3)) })) };
    }
  } finally {
    display.end();
    torch.setRngState(saved);
    decoder?.dispose();
    model.dispose();
  }
  print(JSON.stringify(summary));
  return 0;
}

// ---- loading ------------------------------------------------------------------------------------

/**
 * The network of `configPath` with the weights of `weights`, on `device` in `dtype`. A state dict
 * loads as the official init_from_ckpt loads a release file (load_state_dict(strict=False)), but
 * stricter: only the REPA projector (projector.*, used in training only; the released C2I files
 * lack it) may be missing, said in a note; any other missing key, and every key the network does
 * not have, is an error (E_STATE_DICT) naming them.
 */
export function loadSampleModel(
  weights: string, network: TiMConfig, configPath: string,
  o: { device: Device; dtype: 'float32' | 'bfloat16'; allowTorchScript: boolean }, note: (line: string) => void,
): TiM {
  let model: TiM;
  try {
    model = TiM.load(weights, { config: network, strict: false, allowTorchScript: o.allowTorchScript });
  } catch (e) {
    (e as Error).message = `cannot load '${weights}' with the network of '${configPath}': ${(e as Error).message}`;
    throw e;
  }
  try {
    const r = model.loadReport;
    if (r !== null) {
      const missing = r.missingKeys.filter((k) => !k.startsWith('projector.'));
      if (missing.length > 0 || r.unexpectedKeys.length > 0) {
        const some = (ks: readonly string[]): string => `${ks.slice(0, 5).join(', ')}${ks.length > 5 ? `, ... (${ks.length} in all)` : ''}`;
        throw new TorchError(
          `cannot load '${weights}' with the network of '${configPath}': ` +
          [missing.length ? `${missing.length} missing weight(s): ${some(missing)}` : '', r.unexpectedKeys.length ? `${r.unexpectedKeys.length} unknown key(s): ${some(r.unexpectedKeys)}` : '']
            .filter(Boolean).join('; ') + ' (only projector.* may be missing, as in the official release files)',
          'E_STATE_DICT',
        );
      }
      if (r.missingKeys.length > 0) {
        note(`tim sample: note: '${weights}' has no projector.* weights (${r.missingKeys.length} tensors: the REPA projector, used in training only); loaded without them, as the official init_from_ckpt (strict=False) does`);
      }
    }
    model.to({ device: o.device, dtype: o.dtype });
    return model;
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/** Latents → images in [-1, 1] (N, C, H, W) float32 on the CPU or the sampler's device. */
export interface ImageDecoder {
  name: string;
  /** (C, H, W) of the images, when known before decoding (a VAE's) */
  imageShape?: readonly [number, number, number];
  decode(latents: Tensor): Tensor;
  dispose(): void;
}

/** The --vae or --decoder of the command line, checked against the network; null for pixel models. */
async function loadImageDecoder(s: SampleSettings, network: TiMConfig, device: Device): Promise<ImageDecoder | null> {
  if (s.decoder !== null) {
    const m = torch.jit.load(s.decoder, { device });
    const at = { mean: s.latentMean ?? 0, std: s.latentStd ?? 1 };
    return { name: s.decoder, decode: (x) => decodeLatents(m, x.to('float32'), at), dispose: () => m.dispose() };
  }
  if (s.vae === null) return null;
  // imported when asked for: the VAE's TorchScript sources are not needed by pixel models
  const { VAE } = await import('../vae/index.js');
  const vae = VAE.load(s.vae, { device });
  if (vae.latentChannels !== network.inChannels) {
    vae.dispose();
    throw new TorchError(`--vae '${s.vae}' (${vae.family}) has ${vae.latentChannels}-channel latents; the network samples ${network.inChannels} channels (in_channels)`, 'E_CONFIG');
  }
  const slice = s.vaeSlice !== null ? { sliceSize: s.vaeSlice } : {};
  // the official decoders run the VAE in float32 on float32 latents (samples.to(torch.float32))
  const side = network.inputSize * vae.downsampleFactor;
  return { name: `${s.vae} (${vae.family})`, imageShape: [vae.inChannels, side, side], decode: (x) => vae.decodeLatents(x.to('float32'), slice), dispose: () => vae.dispose() };
}

const GB = 1024 ** 3;
const gb = (n: number): string => `${(n / GB).toFixed(n < GB ? 3 : 1)} GB`;

/**
 * What the run will take, said before it starts: the disk (PNGs are not counted: they depend on the
 * images) and the memory of a batch; refuses (E_IO) when the samples files cannot fit on the disk.
 */
function sizeEstimate(s: SampleSettings, net: Readonly<TiMConfig>, nClasses: number, out: string, imageShape: readonly number[] | null): string {
  const count = nClasses * s.n;
  // the samples file holds the decoded images: a VAE's shape is known (SD-VAE: 48x the bytes of its
  // latents); a TorchScript decoder's is not, and the model's own sample shape stands in for it
  const latent = net.inChannels * net.inputSize * net.inputSize * 4;
  const perImage = imageShape ? imageShape.reduce((a, b) => a * b, 4) : latent;
  const file = count * (perImage + 8);
  const batchMem = Math.min(s.batch, count) * latent * (s.cfg > 1 ? 2 : 1) * 8;
  let line = `tim sample: ${count.toLocaleString('en-US')} images per step count; memory about ${gb(batchMem)} per batch of ${s.batch} (images are streamed to disk)`;
  if (s.safetensors) {
    const need = file * s.steps.length;
    line += `; samples files ${gb(file)} each, ${gb(need)} for ${s.steps.length} step count${s.steps.length === 1 ? '' : 's'}`;
    let free = Infinity;
    try {
      const st = statfsSync(out);
      free = st.bavail * st.bsize;
    } catch {
      // unknown: go on
    }
    if (need > free) {
      throw new TorchError(`--out '${out}': the samples files need ${gb(need)} but the disk has ${gb(free)} free; free space, lower --n, or pass --no-safetensors`, 'E_IO');
    }
  }
  return line;
}

export interface SweepJob {
  s: SampleSettings;
  model: TiM;
  transport: Transport;
  decoder: ImageDecoder | null;
  classes: number[];
  tMax: number;
  tMin: number;
  device: Device;
  src: CheckpointSource;
  display: ProgressDisplay;
}

/**
 * The images of one batch: image k from the noise of (seed, labels[k], indices[k]), sampled at `nfe`
 * steps with the job's settings and decoded; float32 (B, C, H, W) in [-1, 1] on the CPU.
 */
export function sampleImages(job: SweepJob, nfe: number, labels: readonly number[], indices: readonly number[]): Tensor {
  const { s, model, transport, decoder, device } = job;
  const net = model.config;
  return torch.noGrad(() => torch.scope(() => {
    const { z, eps } = imageNoise(s.seed, labels, indices, [net.inChannels, net.inputSize, net.inputSize], s.stochasticity > 0 ? nfe : 0);
    const x = sample(model, transport, {
      z: z.to({ device, dtype: s.dtype }), y: torch.tensor([...labels], { dtype: 'int64', device }), numSteps: nfe,
      cfgScale: s.cfg, cfgLow: s.cfgInterval[0], cfgHigh: s.cfgInterval[1], stochasticityRatio: s.stochasticity,
      sampleType: s.sampleType, tMax: job.tMax, tMin: job.tMin, ...(eps ? { noise: eps.to(device) } : {}),
    });
    const im = decoder ? decoder.decode(x) : x;
    return im.to({ device: 'cpu', dtype: 'float32' }).clamp(-1, 1).contiguous();
  }));
}

/** Every image at one step count: PNGs as batches finish, then the grid and the samples file. */
async function sampleAtSteps(job: SweepJob, nfe: number): Promise<NfeOutput> {
  const { s, decoder, classes, display } = job;
  // class-major: the first n images are of classes[0], the next n of classes[1], ...
  const labels = classes.flatMap((c) => new Array<number>(s.n).fill(c));
  const indices = classes.flatMap(() => Array.from({ length: s.n }, (_, i) => i));
  const total = labels.length;
  const width = String(s.n - 1).length;
  const cols = Math.min(s.n, GRID_COLUMNS);
  const dir = join(s.out, `nfe-${nfe}`);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw fsError('cannot create the image folder', dir, e);
  }
  const cells: Tensor[] = [];
  const t0 = performance.now();
  // the samples file is streamed to disk batch by batch (memory: one batch, whatever --n)
  const stream = s.safetensors ? new SamplesWriter(join(s.out, `nfe-${nfe}.safetensors`), total, labels, metadataOf(job, nfe)) : null;
  try {
    for (let start = 0; start < total; start += s.batch) {
      const len = Math.min(s.batch, total - start);
      const batchLabels = labels.slice(start, start + len);
      const batchIdx = indices.slice(start, start + len);
      const images = sampleImages(job, nfe, batchLabels, batchIdx);
      try {
        const sh = images.shape;
        if (sh.length !== 4 || sh[0] !== len || sh[1]! < 1 || sh[1]! > 4) {
          throw new TorchError(`${decoder ? 'the decoder' : 'the sampler'} returned [${sh.join(', ')}]; expected images (${len}, C, H, W) with 1 to 4 channels`, 'E_SHAPE');
        }
        for (let k = 0; k < len; k++) {
          const i = batchIdx[k]!;
          torch.scope(() => savePng(join(dir, `${batchLabels[k]}-${String(i).padStart(width, '0')}.png`), images.select(0, k)));
          if (i < cols) cells.push(torch.scope(() => images.select(0, k).clone()));
        }
      } catch (e) {
        images.dispose();
        throw e;
      }
      try {
        stream?.append(images);
      } finally {
        images.dispose();
      }
      const done = start + len;
      const rate = (done * 1000) / Math.max(1, performance.now() - t0);
      display.update(`tim sample: nfe ${nfe}  ${done}/${total} images [${Math.floor((100 * done) / total)}%]  ${rate.toFixed(1)} img/s  ETA ${formatDuration(rate > 0 ? (total - done) / rate : NaN)}`);
      // a turn of the event loop per batch: signals, timers and an in-process caller's I/O get in
      await new Promise<void>((r) => setImmediate(r));
    }
    const grid = join(s.out, `grid-nfe${nfe}.png`);
    torch.scope(() => savePng(grid, makeGrid(cells, { nrow: cols, padValue: -1 })));
    const samples = stream ? stream.finish() : null;
    const seconds = (performance.now() - t0) / 1000;
    display.message(`tim sample: nfe ${nfe}: ${total} images in ${seconds.toFixed(1)} s -> ${dir}/, ${grid}${samples ? `, ${samples}` : ''}`);
    return { nfe, images: dir, grid, samples, seconds };
  } finally {
    stream?.abort();
    for (const t of cells) t.dispose();
  }
}

/**
 * A safetensors file `{ images: float32 (count, C, H, W), labels: int64 (count) }` written as the
 * batches come: the header once the first batch gives C, H, W, then each batch's bytes, then the
 * labels; into a temporary file renamed into place at the end (a failed run leaves no partial
 * samples file). The same layout torch.save writes, so `tim eval --samples` reads it unchanged.
 */
export class SamplesWriter {
  private readonly file: AtomicFile;
  private written = 0;
  private started = false;
  constructor(readonly path: string, readonly count: number, private readonly labels: readonly number[], private readonly metadata: Record<string, string>) {
    this.file = new AtomicFile(path, (e) => fsError('cannot write the samples file', path, e));
  }
  /** The temporary file the samples stream into until finish(). */
  get tmp(): string {
    return this.file.tmp;
  }

  append(images: Tensor): void {
    const [n, c, h, w] = images.shape as [number, number, number, number];
    if (!this.started) {
      const imageBytes = this.count * c * h * w * 4;
      const header: Record<string, unknown> = {
        __metadata__: this.metadata,
        images: { dtype: 'F32', shape: [this.count, c, h, w], data_offsets: [0, imageBytes] },
        labels: { dtype: 'I64', shape: [this.count], data_offsets: [imageBytes, imageBytes + this.count * 8] },
      };
      let json = JSON.stringify(header);
      json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
      this.file.write(Buffer.concat([len, Buffer.from(json, 'utf8')]));
      this.started = true;
      this.shape = [c, h, w];
    } else if (this.shape![0] !== c || this.shape![1] !== h || this.shape![2] !== w) {
      throw new TorchError(`samples file: a batch of images [${images.shape.join(', ')}] after batches of [${this.shape!.join(', ')}]`, 'E_SHAPE');
    }
    if (this.written + n > this.count) throw new TorchError(`samples file: more than the ${this.count} images announced`, 'E_STATE');
    const a = images.toTypedArray() as Float32Array;
    this.file.write(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    this.written += n;
  }
  private shape: [number, number, number] | null = null;

  /** Writes the labels and replaces `path` atomically (lib/torch/io/atomic.ts); returns its path. */
  finish(): string {
    if (this.written !== this.count || !this.started) throw new TorchError(`samples file: ${this.written} of ${this.count} images written`, 'E_STATE');
    const lab = Buffer.alloc(this.count * 8);
    for (let i = 0; i < this.count; i++) lab.writeBigInt64LE(BigInt(this.labels[i]!), i * 8);
    this.file.write(lab);
    this.file.commit();
    return this.path;
  }

  /** Drops the temporary file unless finish() published it. */
  abort(): void {
    this.file.abort();
  }
}

/** The settings a samples file came from (strings: safetensors metadata); nothing time- or host-dependent. */
function metadataOf(job: SweepJob, nfe: number): Record<string, string> {
  const { s, src } = job;
  return {
    format: 'tim-torch.samples',
    ckpt: src.weights,
    ...(src.step !== null ? { step: String(src.step) } : {}),
    nfe: String(nfe),
    seed: String(s.seed),
    classes: job.classes.join(','),
    n: String(s.n),
    cfg: String(s.cfg),
    cfg_interval: s.cfgInterval.join(','),
    stochasticity: String(s.stochasticity),
    sample_type: s.sampleType,
    t_max: String(job.tMax),
    t_min: String(job.tMin),
    transport: job.transport.name,
  };
}

/**
 * `tim sample` for text-to-image models: `--ckpt t2i_model.bin --config tim_xl_p1_t2i.yaml
 * --text-encoder gemma-3-1b-it --vae dc-ae-f32c32-sana-1.1-diffusers --prompt "a photo of a cat"
 * --out samples/` → one PNG per prompt and a grid, through textToImage
 * (lib/tim/sampling/text_to_image.ts; official projects/sample/sample_t2i_geneval_ddp.py):
 *
 *   <out>/<i>.png     the image of prompt i (prompt order; i zero-padded to 5 digits, as the official names)
 *   <out>/grid.png    every image, ceil(√N) per row
 *
 * `--prompt` may be given several times, which util.parseArgs (lib/cli/args.ts) refuses for any
 * option, so parseSampleT2IArgs takes the --prompt values out first and lets args.ts parse the rest.
 * The weights load as the C2I path loads an official release file (lib/cli/sample.ts
 * loadSampleModel: only the REPA projector may be missing). Progress goes to stderr, a JSON summary
 * to stdout.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/tensor.js';
import { TorchError } from '../torch/errors.js';
import type { Device } from '../torch/dtype.js';
import { isObject } from '../torch/check.js';
import { makeGrid, savePng } from '../torch/io/image.js';
import { readConfigDocument } from '../tim/config_file.js';
import type { TiM } from '../tim/network/model.js';
import { CaptionEncoder } from '../text/caption_encoder.js';
import { VAE } from '../vae/vae.js';
import { T2I_DEFAULTS, textToImage } from '../tim/sampling/text_to_image.js';
import { ProgressDisplay, formatDuration } from '../tim/train/progress.js';
import { loadSampleModel, readSampleConfig, resolveCheckpoint } from './sample.js';
import {
  UsageError, choiceOption, deviceOption, intOption, numberListOption, numberOption, parseArgs, type CommandSpec, type Parsed,
} from './args.js';

const C = 'sample';

export const SAMPLE_T2I: CommandSpec = {
  name: 'sample',
  brief: 'sample a text-to-image TiM from prompts: a PNG per prompt and a grid',
  summary: 'Sample a text-to-image Transition Model from prompts: captions from a Gemma-3 folder, the any-step sampler with classifier-free guidance against the empty caption, images decoded by a diffusers VAE (DC-AE).',
  usage: '--ckpt <file> --config <yaml> --text-encoder <dir> --vae <dir> --prompt <text> --out <dir>',
  positionals: [0, 0],
  details: [
    'Files under --out: <i>.png for prompt i (in order, 5 digits) and grid.png (all images).',
    '--ckpt: the official t2i_model.bin (a torch.save state dict) or a .safetensors; --config: the official',
    'configs/t2i/tim_xl_p1_t2i.yaml (model.network, model.transport, max_seq_length). --text-encoder: a Hugging Face',
    'Gemma-3 folder (config.json, model.safetensors, tokenizer.json); --vae: a diffusers VAE folder.',
    'Defaults are the official GenEval settings (scripts/sample/t2i/sample_t2i_geneval.sh): 1024x1024, cfg 2.5,',
    '4 steps, prompts through unicode-escape. Guidance applies for lo < t < hi strictly, so the first step (t = 1)',
    'is never guided: a 1-step sample is unguided, as in the official code. The captions of a batch are cut to',
    'its longest caption, as the official loop does, so an image depends on its batch mates (--batch).',
    'Noise: z of prompt i depends on (--seed, i) alone.',
  ].join('\n'),
  options: {
    ckpt: { value: true, arg: 'file', help: 'T2I weights: official t2i_model.bin or .safetensors (or a checkpoint/run folder of tim train)' },
    config: { value: true, arg: 'yaml', help: 'official-layout config (model.network, model.transport, model.max_seq_length)' },
    'text-encoder': { value: true, arg: 'dir', help: 'Gemma-3 folder: config.json, model.safetensors, tokenizer.json' },
    vae: { value: true, arg: 'dir', help: 'diffusers VAE folder (DC-AE for the released model)' },
    prompt: { value: true, arg: 'text', help: 'a prompt; repeat for several' },
    prompts: { value: true, arg: 'file', help: 'a UTF-8 file of prompts, one per line (blank lines are skipped)' },
    out: { value: true, arg: 'dir', help: 'output folder (created if missing; files of the same names are replaced)' },
    height: { value: true, arg: 'px', help: `image height (default ${T2I_DEFAULTS.height}; a multiple of the VAE downsampling × patch size)` },
    width: { value: true, arg: 'px', help: `image width (default ${T2I_DEFAULTS.width})` },
    steps: { value: true, arg: 'N', help: `sampler steps (default ${T2I_DEFAULTS.steps})` },
    cfg: { value: true, arg: 'scale', help: `classifier-free guidance scale, 1 = none (default ${T2I_DEFAULTS.cfg})` },
    'cfg-interval': { value: true, arg: 'lo,hi', help: 'guidance applies for lo·t_max < t < hi·t_max (default 0,1)' },
    stochasticity: { value: true, arg: 's', help: 'stochasticity ratio of the OT-FM step (default 0)' },
    'sample-type': { value: true, arg: 'transition|diffusion', help: 'r = t_next (transition, default) or r = t (diffusion)' },
    seed: { value: true, arg: 'N', help: 'noise seed (default 0)' },
    batch: { value: true, arg: 'N', help: 'prompts per sampler call (default 4; guidance doubles the network batch)' },
    'vae-slice': { value: true, arg: 'N', help: 'decode N images at a time (default 1, the official --slice_vae)' },
    'max-length': { value: true, arg: 'N', help: 'caption tokens (default: the config\'s model.max_seq_length, else 256)' },
    'caption-transform': { value: true, arg: 'unicode-escape|none', help: 'prompt transform before tokenizing (default unicode-escape, as GenEval)' },
    dtype: { value: true, arg: 'fp32|bf16', help: 'the network\'s dtype (default fp32; the official sampler uses bf16); encoder and VAE stay fp32' },
    device: { value: true, arg: 'cpu|cuda', help: 'default: cuda when available' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};

/** Parsed flags plus every --prompt, in order. */
export interface T2IParsed extends Parsed {
  prompt: string[];
}

/** True when a `tim sample` command line is a text-to-image one (it names prompts or a text encoder). */
export function isTextToImageArgs(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (/^--(prompt|prompts|text-encoder)(=|$)/.test(a)) return true;
  }
  return false;
}

/**
 * The command line: every `--prompt <text>` / `--prompt=<text>` taken out in order (a value may be
 * empty, the unconditional prompt, but not a missing one), the rest parsed by args.ts.
 */
export function parseSampleT2IArgs(argv: readonly string[]): T2IParsed {
  const rest: string[] = [];
  const prompt: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (a.startsWith('--prompt=')) {
      prompt.push(a.slice('--prompt='.length));
    } else if (a === '--prompt') {
      const v = argv[i + 1];
      // as args.ts: `--prompt --out x` is a forgotten value, not a prompt '--out'
      if (v === undefined || v.startsWith('--')) throw new UsageError("option '--prompt' needs a value (use --prompt=<text> for text starting with --)", C);
      prompt.push(v);
      i++;
    } else {
      rest.push(a);
    }
  }
  return { ...parseArgs(rest, SAMPLE_T2I), prompt };
}

export interface SampleT2ISettings {
  ckpt: string;
  config: string;
  textEncoder: string;
  vae: string;
  prompts: string[];
  /** where the prompts came from: 'flags' or the --prompts file */
  promptSource: string;
  out: string;
  height: number;
  width: number;
  steps: number;
  cfg: number;
  cfgInterval: [number, number];
  stochasticity: number;
  sampleType: 'transition' | 'diffusion';
  seed: number;
  batch: number;
  vaeSlice: number;
  maxLength: number | null;
  captionTransform: 'unicode-escape' | 'none';
  dtype: 'float32' | 'bfloat16';
  device: Device | null;
  threads: number | null;
}

/** The prompts of a --prompts file: one per line, \r\n or \n, blank lines skipped. */
export function readPromptFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TorchError(`--prompts '${path}': cannot read it: ${(e as Error).message}`, 'E_IO');
  }
  const prompts = text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.trim() !== '');
  if (prompts.length === 0) throw new UsageError(`--prompts '${path}' has no prompts (one per line; blank lines are skipped)`, C);
  return prompts;
}

/** Checks the flags; every malformed one is a UsageError (exit 2) naming it. */
export function sampleT2ISettings(p: T2IParsed): SampleT2ISettings {
  const str = (k: string, what: string): string => {
    const v = p.options[k];
    if (v === undefined) throw new UsageError(`--${k} ${what} is required`, C);
    if (typeof v !== 'string' || v === '') throw new UsageError(`--${k} needs a value`, C);
    return v;
  };
  const ckpt = str('ckpt', '<file>');
  const config = str('config', '<yaml> (the official configs/t2i/tim_xl_p1_t2i.yaml layout)');
  const textEncoder = str('text-encoder', '<dir> (a Gemma-3 folder)');
  const vae = str('vae', '<dir> (a diffusers VAE folder)');
  const out = str('out', '<dir>');
  const file = p.options.prompts;
  if (file !== undefined && p.prompt.length > 0) throw new UsageError('pass prompts with --prompt or --prompts <file>, not both', C);
  if (file === undefined && p.prompt.length === 0) throw new UsageError('no prompts: pass --prompt <text> (repeatable) or --prompts <file>', C);
  if (file !== undefined && (typeof file !== 'string' || file === '')) throw new UsageError('--prompts needs a value', C);
  const interval = numberListOption(p, 'cfg-interval', C, 2, 'two numbers lo,hi') ?? [T2I_DEFAULTS.cfgLow, T2I_DEFAULTS.cfgHigh];
  const [lo, hi] = interval as [number, number];
  if (!(lo >= 0 && hi <= 1 && lo <= hi)) throw new UsageError(`--cfg-interval must be lo,hi with 0 <= lo <= hi <= 1, got '${String(p.options['cfg-interval'])}'`, C);
  const sampleType = choiceOption(p, 'sample-type', C, ['transition', 'diffusion', 'ddiffusion'], ['transition', 'diffusion']) ?? 'transition';
  const dtype = choiceOption(p, 'dtype', C, ['fp32', 'bf16', 'float32', 'bfloat16'], ['fp32', 'bf16']) ?? 'fp32';
  return {
    ckpt, config, textEncoder, vae, out,
    prompts: file !== undefined ? readPromptFile(file as string) : [...p.prompt],
    promptSource: file !== undefined ? (file as string) : 'flags',
    height: intOption(p, 'height', C, 1, 1 << 16) ?? T2I_DEFAULTS.height,
    width: intOption(p, 'width', C, 1, 1 << 16) ?? T2I_DEFAULTS.width,
    steps: intOption(p, 'steps', C, 1, 10_000) ?? T2I_DEFAULTS.steps,
    // the official sampler asserts cfg_scale >= 1
    cfg: numberOption(p, 'cfg', C, 1) ?? T2I_DEFAULTS.cfg,
    cfgInterval: [lo, hi],
    stochasticity: numberOption(p, 'stochasticity', C, 0) ?? T2I_DEFAULTS.stochasticity,
    sampleType: sampleType === 'transition' ? 'transition' : 'diffusion',
    seed: intOption(p, 'seed', C, 0) ?? T2I_DEFAULTS.seed,
    batch: intOption(p, 'batch', C, 1) ?? 4,
    vaeSlice: intOption(p, 'vae-slice', C, 1) ?? 1,
    maxLength: intOption(p, 'max-length', C, 1, 1 << 20) ?? null,
    captionTransform: choiceOption(p, 'caption-transform', C, ['unicode-escape', 'none']) ?? 'unicode-escape',
    dtype: dtype === 'bf16' || dtype === 'bfloat16' ? 'bfloat16' : 'float32',
    device: deviceOption(p, 'device', C) ?? null,
    threads: intOption(p, 'threads', C, 1) ?? null,
  };
}

/** model.max_seq_length and model.use_last_hidden_state of the official T2I YAML. */
function captionSettings(configPath: string): { maxSeqLength: number | null; lastHiddenState: boolean } {
  const doc = readConfigDocument(configPath);
  const model = isObject(doc) && isObject(doc.model) ? doc.model : {};
  const m = model.max_seq_length;
  if (m !== undefined && m !== null && !(Number.isInteger(m) && (m as number) >= 1)) {
    throw new TorchError(`config '${configPath}': model.max_seq_length must be a positive integer, got ${JSON.stringify(m)}`, 'E_CONFIG');
  }
  const u = model.use_last_hidden_state;
  if (u !== undefined && u !== null && typeof u !== 'boolean') throw new TorchError(`config '${configPath}': model.use_last_hidden_state must be true or false`, 'E_CONFIG');
  return { maxSeqLength: (m as number | null | undefined) ?? null, lastHiddenState: u !== false };
}

function folderMustExist(flag: string, dir: string): void {
  let ok = false;
  try {
    ok = statSync(dir).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new TorchError(`--${flag} '${dir}': no such folder`, 'E_IO');
}

/**
 * The command: checks the flags and what they name, loads the VAE, the caption encoder and the
 * network (checking that they fit before the network, the slowest, loads), samples every prompt
 * and writes the PNGs. Progress goes to `write` (default stderr, one line rewritten in place on a
 * terminal); a JSON summary to `print`. Returns the exit status.
 */
export function runSampleT2I(p: T2IParsed, print: (s: string) => void, write?: (s: string) => void): number {
  const s = sampleT2ISettings(p);
  const src = resolveCheckpoint(s.ckpt);
  if (!existsSync(s.config)) throw new TorchError(`--config '${s.config}': no such file`, 'E_IO');
  folderMustExist('text-encoder', s.textEncoder);
  folderMustExist('vae', s.vae);
  const { network, transport } = readSampleConfig(s.config);
  if (network.variant !== 't2i') {
    throw new TorchError(`--prompt samples text-to-image models; the config '${s.config}' is a ${network.variant.toUpperCase()} model (sample it without --prompt / --text-encoder)`, 'E_CONFIG');
  }
  const caption = captionSettings(s.config);
  if (!caption.lastHiddenState) {
    throw new TorchError(`config '${s.config}': model.use_last_hidden_state is false (hidden_states[-2] as caption features); only the last hidden state is implemented`, 'E_CONFIG');
  }
  const maxLength = s.maxLength ?? caption.maxSeqLength ?? 256;
  if (s.threads !== null) torch.setNumThreads(s.threads);
  const device: Device = s.device ?? (torch.cuda.isAvailable() ? 'cuda' : 'cpu');

  const display = new ProgressDisplay(write ?? ((x) => process.stderr.write(x)), write === undefined && Boolean(process.stderr.isTTY));
  let vae: VAE | null = null;
  let encoder: CaptionEncoder | null = null;
  let model: TiM | null = null;
  let images: Tensor | null = null;
  let summary: Record<string, unknown>;
  try {
    vae = VAE.load(s.vae, { device });
    // What only the loaded pieces can say is still bad usage: say it before the network loads.
    const f = vae.downsampleFactor * network.patchSize;
    for (const [name, v] of [['height', s.height], ['width', s.width]] as const) {
      if (v % f !== 0) throw new UsageError(`--${name} must be a multiple of ${f} (VAE downsampling ${vae.downsampleFactor} × patch size ${network.patchSize}), got ${v}`, C);
    }
    if (vae.latentChannels !== network.inChannels) {
      throw new TorchError(`--vae '${s.vae}' has ${vae.latentChannels} latent channels but the model of '${s.config}' samples ${network.inChannels}: not this model's VAE`, 'E_SHAPE');
    }
    encoder = CaptionEncoder.load(s.textEncoder, { maxLength, device });
    if (encoder.config.hiddenSize !== network.capFeatDim) {
      throw new TorchError(`--text-encoder '${s.textEncoder}' gives ${encoder.config.hiddenSize}-wide features but the model of '${s.config}' takes cap_feat_dim ${network.capFeatDim}: not this model's text encoder`, 'E_SHAPE');
    }
    model = loadSampleModel(src.weights, network, s.config, { device, dtype: s.dtype, allowTorchScript: false }, (line) => display.message(line));
    display.message(
      `tim sample: ${src.weights}, config ${s.config}, ${model.numParameters().toLocaleString('en-US')} parameters, ${device}${s.dtype === 'bfloat16' ? ', bf16' : ''}; ` +
      `${s.prompts.length} prompt${s.prompts.length === 1 ? '' : 's'}, ${s.width}x${s.height}, ${s.steps} step${s.steps === 1 ? '' : 's'}` +
      (s.cfg > 1 ? `, cfg ${s.cfg} on (${s.cfgInterval.join(', ')})` : '') + (s.stochasticity > 0 ? `, stochasticity ${s.stochasticity}` : '') +
      `, seed ${s.seed}, batch ${s.batch}`,
    );
    const t0 = performance.now();
    const result = textToImage({
      model, encoder, vae, prompts: s.prompts, height: s.height, width: s.width, steps: s.steps, cfg: s.cfg,
      cfgLow: s.cfgInterval[0], cfgHigh: s.cfgInterval[1], stochasticity: s.stochasticity, sampleType: s.sampleType,
      transport, seed: s.seed, batchSize: s.batch, captionTransform: s.captionTransform, vaeSliceSize: s.vaeSlice,
      onProgress: (q) => display.update(
        `tim sample: batch ${q.batch + 1}/${q.batches}, step ${q.step}/${q.steps}, ${formatDuration((performance.now() - t0) / 1000)}`,
      ),
    });
    images = result.images;
    const seconds = (performance.now() - t0) / 1000;
    // only now that everything ran, so a failed start leaves no empty output folder behind
    try {
      mkdirSync(s.out, { recursive: true });
    } catch (e) {
      throw new TorchError(`--out '${s.out}': cannot create the folder: ${(e as Error).message}`, 'E_IO');
    }
    const N = s.prompts.length;
    const digits = Math.max(5, String(N - 1).length);
    const files: { file: string; prompt: string }[] = [];
    for (let i = 0; i < N; i++) {
      const file = join(s.out, `${String(i).padStart(digits, '0')}.png`);
      torch.scope(() => savePng(file, images!.select(0, i)));
      files.push({ file, prompt: s.prompts[i]! });
    }
    const grid = join(s.out, 'grid.png');
    torch.scope(() => savePng(grid, makeGrid(images!, { nrow: Math.ceil(Math.sqrt(N)), padValue: -1 })));
    display.message(`tim sample: ${N} image${N === 1 ? '' : 's'} in ${formatDuration(seconds)} -> ${s.out}`);
    summary = {
      ckpt: src.weights, config: s.config, textEncoder: s.textEncoder, vae: s.vae, device, dtype: s.dtype,
      height: s.height, width: s.width, steps: s.steps, cfg: s.cfg, cfgInterval: s.cfgInterval, stochasticity: s.stochasticity,
      sampleType: s.sampleType, seed: s.seed, batch: s.batch, maxLength, captionTransform: s.captionTransform,
      captionLengths: result.captionLengths, out: s.out, images: files, grid, seconds: Number(seconds.toFixed(3)),
    };
  } finally {
    display.end();
    images?.dispose();
    model?.dispose();
    encoder?.dispose();
    vae?.dispose();
  }
  print(JSON.stringify(summary));
  return 0;
}

/**
 * CaptionEncoder: the official TiM-T2I caption path (tim/models/utils/text_encoders.py) in-process:
 * the Gemma-3 text decoder (Gemma3ForCausalLM.get_decoder(), i.e. Gemma3TextModel) built as
 * TorchScript from lib/text/gemma3_spec.ts and loaded from a Hugging Face folder, and its tokenizer.
 *
 *   using enc = CaptionEncoder.load('gemma-3-1b-it');          // maxLength 256, float32, CPU
 *   const { features, attentionMask } = enc.encode(['a photo of a cat']);  // (1, 256, 1152) float32
 *   const nul = enc.encode(['']);                              // the null caption
 *   const feats = await enc.encodeAsync(prompts);              // the decoder on libuv's thread pool
 *
 * Folder: config.json (either layout, lib/text/gemma3_config.ts), model.safetensors (or sharded with
 * model.safetensors.index.json), tokenizer.json, tokenizer_config.json. Weight names with or
 * without the `model.` prefix (Gemma3ForCausalLM / Gemma3TextModel), or under `language_model.` as
 * the multimodal Gemma-3 folders store them; lm_head and vision weights are ignored.
 *
 * Padded positions: the official encoder ran with flash_attention_2, whose padded query rows get no
 * attention output; TiM-T2I consumes the features at padded positions too (the null caption is
 * <bos> + 255 pads), so the default `paddedRows: 'zero'` reproduces flash. 'attend' gives
 * transformers' eager results instead. docs/caption-encoder.md has the evidence.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/tensor.js';
import type { DType, Device } from '../torch/dtype.js';
import { TorchError, argError } from '../torch/errors.js';
import { buildModule } from '../torch/modules/build.js';
import { parseGemma3Config, type Gemma3Config } from './gemma3_config.js';
import { gemma3ModuleSpec, maskMinOf } from './gemma3_spec.js';
import type { PaddedRows, TextAttentionImpl } from './gemma3_sources.js';
import { CaptionTokenizer } from './tokenizer.js';

export interface CaptionEncoderLoadOptions {
  /** Tokens per caption, padded or truncated to it (official max_seq_length: 256). */
  maxLength?: number;
  /** Dtype the decoder runs in (default float32; the official sampling ran bfloat16). Output is float32. */
  dtype?: 'float32' | 'bfloat16' | 'float16' | 'float64';
  device?: Device;
  /** What padded query rows get from attention: 'zero' (flash_attention_2, official; default) or 'attend' (eager). */
  paddedRows?: PaddedRows;
  /** 'auto' (default): fused scaled_dot_product_attention where this libtorch has it with `scale`, else math. */
  attention?: 'auto' | TextAttentionImpl;
  /**
   * Which hidden state is the caption feature: 'last' (default; last_hidden_state, after the final
   * norm: the official T2I config's use_last_hidden_state: True) or 'penultimate' (hidden_states[-2],
   * the last-but-one layer's output without norm: use_last_hidden_state: False).
   */
  hiddenState?: 'last' | 'penultimate';
}

export interface CaptionTokens {
  /** (B, maxLength) int64. */
  inputIds: Tensor;
  /** (B, maxLength) int64, 1 = token, 0 = padding. */
  attentionMask: Tensor;
}

export interface CaptionFeatures {
  /** (B, maxLength, hidden) float32: the last hidden state (after the final norm), or hidden_states[-2]. */
  features: Tensor;
  /** (B, maxLength) int64. */
  attentionMask: Tensor;
}

const folderError = (m: string) => argError('range', `CaptionEncoder.load: ${m}`, 'E_TEXT_FOLDER');
const weightsError = (m: string) => argError('range', `CaptionEncoder.load: ${m}`, 'E_TEXT_WEIGHTS');

/** Weights that belong to the causal LM or the multimodal model, not to the text decoder. */
const IGNORED = /^(lm_head\.|language_model\.lm_head\.|vision_tower\.|multi_modal_projector\.|model\.vision_tower\.|model\.multi_modal_projector\.)/;
const PREFIXES = ['model.language_model.', 'language_model.model.', 'language_model.', 'model.'];

/** sdpa with a `scale` argument (libtorch ≥ 2.1); 1.13 has no sdpa at all. */
export function defaultTextAttention(): TextAttentionImpl {
  if (!torch.hasOp('aten::scaled_dot_product_attention')) return 'math';
  try {
    return /\bscale\b/.test(torch.schemaOf('aten::scaled_dot_product_attention')) ? 'sdpa' : 'math';
  } catch {
    return 'math';
  }
}

function weightFiles(dir: string): string[] {
  const single = join(dir, 'model.safetensors');
  if (existsSync(single)) return [single];
  const index = join(dir, 'model.safetensors.index.json');
  if (!existsSync(index)) throw folderError(`'${dir}' has no model.safetensors (nor model.safetensors.index.json)`);
  let map: unknown;
  try {
    map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown }).weight_map;
  } catch (e) {
    throw weightsError(`'${index}' is not valid JSON (${(e as Error).message})`);
  }
  if (map === null || typeof map !== 'object') throw weightsError(`'${index}' has no weight_map`);
  const files = [...new Set(Object.values(map as Record<string, unknown>))];
  if (files.some((f) => typeof f !== 'string' || f.includes('/') || f.includes('\\'))) throw weightsError(`'${index}': weight_map values must be file names in the folder`);
  return (files as string[]).map((f) => join(dir, f));
}

/** The decoder's state dict from the folder's safetensors, names without prefixes. */
function readWeights(dir: string): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    for (const file of weightFiles(dir)) {
      if (!existsSync(file)) throw weightsError(`weight file '${file}' is missing`);
      let tensors: Record<string, Tensor>;
      try {
        tensors = torch.loadSafetensors(file).tensors;
      } catch (e) {
        throw weightsError(`'${file}' is not a readable safetensors file: ${(e as Error).message}`);
      }
      for (const [name, t] of Object.entries(tensors)) {
        if (IGNORED.test(name)) {
          t.dispose();
          continue;
        }
        const prefix = PREFIXES.find((p) => name.startsWith(p));
        const key = prefix === undefined ? name : name.slice(prefix.length);
        if (out.has(key)) {
          t.dispose();
          throw weightsError(`weight '${key}' appears twice (as '${name}' and another name)`);
        }
        out.set(key, t);
      }
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

export class CaptionEncoder {
  readonly config: Readonly<Gemma3Config>;
  readonly maxLength: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly paddedRows: PaddedRows;
  readonly attention: TextAttentionImpl;
  readonly hiddenState: 'last' | 'penultimate';
  /** The TorchScript Gemma3TextModel (state_dict names as transformers' Gemma3TextModel). */
  readonly module: torch.jit.ScriptModule;
  readonly tokenizer: CaptionTokenizer;

  private constructor(module: torch.jit.ScriptModule, tokenizer: CaptionTokenizer, config: Gemma3Config,
    o: { maxLength: number; dtype: DType; device: Device; paddedRows: PaddedRows; attention: TextAttentionImpl; hiddenState: 'last' | 'penultimate' }) {
    this.module = module;
    this.tokenizer = tokenizer;
    this.config = Object.freeze({ ...config });
    this.maxLength = o.maxLength;
    this.dtype = o.dtype;
    this.device = o.device;
    this.paddedRows = o.paddedRows;
    this.attention = o.attention;
    this.hiddenState = o.hiddenState;
  }

  static load(dir: string, options: CaptionEncoderLoadOptions = {}): CaptionEncoder {
    if (typeof dir !== 'string' || dir === '') throw argError('type', 'CaptionEncoder.load: dir must be a non-empty string', 'E_ARG');
    const maxLength = options.maxLength ?? 256;
    if (!Number.isInteger(maxLength) || maxLength < 1) throw argError('range', `CaptionEncoder.load: maxLength must be a positive integer, got ${String(maxLength)}`, 'E_RANGE');
    const dtype = options.dtype ?? 'float32';
    if (!['float32', 'bfloat16', 'float16', 'float64'].includes(dtype)) throw argError('range', `CaptionEncoder.load: dtype must be float32, bfloat16, float16 or float64, got ${String(dtype)}`, 'E_DTYPE');
    const paddedRows = options.paddedRows ?? 'zero';
    if (paddedRows !== 'zero' && paddedRows !== 'attend') throw argError('range', `CaptionEncoder.load: paddedRows must be 'zero' or 'attend', got ${String(paddedRows)}`, 'E_OPTION');
    const att = options.attention ?? 'auto';
    if (att !== 'auto' && att !== 'math' && att !== 'sdpa') throw argError('range', `CaptionEncoder.load: attention must be 'auto', 'math' or 'sdpa', got ${String(att)}`, 'E_OPTION');
    const attention = att === 'auto' ? defaultTextAttention() : att;
    const hiddenState = options.hiddenState ?? 'last';
    if (hiddenState !== 'last' && hiddenState !== 'penultimate') throw argError('range', `CaptionEncoder.load: hiddenState must be 'last' or 'penultimate', got ${String(hiddenState)}`, 'E_OPTION');
    if (attention === 'sdpa' && defaultTextAttention() !== 'sdpa') throw argError('range', "CaptionEncoder.load: attention 'sdpa' needs libtorch ≥ 2.1 (scaled_dot_product_attention with scale)", 'E_OPTION');

    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw folderError(`'${dir}' is not a folder`);
    const cfgPath = join(dir, 'config.json');
    if (!existsSync(cfgPath)) throw folderError(`'${dir}' has no config.json`);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
    } catch (e) {
      throw argError('range', `CaptionEncoder.load: '${cfgPath}' is not valid JSON (${(e as Error).message})`, 'E_TEXT_CONFIG');
    }
    const config = parseGemma3Config(raw);
    if (!existsSync(join(dir, 'tokenizer.json'))) throw folderError(`'${dir}' has no tokenizer.json`);
    weightFiles(dir); // a missing weight file is a folder problem: say so before the slow tokenizer load
    const tokenizer = CaptionTokenizer.fromFolder(dir, config.padTokenId);

    const weights = readWeights(dir);
    try {
      const spec = gemma3ModuleSpec(config, { attention, paddedRows, maskMin: maskMinOf(dtype) });
      const m = buildModule(spec, { init: 'empty' });
      try {
        // Cast the (uninitialized) module first: loading then rounds each weight straight into the
        // target dtype (as transformers' .to(dtype) does) and a 1B-parameter bf16 model never exists
        // in float32 (4 GB).
        if (dtype !== 'float32') m.to(dtype);
        try {
          m.loadStateDict(weights, { strict: true });
        } catch (e) {
          if (e instanceof torch.jit.StateDictError) throw weightsError(`the weights do not fit config.json: ${e.message}`);
          throw e;
        }
        m.eval();
        // Frozen, as the official requires_grad_(False): no autograd graph even outside noGrad.
        for (const p of m.parameters()) {
          p.requiresGrad_(false);
          p.dispose();
        }
        if (options.device !== undefined) m.to(options.device);
      } catch (e) {
        m.dispose();
        throw e;
      }
      return new CaptionEncoder(m, tokenizer, config, { maxLength, dtype, device: options.device ?? 'cpu', paddedRows, attention, hiddenState });
    } finally {
      // loadStateDict copied the values; the memory-mapped sources can go.
      for (const t of weights.values()) t.dispose();
    }
  }

  /** Tokenizes as the official encode_prompt: padding='max_length', truncation, right padding, <bos> first. */
  tokenize(prompts: readonly string[]): CaptionTokens {
    checkPrompts(prompts, 'tokenize');
    const { ids, mask } = this.tokenizer.batch(prompts, this.maxLength);
    const B = prompts.length;
    const L = this.maxLength;
    const idBuf = new BigInt64Array(B * L);
    const maskBuf = new BigInt64Array(B * L);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < L; i++) {
        idBuf[b * L + i] = BigInt((ids[b] as number[])[i] as number);
        maskBuf[b * L + i] = BigInt((mask[b] as number[])[i] as number);
      }
    }
    const inputIds = torch.fromBuffer(idBuf, 'int64', [B, L]);
    try {
      return { inputIds, attentionMask: torch.fromBuffer(maskBuf, 'int64', [B, L]) };
    } catch (e) {
      inputIds.dispose();
      throw e;
    }
  }

  /** The caption features (B, L, hidden) float32 (the hidden state chosen at load) for int64 ids and mask (B, L). */
  forward(inputIds: Tensor, attentionMask: Tensor): Tensor {
    this.checkInputs(inputIds, attentionMask, 'forward');
    return torch.scope(() => {
      const ids = inputIds.device === this.device ? inputIds : inputIds.to(this.device);
      const mask = attentionMask.device === this.device ? attentionMask : attentionMask.to(this.device);
      return torch.noGrad(() => this.module.call<Tensor>(this.method(), ids, mask));
    });
  }

  /**
   * forward() on libuv's thread pool, so the event loop stays free (progress output, other work).
   * inputIds and attentionMask must stay alive until the promise settles.
   */
  async forwardAsync(inputIds: Tensor, attentionMask: Tensor): Promise<Tensor> {
    this.checkInputs(inputIds, attentionMask, 'forwardAsync');
    const ids = inputIds.device === this.device ? inputIds : inputIds.to(this.device);
    const mask = attentionMask.device === this.device ? attentionMask : attentionMask.to(this.device);
    try {
      // The grad mode in force when the call starts is the one the worker thread runs with; it is
      // restored at once (noGrad refuses async functions, whose state would leak across awaits).
      const prev = torch.setGradEnabled(false);
      let pending: Promise<Tensor>;
      try {
        pending = this.module.callAsync<Tensor>(this.method(), ids, mask);
      } finally {
        torch.setGradEnabled(prev);
      }
      return await pending;
    } finally {
      if (ids !== inputIds) ids.dispose();
      if (mask !== attentionMask) mask.dispose();
    }
  }

  /** tokenize + forward: the caption features and their mask. encode(['']) is the official null caption. */
  encode(prompts: readonly string[]): CaptionFeatures {
    const { inputIds, attentionMask } = this.tokenize(prompts);
    try {
      return { features: this.forward(inputIds, attentionMask), attentionMask };
    } catch (e) {
      attentionMask.dispose();
      throw e;
    } finally {
      inputIds.dispose();
    }
  }

  /** encode() with the decoder on libuv's thread pool (tokenizing stays on the calling thread). */
  async encodeAsync(prompts: readonly string[]): Promise<CaptionFeatures> {
    const { inputIds, attentionMask } = this.tokenize(prompts);
    try {
      return { features: await this.forwardAsync(inputIds, attentionMask), attentionMask };
    } catch (e) {
      attentionMask.dispose();
      throw e;
    } finally {
      inputIds.dispose();
    }
  }

  private method(): string {
    return this.hiddenState === 'last' ? 'forward' : 'forward_penultimate';
  }

  private checkInputs(inputIds: Tensor, attentionMask: Tensor, what: string): void {
    this.checkLive();
    for (const [name, t] of [['inputIds', inputIds], ['attentionMask', attentionMask]] as const) {
      if (!(t instanceof torch.Tensor)) throw argError('type', `CaptionEncoder.${what}: ${name} must be a Tensor`, 'E_ARG');
      if (t.isDisposed) throw new TorchError(`CaptionEncoder.${what}: ${name} was disposed`, 'E_DISPOSED');
      if (t.dtype !== 'int64') throw argError('type', `CaptionEncoder.${what}: ${name} must be int64, got ${t.dtype}`, 'E_DTYPE');
    }
    const s = inputIds.shape;
    if (s.length !== 2 || (s[0] as number) < 1 || (s[1] as number) < 1) throw argError('range', `CaptionEncoder.${what}: inputIds must be (B, L), got [${s.join(', ')}]`, 'E_SHAPE');
    if (attentionMask.shape.length !== 2 || attentionMask.shape[0] !== s[0] || attentionMask.shape[1] !== s[1]) {
      throw argError('range', `CaptionEncoder.${what}: attentionMask must be [${s.join(', ')}] like inputIds, got [${attentionMask.shape.join(', ')}]`, 'E_SHAPE');
    }
    // An id past the table would fail inside the embedding op with a less helpful message.
    const [lo, hi] = torch.scope(() => [inputIds.min().item(), inputIds.max().item()]);
    if ((lo as number) < 0 || (hi as number) >= this.config.vocabSize) {
      throw argError('range', `CaptionEncoder.${what}: token ids must be in [0, ${this.config.vocabSize}), got ${lo}..${hi}`, 'E_INDEX');
    }
  }

  get isDisposed(): boolean {
    return this.module.isDisposed;
  }

  dispose(): void {
    if (!this.module.isDisposed) this.module.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private checkLive(): void {
    if (this.module.isDisposed) throw new TorchError('CaptionEncoder: used after dispose()', 'E_DISPOSED');
  }
}

function checkPrompts(prompts: readonly string[], what: string): void {
  if (!Array.isArray(prompts) || prompts.length === 0) throw argError('type', `CaptionEncoder.${what}: prompts must be a non-empty array of strings`, 'E_ARG');
  prompts.forEach((p, i) => {
    if (typeof p !== 'string') throw argError('type', `CaptionEncoder.${what}: prompts[${i}] must be a string, got ${typeof p}`, 'E_ARG');
  });
}

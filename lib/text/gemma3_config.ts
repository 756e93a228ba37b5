/**
 * The Gemma-3 text decoder's config.json, read in the layouts that exist in the wild:
 * - gemma-3-1b-it as published (transformers 4.5x): `rope_theta` (full-attention layers),
 *   `rope_local_base_freq` (sliding layers), `sliding_window_pattern` (every Nth layer is full),
 *   optional `rope_scaling` (linear, full-attention layers only);
 * - as transformers ≥ 5 writes it: `rope_parameters` per layer type
 *   ({ full_attention: { rope_type, rope_theta, factor? }, sliding_attention: {...} }) and an
 *   explicit `layer_types` list;
 * - the multimodal Gemma3ForConditionalGeneration folder, whose text part is under `text_config`.
 * Defaults are Gemma3TextConfig's (transformers 5.17), so a config.json that omits a field means
 * what it means to transformers.
 */
import { argError } from '../torch/errors.js';

export type Gemma3LayerType = 'full_attention' | 'sliding_attention';

export interface Gemma3Rope {
  theta: number;
  /** Linear position scaling (inv_freq / factor); 1 for rope_type 'default'. */
  factor: number;
}

export interface Gemma3Config {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** Attention scores are scaled by queryPreAttnScalar^-0.5 (not headDim^-0.5). */
  queryPreAttnScalar: number;
  /** Keys within `slidingWindow` positions (the query included) on sliding layers. */
  slidingWindow: number;
  layerTypes: Gemma3LayerType[];
  rope: { full: Gemma3Rope; sliding: Gemma3Rope };
  /** tanh soft-capping of attention scores (null in every released Gemma 3). */
  attnLogitSoftcapping: number | null;
  padTokenId: number;
}

function configError(message: string): Error {
  return argError('range', `Gemma-3 config.json: ${message}`, 'E_TEXT_CONFIG');
}

function num(raw: Record<string, unknown>, key: string, fallback: number | undefined, integer: boolean): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) throw configError(`'${key}' is missing`);
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v <= 0) {
    throw configError(`'${key}' must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(v)}`);
  }
  return v;
}

const DEFAULT_THETA = { full: 1_000_000, sliding: 10_000 };

function ropeOf(entry: unknown, where: string, fallbackTheta: number): Gemma3Rope {
  if (entry === undefined || entry === null) return { theta: fallbackTheta, factor: 1 };
  if (typeof entry !== 'object' || Array.isArray(entry)) throw configError(`${where} must be an object`);
  const e = entry as Record<string, unknown>;
  const type = e.rope_type ?? e.type ?? 'default';
  const theta = e.rope_theta ?? fallbackTheta;
  if (typeof theta !== 'number' || !(theta > 0)) throw configError(`${where}.rope_theta must be a positive number`);
  if (type === 'default') return { theta, factor: 1 };
  if (type === 'linear') {
    const f = e.factor;
    if (typeof f !== 'number' || !(f > 0)) throw configError(`${where}.factor must be a positive number for linear RoPE scaling`);
    return { theta, factor: f };
  }
  throw configError(`${where}: rope_type ${JSON.stringify(type)} is not supported (only 'default' and 'linear', as Gemma 3 uses)`);
}

/** Parses a Gemma-3 text config (either layout, or a multimodal config with `text_config`). */
export function parseGemma3Config(input: unknown): Gemma3Config {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw configError('expected a JSON object');
  let raw = input as Record<string, unknown>;
  if (raw.text_config !== undefined) {
    if (raw.text_config === null || typeof raw.text_config !== 'object') throw configError("'text_config' must be an object");
    raw = raw.text_config as Record<string, unknown>;
  }
  const modelType = raw.model_type;
  if (modelType !== undefined && modelType !== 'gemma3_text' && modelType !== 'gemma3') {
    throw configError(`model_type ${JSON.stringify(modelType)} is not a Gemma-3 text model`);
  }
  const act = raw.hidden_activation ?? raw.hidden_act ?? 'gelu_pytorch_tanh';
  if (act !== 'gelu_pytorch_tanh') throw configError(`hidden_activation ${JSON.stringify(act)} is not supported (Gemma 3 uses gelu_pytorch_tanh)`);
  if (raw.use_bidirectional_attention === true) throw configError('use_bidirectional_attention is not supported (the caption encoder is the causal decoder)');
  if (raw.attention_bias === true) throw configError('attention_bias is not supported (Gemma 3 has none)');

  // Gemma3TextConfig defaults (transformers 5.17).
  const hiddenSize = num(raw, 'hidden_size', 2304, true);
  const numLayers = num(raw, 'num_hidden_layers', 26, true);
  const numHeads = num(raw, 'num_attention_heads', 8, true);
  const numKvHeads = num(raw, 'num_key_value_heads', 4, true);
  if (numHeads % numKvHeads !== 0) throw configError(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  const headDim = num(raw, 'head_dim', 256, true);
  if (headDim % 2 !== 0) throw configError(`head_dim must be even for RoPE, got ${headDim}`);

  let layerTypes: Gemma3LayerType[];
  if (raw.layer_types !== undefined && raw.layer_types !== null) {
    const lt = raw.layer_types;
    if (!Array.isArray(lt) || lt.length !== numLayers || lt.some((t) => t !== 'full_attention' && t !== 'sliding_attention')) {
      throw configError(`'layer_types' must list ${numLayers} entries, each 'full_attention' or 'sliding_attention'`);
    }
    layerTypes = lt as Gemma3LayerType[];
  } else {
    const pattern = num(raw, 'sliding_window_pattern', 6, true);
    // transformers: layer i is sliding unless (i + 1) % pattern == 0.
    layerTypes = Array.from({ length: numLayers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'));
  }

  let rope: { full: Gemma3Rope; sliding: Gemma3Rope };
  const rp = raw.rope_parameters;
  if (rp !== undefined && rp !== null) {
    if (typeof rp !== 'object' || Array.isArray(rp)) throw configError("'rope_parameters' must be an object");
    const r = rp as Record<string, unknown>;
    if (r.full_attention === undefined && r.sliding_attention === undefined && (r.rope_theta !== undefined || r.rope_type !== undefined)) {
      throw configError("'rope_parameters' must be keyed by layer type (full_attention, sliding_attention) for Gemma 3");
    }
    rope = {
      full: ropeOf(r.full_attention, 'rope_parameters.full_attention', typeof raw.rope_theta === 'number' ? raw.rope_theta : DEFAULT_THETA.full),
      sliding: ropeOf(r.sliding_attention, 'rope_parameters.sliding_attention',
        typeof raw.rope_local_base_freq === 'number' ? raw.rope_local_base_freq : DEFAULT_THETA.sliding),
    };
  } else {
    const full = num(raw, 'rope_theta', DEFAULT_THETA.full, false);
    const sliding = num(raw, 'rope_local_base_freq', DEFAULT_THETA.sliding, false);
    // rope_scaling applies to the full-attention layers only (transformers' Gemma3TextConfig).
    const scaling = raw.rope_scaling;
    rope = { full: ropeOf(scaling === undefined || scaling === null ? null : { rope_theta: full, ...(scaling as object) }, 'rope_scaling', full), sliding: { theta: sliding, factor: 1 } };
  }

  const softcap = raw.attn_logit_softcapping;
  if (softcap !== undefined && softcap !== null && (typeof softcap !== 'number' || !(softcap > 0))) {
    throw configError(`'attn_logit_softcapping' must be null or a positive number, got ${JSON.stringify(softcap)}`);
  }
  const pad = raw.pad_token_id ?? 0;
  if (typeof pad !== 'number' || !Number.isInteger(pad) || pad < 0) throw configError(`'pad_token_id' must be a non-negative integer, got ${JSON.stringify(pad)}`);

  return {
    vocabSize: num(raw, 'vocab_size', 262_208, true),
    hiddenSize,
    intermediateSize: num(raw, 'intermediate_size', 9216, true),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(raw, 'rms_norm_eps', 1e-6, false),
    queryPreAttnScalar: num(raw, 'query_pre_attn_scalar', 256, false),
    // null sliding_window: no window (transformers then builds a plain causal mask).
    slidingWindow: raw.sliding_window === null ? 2 ** 31 - 1 : num(raw, 'sliding_window', 4096, true),
    layerTypes,
    rope,
    attnLogitSoftcapping: typeof softcap === 'number' ? softcap : null,
    padTokenId: pad,
  };
}

/**
 * The Gemma-3 text decoder as a plain-data ModuleSpec (lib/torch/modules/spec.ts), built
 * by lib/torch/modules/build.ts's buildModule. The state_dict of the built root has exactly
 * Gemma3TextModel's keys: embed_tokens.weight, layers.N.self_attn.{q,k,v,o}_proj.weight,
 * layers.N.self_attn.{q,k}_norm.weight, layers.N.mlp.{gate,up,down}_proj.weight,
 * layers.N.{input,post_attention,pre_feedforward,post_feedforward}_layernorm.weight, norm.weight.
 * Parameters start as uninitialized memory ('empty'): the encoder always loads every one of them.
 */
import { floatAttr, intAttr, moduleSpec, type ModuleSpec } from '../torch/modules/spec.js';
import type { Gemma3Config } from './gemma3_config.js';
import * as src from './gemma3_sources.js';
import type { PaddedRows, TextAttentionImpl } from './gemma3_sources.js';

const EMPTY = { kind: 'zeros' } as const; // never drawn: the encoder builds with init 'empty'

const mod = moduleSpec;
const int = intAttr;
const float = floatAttr;

const linear = (inF: number, outF: number): ModuleSpec =>
  mod('Gemma3Linear', { params: [{ name: 'weight', shape: [outF, inF], init: EMPTY }], methods: src.GEMMA3_LINEAR_SOURCES });

const rmsNorm = (dim: number, eps: number): ModuleSpec =>
  mod('Gemma3RMSNorm', { params: [{ name: 'weight', shape: [dim], init: EMPTY }], attributes: [float('eps', eps)], methods: src.GEMMA3_RMSNORM_SOURCES });

export interface Gemma3SpecOptions {
  attention: TextAttentionImpl;
  paddedRows: PaddedRows;
  /** finfo(dtype).min of the dtype the module will run in (the encoder updates it with the dtype). */
  maskMin: number;
}

export function gemma3ModuleSpec(c: Gemma3Config, o: Gemma3SpecOptions): ModuleSpec {
  const softcap = c.attnLogitSoftcapping !== null;
  // Soft-capping needs the scores themselves: only the math path has them.
  const impl: TextAttentionImpl = softcap ? 'math' : o.attention;
  const H = c.hiddenSize;
  const attention = mod(`Gemma3Attention_${impl}_${o.paddedRows}${softcap ? '_softcap' : ''}`, {
    attributes: [
      int('head_dim', c.headDim),
      int('n_rep', c.numHeads / c.numKvHeads),
      float('scaling', c.queryPreAttnScalar ** -0.5),
      ...(softcap ? [float('softcap', c.attnLogitSoftcapping as number)] : []),
    ],
    children: [
      { name: 'q_proj', spec: linear(H, c.numHeads * c.headDim) },
      { name: 'k_proj', spec: linear(H, c.numKvHeads * c.headDim) },
      { name: 'v_proj', spec: linear(H, c.numKvHeads * c.headDim) },
      { name: 'o_proj', spec: linear(c.numHeads * c.headDim, H) },
      { name: 'q_norm', spec: rmsNorm(c.headDim, c.rmsNormEps) },
      { name: 'k_norm', spec: rmsNorm(c.headDim, c.rmsNormEps) },
    ],
    methods: src.gemma3AttentionSources({ impl, paddedRows: o.paddedRows, softcap }),
  });
  const mlp = mod('Gemma3MLP', {
    children: [
      { name: 'gate_proj', spec: linear(H, c.intermediateSize) },
      { name: 'up_proj', spec: linear(H, c.intermediateSize) },
      { name: 'down_proj', spec: linear(c.intermediateSize, H) },
    ],
    methods: src.GEMMA3_MLP_SOURCES,
  });
  const layer = (): ModuleSpec =>
    mod(`Gemma3DecoderLayer_${attention.typeName}`, {
      children: [
        { name: 'self_attn', spec: attention },
        { name: 'mlp', spec: mlp },
        { name: 'input_layernorm', spec: rmsNorm(H, c.rmsNormEps) },
        { name: 'post_attention_layernorm', spec: rmsNorm(H, c.rmsNormEps) },
        { name: 'pre_feedforward_layernorm', spec: rmsNorm(H, c.rmsNormEps) },
        { name: 'post_feedforward_layernorm', spec: rmsNorm(H, c.rmsNormEps) },
      ],
      methods: src.GEMMA3_LAYER_SOURCES,
    });
  const layers = mod('Gemma3Layers', {
    children: c.layerTypes.map((_, i) => ({ name: String(i), spec: layer() })),
    methods: src.gemma3LayersSources(c.layerTypes),
  });
  return mod('Gemma3TextModel', {
    attributes: [
      int('head_dim', c.headDim),
      int('sliding_window', c.slidingWindow),
      float('rope_theta_full', c.rope.full.theta),
      float('rope_factor_full', c.rope.full.factor),
      float('rope_theta_sliding', c.rope.sliding.theta),
      float('rope_factor_sliding', c.rope.sliding.factor),
      float('mask_min', o.maskMin),
    ],
    children: [
      {
        name: 'embed_tokens',
        spec: mod('Gemma3ScaledEmbedding', {
          params: [{ name: 'weight', shape: [c.vocabSize, H], init: EMPTY }],
          attributes: [float('embed_scale', Math.sqrt(H))],
          methods: src.GEMMA3_EMBEDDING_SOURCES,
        }),
      },
      { name: 'layers', spec: layers },
      { name: 'norm', spec: rmsNorm(H, c.rmsNormEps) },
    ],
    methods: src.GEMMA3_MODEL_SOURCES,
  });
}

/** finfo(dtype).min, the fill value of transformers' additive attention masks. */
export function maskMinOf(dtype: string): number {
  switch (dtype) {
    case 'float16':
      return -65504;
    case 'bfloat16':
      return -3.3895313892515355e38;
    case 'float64':
      return -Number.MAX_VALUE;
    default:
      return -3.4028234663852886e38;
  }
}

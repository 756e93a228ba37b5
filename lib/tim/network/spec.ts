/**
 * The TiM network as a plain-data module tree (lib/torch/modules/spec.ts): what to register on each
 * TorchScript module (parameters with their official initialization, buffers, typed attributes,
 * children) and the method sources to define on it. Both the TypeScript module builder and the Python validation
 * harness (scripts/tim_spec_to_python.py) build from it, so the sources proven in Python are the
 * very text libtorch compiles.
 *
 * Building a spec: create children first (depth first), register parameters/buffers/attributes and
 * children, then define `methods` one by one in array order. Every module also needs the bool
 * attribute `training` (nn.Module has it; the builder's createModule registers it), which is
 * therefore not listed. The state_dict of the built root has exactly the official model's keys.
 */
import { derivedSizes, validateConfig, type TiMConfig } from './config.js';
import * as src from './sources.js';
import type { AttentionImpl } from '../../torch/modules/sources.js';
import { floatAttr, hashedModuleSpec, intAttr, moduleSpec, type AttributeSpec, type InitSpec, type ModuleSpec, type ParamSpec } from '../../torch/modules/spec.js';

// The generic spec (types, typeSignature, walkers) lives in lib/torch/modules/spec.ts.
export * from '../../torch/modules/spec.js';

export interface BuildOptions {
  /** Attention score computation: 'math' (default, libtorch 1.13) or 'sdpa' (libtorch ≥ 2.0 only). */
  attention?: AttentionImpl;
}

// ---- helpers ------------------------------------------------------------------------------------

const ZEROS: InitSpec = { kind: 'zeros' };
const ONES: InitSpec = { kind: 'ones' };
const normal = (std: number): InitSpec => ({ kind: 'normal', mean: 0, std });
const xavier = (fanIn: number, fanOut: number): InitSpec => ({ kind: 'xavier_uniform', fanIn, fanOut });

const mod = moduleSpec;
const int = intAttr;
const float = floatAttr;

/**
 * nn.Linear under the official `_basic_init`: xavier_uniform weight, zero bias. Overrides
 * (normal(0.02) for the timestep MLPs, zeros for adaLN fc2 and the final linear) are passed in.
 */
function linear(inF: number, outF: number, o: { bias?: boolean; weight?: InitSpec; biasInit?: InitSpec } = {}): ModuleSpec {
  const bias = o.bias ?? true;
  const params: ParamSpec[] = [{ name: 'weight', shape: [outF, inF], init: o.weight ?? xavier(inF, outF) }];
  if (bias) params.push({ name: 'bias', shape: [outF], init: o.biasInit ?? ZEROS });
  return mod(bias ? 'Linear' : 'LinearNoBias', { params, methods: bias ? src.LINEAR_SOURCES : src.LINEAR_NO_BIAS_SOURCES });
}

/** nn.LayerNorm(dim) with affine parameters (default init: ones, zeros; not a Linear, so untouched by _basic_init). */
function layerNorm(dim: number, eps: number): ModuleSpec {
  return mod('LayerNorm', {
    params: [
      { name: 'weight', shape: [dim], init: ONES },
      { name: 'bias', shape: [dim], init: ZEROS },
    ],
    attributes: [float('eps', eps)],
    methods: src.LAYER_NORM_SOURCES,
  });
}

/** timm SwiGLU(in, hidden, out, bias=True): fc1_g, fc1_x, fc2. init_weights() is never called by TiM. */
function swiglu(inF: number, hidden: number, outF: number, o: { fc2Zero?: boolean; weightsNormal?: number } = {}): ModuleSpec {
  const w = o.weightsNormal !== undefined ? normal(o.weightsNormal) : undefined;
  return mod('SwiGLU', {
    children: [
      { name: 'fc1_g', spec: linear(inF, hidden, { weight: w }) },
      { name: 'fc1_x', spec: linear(inF, hidden, { weight: w }) },
      { name: 'fc2', spec: linear(hidden, outF, o.fc2Zero ? { weight: ZEROS, biasInit: ZEROS } : { weight: w }) },
    ],
    methods: src.SWIGLU_SOURCES,
  });
}

/** TimestepEmbedder(hidden): mlp = Sequential(Linear(256, D), SiLU, Linear(D, D)). */
function timestepEmbedder(D: number, normalInit: boolean): ModuleSpec {
  const FREQ = 256;
  // Official: only t_embedder's two weights get normal(0, 0.02); delta_embedder keeps _basic_init's xavier.
  const w = normalInit ? normal(0.02) : undefined;
  return mod('TimestepEmbedder', {
    attributes: [
      int('frequency_embedding_size', FREQ),
      // −math.log(max_period) for max_period 10000, as the double Python computes.
      float('neg_log_max_period', -9.210340371976184),
    ],
    children: [
      {
        name: 'mlp',
        spec: mod('TimestepMLP', {
          children: [
            { name: '0', spec: linear(FREQ, D, { weight: w }) },
            { name: '2', spec: linear(D, D, { weight: w }) },
          ],
          methods: src.TIMESTEP_MLP_SOURCES,
        }),
      },
    ],
    methods: src.TIMESTEP_EMBEDDER_SOURCES,
  });
}


// ---- the network --------------------------------------------------------------------------------

/** Builds the TiM module tree for `config` (C2I or T2I), with the official parameter names and init. */
export function buildTiMSpec(config: TiMConfig, options: BuildOptions = {}): ModuleSpec {
  validateConfig(config);
  const impl: AttentionImpl = options.attention ?? 'math';
  if (impl !== 'math' && impl !== 'sdpa') throw new RangeError(`attention must be 'math' or 'sdpa', got ${String(impl)}`);
  const c = config;
  const D = c.hiddenSize;
  const p = c.patchSize;
  const t2i = c.variant === 't2i';
  const { headDim, mlpHidden, finalAdaLNHidden, labelRows, captionHidden } = derivedSizes(c);
  const tag = (on: boolean, s: string): string => (on ? s : '');
  // A module's typeName must change whenever its source or its children's types do.
  const attnTag = `${tag(c.distanceAware, '_DA')}${tag(c.qkNorm, '_QK')}${tag(impl === 'sdpa', '_SDPA')}`;

  const qkNormChildren = (): { name: string; spec: ModuleSpec }[] =>
    c.qkNorm
      ? [
          // Attention(norm_layer=nn.LayerNorm): default eps 1e-5, affine.
          { name: 'q_norm', spec: layerNorm(headDim, 1e-5) },
          { name: 'k_norm', spec: layerNorm(headDim, 1e-5) },
        ]
      : [];
  const attnAttributes = [int('num_heads', c.numHeads), int('head_dim', headDim), float('scale', Math.pow(headDim, -0.5))];

  const attention = (): ModuleSpec =>
    mod(`TiMAttention${attnTag}`, {
      attributes: attnAttributes,
      children: [
        { name: 'qkv', spec: linear(D, 3 * D) },
        ...(c.distanceAware ? [{ name: 'qkv_d', spec: linear(D, 3 * D, { bias: false }) }] : []),
        ...qkNormChildren(),
        { name: 'proj', spec: linear(D, D) },
      ],
      methods: src.attentionSources({ distanceAware: c.distanceAware, qkNorm: c.qkNorm, impl }),
    });

  const crossAttention = (): ModuleSpec =>
    mod(`TiMCrossAttention${tag(c.qkNorm, '_QK')}${tag(impl === 'sdpa', '_SDPA')}`, {
      attributes: attnAttributes,
      children: [
        { name: 'q', spec: linear(D, D) },
        { name: 'kv', spec: linear(D, 2 * D) },
        ...qkNormChildren(),
        { name: 'proj', spec: linear(D, D) },
      ],
      methods: src.crossAttentionSources({ qkNorm: c.qkNorm, impl }),
    });

  const block = (): ModuleSpec =>
    mod(`${t2i ? 'TiMBlockT2I' : 'TiMBlock'}${attnTag}`, {
      attributes: [float('norm_eps', 1e-6)],
      children: [
        { name: 'attn', spec: attention() },
        ...(t2i ? [{ name: 'cross_attn', spec: crossAttention() }] : []),
        { name: 'mlp', spec: swiglu(D, mlpHidden, D) },
        // adaLN-Zero: fc2 weight and bias start at zero.
        { name: 'adaLN_modulation', spec: swiglu(D, c.loraHiddenSize, (t2i ? 9 : 6) * D, { fc2Zero: true }) },
      ],
      methods: t2i ? src.TIM_BLOCK_T2I_SOURCES : src.TIM_BLOCK_SOURCES,
    });

  const blockChildren = Array.from({ length: c.depth }, (_, i) => ({ name: String(i), spec: block() }));
  const blocks = hashedModuleSpec('TiMBlockList', { params: [], buffers: [], attributes: [], children: blockChildren, methods: [] });

  const xEmbedder = mod('PatchEmbed', {
    attributes: [int('patch_size', p)],
    children: [
      {
        name: 'proj',
        spec: mod('PatchConv2d', {
          params: [
            // Official: xavier_uniform_ on weight.view(D, -1), i.e. fan_in = C·p·p, fan_out = D.
            { name: 'weight', shape: [D, c.inChannels, p, p], init: xavier(c.inChannels * p * p, D) },
            { name: 'bias', shape: [D], init: ZEROS },
          ],
          attributes: [int('stride', p)],
          methods: src.PATCH_CONV_SOURCES,
        }),
      },
    ],
    methods: src.PATCH_EMBED_SOURCES,
  });

  const yEmbedder = t2i
    ? mod('CaptionEmbedder', {
        children: [
          // nn.LayerNorm(cap_feat_dim): default eps 1e-5, affine.
          { name: 'norm', spec: layerNorm(c.capFeatDim, 1e-5) },
          // SwiGLU(cap_feat_dim, hidden_size*4, hidden_size); the official init sets all three weights to normal(0, 0.02).
          { name: 'mlp', spec: swiglu(c.capFeatDim, captionHidden, D, { weightsNormal: 0.02 }) },
        ],
        methods: src.CAPTION_EMBEDDER_SOURCES,
      })
    : mod('LabelEmbedder', {
        attributes: [int('num_classes', c.numClasses), float('dropout_prob', c.classDropoutProb)],
        children: [
          {
            name: 'embedding_table',
            spec: mod('Embedding', { params: [{ name: 'weight', shape: [labelRows, D], init: normal(0.02) }], methods: src.EMBEDDING_SOURCES }),
          },
        ],
        methods: src.LABEL_EMBEDDER_SOURCES,
      });

  const rope = mod(`VisionRoPE_${c.ropeGrid}`, {
    attributes: [int('head_dim', headDim), float('theta', 10000)],
    methods: src.ropeSources(c.ropeGrid),
  });

  const projector = mod('ProjectorMLP', {
    children: [
      { name: '0', spec: linear(D, c.projectorDim) },
      { name: '2', spec: linear(c.projectorDim, c.projectorDim) },
      { name: '4', spec: linear(c.projectorDim, c.zDim) },
    ],
    methods: src.PROJECTOR_SOURCES,
  });

  const finalLayer = mod('FinalLayer', {
    attributes: [float('norm_eps', 1e-6)],
    children: [
      // Zero-out output layers (official initialize_weights).
      { name: 'linear', spec: linear(D, p * p * c.inChannels, { weight: ZEROS, biasInit: ZEROS }) },
      { name: 'adaLN_modulation', spec: swiglu(D, finalAdaLNHidden, 2 * D, { fc2Zero: true }) },
    ],
    methods: src.FINAL_LAYER_SOURCES,
  });

  // Child order = the official attribute order, so parameters enumerate like named_parameters().
  const children: { name: string; spec: ModuleSpec }[] = [
    { name: 'x_embedder', spec: xEmbedder },
    { name: 't_embedder', spec: timestepEmbedder(D, true) },
    ...(c.useNewEmbed ? [{ name: 'delta_embedder', spec: timestepEmbedder(D, false) }] : []),
    { name: 'y_embedder', spec: yEmbedder },
    { name: 'rope', spec: rope },
    { name: 'blocks', spec: blocks },
    { name: 'projector', spec: projector },
    { name: 'final_layer', spec: finalLayer },
  ];
  const attributes: AttributeSpec[] = [
    int('patch_size', p),
    int('in_channels', c.inChannels),
    int('out_channels', c.inChannels),
    int('hidden_size', D),
    int('num_heads', c.numHeads),
    int('depth', c.depth),
    int('encoder_depth', c.encoderDepth),
    ...(t2i ? [int('cap_feat_dim', c.capFeatDim)] : [int('num_classes', c.numClasses)]),
  ];
  return hashedModuleSpec(t2i ? 'TiM_T2I' : 'TiM_C2I', {
    params: [],
    buffers: [],
    attributes,
    children,
    methods: src.rootSources({ variant: c.variant, depth: c.depth, encoderDepth: c.encoderDepth, newCondition: c.newCondition, useNewEmbed: c.useNewEmbed }),
  });
}

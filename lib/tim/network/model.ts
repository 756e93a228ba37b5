/**
 * `TiM`: the Transition Model network as a live TorchScript module built in-process from the
 * network spec (lib/tim/network), with the official parameter names and initialization, plus
 * loading/saving of official checkpoints (.safetensors, torch.save .bin) and of our own TorchScript
 * archives (.pt, which also load in Python's torch.jit.load).
 *
 *   const model = TiM.create('TiM-XL/2-256');
 *   const model = TiM.fromOfficialConfig('configs/c2i/tim_xl_p2_256.yaml');
 *   const model = TiM.load('tim_xl_p2_256.safetensors', { config: 'configs/c2i/tim_xl_p2_256.yaml' });
 *   const out = model.forward(x, t, r, y);                              // Tensor (B, C, H, W)
 *   const { out, hProj } = model.forward(x, t, r, y, { returnZs: true });
 */
import { existsSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import * as torch from '../../torch/index.js';
import type { Tensor } from '../../torch/tensor.js';
import { TorchError, argError } from '../../torch/errors.js';
import { archiveKind, saveTorchZip } from '../../torch/io/index.js';
import type { DType, Device } from '../../torch/dtype.js';
import {
  PRESETS, buildTiMSpec, countParameters, fromOfficialConfig, stateDictEntries, toOfficialParams, validateConfig,
  type AttentionImpl, type OfficialNetworkParams, type TiMConfig, type TiMPresetName, type TiMVariant,
} from './index.js';
import { buildModule, defaultAttention, type InitMode } from '../../torch/modules/build.js';
import { readConfigDocument } from '../config_file.js';

/** The official `network.target` of each variant (the YAML's model.network.target). */
export const OFFICIAL_TARGETS: Readonly<Record<TiMVariant, string>> = {
  c2i: 'tim.models.c2i.tim_model.TiM',
  t2i: 'tim.models.t2i.tim_model.TiM',
};

/** A config for TiM.create: every TiMConfig field is optional except qkNorm (the official block has no default for it). */
export type TiMConfigInput = Partial<TiMConfig> & { qkNorm: boolean };

/** A config given to TiM.load / the CLI: a TiMConfig (or input), official network.params, a whole
 *  official YAML/JSON object, a preset name, or a path to a .json/.yaml file holding any of those. */
export type TiMConfigSource = TiMConfig | TiMConfigInput | OfficialNetworkParams | TiMPresetName | string;

export interface TiMCreateOptions {
  /** 'auto' (default): scaled_dot_product_attention when this libtorch has it (2.x), else the math path. */
  attention?: AttentionImpl | 'auto';
  /** 'official' (default) initialize_weights, or 'empty' when every weight will be loaded next. */
  init?: InitMode;
  device?: Device;
  /** Floating-point dtype of the parameters (default float32). */
  dtype?: DType;
}

export interface TiMLoadOptions extends Omit<TiMCreateOptions, 'init'> {
  /**
   * The network configuration for a state-dict checkpoint. Default: the safetensors `__metadata__`
   * (`config` = official network.params JSON, optional `target`, `rope_grid`), else a sidecar file
   * beside the checkpoint: `<name>.json`, `<name>.yaml`, `<name>.yml`, `config.json`, `config.yaml`.
   */
  config?: TiMConfigSource;
  /** Missing / unexpected keys are errors (default true); shape mismatches always are. */
  strict?: boolean;
  /** torch.save checkpoints holding several dicts: load the one under this top-level key (e.g. 'ema'). */
  key?: string;
  /**
   * Load a TorchScript archive (what `model.save('x.pt')` writes). A TorchScript archive is code:
   * loading it runs whatever its methods and `__setstate__` do, with the rights of this process. So
   * TiM.load refuses one (TorchError `E_UNSAFE`) unless this is true; pass it only for files you
   * trust as you would a script. State dicts (.safetensors, torch.save .bin/.pt) never run code.
   */
  allowTorchScript?: boolean;
}

export interface TiMForwardOptions {
  /** Also return h_proj, the REPA projector output after block encoderDepth − 1 (official return_zs). */
  returnZs?: boolean;
}

/** Parameter counts computed from shapes (no allocation). */
export interface TiMParameterCounts {
  /** Per top-level part, in the official attribute order: x_embedder, t_embedder, delta_embedder, y_embedder, blocks, projector, final_layer. */
  parts: Record<string, number>;
  total: number;
  /** Without the REPA projector (training only): what the official README quotes (664M for XL). */
  withoutProjector: number;
}

/** Root attribute holding our config in saved TorchScript archives, so TiM.load can rebuild the wrapper. */
const CONFIG_ATTR = 'tim_config';

const CONFIG_KEYS: readonly (keyof TiMConfig)[] = [
  'variant', 'inputSize', 'patchSize', 'inChannels', 'hiddenSize', 'depth', 'numHeads', 'mlpRatio', 'encoderDepth',
  'zDim', 'projectorDim', 'numClasses', 'classDropoutProb', 'qkNorm', 'newCondition', 'useNewEmbed', 'distanceAware',
  'loraHiddenSize', 'capFeatDim', 'ropeGrid',
];

/** Preset names, plus the short names the official README uses. */
const PRESET_ALIASES: Readonly<Record<string, TiMPresetName>> = {
  'tim-b/4': 'TiM-B/4', 'tim-b': 'TiM-B/4',
  'tim-xl/2-256': 'TiM-XL/2-256', 'tim-xl/2': 'TiM-XL/2-256',
  'tim-xl/1-512': 'TiM-XL/1-512', 'tim-xl/1': 'TiM-XL/1-512',
  'tim-t2i': 'TiM-T2I',
};

/** The preset named `name` (case-insensitive; 'TiM-XL/2' = 'TiM-XL/2-256'), or null. */
export function resolvePreset(name: string): TiMPresetName | null {
  return PRESET_ALIASES[name.toLowerCase()] ?? null;
}

function configError(message: string, kind: 'type' | 'range' = 'type'): Error {
  return argError(kind, message, 'E_CONFIG');
}

/** Runs a config.ts validation and gives its plain TypeError/RangeError the E_CONFIG code. */
function withCode<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if ((e instanceof TypeError || e instanceof RangeError) && (e as { code?: unknown }).code === undefined) {
      (e as Error & { code: string }).code = 'E_CONFIG';
    }
    throw e;
  }
}

/**
 * A full TiMConfig from camelCase fields: official constructor defaults for what is left out
 * (loraHiddenSize defaults to (hiddenSize // 4) * 3 like the official block). Unknown fields are
 * rejected so a typo cannot fall back to a default.
 */
export function resolveConfig(input: TiMConfigInput | TiMConfig | TiMPresetName): TiMConfig {
  if (typeof input === 'string') {
    const p = resolvePreset(input);
    if (!p) throw configError(`unknown TiM preset '${input}' (known: ${Object.keys(PRESETS).join(', ')}, TiM-XL/2, TiM-XL/1)`, 'range');
    return { ...PRESETS[p] };
  }
  if (input === null || typeof input !== 'object' || Array.isArray(input)) throw configError('TiM config must be an object or a preset name');
  for (const k of Object.keys(input)) {
    if (!(CONFIG_KEYS as readonly string[]).includes(k)) throw configError(`TiM config: unknown field '${k}' (camelCase fields: ${CONFIG_KEYS.join(', ')})`);
  }
  if (typeof input.qkNorm !== 'boolean') throw configError('TiM config: qkNorm (boolean) is required (the official TiMBlock has no default)');
  const base = withCode(() => fromOfficialConfig({ qk_norm: input.qkNorm }, { variant: input.variant ?? 'c2i' }));
  const defined = Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<TiMConfig>;
  const hiddenSize = defined.hiddenSize ?? base.hiddenSize;
  const config: TiMConfig = { ...base, loraHiddenSize: Math.floor(hiddenSize / 4) * 3, ...defined };
  withCode(() => validateConfig(config));
  return config;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * A TiMConfig from any accepted form: a preset name, a camelCase config, official network.params,
 * or a whole official YAML/JSON document (model.network.{target, params}). `variant` is a hint for
 * official params that do not say (e.g. inferred from a checkpoint's keys).
 */
export function configFromValue(value: unknown, hint: { variant?: TiMVariant; ropeGrid?: TiMConfig['ropeGrid']; target?: string } = {}): TiMConfig {
  if (typeof value === 'string') return resolveConfig(value as TiMPresetName);
  if (!isRecord(value)) throw configError('TiM config must be an object, a preset name or a file path');
  const model = isRecord(value.model) ? value.model : null;
  const network = isRecord(model?.network) ? model!.network : isRecord(value.network) ? value.network : isRecord(value.params) ? value : null;
  if (network && isRecord((network as Record<string, unknown>).params)) {
    const net = network as Record<string, unknown>;
    const target = typeof net.target === 'string' ? net.target : hint.target;
    return withCode(() =>
      fromOfficialConfig(net.params as OfficialNetworkParams, { target, variant: target ? undefined : hint.variant, ropeGrid: hint.ropeGrid }),
    );
  }
  // camelCase fields have capitals ('depth' is spelled the same in both forms); official ones never do.
  if (Object.keys(value).some((k) => /[A-Z]/.test(k) || k === 'variant')) return resolveConfig(value as TiMConfigInput);
  return withCode(() =>
    fromOfficialConfig(value as OfficialNetworkParams, { target: hint.target, variant: hint.target ? undefined : hint.variant, ropeGrid: hint.ropeGrid }),
  );
}

/** Reads a .json / .yaml / .yml config file (any form configFromValue accepts). */
export function readConfigFile(path: string, hint: Parameters<typeof configFromValue>[1] = {}): TiMConfig {
  const value = readConfigDocument(path);
  try {
    return configFromValue(value, hint);
  } catch (e) {
    (e as Error).message = `config '${path}': ${(e as Error).message}`;
    throw e;
  }
}

function configFromSource(src: TiMConfigSource, hint: Parameters<typeof configFromValue>[1] = {}): TiMConfig {
  if (typeof src === 'string') {
    if (resolvePreset(src)) return resolveConfig(src as TiMPresetName);
    if (/\.(json|ya?ml)$/i.test(src) || existsSync(src)) return readConfigFile(src, hint);
    throw configError(`config '${src}' is neither a preset (${Object.keys(PRESETS).join(', ')}) nor a .json/.yaml file`, 'range');
  }
  return configFromValue(src, hint);
}

/** Per-part parameter counts of a config, computed from the spec's shapes (nothing is allocated). */
export function parameterCounts(config: TiMConfig | TiMConfigInput | TiMPresetName): TiMParameterCounts {
  const spec = buildTiMSpec(resolveConfig(config));
  const parts: Record<string, number> = {};
  for (const e of stateDictEntries(spec)) {
    if (e.kind !== 'param') continue;
    const part = e.key.slice(0, e.key.indexOf('.'));
    parts[part] = (parts[part] ?? 0) + e.shape.reduce((a, b) => a * b, 1);
  }
  return { parts, total: countParameters(spec), withoutProjector: countParameters(spec, { excludePrefixes: ['projector.'] }) };
}

/**
 * The refusal to load a TorchScript archive without an explicit opt-in: such an archive is a
 * program (its methods and `__setstate__` run when it loads), whatever its file name says.
 */
export function torchScriptRefused(path: string, who: string, optIn: string): TorchError {
  return new TorchError(
    `${who}: '${path}' is a TorchScript archive, not a weights file: loading it runs the code inside it (its methods and ` +
    `__setstate__), with your rights, whatever its name says. It was not loaded. If you trust it as you would a script, ` +
    `opt in with ${optIn}; otherwise ask for a .safetensors file (docs/security.md)`,
    'E_UNSAFE',
  );
}

/**
 * 'torchscript' for our .pt archives (and any TorchScript archive), 'state' for torch.save zips,
 * 'safetensors' otherwise. Sniffed from the content, never from the name.
 */
export function checkpointKind(path: string): 'torchscript' | 'state' | 'safetensors' {
  const kind = archiveKind(path);
  return kind === null ? 'safetensors' : kind === 'torch' ? 'state' : 'torchscript';
}

/** Which variant a state dict belongs to, from its keys (C2I has a label table, T2I a caption norm). */
function variantFromKeys(keys: string[]): TiMVariant | undefined {
  if (keys.includes('y_embedder.embedding_table.weight')) return 'c2i';
  if (keys.includes('y_embedder.norm.weight')) return 't2i';
  return undefined;
}

function sidecarConfig(path: string): string | null {
  const dir = dirname(path);
  const stem = basename(path, extname(path));
  for (const name of [`${stem}.json`, `${stem}.yaml`, `${stem}.yml`, 'config.json', 'config.yaml']) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

function checkTensor(v: unknown, what: string): Tensor {
  if (!(v instanceof torch.Tensor)) throw argError('type', `TiM.forward: ${what} must be a Tensor`);
  if (v.isDisposed) throw new TorchError(`TiM.forward: ${what} was disposed`, 'E_DISPOSED');
  return v;
}

/**
 * The config of a state-dict checkpoint: `explicit` if given, else the safetensors metadata
 * (`config`, `target`, `rope_grid`), else a sidecar file; null when there is none. The variant,
 * when the config does not say, is read off the keys.
 */
export function checkpointConfig(
  path: string, keys: string[], metadata: Record<string, string> | null, explicit?: TiMConfigSource,
): TiMConfig | null {
  const variant = variantFromKeys(keys);
  if (explicit !== undefined) return configFromSource(explicit, { variant });
  if (metadata?.config !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(metadata.config);
    } catch (e) {
      throw new TorchError(`'${path}': __metadata__.config is not JSON: ${(e as Error).message}`, 'E_FORMAT');
    }
    const ropeGrid = metadata.rope_grid as TiMConfig['ropeGrid'] | undefined;
    return configFromValue(parsed, { variant, target: metadata.target, ropeGrid });
  }
  const side = sidecarConfig(path);
  return side ? readConfigFile(side, { variant }) : null;
}

export class TiM implements Disposable {
  /** The TorchScript module (official state_dict names; methods forward, forward_with_zs, forward_intermediates, ...). */
  readonly module: torch.jit.ScriptModule;
  readonly config: Readonly<TiMConfig>;
  /**
   * After TiM.load of a state dict: the keys the file lacked (left at the official init when
   * non-strict) and the file's keys that are not this network's. null otherwise.
   */
  loadReport: { missingKeys: string[]; unexpectedKeys: string[] } | null = null;
  /**
   * Whether the network runs with TorchScript's graph optimizations (`torch.jit.optimizedExecution`).
   * 'auto' (the default): off when x is on the CPU (except under CPU autocast on libtorch 1.13), on
   * elsewhere. Off, TorchScript runs the graph op by op and autograd records each op, as eager PyTorch
   * (the official code) does; on the CPU a training step took 0.83-1.03x the time of the profiling
   * executor's autodiff subgraphs (per-turn medians 0.79-0.95), and sampling was no slower
   * (docs/memory.md, "Step time"). On CUDA the executor's fusion is kept (not measured here).
   */
  graphOptimization: 'auto' | 'on' | 'off' = 'auto';

  private constructor(module: torch.jit.ScriptModule, config: TiMConfig) {
    this.module = module;
    this.config = Object.freeze({ ...config });
  }

  // ---- construction -----------------------------------------------------------------------------

  /** Builds the official architecture for `config` (camelCase fields or a preset name) with the official initialization. */
  static create(config: TiMConfigInput | TiMConfig | TiMPresetName, options: TiMCreateOptions = {}): TiM {
    const c = resolveConfig(config);
    const attention = options.attention === undefined || options.attention === 'auto' ? defaultAttention() : options.attention;
    const spec = withCode(() => buildTiMSpec(c, { attention }));
    const m = buildModule(spec, { init: options.init ?? 'official' });
    try {
      // Lets TiM.load rebuild this wrapper from a saved .pt; Python's torch.jit.load just sees a str attribute.
      m.registerAttribute(CONFIG_ATTR, JSON.stringify({ version: 1, config: c, attention }), 'str');
      if (options.device !== undefined || options.dtype !== undefined) m.to({ device: options.device, dtype: options.dtype });
    } catch (e) {
      m.dispose();
      throw e;
    }
    return new TiM(m, c);
  }

  /**
   * From the official configuration: `network.params` (snake_case) as an object, a whole official
   * YAML/JSON document as an object, or the path of such a file (e.g. configs/c2i/tim_xl_p2_256.yaml).
   */
  static fromOfficialConfig(
    value: OfficialNetworkParams | string,
    options: TiMCreateOptions & { variant?: TiMVariant; target?: string; ropeGrid?: TiMConfig['ropeGrid'] } = {},
  ): TiM {
    const { variant, target, ropeGrid, ...create } = options;
    const hint = { variant, target, ropeGrid };
    const c = typeof value === 'string' ? readConfigFile(value, hint) : configFromValue(value, hint);
    return TiM.create(c, create);
  }

  /**
   * Loads a model: our TorchScript `.pt` (config inside), an official `.safetensors` state dict
   * (config from its metadata, a sidecar file or `options.config`), or a `.bin`/`.pt` state dict
   * written by Python's torch.save (config from a sidecar file or `options.config`).
   */
  static load(path: string, options: TiMLoadOptions = {}): TiM {
    if (typeof path !== 'string' || path === '') throw argError('type', 'TiM.load: path must be a non-empty string');
    if (!existsSync(path)) throw new TorchError(`TiM.load: no such file '${path}'`, 'E_IO');
    const kind = checkpointKind(path);
    if (kind === 'torchscript') {
      if (options.allowTorchScript !== true) throw torchScriptRefused(path, 'TiM.load', '{ allowTorchScript: true }');
      return TiM.loadTorchScript(path, options);
    }

    let metadata: Record<string, string> | null = null;
    let weights: Record<string, Tensor>;
    if (kind === 'safetensors') {
      if (options.key !== undefined) throw argError('type', "TiM.load: 'key' applies to torch.save checkpoints, not safetensors files");
      const r = torch.loadSafetensors(path);
      weights = r.tensors;
      metadata = r.metadata;
    } else {
      weights = torch.load(path, { format: 'torch', key: options.key });
    }
    try {
      const config = checkpointConfig(path, Object.keys(weights), metadata, options.config);
      if (!config) {
        throw new TorchError(
          `TiM.load: '${path}' holds no config (no safetensors __metadata__.config and no sidecar ${basename(path, extname(path))}.json/.yaml or config.json/.yaml beside it); pass { config } (a preset, an official YAML, or network.params)`,
          'E_CONFIG',
        );
      }
      const strict = options.strict ?? true;
      // Non-strict: keys the file lacks keep the official init (an 'empty' module would keep
      // whatever bytes its memory held, NaN and inf included).
      const model = TiM.create(config, { attention: options.attention, init: strict ? 'empty' : 'official' });
      try {
        const r = model.loadStateDict(weights, { strict });
        if (!strict) {
          const matched = Object.keys(weights).length - r.unexpectedKeys.length;
          if (matched === 0) {
            throw new TorchError(
              `TiM.load: none of the ${Object.keys(weights).length} tensors of '${path}' is a parameter of this network ` +
              `(${r.missingKeys.length} missing, e.g. ${r.missingKeys.slice(0, 3).join(', ')}; file has e.g. ${r.unexpectedKeys.slice(0, 3).join(', ')}): ` +
              'nothing would be loaded (wrong --key or --config?)',
              'E_STATE_DICT',
            );
          }
        }
        model.loadReport = { missingKeys: [...r.missingKeys], unexpectedKeys: [...r.unexpectedKeys] };
        if (options.device !== undefined || options.dtype !== undefined) model.to({ device: options.device, dtype: options.dtype });
      } catch (e) {
        model.dispose();
        throw e;
      }
      return model;
    } finally {
      // loadStateDict copied the values into the module; the (memory-mapped) sources can go.
      for (const t of Object.values(weights)) t.dispose();
    }
  }

  private static loadTorchScript(path: string, options: TiMLoadOptions): TiM {
    const m = torch.jit.load(path, options.device === undefined ? {} : { device: options.device });
    try {
      let config: TiMConfig;
      if (options.config !== undefined) config = configFromSource(options.config);
      else if (m.hasAttr(CONFIG_ATTR)) {
        const saved = JSON.parse(m.getAttr<string>(CONFIG_ATTR)) as { version: number; config: TiMConfig };
        config = resolveConfig(saved.config);
      } else {
        throw new TorchError(`TiM.load: TorchScript archive '${path}' has no '${CONFIG_ATTR}' attribute (not saved by TiM.save); pass { config }`, 'E_CONFIG');
      }
      for (const name of ['forward', 'forward_with_zs', 'forward_intermediates']) {
        if (!m.hasMethod(name)) throw new TorchError(`TiM.load: '${path}' is a TorchScript module without method '${name}', not a TiM`, 'E_FORMAT');
      }
      if (options.dtype !== undefined) m.to(options.dtype);
      return new TiM(m, config);
    } catch (e) {
      m.dispose();
      throw e;
    }
  }

  /** Per-part parameter counts of a config or preset, from shapes alone. */
  static parameterCounts(config: TiMConfig | TiMConfigInput | TiMPresetName): TiMParameterCounts {
    return parameterCounts(config);
  }

  // ---- running ----------------------------------------------------------------------------------

  /**
   * The network: x (B, C, H, W) with H, W multiples of the patch size, t and r (B,) float times
   * (r ≤ t), y (B,) int64 labels (C2I; `numClasses` is the null class) or (B, M, capFeatDim)
   * caption features (T2I). Returns the prediction (B, C, H, W), or `{ out, hProj }` with
   * `returnZs` (hProj: (B, N, zDim)).
   */
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor, options?: TiMForwardOptions & { returnZs?: false }): Tensor;
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor, options: TiMForwardOptions & { returnZs: true }): { out: Tensor; hProj: Tensor };
  forward(x: Tensor, t: Tensor, r: Tensor, y: Tensor, options: TiMForwardOptions = {}): Tensor | { out: Tensor; hProj: Tensor } {
    this.checkInputs(x, t, r, y);
    return this.running(x, () => {
      if (options.returnZs) {
        const [out, hProj] = this.module.call<[Tensor, Tensor]>('forward_with_zs', x, t, r, y);
        return { out, hProj };
      }
      return this.module.forward<Tensor>(x, t, r, y);
    });
  }

  /** forward() on libuv's thread pool (keep the inputs alive until it settles). */
  async forwardAsync(x: Tensor, t: Tensor, r: Tensor, y: Tensor, options: TiMForwardOptions = {}): Promise<Tensor | { out: Tensor; hProj: Tensor }> {
    this.checkInputs(x, t, r, y);
    if (options.returnZs) {
      const [out, hProj] = await this.running(x, () => this.module.callAsync<[Tensor, Tensor]>('forward_with_zs', x, t, r, y));
      return { out, hProj };
    }
    return this.running(x, () => this.module.forwardAsync<Tensor>(x, t, r, y));
  }

  /** Every intermediate under the golden names (x_embed, t_emb, ..., block{i}_out, h_proj, final_layer_out, out). */
  forwardIntermediates(x: Tensor, t: Tensor, r: Tensor, y: Tensor): Record<string, Tensor> {
    this.checkInputs(x, t, r, y);
    return this.running(x, () => this.module.call<Record<string, Tensor>>('forward_intermediates', x, t, r, y));
  }

  /**
   * C2I label dropout as the official trainer does it: entries of `forceDropIds` that are nonzero
   * (or, without it, a random classDropoutProb fraction in training mode) become the null class.
   */
  dropLabels(y: Tensor, forceDropIds: Tensor | null = null): Tensor {
    if (this.config.variant !== 'c2i') throw new TorchError('TiM.dropLabels: only the C2I model has labels (T2I drops prompts before the text encoder)', 'E_VALUE');
    return this.module.call<Tensor>('drop_labels', checkTensor(y, 'y'), forceDropIds);
  }

  /** fn (a call of the module, or the start of an async one) under graphOptimization's setting for x. */
  private running<T>(x: Tensor, fn: () => T): T {
    const g = this.graphOptimization;
    if (g !== 'auto' && g !== 'on' && g !== 'off') throw argError('range', `TiM.graphOptimization must be 'auto', 'on' or 'off', got ${String(g)}`);
    // libtorch 1.13 runs CPU autocast in TorchScript only through the optimizing executor (without it an
    // op meets bf16 activations with fp32 weights: test/loss-grad.test.ts), so there it stays on
    const on = g === 'on' || (g === 'auto' && (x.device !== 'cpu' || (!torch.libtorchAtLeast(2, 0) && torch.isAutocastEnabled('cpu'))));
    return torch.jit._withOptimizedExecution(on, fn);
  }

  private checkInputs(x: Tensor, t: Tensor, r: Tensor, y: Tensor): void {
    const c = this.config;
    checkTensor(x, 'x');
    checkTensor(t, 't');
    checkTensor(r, 'r');
    checkTensor(y, 'y');
    const xs = x.shape;
    if (xs.length !== 4 || xs[1] !== c.inChannels || xs[2]! % c.patchSize !== 0 || xs[3]! % c.patchSize !== 0 || xs[2] === 0 || xs[3] === 0) {
      throw argError('range', `TiM.forward: x must be (B, ${c.inChannels}, H, W) with H, W positive multiples of ${c.patchSize}, got [${xs.join(', ')}]`, 'E_SHAPE');
    }
    const B = xs[0]!;
    for (const [name, v] of [['t', t], ['r', r]] as const) {
      if (v.shape.length !== 1 || v.shape[0] !== B) throw argError('range', `TiM.forward: ${name} must be (${B},), got [${v.shape.join(', ')}]`, 'E_SHAPE');
    }
    if (c.variant === 'c2i') {
      if (y.shape.length !== 1 || y.shape[0] !== B) throw argError('range', `TiM.forward: y must be (${B},) labels, got [${y.shape.join(', ')}]`, 'E_SHAPE');
      if (y.dtype !== 'int64') throw argError('type', `TiM.forward: y must be int64 labels, got ${y.dtype}`, 'E_DTYPE');
    } else if (y.shape.length !== 3 || y.shape[0] !== B || y.shape[2] !== c.capFeatDim) {
      throw argError('range', `TiM.forward: caption features must be (${B}, M, ${c.capFeatDim}), got [${y.shape.join(', ')}]`, 'E_SHAPE');
    }
  }

  // ---- state ------------------------------------------------------------------------------------

  train(on = true): this {
    this.module.train(on);
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  get isTraining(): boolean {
    return this.module.isTraining;
  }
  to(target: Device | DType | { device?: Device; dtype?: DType }): this {
    this.module.to(target);
    return this;
  }
  /** Parameters (aliasing the module's own tensors), in the official named_parameters() order. */
  parameters(): Tensor[] {
    return this.module.parameters();
  }
  namedParameters(): [string, Tensor][] {
    return this.module.namedParameters();
  }
  /** The official state_dict (keys and order); values alias the module's tensors. */
  stateDict(): Record<string, Tensor> {
    return this.module.stateDict();
  }
  loadStateDict(record: Record<string, Tensor> | Map<string, Tensor>, options: { strict?: boolean } = {}): torch.jit.LoadStateDictResult {
    return this.module.loadStateDict(record, options);
  }
  /** Number of parameters (with the projector), counted on the live module. */
  numParameters(): number {
    let n = 0;
    for (const p of this.parameters()) {
      n += p.numel;
      p.dispose();
    }
    return n;
  }
  /** The official network.params for this model's config. */
  officialParams(): Record<string, number | boolean | string> {
    return toOfficialParams(this.config as TiMConfig);
  }

  /**
   * Saves the model, atomically; the format follows the extension:
   * - `.safetensors`: the official state dict, with `__metadata__` config (official network.params
   *   JSON, as the golden files have it), `target` and `rope_grid`;
   * - `.bin`: the official state dict in torch.save's zip format (Python's torch.load reads it; the
   *   config is not inside: TiM.load takes it from a sidecar or { config });
   * - anything else (`.pt`): a TorchScript archive (Python's torch.jit.load reads it) that also
   *   carries the config, so TiM.load needs nothing else.
   */
  save(path: string): void {
    if (typeof path !== 'string' || path === '') throw argError('type', 'TiM.save: path must be a non-empty string');
    if (/\.safetensors$/i.test(path)) {
      const sd = this.stateDict();
      try {
        torch.save(sd, path, this.safetensorsMetadata());
      } finally {
        for (const t of Object.values(sd)) t.dispose();
      }
      return;
    }
    if (/\.bin$/i.test(path)) {
      // Official .bin checkpoints are torch.save state dicts; the config cannot travel inside (the
      // official loaders take it from the YAML), so TiM.load needs { config } or a sidecar for them.
      const sd = this.stateDict();
      try {
        saveTorchZip(sd, path, 'TiM.save');
      } finally {
        for (const t of Object.values(sd)) t.dispose();
      }
      return;
    }
    this.module.save(path);
  }

  /** The safetensors `__metadata__` written by save(). */
  safetensorsMetadata(): Record<string, string> {
    return {
      config: JSON.stringify(this.officialParams()),
      target: OFFICIAL_TARGETS[this.config.variant],
      rope_grid: this.config.ropeGrid,
      format: 'pt',
    };
  }

  /** Releases this handle on the module (its tensors are freed once nothing else holds the module). */
  dispose(): void {
    this.module.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  get isDisposed(): boolean {
    return this.module.isDisposed;
  }
}

/**
 * Reading a diffusers model folder (what `AutoencoderKL.from_pretrained(dir)` reads): `config.json`
 * and the weights, `diffusion_pytorch_model.safetensors` or else `diffusion_pytorch_model.bin`
 * (a torch.save state dict, read by the project's restricted torch.load: no code runs). Shared by
 * every VAE family (lib/vae/kl.ts, lib/vae/dc.ts); one error code per way a folder can be wrong:
 * E_VAE_FOLDER (no folder, no config.json, no weights file), E_VAE_CONFIG (config.json unreadable or
 * not a JSON object), E_VAE_WEIGHTS (weights file unreadable, a TorchScript archive, or keys that do
 * not fit the model).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '../torch/index.js';
import { TorchError } from '../torch/errors.js';
import { archiveKind } from '../torch/io/index.js';
import type { Tensor } from '../torch/tensor.js';
import type { StateDictError } from '../torch/jit.js';

export const CONFIG_FILE = 'config.json';
/** diffusers' WEIGHTS_NAME order: safetensors first, as from_pretrained prefers it. */
export const WEIGHTS_FILES = ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin'] as const;

export interface DiffusersFolder {
  dir: string;
  /** config.json as parsed. */
  config: Record<string, unknown>;
  /** `_class_name` of config.json ('' when it has none). */
  className: string;
  weightsPath: string;
  weightsFormat: 'safetensors' | 'torch';
}

/** config.json and the weights file of `dir`, checked to exist and the config to be a JSON object. */
export function readDiffusersFolder(dir: string, owner = 'VAE.load'): DiffusersFolder {
  if (typeof dir !== 'string' || dir === '') throw new TorchError(`${owner}: the folder must be a non-empty path string`, 'E_VAE_FOLDER');
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new TorchError(`${owner}: '${dir}' is not a folder (expected a diffusers model folder: config.json + diffusion_pytorch_model.safetensors)`, 'E_VAE_FOLDER');
  }
  const configPath = join(dir, CONFIG_FILE);
  if (!existsSync(configPath)) throw new TorchError(`${owner}: '${dir}' has no ${CONFIG_FILE} (not a diffusers model folder)`, 'E_VAE_FOLDER');
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (e) {
    throw new TorchError(`${owner}: '${configPath}' is not valid JSON: ${(e as Error).message}`, 'E_VAE_CONFIG');
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new TorchError(`${owner}: '${configPath}' must hold a JSON object`, 'E_VAE_CONFIG');
  }
  const rec = config as Record<string, unknown>;
  const cls = rec._class_name;
  if (cls !== undefined && typeof cls !== 'string') throw new TorchError(`${owner}: '${configPath}': _class_name must be a string`, 'E_VAE_CONFIG');
  const weightsName = WEIGHTS_FILES.find((f) => existsSync(join(dir, f)));
  if (weightsName === undefined) {
    throw new TorchError(`${owner}: '${dir}' has no weights file (${WEIGHTS_FILES.join(' or ')})`, 'E_VAE_FOLDER');
  }
  return {
    dir,
    config: rec,
    className: cls ?? '',
    weightsPath: join(dir, weightsName),
    weightsFormat: weightsName.endsWith('.bin') ? 'torch' : 'safetensors',
  };
}

/**
 * Every tensor of the folder's weights file (the caller disposes them). Safetensors files are
 * mapped (pages read as loadStateDict copies them); .bin files must be torch.save zip archives of a
 * state dict: a TorchScript archive is refused, being a program rather than weights.
 */
export function loadFolderWeights(folder: DiffusersFolder, owner = 'VAE.load'): Record<string, Tensor> {
  const path = folder.weightsPath;
  if (folder.weightsFormat === 'torch') {
    const kind = archiveKind(path);
    if (kind === 'torchscript') {
      throw new TorchError(`${owner}: '${path}' is a TorchScript archive, not a state dict: it was not loaded (loading it would run its code)`, 'E_VAE_WEIGHTS');
    }
    if (kind === null) throw new TorchError(`${owner}: '${path}' is not a torch.save zip archive (legacy pickled .bin files are not read)`, 'E_VAE_WEIGHTS');
  }
  try {
    return torch.load(path, { format: folder.weightsFormat });
  } catch (e) {
    throw new TorchError(`${owner}: cannot read weights '${path}': ${(e as Error).message}`, 'E_VAE_WEIGHTS');
  }
}

/** Removes `keys` from `weights` and returns them (disposing nothing): side tensors such as BatchNorm statistics. */
export function takeKeys(weights: Record<string, Tensor>, keys: readonly string[]): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const k of keys) {
    if (k in weights) {
      out[k] = weights[k]!;
      delete weights[k];
    }
  }
  return out;
}

const MAX_LISTED = 8;
const listed = (keys: string[]): string =>
  keys.length <= MAX_LISTED ? keys.join(', ') : `${keys.slice(0, MAX_LISTED).join(', ')} and ${keys.length - MAX_LISTED} more`;

/**
 * Loads `weights` into `module` strictly; any missing, unexpected or shape-mismatched key becomes one
 * TorchError E_VAE_WEIGHTS naming the keys (the StateDictError is its `cause`).
 */
export function loadStrict(module: torch.jit.ScriptModule, weights: Record<string, Tensor>, what: string, owner = 'VAE.load'): void {
  try {
    module.loadStateDict(weights, { strict: true });
  } catch (e) {
    const s = e as StateDictError;
    if (s.code !== 'E_STATE_DICT') throw e;
    const parts: string[] = [];
    if (s.missingKeys.length) parts.push(`missing ${listed(s.missingKeys)}`);
    if (s.unexpectedKeys.length) parts.push(`unexpected ${listed(s.unexpectedKeys)}`);
    if (s.mismatchedKeys.length) {
      parts.push(`wrong shape ${listed(s.mismatchedKeys.map((m) => `${m.key} (model [${m.expected.join(', ')}], file [${m.got.join(', ')}])`))}`);
    }
    const err = new TorchError(`${owner}: the weights of '${what}' do not fit its config: ${parts.join('; ')}`, 'E_VAE_WEIGHTS');
    (err as Error & { cause?: unknown }).cause = e;
    throw err;
  }
}

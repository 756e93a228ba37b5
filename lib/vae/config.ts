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
 * The tensors of a folder's weights file, read one at a time: a model's worth of weights is never
 * held twice. Safetensors tensors are read with pread into fresh memory (no mapping stays resident);
 * a .bin (torch.save zip of a state dict) is loaded whole by the restricted unpickler, and `take`
 * hands its tensors over. TorchScript archives are refused: they are programs, not weights.
 */
export interface FolderWeights extends Disposable {
  readonly path: string;
  keys(): string[];
  shape(key: string): number[];
  /** The tensor under `key`, now the caller's to dispose. */
  take(key: string): Tensor;
  /** Frees what was not taken and closes the file. */
  close(): void;
}

export function openFolderWeights(folder: DiffusersFolder, owner = 'VAE.load'): FolderWeights {
  const path = folder.weightsPath;
  const fail = (e: unknown): never => {
    throw new TorchError(`${owner}: cannot read weights '${path}': ${(e as Error).message}`, 'E_VAE_WEIGHTS');
  };
  if (folder.weightsFormat === 'safetensors') {
    let f: torch.SafetensorsFile;
    try {
      f = new torch.SafetensorsFile(path);
    } catch (e) {
      return fail(e);
    }
    const close = (): void => f.close();
    return {
      path,
      keys: () => f.keys(),
      shape: (k) => [...f.info(k).shape],
      take: (k) => {
        try {
          return f.get(k, { copy: true });
        } catch (e) {
          return fail(e);
        }
      },
      close,
      [Symbol.dispose]: close,
    };
  }
  const kind = archiveKind(path);
  if (kind === 'torchscript') {
    throw new TorchError(`${owner}: '${path}' is a TorchScript archive, not a state dict: it was not loaded (loading it would run its code)`, 'E_VAE_WEIGHTS');
  }
  if (kind === null) throw new TorchError(`${owner}: '${path}' is not a torch.save zip archive (legacy pickled .bin files are not read)`, 'E_VAE_WEIGHTS');
  let rec: Record<string, Tensor> = {};
  try {
    rec = torch.load(path, { format: 'torch' });
  } catch (e) {
    fail(e);
  }
  const close = (): void => {
    for (const t of Object.values(rec)) t.dispose();
    rec = {};
  };
  return {
    path,
    keys: () => Object.keys(rec),
    shape: (k) => rec[k]!.shape,
    take: (k) => {
      const t = rec[k]!;
      delete rec[k];
      return t;
    },
    close,
    [Symbol.dispose]: close,
  };
}

const MAX_LISTED = 8;
const listed = (keys: string[]): string =>
  keys.length <= MAX_LISTED ? keys.join(', ') : `${keys.slice(0, MAX_LISTED).join(', ')} and ${keys.length - MAX_LISTED} more`;

/**
 * Loads `weights` (all keys but `skip`) into `module` strictly, one tensor at a time. Names and
 * shapes are checked first, from the file's header, so nothing is read or copied when they do not
 * fit: every missing, unexpected and shape-mismatched key is named in one TorchError E_VAE_WEIGHTS.
 * Values are converted to the parameter's dtype (a float16 file loads into a float32 module).
 */
export function loadStrict(module: torch.jit.ScriptModule, weights: FolderWeights, what: string, skip: readonly string[] = [], owner = 'VAE.load'): void {
  const targets = module.stateDict();
  try {
    const given = weights.keys().filter((k) => !skip.includes(k));
    const givenSet = new Set(given);
    const missing = Object.keys(targets).filter((k) => !givenSet.has(k));
    const unexpected = given.filter((k) => !(k in targets));
    const mismatched: string[] = [];
    for (const [k, t] of Object.entries(targets)) {
      if (!givenSet.has(k)) continue;
      const got = weights.shape(k);
      if (got.length !== t.shape.length || got.some((d, i) => d !== t.shape[i])) mismatched.push(`${k} (model [${t.shape.join(', ')}], file [${got.join(', ')}])`);
    }
    if (missing.length || unexpected.length || mismatched.length) {
      const parts: string[] = [];
      if (missing.length) parts.push(`missing ${listed(missing)}`);
      if (unexpected.length) parts.push(`unexpected ${listed(unexpected)}`);
      if (mismatched.length) parts.push(`wrong shape ${listed(mismatched)}`);
      throw new TorchError(`${owner}: the weights of '${what}' do not fit its config: ${parts.join('; ')}`, 'E_VAE_WEIGHTS');
    }
    torch.noGrad(() => {
      for (const [k, t] of Object.entries(targets)) {
        const src = weights.take(k);
        try {
          t.copy_(src);
        } finally {
          src.dispose();
        }
      }
    });
  } finally {
    for (const t of Object.values(targets)) t.dispose();
  }
}

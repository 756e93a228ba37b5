/**
 * Exponential moving average of model parameters (official tim/utils/train_utils.py update_ema):
 * for every named parameter, ema ← ema·d + p·(1 − d), in place, in the parameter's dtype, with a
 * constant decay d (no warm-up). The trainer starts from a copy of the model (deepcopy) and updates it
 * after every optimizer step.
 *
 * Over a TorchScript module the EMA is itself a module (`ema.module`, a deep copy usable for forward);
 * over a plain Record<string, Tensor> it holds its own copies of the tensors.
 */
import * as torch from '../../torch/index.js';
import { argError } from '../../torch/errors.js';
import * as check from '../../torch/check.js';
import { ScriptModule } from '../../torch/jit.js';
import type { Tensor } from '../../torch/tensor.js';

/**
 * What an EMA follows: a TorchScript module's parameters, an object holding one as `module` (such as
 * the TiM wrapper; the official update_ema unwraps `.module` alike), or a record of tensors.
 */
export type EMASource = ScriptModule | { readonly module: ScriptModule } | Record<string, Tensor>;

/** The module inside a wrapper, the module itself, or the record. */
function unwrap(source: EMASource): ScriptModule | Record<string, Tensor> {
  if (source instanceof ScriptModule) return source;
  if (source !== null && typeof source === 'object' && (source as { module?: unknown }).module instanceof ScriptModule) {
    return (source as { module: ScriptModule }).module;
  }
  return source as Record<string, Tensor>;
}

export interface EMAOptions {
  /** d in ema ← ema·d + p·(1 − d); default 0.9999 (the official trainer's ema_decay) */
  decay?: number;
  /**
   * Also copy the module's buffers into the EMA module on each update (default true). The official
   * update_ema leaves buffers as they were at the copy; TiM has none, so both agree there. Modules
   * only (a record has no buffers).
   */
  copyBuffers?: boolean;
}

export interface EMAUpdateOptions {
  /** this update's decay (default: the EMA's decay) */
  decay?: number;
}

function checkRecord(rec: unknown, owner: string): Record<string, Tensor> {
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
    throw argError('type', `${owner}: expected a ScriptModule or a Record<string, Tensor>`);
  }
  const out = rec as Record<string, unknown>;
  for (const [k, v] of Object.entries(out)) check.tensor(v, `tensor '${k}'`, owner);
  return out as Record<string, Tensor>;
}

/**
 * A deep copy of a TorchScript module: its own parameters, buffers and attributes, same methods,
 * training mode and devices (ScriptModule.clone, libtorch's Module::clone).
 */
export function cloneScriptModule(m: ScriptModule): ScriptModule {
  if (!(m instanceof ScriptModule)) throw argError('type', 'cloneScriptModule: expected a ScriptModule');
  if (m.isDisposed) throw new torch.TorchError('cloneScriptModule: module was disposed', 'E_DISPOSED');
  return m.clone();
}

/** Names present in one list and not the other, as an error message part (empty when equal). */
function keyMismatch(own: string[], given: string[]): string {
  const a = new Set(own), b = new Set(given);
  const missing = own.filter((n) => !b.has(n));
  const extra = given.filter((n) => !a.has(n));
  const parts: string[] = [];
  if (missing.length) parts.push(`missing: ${missing.join(', ')}`);
  if (extra.length) parts.push(`unexpected: ${extra.join(', ')}`);
  return parts.join('; ');
}

/**
 * ema ← ema·d + p·(1 − d) for each pair, in place and without autograd (the official
 * `ema.mul_(decay).add_(param.data, alpha=1 - decay)`). Pairs are checked first: nothing is
 * updated if any name or shape disagrees.
 */
function emaUpdate(ema: [string, Tensor][], src: [string, Tensor][], decay: number, owner: string): void {
  const given = new Map(src);
  const mismatch = keyMismatch(ema.map(([n]) => n), src.map(([n]) => n));
  if (mismatch) throw argError('range', `${owner}: the names differ from the EMA's (${mismatch})`, 'E_KEYS');
  for (const [n, e] of ema) {
    const p = given.get(n)!;
    if (p.shape.length !== e.shape.length || p.shape.some((d, i) => d !== e.shape[i])) {
      throw argError('range', `${owner}: '${n}' has shape [${p.shape.join(', ')}], the EMA's is [${e.shape.join(', ')}]`, 'E_SHAPE');
    }
  }
  torch.noGrad(() => {
    for (const [n, e] of ema) e.mul_(decay).add_(given.get(n)!, 1 - decay);
  });
}

export class EMA {
  readonly decay: number;
  readonly copyBuffers: boolean;
  #module: ScriptModule | null = null;
  #tensors: Record<string, Tensor> | null = null;
  #updates = 0;

  /** Starts the EMA at a copy of `source` (official: ema_model = deepcopy(model)). */
  constructor(src: EMASource, opts: EMAOptions = {}) {
    const source = unwrap(src);
    check.knownKeys(opts, ['decay', 'copyBuffers'], 'EMA');
    this.decay = check.inRange(opts.decay ?? 0.9999, 'decay', 'EMA', 0, 1);
    this.copyBuffers = check.bool(opts.copyBuffers ?? true, 'copyBuffers', 'EMA');
    if (source instanceof ScriptModule) {
      const m = cloneScriptModule(source);
      // the EMA is never trained (official: ema_model.requires_grad_(False))
      torch.scope(() => {
        for (const p of m.parameters()) p.requiresGrad_(false);
      });
      this.#module = m;
    } else {
      const rec = checkRecord(source, 'EMA');
      // copies owned by the EMA: kept out of any enclosing scope, freed by dispose()
      this.#tensors = torch.keep(torch.scope(() => torch.noGrad(() => {
        const out: Record<string, Tensor> = {};
        for (const [k, v] of Object.entries(rec)) out[k] = v.detach().clone();
        return out;
      })));
    }
  }

  /** The EMA module (for forward, saving, …). Only for an EMA made from a ScriptModule. */
  get module(): ScriptModule {
    this.#alive();
    if (!this.#module) throw argError('type', 'EMA.module: this EMA follows a record of tensors, not a module (use stateDict())', 'E_NO_MODULE');
    return this.#module;
  }

  /** How many updates have been applied. */
  get updates(): number {
    return this.#updates;
  }

  /**
   * One EMA step towards `source` (same kind, names and shapes as at construction): for every
   * parameter ema ← ema·d + p·(1 − d); buffers are copied when copyBuffers is on.
   */
  update(src: EMASource, opts: EMAUpdateOptions = {}): void {
    this.#alive();
    const source = unwrap(src);
    check.knownKeys(opts, ['decay'], 'EMA.update');
    const decay = check.inRange(opts.decay ?? this.decay, 'decay', 'EMA.update', 0, 1);
    torch.scope(() => {
      if (this.#module) {
        if (!(source instanceof ScriptModule)) throw argError('type', 'EMA.update: this EMA follows a module; pass the model (a ScriptModule)');
        if (source.isDisposed) throw new torch.TorchError('EMA.update: model was disposed', 'E_DISPOSED');
        // buffers are checked before any parameter moves, so a failed update changes nothing
        let buffers: [Tensor, Tensor][] = [];
        if (this.copyBuffers) {
          const own = this.#module.namedBuffers();
          const given = source.namedBuffers();
          const mismatch = keyMismatch(own.map(([n]) => n), given.map(([n]) => n));
          if (mismatch) throw argError('range', `EMA.update: the buffer names differ from the EMA's (${mismatch})`, 'E_KEYS');
          const byName = new Map(given);
          buffers = own.map(([n, b]) => {
            const src = byName.get(n)!;
            if (src.shape.length !== b.shape.length || src.shape.some((d, i) => d !== b.shape[i])) {
              throw argError('range', `EMA.update: buffer '${n}' has shape [${src.shape.join(', ')}], the EMA's is [${b.shape.join(', ')}]`, 'E_SHAPE');
            }
            return [b, src];
          });
        }
        emaUpdate(this.#module.namedParameters(), source.namedParameters(), decay, 'EMA.update');
        torch.noGrad(() => {
          for (const [b, src] of buffers) b.copy_(src);
        });
      } else {
        if (source instanceof ScriptModule) throw argError('type', 'EMA.update: this EMA follows a record of tensors; pass a Record<string, Tensor>');
        const rec = checkRecord(source, 'EMA.update');
        emaUpdate(Object.entries(this.#tensors!), Object.entries(rec), decay, 'EMA.update');
      }
    });
    this.#updates++;
  }

  /**
   * The EMA state by name: parameters and buffers of the EMA module (its stateDict()), or the
   * tensors of a record EMA. Values alias the EMA's state (new handles, so disposing them is safe).
   */
  stateDict(): Record<string, Tensor> {
    this.#alive();
    if (this.#module) return this.#module.stateDict();
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(this.#tensors!)) out[k] = v.detach();
    return out;
  }

  /** Copies the EMA state into `module` (e.g. to evaluate or save the EMA weights in another module). */
  copyTo(module: ScriptModule, opts: { strict?: boolean } = {}): void {
    this.#alive();
    if (!(module instanceof ScriptModule)) throw argError('type', 'EMA.copyTo: expected a ScriptModule');
    torch.scope(() => {
      module.loadStateDict(this.stateDict(), { strict: opts.strict ?? true });
    });
  }

  /** Frees the EMA's module handle or tensors. */
  dispose(): void {
    if (this.#module) this.#module.dispose();
    if (this.#tensors) for (const t of Object.values(this.#tensors)) t.dispose();
    this.#module = null;
    this.#tensors = null;
    this.#disposed = true;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  #disposed = false;
  get isDisposed(): boolean {
    return this.#disposed;
  }
  #alive(): void {
    if (this.#disposed) throw new torch.TorchError('EMA was disposed', 'E_DISPOSED');
  }
}

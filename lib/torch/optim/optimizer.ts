/**
 * Optimizer base: parameter groups, per-parameter state, zeroGrad, step and a state dict that
 * round-trips exactly (tensors + JSON) so a resumed run is bit-identical to an uninterrupted one.
 *
 * Ownership: the caller (a module) owns the parameter tensors; the optimizer owns its state tensors
 * (exp_avg, momentum_buffer, ...) and frees them in dispose(). State tensors are created with
 * keep(), so a step() inside a torch.scope() does not free them when that scope closes.
 */
import { Tensor } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { keep } from '../scope.js';
import { argError, TorchError } from '../errors.js';
import { loadSafetensors, saveSafetensors } from '../io/index.js';
import { native } from '../native.js';
import { knownKeys } from '../check.js';
import { zero_ } from './foreach.js';
import { op } from '../ops.js';

const DETACH_ = op('aten::detach_');
/** The safetensors __metadata__ key that holds the optimizer's JSON meta. */
const META_KEY = 'tim-torch.optim';

/** Hyperparameters every optimizer has; each optimizer adds its own. */
export interface BaseHyper {
  lr: number;
}

/** A parameter group as given to a constructor: tensors plus any hyperparameter overrides. */
export type ParamGroupInput<H> = { params: Tensor[] } & Partial<H>;

/** A parameter group as the optimizer holds it. `initialLr` is set by LR schedulers. */
export type ParamGroup<H> = H & { params: Tensor[]; initialLr?: number };

/** Per-parameter state: the step count (a float32 counter, as torch's `state['step']`) and tensors. */
export interface ParamState {
  step: number;
  tensors: Record<string, Tensor>;
}

/** JSON-able part of a state dict. */
export interface OptimizerMeta {
  format: 'tim-torch.optim';
  version: 1;
  optimizer: string;
  /** Hyperparameters of each group, with `params` as indices into all parameters in group order (as torch). */
  paramGroups: (Record<string, unknown> & { params: number[] })[];
  /** Step count per parameter index, for the parameters that have state. */
  state: Record<string, { step: number }>;
}

/**
 * `tensors` holds `state.<index>.<name>` (torch's names: exp_avg, exp_avg_sq, momentum_buffer);
 * they are new handles on the optimizer's live state (like torch's references): dispose them when
 * done, and copy them if they must outlive the next step().
 */
export interface OptimizerStateDict {
  tensors: Record<string, Tensor>;
  meta: OptimizerMeta;
}

export interface ZeroGradOptions {
  /** Drop the gradients (true, the default, as torch 2.x and the TiM trainer) or fill them with zeros. */
  setToNone?: boolean;
}

function isTensorArray(x: unknown): x is Tensor[] {
  return Array.isArray(x) && x.every((t) => t instanceof Tensor);
}

export abstract class Optimizer<H extends BaseHyper> {
  readonly defaults: Readonly<H>;
  readonly paramGroups: ParamGroup<H>[];
  protected readonly state = new Map<Tensor, ParamState>();
  private disposed = false;

  /** Name written into state dicts and checked when loading one. */
  protected abstract readonly kind: string;

  constructor(params: Tensor[] | ParamGroupInput<H>[], defaults: H) {
    this.defaults = Object.freeze({ ...defaults });
    if (!Array.isArray(params) || params.length === 0) throw argError('type', 'optimizer: expected a non-empty array of Tensors or of parameter groups');
    const inputs: ParamGroupInput<H>[] = isTensorArray(params) ? [{ params } as ParamGroupInput<H>] : (params as ParamGroupInput<H>[]);
    const seen = new Set<Tensor>();
    const known = new Set([...Object.keys(defaults), 'params', 'initialLr']);
    this.paramGroups = inputs.map((g, gi) => {
      if (!g || typeof g !== 'object' || !isTensorArray(g.params)) throw argError('type', `optimizer: group ${gi}: 'params' must be an array of Tensors`);
      // an unsupported option (amsgrad, maximize, a typo) must not be silently ignored
      for (const k of Object.keys(g)) if (!known.has(k)) throw argError('type', `optimizer: group ${gi}: unknown option '${k}' (known: ${[...known].join(', ')})`);
      for (const p of g.params) {
        if (p.isDisposed) throw argError('type', `optimizer: group ${gi} holds a disposed tensor`, 'E_DISPOSED');
        if (seen.has(p)) throw argError('type', 'optimizer: a parameter appears more than once (in one group or across groups)');
        // as torch: updating a non-leaf in place would corrupt the graph it belongs to
        if (!p.isLeaf) throw argError('type', `optimizer: group ${gi}: can't optimize a non-leaf Tensor`);
        seen.add(p);
      }
      const group = { ...defaults } as ParamGroup<H>;
      for (const [k, v] of Object.entries(g)) if (v !== undefined) (group as unknown as Record<string, unknown>)[k] = v;
      group.params = g.params.slice();
      this.validate(group, `group ${gi}`);
      return group;
    });
  }

  /** Throws RangeError for hyperparameters torch rejects (negative lr, betas outside [0, 1), ...). */
  protected abstract validate(group: ParamGroup<H>, where: string): void;

  /** Updates `params` (those of `group` that have a gradient) given their `grads`. Runs under noGrad. */
  protected abstract update(group: ParamGroup<H>, params: Tensor[], grads: Tensor[]): void;

  /** All parameters, in group order: their positions are the indices of the state dict. */
  get params(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** One optimization step over every parameter that has a gradient. */
  step(): void {
    this.checkLive();
    noGrad(() => {
      for (const group of this.paramGroups) {
        this.validate(group, 'step');
        const params: Tensor[] = [];
        const grads: Tensor[] = [];
        try {
          for (const p of group.params) {
            const g = p.grad; // a new handle each read: released below
            if (g) {
              params.push(p);
              grads.push(g);
            }
          }
          if (params.length) this.update(group, params, grads);
        } finally {
          for (const g of grads) g.dispose();
        }
      }
    });
  }

  /** Clears the gradients of all parameters (drops them, or zero-fills them with setToNone: false). */
  zeroGrad(opts: ZeroGradOptions = {}): void {
    this.checkLive();
    const setToNone = opts.setToNone ?? true;
    if (setToNone) {
      for (const p of this.params) native.setGrad(p._h, null);
      return;
    }
    const grads: Tensor[] = [];
    try {
      for (const p of this.params) {
        const g = p.grad;
        if (!g) continue;
        grads.push(g);
        // as torch: a gradient that is itself part of a graph is cut from it before zeroing
        if (g.gradFn !== null) native.callVoid(DETACH_(), g._h);
        else if (g.requiresGrad) g.requiresGrad_(false);
      }
      noGrad(() => zero_(grads));
    } finally {
      for (const g of grads) g.dispose();
    }
  }

  /** State of parameter p, created by init() on first use (tensors kept out of any open scope). */
  protected stateOf(p: Tensor, init: () => Record<string, Tensor>): ParamState {
    let s = this.state.get(p);
    if (!s) {
      s = { step: 0, tensors: keep(init()) };
      this.state.set(p, s);
    }
    return s;
  }

  // ---- state dict ------------------------------------------------------------------------------
  stateDict(): OptimizerStateDict {
    this.checkLive();
    const tensors: Record<string, Tensor> = {};
    const state: Record<string, { step: number }> = {};
    let index = 0;
    const paramGroups = this.paramGroups.map((g) => {
      const ids: number[] = [];
      for (const p of g.params) {
        const s = this.state.get(p);
        if (s) {
          state[String(index)] = { step: s.step };
          for (const [name, t] of Object.entries(s.tensors)) tensors[`state.${index}.${name}`] = t.detach();
        }
        ids.push(index++);
      }
      const { params: _p, ...hyper } = g;
      return { ...structuredClone(hyper), params: ids } as Record<string, unknown> & { params: number[] };
    });
    return { tensors, meta: { format: 'tim-torch.optim', version: 1, optimizer: this.kind, paramGroups, state } };
  }

  /**
   * Restores state and hyperparameters saved by stateDict() of an optimizer of the same kind over
   * parameters of the same shapes and grouping. Tensors are copied (cast to each parameter's dtype
   * and device, as torch does), so the caller keeps ownership of `sd.tensors`.
   */
  loadStateDict(sd: OptimizerStateDict): void {
    this.checkLive();
    const meta = sd?.meta;
    if (!meta || meta.format !== 'tim-torch.optim' || meta.version !== 1) throw argError('type', 'loadStateDict: not a tim-torch optimizer state dict (meta.format/version)', 'E_FORMAT');
    if (meta.optimizer !== this.kind) throw argError('type', `loadStateDict: state dict is for ${meta.optimizer}, this optimizer is ${this.kind}`, 'E_FORMAT');
    if (!Array.isArray(meta.paramGroups) || meta.paramGroups.length !== this.paramGroups.length) {
      throw argError('range', `loadStateDict: state dict has ${meta.paramGroups?.length} parameter groups, optimizer has ${this.paramGroups.length}`, 'E_FORMAT');
    }
    const params = this.params;
    const fresh = new Map<Tensor, ParamState>();
    const hyper: Record<string, unknown>[] = [];
    try {
      let index = 0;
      meta.paramGroups.forEach((mg, gi) => {
        const group = this.paramGroups[gi]!;
        if (!Array.isArray(mg.params) || mg.params.length !== group.params.length) {
          throw argError('range', `loadStateDict: group ${gi} has ${mg.params?.length} parameters in the state dict, ${group.params.length} in the optimizer`, 'E_FORMAT');
        }
        const { params: ids, ...h } = mg;
        hyper.push(h);
        ids.forEach((savedId) => {
          const p = params[index++]!;
          const st = meta.state[String(savedId)];
          if (!st) return;
          if (typeof st.step !== 'number' || !(st.step >= 0)) throw argError('type', `loadStateDict: bad step for parameter ${savedId}`, 'E_FORMAT');
          const prefix = `state.${savedId}.`;
          const tensors: Record<string, Tensor> = {};
          fresh.set(p, { step: st.step, tensors });
          for (const [key, t] of Object.entries(sd.tensors ?? {})) {
            if (!key.startsWith(prefix)) continue;
            if (!(t instanceof Tensor)) throw argError('type', `loadStateDict: ${key} is not a Tensor`, 'E_FORMAT');
            const ps = p.shape, ts = t.shape;
            if (ps.length !== ts.length || ps.some((d, i) => d !== ts[i])) {
              throw argError('range', `loadStateDict: ${key} has shape [${ts}], parameter ${savedId} has shape [${ps}]`, 'E_SHAPE');
            }
            tensors[key.slice(prefix.length)] = keep(t.to({ dtype: p.dtype, device: p.device, copy: true }));
          }
        });
      });
      this.checkLoadedState(fresh);
    } catch (e) {
      for (const s of fresh.values()) for (const t of Object.values(s.tensors)) t.dispose();
      throw e;
    }
    // commit: replace state and hyperparameters only once everything was read and checked
    this.clearState();
    for (const [p, s] of fresh) this.state.set(p, s);
    hyper.forEach((h, gi) => Object.assign(this.paramGroups[gi]!, structuredClone(h)));
  }

  /**
   * Writes stateDict() to `path` as one safetensors file (atomically): the state tensors, and the
   * JSON meta under the `__metadata__` key 'tim-torch.optim'. `extra` entries (e.g. a scheduler's
   * JSON state) are stored next to it and come back from loadState().
   */
  saveState(path: string, extra: Record<string, string> = {}): void {
    if (META_KEY in extra) throw argError('type', `saveState: '${META_KEY}' is reserved`);
    const sd = this.stateDict();
    try {
      saveSafetensors(sd.tensors, path, { ...extra, [META_KEY]: JSON.stringify(sd.meta) }, 'saveState');
    } finally {
      for (const t of Object.values(sd.tensors)) t.dispose();
    }
  }

  /** Restores a file written by saveState(); returns the file's other metadata entries. */
  loadState(path: string): Record<string, string> {
    this.checkLive();
    const { tensors, metadata } = loadSafetensors(path, { lazy: false });
    try {
      const text = metadata?.[META_KEY];
      if (text === undefined) throw new TorchError(`loadState: '${path}' has no '${META_KEY}' metadata (not written by saveState)`, 'E_FORMAT');
      let meta: OptimizerMeta;
      try {
        meta = JSON.parse(text) as OptimizerMeta;
      } catch {
        throw new TorchError(`loadState: '${path}': '${META_KEY}' metadata is not valid JSON`, 'E_FORMAT');
      }
      this.loadStateDict({ tensors, meta });
      const { [META_KEY]: _m, ...rest } = metadata!;
      return rest;
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
  }

  /** Hook: throws when a loaded parameter state lacks a tensor this optimizer needs. */
  protected checkLoadedState(_state: Map<Tensor, ParamState>): void {}

  /** Releases the state tensors; the optimizer is unusable afterwards. Parameters are not touched. */
  dispose(): void {
    if (this.disposed) return;
    this.clearState();
    this.disposed = true;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  protected clearState(): void {
    for (const s of this.state.values()) for (const t of Object.values(s.tensors)) t.dispose();
    this.state.clear();
  }

  protected checkLive(): void {
    if (this.disposed) throw argError('type', `${this.kind}: used after dispose()`, 'E_DISPOSED');
  }
}

/**
 * Throws TypeError for constructor options the optimizer does not have (e.g. amsgrad, a typo). Code
 * E_ARG, as the optimizers have always thrown (the rest of the project says E_OPTION).
 */
export function checkOptionKeys(opts: object | undefined, allowed: readonly string[], what: string): void {
  if (opts !== undefined) knownKeys(opts, allowed, what, 'options', 'E_ARG');
}

/** Checks shared by the Adam family: torch's ValueError cases become RangeError (code E_RANGE). */
export function checkRange(ok: boolean, what: string): void {
  if (!ok) throw argError('range', what);
}

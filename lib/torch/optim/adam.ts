/**
 * Adam (torch.optim.Adam) and the update it shares with AdamW, with the math of the torch release
 * whose libtorch is linked (1.13 or 2.x: they round differently in two places).
 *
 * The update runs ATen's `_foreach_*` kernels over the whole group, in the order and with the
 * scalars of torch's `_single_tensor_adam(w)` / `_multi_tensor_adam(w)` (which agree bit for bit
 * on CPU), so results equal Python's exactly:
 *   k += 1                                  (float32 counter, like torch's state['step'])
 *   AdamW: p *= 1 - lr*wd                    Adam: g' = g + wd*p (a new tensor; .grad is untouched)
 *   1.13: m = m*b1; m += (1-b1)*g'           2.x: m = lerp(m, g', 1-b1)
 *   v = v*b2; v += (1-b2)*g'*g'
 *   d = sqrt(v) / c + eps                    c = 1.13: math.sqrt(1 - b2^k); 2.x: (1 - b2^k) ** 0.5
 *                                           (CPU: into a preallocated buffer, see foreach.sqrtDivAddInto;
 *                                             elsewhere torch's _foreach sequence, see foreach.sqrtDivAdd)
 *   p += -(lr / (1 - b1^k)) * m / d
 */
import { Tensor } from '../tensor.js';
import { keep } from '../scope.js';
import { argError } from '../errors.js';
import { Optimizer, type BaseHyper, type ParamGroup, type ParamGroupInput, type ParamState, checkRange, checkOptionKeys } from './optimizer.js';
import * as F from './foreach.js';
import { libmPow } from './pow.js';
import { native } from '../native.js';
import { op } from '../ops.js';
import { libtorchAtLeast } from '../state.js';

const ZEROS_LIKE = op('aten::zeros_like');
const EMPTY_LIKE = op('aten::empty_like');

export interface AdamHyper extends BaseHyper {
  betas: [number, number];
  eps: number;
  weightDecay: number;
}
export type AdamOptions = Partial<AdamHyper>;
export const ADAM_OPTIONS = ['lr', 'betas', 'eps', 'weightDecay'] as const;

/** Adam-family defaults from user options (torch's defaults except weight decay, which differs). */
export function adamDefaults(opts: AdamOptions | undefined, weightDecay: number, what: string): AdamHyper {
  checkOptionKeys(opts, ADAM_OPTIONS, what);
  const o = opts ?? {};
  return { lr: o.lr ?? 1e-3, betas: o.betas ?? [0.9, 0.999], eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? weightDecay };
}

/** The math step count after `step` increments stored in float32, as torch's state['step'] tensor. */
export function nextStep(step: number): number {
  return Math.fround(step + 1);
}
/** 1 - beta^k, with beta^k exactly as Python's float pow (libm; see pow.ts). */
export function biasCorrection(beta: number, k: number): number {
  return 1 - libmPow(beta, k);
}

/**
 * Shared Adam/AdamW group update. `decoupled` selects AdamW's weight decay (shrink the parameter)
 * over Adam's L2 term (add wd*p to the gradient).
 */
export function adamUpdate(
  group: ParamGroup<AdamHyper>,
  params: Tensor[],
  grads: Tensor[],
  states: ParamState[],
  denoms: Tensor[] | null,
  decoupled: boolean,
): void {
  const { lr, eps, weightDecay: wd } = group;
  const [b1, b2] = group.betas;
  const ks = states.map((s) => (s.step = nextStep(s.step)));
  // torch.optim's default is its single-tensor path on the CPU and its foreach path elsewhere; their
  // in-place scalar products round bfloat16 differently on 2.x (see foreach.mulScalarEach_)
  const mulScalar_ = params.every((p) => p.device === 'cpu') ? F.mulScalarEach_ : F.mulScalar_;
  let g = grads;
  const temps: Tensor[] = [];
  try {
    if (decoupled) {
      // multiplying by exactly 1 changes no bit, so torch's unconditional mul_ can be skipped
      const shrink = 1 - lr * wd;
      if (shrink !== 1) mulScalar_(params, shrink);
    } else if (wd !== 0) {
      g = F.addList(grads, params, wd);
      temps.push(...g);
    }
    const m = states.map((s) => s.tensors.exp_avg!);
    const v = states.map((s) => s.tensors.exp_avg_sq!);
    const torch2 = libtorchAtLeast(2, 0);
    if (torch2) F.lerp_(m, g, 1 - b1);
    else {
      mulScalar_(m, b1);
      F.addList_(m, g, 1 - b1);
    }
    mulScalar_(v, b2);
    F.addcmul_(v, g, g, 1 - b2);
    // the parameters of a group almost always share one step count: one pair of pow() per count
    const perStep = new Map<number, [number, number]>();
    const scalarsAt = (k: number): [number, number] => {
      let r = perStep.get(k);
      if (!r) {
        const bc2 = biasCorrection(b2, k);
        perStep.set(k, (r = [torch2 ? libmPow(bc2, 0.5) : Math.sqrt(bc2), (lr / biasCorrection(b1, k)) * -1]));
      }
      return r;
    };
    const bc2Sqrt = ks.map((k) => scalarsAt(k)[0]);
    const stepSizes = ks.map((k) => scalarsAt(k)[1]);
    let d: Tensor[];
    if (denoms) F.sqrtDivAddInto((d = denoms), v, bc2Sqrt, eps);
    else temps.push(...(d = F.sqrtDivAdd(v, bc2Sqrt, eps)));
    F.addcdiv_(params, m, d, stepSizes);
  } finally {
    for (const t of temps) t.dispose();
  }
}

export function validateAdam(group: ParamGroup<AdamHyper>, where: string): void {
  const { lr, eps, weightDecay, betas } = group;
  checkRange(typeof lr === 'number' && lr >= 0, `${where}: invalid learning rate ${lr}`);
  checkRange(typeof eps === 'number' && eps >= 0, `${where}: invalid epsilon ${eps}`);
  if (!Array.isArray(betas) || betas.length !== 2) throw argError('type', `${where}: betas must be [beta1, beta2]`);
  checkRange(betas[0] >= 0 && betas[0] < 1, `${where}: invalid beta parameter at index 0: ${betas[0]}`);
  checkRange(betas[1] >= 0 && betas[1] < 1, `${where}: invalid beta parameter at index 1: ${betas[1]}`);
  checkRange(typeof weightDecay === 'number' && weightDecay >= 0, `${where}: invalid weight decay ${weightDecay}`);
}

/**
 * The Adam family's state (exp_avg, exp_avg_sq) plus a per-parameter buffer for the denominator,
 * which is scratch (not state: it is not saved) kept between steps so that no step allocates
 * parameter-sized memory.
 */
export abstract class AdamBase extends Optimizer<AdamHyper> {
  private readonly denoms = new Map<Tensor, Tensor>();
  protected abstract readonly decoupled: boolean;
  /** @internal tests: compute the denominator by torch's literal _foreach sequence on the CPU too */
  _literalDenominator = false;

  constructor(params: Tensor[] | ParamGroupInput<AdamHyper>[], defaults: AdamHyper) {
    super(params, defaults);
  }

  protected validate(group: ParamGroup<AdamHyper>, where: string): void {
    validateAdam(group, where);
  }

  protected update(group: ParamGroup<AdamHyper>, params: Tensor[], grads: Tensor[]): void {
    const states = params.map((p) =>
      this.stateOf(p, () => ({
        exp_avg: new Tensor(native.call(ZEROS_LIKE(), p._h)),
        exp_avg_sq: new Tensor(native.call(ZEROS_LIKE(), p._h)),
      })),
    );
    // the fused denominator rounds its scalars to the parameter dtype, which is what torch's CPU
    // kernels do for float32/float64 only (half types compute scalar ops in float32)
    const fused = !this._literalDenominator && params.every((p) => p.device === 'cpu' && (p.dtype === 'float32' || p.dtype === 'float64'));
    const denoms = !fused ? null : params.map((p) => {
      let d = this.denoms.get(p);
      if (!d) {
        d = keep(new Tensor(native.call(EMPTY_LIKE(), p._h)));
        this.denoms.set(p, d);
      }
      return d;
    });
    adamUpdate(group, params, grads, states, denoms, this.decoupled);
  }

  protected override checkLoadedState(state: Map<Tensor, ParamState>): void {
    for (const s of state.values()) {
      if (!s.tensors.exp_avg || !s.tensors.exp_avg_sq) throw argError('type', `loadStateDict: ${this.kind} state needs exp_avg and exp_avg_sq`, 'E_FORMAT');
    }
  }

  protected override clearState(): void {
    super.clearState();
    for (const d of this.denoms.values()) d.dispose();
    this.denoms.clear();
  }
}

/** torch.optim.Adam: L2 weight decay folded into the gradient. Defaults as torch. */
export class Adam extends AdamBase {
  protected readonly kind = 'Adam';
  protected readonly decoupled = false;
  constructor(params: Tensor[] | ParamGroupInput<AdamHyper>[], opts: AdamOptions = {}) {
    super(params, adamDefaults(opts, 0, 'Adam'));
  }
}

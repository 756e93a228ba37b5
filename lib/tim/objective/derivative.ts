/**
 * dF/dt along the noising path, the term of the transition target F_target = v_t − (t − r)·dF/dt
 * (official TransitionSchedule.dde_derivative / jvp_derivative, tim/schedulers/transition.py):
 *
 *   d/dt F(x_t(t), t, r) = ∂F/∂x · v_t + ∂F/∂t,    x_t(t) = alpha(t)·x + sigma(t)·z,  r held fixed.
 *
 * Only the transition rows (index ≥ nDiffusion, where t ≠ r) need it: the diffusion rows get 0 and
 * are not evaluated. Both estimators are constants of the loss (no gradient flows through them).
 *
 * - DDE (default): the central difference (F(x_{t+ε}, t+ε, r) − F(x_{t−ε}, t−ε, r)) / (2ε), both
 *   points in one extra forward without autograd, x_{t±ε} rebuilt from x and z (no clamping of t ± ε).
 * - JVP: the exact Jacobian-vector product with tangents (v_t, 1, 0) on (x_t, t, r), two ways:
 *   'forward' (official: torch.func.jvp): forward-mode AD, one forward on dual tensors under noGrad;
 *   'double-backward': g(u) = (∂F/∂x)ᵀu, (∂F/∂t)ᵀu (linear in u, graph kept), then
 *   d/du ⟨g(u), (v, 1)⟩ = ∂F/∂x·v + ∂F/∂t: about 3 forward-costs and a double-backward graph.
 *   Both run with scaled-dot-product attention on its math path (the fused kernels have neither a
 *   forward derivative nor a double backward; the official code switches to vanilla attention too).
 *   The default, jvpMethodDefault(), is the faster of the two on the linked libtorch (bench/jvp.ts).
 *
 * Precision: under autocast the difference of two bfloat16 forwards divided by 2ε loses most of
 * its digits (see docs/loss.md for the measured error), so by default both estimators run with
 * autocast switched off (float32 weights stay float32). `precision: 'autocast'` keeps the caller's
 * autocast state instead.
 */
import * as torch from '../../torch/index.js';
import { TorchError } from '../../torch/errors.js';
import type { Tensor } from '../../torch/tensor.js';
import { unchecked, type Transport } from '../transports/transport.js';

/** One network evaluation on the network's time inputs (c_noise already applied). Must not mutate its arguments. */
export type NetworkFn = (xT: Tensor, tInput: Tensor, rInput: Tensor, y: Tensor) => Tensor;

/** 'float32': run the derivative's forwards with autocast off; 'autocast': as the caller has it. */
export type DerivativePrecision = 'float32' | 'autocast';

export interface DerivativeInputs {
  network: NetworkFn;
  transport: Transport;
  /** clean data and noise (B, ...) */
  x: Tensor;
  z: Tensor;
  /** x_t and v_t (B, ...): the JVP's primal and tangent (the DDE rebuilds x_{t±ε} from x and z) */
  xT: Tensor;
  vT: Tensor;
  /** raw times (B,) */
  t: Tensor;
  r: Tensor;
  /** conditioning (B, ...), sliced by rows like the rest */
  y: Tensor;
  /** rows < nDiffusion are diffusion rows: their derivative is 0 and is not computed */
  nDiffusion: number;
  precision?: DerivativePrecision;
  /** JVP only: how J·(v, 1, 0) is computed (default jvpMethodDefault()) */
  jvpMethod?: JvpMethod;
}

/** 'forward': forward-mode AD (torch.func.jvp); 'double-backward': two reverse passes. */
export type JvpMethod = 'forward' | 'double-backward';

/**
 * The faster JVP method on the linked libtorch, by bench/jvp.ts (docs/loss.md has the figures):
 * forward-mode AD, one forward on dual tensors, beats the double backward's three passes.
 */
export function jvpMethodDefault(): JvpMethod {
  return 'forward';
}

export interface DerivativeResult {
  /** (B, ...) like x; rows < nDiffusion are 0 */
  dFdvdt: Tensor;
  /** DDE only: the two model outputs at t ± ε for rows ≥ nDiffusion (null for JVP, or when every row is a diffusion row) */
  fTPlusEps: Tensor | null;
  fTMinusEps: Tensor | null;
}

/** Rows [n, B) of a batch tensor (a view). */
export function transitionRows(v: Tensor, n: number): Tensor {
  return v.narrow(0, n, v.shape[0]! - n);
}

/** Zeros for rows < n, then d: the official `_dF_dv_dt = zeros_like(x); _dF_dv_dt[n:] = d`. */
export function padLeadingRows(d: Tensor, n: number): Tensor {
  if (n === 0) return d.clone();
  return torch.scope(() => torch.cat([torch.zeros([n, ...d.shape.slice(1)], { dtype: d.dtype, device: d.device }), d], 0));
}

/** The autocast device type of a tensor's device ('cuda:1' → 'cuda'). */
function autocastDevice(t: Tensor): 'cpu' | 'cuda' {
  return String(t.device).startsWith('cuda') ? 'cuda' : 'cpu';
}

/** Runs fn with autocast switched off on x's device when precision is 'float32' (and it is on). */
export function withDerivativePrecision<T>(precision: DerivativePrecision, x: Tensor, fn: () => T): T {
  const device = autocastDevice(x);
  if (precision === 'autocast' || !torch.isAutocastEnabled(device)) return fn();
  return torch.autocast({ device, enabled: false }, fn);
}

/** x_t = alpha(t)·x + sigma(t)·z for raw times t (B,). */
export function interpolate(transport: Transport, x: Tensor, z: Tensor, t: Tensor): Tensor {
  return torch.scope(() => {
    const ip = unchecked(transport).interpolantOf(t.view([t.shape[0]!, ...new Array<number>(x.dim - 1).fill(1)]));
    return ip.alpha.mul(x).add(ip.sigma.mul(z));
  });
}

/** The central difference of F along the path, rows ≥ nDiffusion, under noGrad (official dde_derivative). */
export function ddeDerivative(inputs: DerivativeInputs, epsilon: number): DerivativeResult {
  const { network, transport, x, z, t, r, y, nDiffusion } = inputs;
  const B = x.shape[0]!;
  if (nDiffusion >= B) return { dFdvdt: torch.zerosLike(x), fTPlusEps: null, fTMinusEps: null };
  return torch.scope(() => torch.noGrad(() => withDerivativePrecision(inputs.precision ?? 'float32', x, () => {
    const xs = transitionRows(x, nDiffusion), zs = transitionRows(z, nDiffusion);
    const ts = transitionRows(t, nDiffusion), rs = transitionRows(r, nDiffusion), ys = transitionRows(y, nDiffusion);
    // Both points in one forward of 2·(B − nDiffusion) rows: half the calls of the official two
    // forwards (the per-call cost dominates small batches); rows are independent, so each output row
    // is the same function of its inputs (agreement with the official outputs: docs/loss.md).
    const tPlus = ts.add(epsilon), tMinus = ts.sub(epsilon);
    const tBoth = torch.cat([tPlus, tMinus]);
    const { tInput, rInput } = unchecked(transport).modelTimesOf(tBoth, torch.cat([rs, rs]));
    const xBoth = torch.cat([interpolate(transport, xs, zs, tPlus), interpolate(transport, xs, zs, tMinus)]);
    const [fTPlusEps, fTMinusEps] = network(xBoth, tInput, rInput, torch.cat([ys, ys])).chunk(2) as [Tensor, Tensor];
    // Each output is scaled by 1/(2ε) before the difference, as the official code does (float32 parity).
    const invTwoEps = 1 / (2 * epsilon);
    const d = fTPlusEps.mul(invTwoEps).sub(fTMinusEps.mul(invTwoEps));
    return { dFdvdt: padLeadingRows(d, nDiffusion), fTPlusEps, fTMinusEps };
  })));
}

/**
 * The exact d/dt F(x_t, t, r) = J·(v_t, 1, 0), rows ≥ nDiffusion (official jvp_derivative, which
 * uses torch.func.jvp), by inputs.jvpMethod.
 */
export function jvpDerivative(inputs: DerivativeInputs): DerivativeResult {
  const B = inputs.xT.shape[0]!;
  if (inputs.nDiffusion >= B) return { dFdvdt: torch.zerosLike(inputs.xT), fTPlusEps: null, fTMinusEps: null };
  const method = inputs.jvpMethod ?? jvpMethodDefault();
  return torch.sdpaKernel(['math'], () => (method === 'forward' ? forwardJvp(inputs) : doubleBackwardJvp(inputs)));
}

/** J·(v, 1, 0) by forward-mode AD: one forward of the network on dual (primal, tangent) inputs. */
function forwardJvp(inputs: DerivativeInputs): DerivativeResult {
  const { network, transport, xT, vT, t, r, y, nDiffusion } = inputs;
  return torch.scope(() => torch.noGrad(() => withDerivativePrecision(inputs.precision ?? 'float32', xT, () => {
    const xs = transitionRows(xT, nDiffusion).detach(), ts = transitionRows(t, nDiffusion).detach();
    const rs = transitionRows(r, nDiffusion).detach(), vs = transitionRows(vT, nDiffusion).detach();
    const ys = transitionRows(y, nDiffusion);
    let jv: Tensor;
    try {
      jv = torch.autograd.jvp((xd, td) => {
        const { tInput, rInput } = unchecked(transport).modelTimesOf(td, rs);
        return network(xd, tInput, rInput, ys);
      }, [xs, ts], [vs, torch.onesLike(ts)]).jvp;
    } catch (e) {
      throw new TorchError(
        `TransitionLoss jvp derivative: forward-mode AD through the network failed (${(e as Error).message}). ` +
        "Use jvpMethod 'double-backward' or derivativeType 'dde'.",
        (e as { code?: string }).code ?? 'E_AUTOGRAD',
      );
    }
    return { dFdvdt: padLeadingRows(jv, nDiffusion), fTPlusEps: null, fTMinusEps: null };
  })));
}

/** J·(v, 1, 0) by double backward (see the file comment). */
function doubleBackwardJvp(inputs: DerivativeInputs): DerivativeResult {
  const { network, transport, xT, vT, t, r, y, nDiffusion } = inputs;
  return torch.scope(() => torch.enableGrad(() => withDerivativePrecision(inputs.precision ?? 'float32', xT, () => {
    // Fresh leaves: the caller's tensors never get requires_grad set on them.
    const xs = transitionRows(xT, nDiffusion).detach().clone().requiresGrad_();
    const ts = transitionRows(t, nDiffusion).detach().clone().requiresGrad_();
    const rs = transitionRows(r, nDiffusion).detach();
    const vs = transitionRows(vT, nDiffusion).detach();
    const { tInput, rInput } = unchecked(transport).modelTimesOf(ts, rs);
    const F = network(xs, tInput, rInput, transitionRows(y, nDiffusion));
    const u = torch.zerosLike(F).requiresGrad_();
    let jv: Tensor | null;
    try {
      const [gx, gt] = torch.autograd.grad([F], [xs, ts], { gradOutputs: [u], createGraph: true, allowUnused: true });
      const outs: Tensor[] = [], tangents: Tensor[] = [];
      if (gx) { outs.push(gx); tangents.push(vs); }
      if (gt) { outs.push(gt); tangents.push(torch.onesLike(ts)); }
      if (outs.length === 0) return { dFdvdt: torch.zerosLike(xT), fTPlusEps: null, fTMinusEps: null };
      jv = torch.autograd.grad(outs, [u], { gradOutputs: tangents, allowUnused: true })[0] ?? null;
    } catch (e) {
      throw new TorchError(
        `TransitionLoss jvp derivative: double backward through the network failed (${(e as Error).message}). ` +
        "Use jvpMethod 'forward' or derivativeType 'dde'.",
        (e as { code?: string }).code ?? 'E_AUTOGRAD',
      );
    }
    // F does not depend on x_t or t at all (only possible for a degenerate network): derivative 0.
    const d = jv ? jv.detach() : torch.zerosLike(F).detach();
    return { dFdvdt: padLeadingRows(d, nDiffusion), fTPlusEps: null, fTMinusEps: null };
  })));
}

/**
 * Turns a plain-data ModuleSpec (lib/torch/modules/spec.ts) into a live TorchScript module through
 * the project's module builder (torch.jit.createModule), and fills its parameters following each
 * parameter's InitSpec (for TiM, the official `initialize_weights`).
 *
 * Children are built and registered before their parent's methods are defined, because a parent's
 * TorchScript source calls its children's methods and must see their types when it compiles.
 */
import * as torch from '../index.js';
import type { Tensor } from '../tensor.js';
import { argError } from '../errors.js';
import type { InitSpec, ModuleSpec } from './spec.js';
import type { AttentionImpl } from './sources.js';

/**
 * How the parameters start:
 * - 'official': the official initialize_weights (xavier_uniform / normal(0, 0.02) / zeros / ones);
 * - 'empty': uninitialized memory, for a module whose every parameter is about to be overwritten by
 *   loadStateDict (skips drawing ~700M random numbers for an XL checkpoint).
 */
export type InitMode = 'official' | 'empty';

export interface BuildModuleOptions {
  init?: InitMode;
}

/**
 * The attention implementation to compile: the fused scaled_dot_product_attention when this libtorch
 * has it (2.x), otherwise the math path (libtorch 1.13). Both are exact (same softmax(q·kᵀ/√d)·v).
 */
export function defaultAttention(): AttentionImpl {
  return torch.hasOp('aten::scaled_dot_product_attention') ? 'sdpa' : 'math';
}

/** A fresh tensor of `shape` initialized per `init` (float32, CPU, no grad history). */
export function initTensor(shape: number[], init: InitSpec, mode: InitMode = 'official'): Tensor {
  if (mode === 'empty') return torch.empty(shape);
  switch (init.kind) {
    case 'zeros':
      return torch.zeros(shape);
    case 'ones':
      return torch.ones(shape);
    case 'normal':
      return torch.empty(shape).normal_(init.mean, init.std);
    case 'xavier_uniform': {
      // torch.nn.init.xavier_uniform_ with gain 1: U(−a, a), a = sqrt(6 / (fan_in + fan_out)).
      const a = Math.sqrt(6 / (init.fanIn + init.fanOut));
      return torch.empty(shape).uniform_(-a, a);
    }
    default:
      throw argError('range', `unknown InitSpec kind ${JSON.stringify((init as { kind?: unknown }).kind)}`, 'E_INIT');
  }
}

/**
 * Builds `spec` into a TorchScript module (children first, then parameters, attributes and methods).
 * Every temporary tensor is released before returning; the module owns its parameters.
 */
export function buildModule(spec: ModuleSpec, options: BuildModuleOptions = {}): torch.jit.ModuleBuilder {
  const mode = options.init ?? 'official';
  if (mode !== 'official' && mode !== 'empty') throw argError('range', `init must be 'official' or 'empty', got ${JSON.stringify(mode)}`, 'E_INIT');
  return build(spec, mode);
}

function build(spec: ModuleSpec, mode: InitMode): torch.jit.ModuleBuilder {
  const m = torch.jit.createModule(spec.typeName);
  try {
    for (const ch of spec.children) {
      const child = build(ch.spec, mode);
      try {
        m.registerModule(ch.name, child);
      } finally {
        // The parent holds the child now; this handle is no longer needed.
        child.dispose();
      }
    }
    torch.scope(() => {
      // registerParameter makes a leaf sharing the tensor's memory, so the temporaries may die with the scope.
      for (const p of spec.params) m.registerParameter(p.name, initTensor(p.shape, p.init, mode));
      for (const b of spec.buffers) {
        const t = initTensor(b.shape, b.init, mode);
        const v = b.dtype === 'float32' ? t : t.to(b.dtype as torch.DType);
        // A non-persistent buffer (register_buffer(..., persistent=False)) stays out of the state
        // dict: a plain Tensor attribute is exactly that in TorchScript.
        if (b.persistent) m.registerBuffer(b.name, v);
        else m.registerAttribute(b.name, v, 'Tensor');
      }
    });
    for (const a of spec.attributes) m.registerAttribute(a.name, a.value, a.type);
    for (const source of spec.methods) m.define(source);
    return m;
  } catch (err) {
    m.dispose();
    throw err;
  }
}

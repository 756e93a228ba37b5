/**
 * A network as plain data: what to register on each TorchScript module (parameters with their
 * initialization, buffers, typed attributes, children) and the method sources to define on it, in
 * order. lib/torch/modules/build.ts turns it into a live module. The TiM network
 * (lib/tim/network/spec.ts), the VAEs (lib/vae/) and the caption encoder (lib/text/) are written as
 * such specs.
 *
 * Building a spec: create children first (depth first), register parameters/buffers/attributes and
 * children, then define `methods` one by one in array order. Every module also needs the bool
 * attribute `training` (nn.Module has it; the builder's createModule registers it), which is
 * therefore not listed.
 */

/**
 * Initial value of a parameter (TiM: the final state of the official `initialize_weights`).
 * xavier_uniform draws U(−a, a) with a = sqrt(6 / (fanIn + fanOut)) (gain 1); the fans are given
 * explicitly because a weight may be initialized through a view (TiM's patch-embedding convolution:
 * fanIn = C·p·p, fanOut = D).
 */
export type InitSpec =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  | { kind: 'normal'; mean: number; std: number }
  | { kind: 'xavier_uniform'; fanIn: number; fanOut: number };

export interface ParamSpec {
  name: string;
  shape: number[];
  init: InitSpec;
}

export interface BufferSpec {
  name: string;
  shape: number[];
  dtype: string;
  init: InitSpec;
  /** false: not part of state_dict (like register_buffer(..., persistent=False)). */
  persistent: boolean;
}

/** TorchScript type of an attribute; a JS number alone cannot say int or float. */
export type AttributeType = 'int' | 'float' | 'bool' | 'str' | 'List[int]' | 'List[float]';

export interface AttributeSpec {
  name: string;
  type: AttributeType;
  value: number | boolean | string | number[];
}

export interface ModuleSpec {
  /** Names the TorchScript class; modules with the same typeName have identical signatures and sources. */
  typeName: string;
  params: ParamSpec[];
  buffers: BufferSpec[];
  attributes: AttributeSpec[];
  children: { name: string; spec: ModuleSpec }[];
  /** TorchScript sources, one `def` each, to define in this order (callees first). */
  methods: string[];
}

/**
 * Everything that must agree between two modules for them to share a TorchScript class: parameter,
 * buffer and attribute names (with shapes' ranks and attribute types), children (name and
 * typeName) and method sources. Shapes and attribute values may differ.
 */
export function typeSignature(s: ModuleSpec): string {
  return JSON.stringify({
    p: s.params.map((p) => [p.name, p.shape.length]),
    b: s.buffers.map((b) => [b.name, b.dtype, b.persistent]),
    a: s.attributes.map((a) => [a.name, a.type]),
    c: s.children.map((c) => [c.name, c.spec.typeName]),
    m: s.methods,
  });
}

// ---- walking a spec -----------------------------------------------------------------------------

/** Every parameter (and persistent buffer) under its state_dict key, in registration order. */
export function stateDictEntries(spec: ModuleSpec, prefix = ''): { key: string; shape: number[]; init: InitSpec; kind: 'param' | 'buffer' }[] {
  const out: { key: string; shape: number[]; init: InitSpec; kind: 'param' | 'buffer' }[] = [];
  for (const p of spec.params) out.push({ key: prefix + p.name, shape: p.shape, init: p.init, kind: 'param' });
  for (const b of spec.buffers) if (b.persistent) out.push({ key: prefix + b.name, shape: b.shape, init: b.init, kind: 'buffer' });
  for (const ch of spec.children) out.push(...stateDictEntries(ch.spec, `${prefix}${ch.name}.`));
  return out;
}

/**
 * Number of parameters, from shapes alone (no allocation). `excludePrefixes` leaves out subtrees,
 * e.g. ['projector.'] for the REPA projector, which only the training loss uses (the official
 * README's 664M / 865M count the network without it).
 */
export function countParameters(spec: ModuleSpec, options: { excludePrefixes?: string[] } = {}): number {
  const skip = options.excludePrefixes ?? [];
  return stateDictEntries(spec)
    .filter((e) => e.kind === 'param' && !skip.some((p) => e.key.startsWith(p)))
    .reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
}

/** Every module in the tree with its dotted path ('' for the root), parents before children. */
export function walkModules(spec: ModuleSpec, path = ''): { path: string; spec: ModuleSpec }[] {
  const out = [{ path, spec }];
  for (const ch of spec.children) out.push(...walkModules(ch.spec, path ? `${path}.${ch.name}` : ch.name));
  return out;
}

// ---- writing a spec -----------------------------------------------------------------------------

/** A module spec with every list empty unless given. */
export function moduleSpec(typeName: string, parts: Partial<Omit<ModuleSpec, 'typeName'>> = {}): ModuleSpec {
  return { typeName, params: [], buffers: [], attributes: [], children: [], methods: [], ...parts };
}

/**
 * A module spec whose TorchScript class name is `base` plus a hash of its typeSignature: modules
 * whose sources depend on the configuration get one class per distinct signature (same name ⇒ same
 * class), which a compilation unit requires.
 */
export function hashedModuleSpec(base: string, parts: Partial<Omit<ModuleSpec, 'typeName'>> = {}): ModuleSpec {
  const draft = moduleSpec(base, parts);
  return { ...draft, typeName: `${base}_${fnv1a(typeSignature(draft))}` };
}

/** An int attribute. */
export const intAttr = (name: string, value: number): AttributeSpec => ({ name, type: 'int', value });
/** A float attribute. */
export const floatAttr = (name: string, value: number): AttributeSpec => ({ name, type: 'float', value });

/** FNV-1a (32-bit) of a string, hex: a short, deterministic type-name suffix. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

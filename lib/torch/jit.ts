/**
 * TorchScript modules: load modules scripted in Python (`torch.jit.load`), call their methods, and
 * build new modules in TypeScript from TorchScript source (`torch.jit.createModule`). Saved modules
 * load in Python's `torch.jit.load` and vice versa.
 *
 * A ScriptModule is a handle to a native torch::jit::Module, which is a reference: a submodule
 * obtained from a parent, and every parameter returned by parameters()/stateDict(), alias the
 * module's own state (an optimizer updating a parameter in place updates the module).
 */
import { statSync } from 'node:fs';
import { native } from './native.js';
import { TorchError, argError } from './errors.js';
import { Tensor, _wrap as wrapTensor } from './tensor.js';
import { type DType, type Device, dtypeCode, normalizeDevice } from './dtype.js';
import { noGrad } from './autograd.js';
import { replaceAtomically } from './io/atomic.js';
import { syncRegion } from './sync_region.js';

/** A value a TorchScript method takes or returns: Tensor, int/float (number), bool, str, None (null),
 *  List / Tuple (arrays), Dict[str|int, T] (plain objects), or a submodule. */
export type JitValue = Tensor | number | boolean | string | null | ScriptModule | JitValue[] | { [key: string]: JitValue };

/** One slot of a module's class, as listed by attributes(). */
export interface AttributeInfo {
  name: string;
  /** TorchScript type, e.g. 'Tensor', 'int', 'List[float]', '__torch__.tim.Block_3' */
  type: string;
  kind: 'parameter' | 'buffer' | 'module' | 'attribute';
}

export interface LoadStateDictOptions {
  /** Missing and unexpected keys are errors (default true). Shape mismatches always are. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

/** Thrown by loadStateDict (code E_STATE_DICT); lists every problem at once. */
export class StateDictError extends TorchError {
  constructor(
    message: string,
    readonly missingKeys: string[],
    readonly unexpectedKeys: string[],
    readonly mismatchedKeys: { key: string; expected: number[]; got: number[] }[],
  ) {
    super(message, 'E_STATE_DICT');
    this.name = 'StateDictError';
  }
}

const registry = new FinalizationRegistry<number>((h) => {
  native.jitFree(h);
});

// The native side turns tensor / module results into these objects directly, and recognizes Tensor
// arguments by class (so a plain number is never mistaken for a tensor handle).
native.jitInit((h: number) => wrapTensor(h), (h: number) => new ScriptModule(h), Tensor);

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Slot names may also be all digits: nn.Sequential / nn.ModuleList children are named '0', '1', ...
// and official checkpoints (blocks.0.attn...) depend on it. TorchScript reaches them via getattr.
const SLOT = /^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$/;

function checkName(name: unknown, what: string, pattern = IDENT): string {
  if (typeof name !== 'string' || !pattern.test(name)) {
    throw argError('type', `${what}: name must be an identifier (letters, digits, _), got ${JSON.stringify(name)}`);
  }
  return name;
}

function wrapPairs(raw: [string, number][]): [string, Tensor][] {
  return raw.map(([n, h]) => [n, wrapTensor(h)]);
}

/** Argument errors found before the work is queued reject the promise instead of throwing. */
function started<T>(start: () => unknown): Promise<T> {
  try {
    return start() as Promise<T>;
  } catch (err) {
    return Promise.reject(err);
  }
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export class ScriptModule {
  /** @internal native module handle; -1 once disposed */
  _m: number;

  /** @internal use torch.jit.load / torch.jit.createModule */
  constructor(handle: number) {
    this._m = handle;
    registry.register(this, handle, this);
  }

  // ---- lifetime -------------------------------------------------------------------------------
  /** Drops this handle now (the module itself lives on while a parent or another handle holds it). */
  dispose(): void {
    if (this._m < 0) return;
    registry.unregister(this);
    native.jitFree(this._m);
    this._m = -1;
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
  get isDisposed(): boolean {
    return this._m < 0;
  }

  /**
   * A deep copy (libtorch's Module::clone): a new module with its own copies of every parameter,
   * buffer and attribute, the same methods, training mode and devices. Parameters are leaves with the
   * originals' requiresGrad (gradients are not copied); the clone has its own class types, so
   * building on it never changes this module. Dispose it like any module.
   */
  clone(): ScriptModule {
    return new ScriptModule(native.jitClone(this._m) as number);
  }

  /** Qualified TorchScript class name, e.g. '__torch__.MyNet' or '__torch__.tim.TiMBlock_0'. */
  get typeName(): string {
    return native.jitTypeName(this._m) as string;
  }
  /** True when both handles name the same module object. */
  isSameModule(other: ScriptModule): boolean {
    return native.jitSame(this._m, other._m) as boolean;
  }

  // ---- methods --------------------------------------------------------------------------------
  /** Calls forward. Arguments are converted by the method's schema; missing trailing ones take defaults. */
  forward<T = Tensor>(...args: unknown[]): T {
    return native.jitCall(this._m, 'forward', args, null) as T;
  }
  /** Calls any method by name. */
  call<T = JitValue>(name: string, ...args: unknown[]): T {
    return native.jitCall(this._m, name, args, null) as T;
  }
  /** Calls a method with positional arguments and keyword arguments by name. */
  callWith<T = JitValue>(name: string, args: unknown[], kwargs: Record<string, unknown> = {}): T {
    if (!Array.isArray(args)) throw argError('type', 'callWith(name, args, kwargs): args must be an array');
    return native.jitCall(this._m, name, args, kwargs) as T;
  }
  /**
   * forward() on libuv's thread pool, with the caller's grad mode and autocast state carried over.
   * Arguments must stay alive (not disposed) until the promise settles; do not mutate the module meanwhile.
   */
  forwardAsync<T = Tensor>(...args: unknown[]): Promise<T> {
    return started<T>(() => native.jitCallAsync(this._m, 'forward', args, null));
  }
  callAsync<T = JitValue>(name: string, ...args: unknown[]): Promise<T> {
    return started<T>(() => native.jitCallAsync(this._m, name, args, null));
  }
  callWithAsync<T = JitValue>(name: string, args: unknown[], kwargs: Record<string, unknown> = {}): Promise<T> {
    return started<T>(() => native.jitCallAsync(this._m, name, args, kwargs));
  }
  /** Names of the methods of this module's class. */
  methods(): string[] {
    return native.jitMethods(this._m) as string[];
  }
  hasMethod(name: string): boolean {
    return this.methods().includes(name);
  }
  /** Schema of a method, e.g. 'forward(__torch__.Net self, Tensor x, float scale=1.) -> Tensor'. */
  schema(name = 'forward'): string {
    return native.jitSchema(this._m, name) as string;
  }
  /** The TorchScript IR graph of a method (for debugging). */
  graph(name = 'forward'): string {
    return native.jitCode(this._m, name) as string;
  }

  // ---- mode and placement -------------------------------------------------------------------
  /** Sets `training` on this module and every submodule (visible as self.training in TorchScript). */
  train(on = true): this {
    native.jitTrain(this._m, on);
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  get isTraining(): boolean {
    return native.jitIsTraining(this._m) as boolean;
  }
  /**
   * Moves parameters and buffers to a device and/or casts the floating-point ones to a dtype, in place
   * (like nn.Module.to: integer buffers keep their dtype; existing parameter handles stay valid).
   */
  to(target: Device | DType | { device?: Device; dtype?: DType; nonBlocking?: boolean }): this;
  to(device: Device, dtype: DType): this;
  to(target: Device | DType | { device?: Device; dtype?: DType; nonBlocking?: boolean }, dtypeArg?: DType): this {
    let device: string | null = null;
    let dtype: number | null = null;
    let nonBlocking = false;
    if (dtypeArg !== undefined) {
      device = normalizeDevice(target as string);
      dtype = dtypeCode(dtypeArg);
    } else if (typeof target === 'string') {
      if (/^(cpu|cuda)/.test(target)) device = normalizeDevice(target);
      else dtype = dtypeCode(target);
    } else if (target !== null && typeof target === 'object') {
      if (target.device !== undefined) device = normalizeDevice(target.device);
      if (target.dtype !== undefined) dtype = dtypeCode(target.dtype);
      nonBlocking = target.nonBlocking ?? false;
    } else {
      throw argError('type', 'to(): expected a device, a dtype or {device, dtype}');
    }
    native.jitTo(this._m, device, dtype, nonBlocking);
    return this;
  }

  // ---- state ----------------------------------------------------------------------------------
  /** Parameters (recursively by default). Each Tensor aliases the module's parameter. */
  parameters(recurse = true): Tensor[] {
    return this.namedParameters(recurse).map(([, t]) => t);
  }
  /** [dotted name, parameter] pairs, in TorchScript's order. */
  namedParameters(recurse = true): [string, Tensor][] {
    return wrapPairs(native.jitNamedParameters(this._m, recurse) as [string, number][]);
  }
  buffers(recurse = true): Tensor[] {
    return this.namedBuffers(recurse).map(([, t]) => t);
  }
  namedBuffers(recurse = true): [string, Tensor][] {
    return wrapPairs(native.jitNamedBuffers(this._m, recurse) as [string, number][]);
  }
  /** Direct submodules; each is a handle aliasing the parent's submodule (dispose it when done). */
  namedChildren(): [string, ScriptModule][] {
    return (native.jitNamedChildren(this._m) as [string, number][]).map(([n, h]) => [n, new ScriptModule(h)]);
  }
  children(): ScriptModule[] {
    return this.namedChildren().map(([, m]) => m);
  }
  /** Parameters and buffers by dotted name, in the order of Python's state_dict(); values alias the module. */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [name, h] of native.jitStateEntries(this._m) as [string, number][]) out[name] = wrapTensor(h);
    return out;
  }
  /**
   * Copies values into the module's parameters and buffers in place (no grad; dtype and device are
   * converted to the parameter's). Every missing, unexpected and shape-mismatched key is reported in
   * one StateDictError (code E_STATE_DICT); with strict=false only shape mismatches are errors.
   * Nothing is copied when an error is thrown.
   */
  loadStateDict(dict: Record<string, Tensor> | Map<string, Tensor>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    if (dict === null || typeof dict !== 'object') throw argError('type', 'loadStateDict: expected an object or Map of Tensors');
    const given = dict instanceof Map ? dict : new Map(Object.entries(dict));
    for (const [k, v] of given) {
      if (!(v instanceof Tensor)) throw argError('type', `loadStateDict: value of '${k}' is not a Tensor`);
      if (v.isDisposed) throw new TorchError(`loadStateDict: tensor '${k}' was disposed`, 'E_DISPOSED');
    }
    const own = native.jitStateEntries(this._m) as [string, number][];
    const targets = own.map(([n, h]) => [n, wrapTensor(h)] as const);
    try {
      const ownNames = new Set(targets.map(([n]) => n));
      const missingKeys = targets.map(([n]) => n).filter((n) => !given.has(n));
      const unexpectedKeys = [...given.keys()].filter((n) => !ownNames.has(n));
      const mismatchedKeys: { key: string; expected: number[]; got: number[] }[] = [];
      for (const [n, t] of targets) {
        const src = given.get(n);
        if (src && !sameShape(src.shape, t.shape)) mismatchedKeys.push({ key: n, expected: t.shape, got: src.shape });
      }
      if (mismatchedKeys.length > 0 || (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0))) {
        const parts: string[] = [];
        if (strict && missingKeys.length) parts.push(`missing keys: ${missingKeys.join(', ')}`);
        if (strict && unexpectedKeys.length) parts.push(`unexpected keys: ${unexpectedKeys.join(', ')}`);
        if (mismatchedKeys.length) {
          parts.push(`shape mismatches: ${mismatchedKeys.map((m) => `${m.key} (module [${m.expected.join(', ')}], given [${m.got.join(', ')}])`).join(', ')}`);
        }
        throw new StateDictError(`loadStateDict: ${parts.join('; ')}`, missingKeys, unexpectedKeys, mismatchedKeys);
      }
      noGrad(() => {
        for (const [n, t] of targets) {
          const src = given.get(n);
          if (src) t.copy_(src);
        }
      });
      return { missingKeys, unexpectedKeys };
    } finally {
      for (const [, t] of targets) t.dispose();
    }
  }

  // ---- attributes -----------------------------------------------------------------------------
  /** The module's own slots (parameters, buffers, submodules, plain attributes). */
  attributes(): AttributeInfo[] {
    return native.jitAttributes(this._m) as AttributeInfo[];
  }
  hasAttr(name: string): boolean {
    return native.jitHasAttr(this._m, name) as boolean;
  }
  /** An attribute's value: a parameter/buffer as an aliasing Tensor, a submodule as a ScriptModule. */
  getAttr<T = JitValue>(name: string): T {
    return native.jitGetAttr(this._m, name) as T;
  }
  /** Sets an existing attribute; the value is converted to the attribute's declared type. */
  setAttr(name: string, value: unknown): this {
    native.jitSetAttr(this._m, name, value);
    return this;
  }

  // ---- persistence ----------------------------------------------------------------------------
  /**
   * Saves the module as a TorchScript archive that Python's torch.jit.load reads, replacing `path`
   * atomically (lib/torch/io/atomic.ts: temporary file, fsync, rename, folder fsync; on failure no
   * temporary file is left behind).
   */
  save(path: string): void {
    if (typeof path !== 'string' || path === '') throw argError('type', 'save: path must be a non-empty string');
    if (this._m < 0) throw new TorchError('module was disposed (use after dispose)', 'E_DISPOSED');
    replaceAtomically(path, (tmp) => native.jitSave(this._m, tmp), 'save');
  }
}

/**
 * A module built in TypeScript: register state, then define methods from TorchScript source.
 * Registration and define() work only on modules created here (a loaded module's class may be shared).
 */
export class ModuleBuilder extends ScriptModule {
  /** `name` becomes the class name '__torch__.tim.<name>_<n>' (n keeps alike names apart). */
  constructor(name: string) {
    super(native.jitCreate(checkName(name, 'createModule')) as number);
  }

  /**
   * Adds a parameter: like nn.Parameter(t), a new leaf tensor sharing t's memory (t's autograd history
   * is not kept). Use parameters() / getAttr(name) for the module's own Tensor.
   */
  registerParameter(name: string, tensor: Tensor, requiresGrad = true): this {
    if (!(tensor instanceof Tensor)) throw argError('type', `registerParameter('${String(name)}'): expected a Tensor`);
    checkFree(this, name, 'registerParameter', 'parameter');
    native.jitRegisterParameter(this._m, name, tensor._h, requiresGrad);
    return this;
  }
  /** Adds a buffer (saved in the state dict, not a parameter). It shares t's memory. */
  registerBuffer(name: string, tensor: Tensor): this {
    if (!(tensor instanceof Tensor)) throw argError('type', `registerBuffer('${String(name)}'): expected a Tensor`);
    checkFree(this, name, 'registerBuffer', 'buffer');
    native.jitRegisterBuffer(this._m, name, tensor._h);
    return this;
  }
  /**
   * Adds a plain attribute. The TorchScript type is inferred (integer number → 'int', other number →
   * 'float', boolean, string, Tensor, arrays of those → 'List[...]') or given, e.g. 'float' for 1.0,
   * 'Optional[int]' for null, 'Tuple[int, int]', 'Dict[str, float]'.
   */
  registerAttribute(name: string, value: unknown, type?: string): this {
    checkFree(this, name, 'registerAttribute', 'attribute');
    const t = type ?? inferType(value, name);
    native.jitRegisterAttribute(this._m, name, t, value);
    return this;
  }
  /** Adds a submodule (aliased, not copied: later changes to `child` show in this module). */
  registerModule(name: string, child: ScriptModule): this {
    if (!(child instanceof ScriptModule)) throw argError('type', `registerModule('${String(name)}'): expected a ScriptModule`);
    checkFree(this, name, 'registerModule', 'module');
    native.jitRegisterModule(this._m, name, child._m);
    return this;
  }
  /**
   * Compiles TorchScript source (one or more `def name(self, ...)` methods) into this module. On a
   * compile error the module is left exactly as it was and a TorchError E_COMPILE carries the
   * compiler's message.
   */
  define(source: string): this {
    if (typeof source !== 'string') throw argError('type', 'define: source must be a string');
    native.jitDefine(this._m, source);
    return this;
  }
}

/** A new slot name must be an identifier (or all digits) and may only re-register a slot of the same kind. */
function checkFree(m: ScriptModule, name: string, what: string, kind: AttributeInfo['kind']): void {
  checkName(name, what, SLOT);
  const existing = m.attributes().find((a) => a.name === name);
  if (existing && existing.kind !== kind) {
    throw argError('range', `${what}('${name}'): already registered as a ${existing.kind}`, 'E_ATTR');
  }
  if (m.hasMethod(name)) throw argError('range', `${what}('${name}'): a method has this name`, 'E_ATTR');
}

function inferType(v: unknown, name: string): string {
  const scalar = (x: unknown): string | null =>
    typeof x === 'boolean' ? 'bool'
    : typeof x === 'number' ? (Number.isInteger(x) ? 'int' : 'float')
    : typeof x === 'string' ? 'str'
    : x instanceof Tensor ? 'Tensor'
    : null;
  const s = scalar(v);
  if (s) return s;
  if (Array.isArray(v) && v.length > 0) {
    const kinds = new Set(v.map(scalar));
    if (kinds.has(null)) throw argError('type', `registerAttribute('${name}'): cannot infer the type of this array; pass the type`);
    if (kinds.size === 1) return `List[${[...kinds][0]}]`;
    if (kinds.size === 2 && kinds.has('int') && kinds.has('float')) return 'List[float]';
  }
  throw argError('type', `registerAttribute('${name}'): cannot infer a TorchScript type for ${v === null ? 'null' : Array.isArray(v) ? 'this array' : typeof v}; pass the type (e.g. 'Optional[int]', 'List[int]')`);
}

export interface JitLoadOptions {
  /** Where parameters and buffers are placed (default: where they were saved). */
  device?: Device;
}

/** Loads a TorchScript archive saved by Python's torch.jit.save / ScriptModule.save or by save() here. */
export function load(path: string, opts: JitLoadOptions = {}): ScriptModule {
  if (typeof path !== 'string' || path === '') throw argError('type', 'torch.jit.load: path must be a non-empty string');
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    throw new TorchError(`torch.jit.load: cannot read '${path}': ${(err as Error).message}`, 'E_IO');
  }
  if (!st.isFile()) throw new TorchError(`torch.jit.load: '${path}' is not a file`, 'E_IO');
  const device = opts.device === undefined ? null : normalizeDevice(opts.device);
  return new ScriptModule(native.jitLoad(path, device) as number);
}

/** A new, empty module to build (see ModuleBuilder). */
export function createModule(name: string): ModuleBuilder {
  return new ModuleBuilder(name);
}

/** Number of live module handles (not modules: a module lives while a parent holds it). */
export function liveModuleHandles(): number {
  return native.jitLiveModules() as number;
}

/**
 * Runs fn with TorchScript's graph optimizations on or off for the graphs it runs on this thread,
 * as Python's `torch.jit.optimized_execution(on)`. Off, a graph runs op by op and autograd records
 * each op as eager PyTorch does, instead of the profiling executor's autodiff subgraphs with their
 * symbolic backward formulas. TiM's network turns them off on the CPU, where that measured faster
 * (lib/tim/network/model.ts). Async calls started inside fn (forwardAsync, callAsync) keep the setting
 * they were started with. Synchronous fns only.
 */
export function optimizedExecution<T>(on: boolean, fn: () => T): T {
  if (typeof on !== 'boolean') throw argError('type', 'torch.jit.optimizedExecution(on, fn): on must be a boolean');
  return syncRegion('torch.jit.optimizedExecution(on, fn)', fn, () => native.jitSetOptimize(on), (prev) => native.jitSetOptimize(prev));
}

/** Whether TorchScript's graph optimizations are on for this thread (the default: on). */
export function isOptimizedExecution(): boolean {
  const prev = native.jitSetOptimize(true);
  native.jitSetOptimize(prev);
  return prev;
}

/**
 * For callers inside the library: fn with the setting switched while it runs, also when fn starts an
 * async call (jitCallAsync captures the setting when it starts, so a returned Promise is fine here).
 */
export function _withOptimizedExecution<T>(on: boolean, fn: () => T): T {
  const prev = native.jitSetOptimize(on);
  try {
    return fn();
  } finally {
    native.jitSetOptimize(prev);
  }
}

/**
 * The type of the native addon (native/*.cpp): every function it exports, with the arguments the C++
 * reads and the values it returns. Internal: the public API is lib/torch; this only keeps the TS side
 * and the addon from disagreeing silently. test/native-binding.test.ts checks that the loaded addon
 * exports exactly NATIVE_FUNCTIONS, and NATIVE_FUNCTIONS is checked against this interface at compile
 * time, so an export added, renamed or removed on one side only fails a test.
 *
 * Conventions of the C++ side, written once here:
 * - Every entry point runs in the error funnel (errors.cpp): wrong JS types throw TypeError (code E_ARG),
 *   bad values RangeError, libtorch failures TorchError (the class set by setErrorClass) with a code.
 * - Functions that return a Promise queue their work on libuv's thread pool (async.h) with the
 *   caller's grad mode and autocast state; argument errors found before queueing throw synchronously
 *   (lib/torch turns them into rejections where its API promises that).
 * - An argument the C++ reads only when it has the right JS type (e.g. `info[3].IsBoolean() ? ... :
 *   default`) is declared optional.
 */

/**
 * A tensor handle: `generation * 2^24 + slot` in the handle table (handles.cpp), an exact integer
 * below 2^53. A stale handle (its tensor freed) only ever fails with E_DISPOSED.
 */
export type Handle = number;

/** A TorchScript module handle: `generation * 2^24 + slot` in jit.cpp's module table (native/handle_table.h; separate from tensors). */
export type ModuleHandle = number;

/** A c10::ScalarType code (lib/torch/dtype.ts dtypeCode / dtypeFromCode). */
export type DTypeCode = number;

/** A device string c10::Device parses: 'cpu', 'cuda', 'cuda:N' (others: RangeError E_DEVICE). */
export type DeviceString = string;

/** An integer argument: a number without fraction (|x| <= 2^53) or a BigInt in int64 range. */
export type IntArg = number | bigint;

/** An int[] argument (convert.cpp intListFrom): an array of integers, or one integer for a 1-element list. */
export type IntListArg = IntArg | readonly IntArg[];

declare const opResult: unique symbol;
/**
 * An ATen operator id from resolveOp, carrying (in the type only) what call() returns for it:
 * lib/torch/ops.ts `op<R>()` declares it per operator from the schema's returns (a Tensor by default).
 */
export type OpId<R extends OpResult = OpResult> = number & { readonly [opResult]?: R };

/**
 * A JS value toIValue (convert.cpp) converts by the schema type of the argument: a tensor handle or
 * number (int, float, Scalar, dtype / layout / memory-format codes), a BigInt (int), a boolean, a string
 * (str, device), null / undefined (None, or the argument's default), an array (lists, tuples; null
 * entries in Tensor?[]), an object (Dict[str, T]).
 */
export type OpArg = Handle | number | bigint | boolean | string | null | undefined | readonly OpArg[] | { readonly [key: string]: OpArg };

/**
 * A JS value fromIValue (convert.cpp) makes of one operator result: a Tensor becomes a new handle
 * (an undefined tensor null; inside a Tensor[] -1), ints and floats numbers, lists and tuples arrays,
 * dicts (str or int keys) objects, a device its string.
 */
export type OpValue = Handle | number | boolean | string | null | OpValue[] | { [key: string]: OpValue };

/** What call() returns: undefined for no results, the one result, or an array of several (a tuple return). */
export type OpResult = OpValue | undefined;

/** opTypes(): the schema's argument and return types as libtorch prints them ('Tensor', 'int[]', 'Tensor?[]'). */
export interface OpTypes {
  args: string[];
  returns: string[];
}

/** memoryStats() (handles.cpp). Bytes count each storage once (views share). */
export interface MemoryStats {
  liveTensors: number;
  cpu: number;
  cuda: number;
  storages: number;
  /** external memory last reported to V8 (batched every 4 MiB) */
  reportedToV8: number;
  /** V8's total external memory */
  v8External: number;
}

/** info(): tensor properties that rarely change, in one call (tensor.cpp). */
export interface TensorInfo {
  isContiguous: boolean;
  isLeaf: boolean;
  storageOffset: number;
  nbytes: number;
  /** the autograd node's name, e.g. 'AddBackward0'; null for leaves and tensors without history */
  gradFn: string | null;
}

/** buildInfo() (state.cpp): what the addon was compiled against. */
export interface BuildInfo {
  torchVersion: string;
  torchMajor: number;
  torchMinor: number;
  /** hash of native/ sources at build time ('unknown' when not set) */
  sourceHash: string;
  cudaBuild: boolean;
  napiVersion: number;
}

/** autocastEnter() / autocastState(): [enabled, dtype code] of the device's autocast state. */
export type AutocastState = [enabled: boolean, dtype: DTypeCode];

/** The error class set by setErrorClass: the addon constructs it with (message, code). */
export type ErrorClass = new (message: string, code: string) => Error;

// ---- TorchScript (jit.cpp) --------------------------------------------------------------------

/**
 * A value a TorchScript method returns or getAttr reads (convert.cpp fromIValue, Form::Objects): tensors and modules as the
 * objects the jitInit callbacks make of their handles (lib/torch/jit.ts: Tensor, ScriptModule), ints
 * and floats as numbers, bool, str, None as null, devices as strings, lists and tuples as arrays, dicts
 * (str or int keys) as objects; undefined for a method that returns nothing.
 */
export type JitResult = object | number | boolean | string | null | undefined;

/**
 * A JS value given to a TorchScript method, setAttr or registerAttribute: converted by the schema type
 * (convert.cpp toIValue, Form::Objects), where a Tensor must be an instance of the class given to jitInit (a plain number
 * is never taken for a tensor). Any JS value can be passed; one that does not fit throws TypeError.
 */
export type JitArg = unknown;

/** jitAttributes(): one slot of a module's class. */
export interface JitAttribute {
  name: string;
  /** TorchScript annotation, e.g. 'Tensor', 'int', 'List[float]', '__torch__.tim.Block_3' */
  type: string;
  kind: 'parameter' | 'buffer' | 'module' | 'attribute';
}

/** A class whose instances jit.cpp accepts as Tensor arguments (their `_h` is read as the handle). */
export type TensorClass = abstract new (...args: never[]) => object;

// ---- safetensors (safetensors.cpp) ------------------------------------------------------------

declare const stFileBrand: unique symbol;
/** An open file of stOpen (a napi External); stays usable until stClose, tensors already read keep it mapped. */
export type SafetensorsFileRef = { readonly [stFileBrand]: true };

/** stOpen(path): the file, its size, and the header JSON bytes (after the 8-byte length). */
export interface SafetensorsOpened {
  file: SafetensorsFileRef;
  size: number;
  header: Buffer;
}

/** stOpen(path, true): the file only (torch.save checkpoints, whose structure TS reads). */
export interface RawFileOpened {
  file: SafetensorsFileRef;
  size: number;
}

/** One tensor to read: [dtype code, shape, begin, end], offsets relative to the data section. */
export type SafetensorsRequest = readonly [dtype: DTypeCode, shape: readonly number[], begin: number, end: number];

// ---- distributed (distributed.cpp) -------------------------------------------------------------

export type DistBackend = 'gloo' | 'nccl';
export type DistReduceOp = 'sum' | 'product' | 'max' | 'min';

/** distInfo(): the process group's state and what this build supports. */
export interface DistInfo {
  initialized: boolean;
  rank: number | null;
  worldSize: number | null;
  backend: string | null;
  /** an init() or destroy() is running */
  busy: boolean;
  gloo: boolean;
  nccl: boolean;
}

/** cpuCacheStats(): the CPU block cache's accounting (torch.cpuCache.stats()). */
export interface CpuCacheStats {
  /** whether the cache serves CPU blocks in this process */
  installed: boolean;
  /** bytes of blocks held by live tensors */
  inUseBytes: number;
  /** bytes of free blocks kept for reuse */
  cachedBytes: number;
  /** most bytes in use since the start or resetPeakStats() */
  peakInUseBytes: number;
  /** most bytes in use + cached since the start or resetPeakStats() */
  peakReservedBytes: number;
  /** requests served from a cached block / by a new mapping */
  hits: number;
  misses: number;
  /** blocks mapped from and unmapped back to the kernel */
  mapped: number;
  unmapped: number;
  /** of the blocks mapped, those 2 MiB-aligned and advised to use huge pages (TIM_TORCH_CPU_CACHE_HUGEPAGES) */
  hugeMapped: number;
}

/** The native addon's exports. */
export interface NativeBinding {
  // ---- handles.cpp ----
  /** Frees a tensor; false for a stale, foreign or already freed handle (never throws for those). */
  free(h: Handle): boolean;
  /**
   * Frees every handle of the array (skipping stale ones); returns how many it freed. A Float64Array
   * is read in place (no napi call per handle).
   */
  freeMany(hs: readonly Handle[] | Float64Array): number;
  isLive(h: Handle): boolean;
  memoryStats(): MemoryStats;

  // ---- errors.cpp ----
  /** Sets the class libtorch errors are thrown as (lib/torch/errors.ts TorchError). */
  setErrorClass(cls: ErrorClass): void;

  // ---- tensor.cpp ----
  /**
   * A tensor of the bytes (row-major) with this dtype and shape; byteLength must equal numel * element size
   * (else RangeError E_SHAPE). copy false shares the memory when aligned for the dtype (the tensor keeps
   * the ArrayBuffer alive); copy defaults to true.
   */
  fromData(data: ArrayBufferView | ArrayBuffer, dtype: DTypeCode, shape: IntListArg, copy?: boolean): Handle;
  /** The elements, row-major, in a fresh ArrayBuffer (copied to the CPU; complex dtypes refused). */
  toBuffer(h: Handle): ArrayBuffer;
  /** The one element (E_SHAPE unless numel is 1): boolean for bool tensors, else a number. */
  item(h: Handle): number | boolean;
  shape(h: Handle): number[];
  strides(h: Handle): number[];
  dtype(h: Handle): DTypeCode;
  device(h: Handle): DeviceString;
  requiresGrad(h: Handle): boolean;
  setRequiresGrad(h: Handle, on: boolean): void;
  info(h: Handle): TensorInfo;

  // ---- ops.cpp ----
  /** The id of an ATen operator (name 'aten::add', overload 'Tensor' or ''); E_NOT_IMPLEMENTED when absent. */
  resolveOp(name: string, overload: string): OpId;
  opSchema(op: OpId): string;
  opTypes(op: OpId): OpTypes;
  /**
   * Calls an operator with positional arguments converted by its schema; missing trailing ones take
   * the schema's defaults. Every tensor in the result is a new handle the caller owns.
   */
  call<R extends OpResult>(op: OpId<R>, ...args: OpArg[]): NoInfer<R>;
  /** call() without converting the results: for in-place ops, whose result `self` would be a second handle. */
  callVoid(op: OpId, ...args: OpArg[]): void;
  /** call() on a worker thread; argument errors throw synchronously. */
  callAsync<R extends OpResult>(op: OpId<R>, ...args: OpArg[]): Promise<NoInfer<R>>;

  // ---- autograd.cpp ----
  /**
   * torch.autograd.backward: grads may hold null for scalar outputs (read only when an array);
   * retainGraph only when a boolean (else libtorch's default: createGraph), createGraph default false.
   */
  backward(tensors: readonly Handle[], grads?: readonly (Handle | null | undefined)[] | null, retainGraph?: boolean | null, createGraph?: boolean): void;
  backwardAsync(tensors: readonly Handle[], grads?: readonly (Handle | null | undefined)[] | null, retainGraph?: boolean | null, createGraph?: boolean): Promise<void>;
  /** torch.autograd.grad: one entry per input, null where unused (with allowUnused). */
  grad(
    outputs: readonly Handle[], inputs: readonly Handle[], gradOutputs?: readonly (Handle | null | undefined)[] | null,
    retainGraph?: boolean | null, createGraph?: boolean, allowUnused?: boolean,
  ): (Handle | null)[];
  /** t.grad as a new handle, or null. */
  getGrad(h: Handle): Handle | null;
  /** Sets t.grad (same shape and dtype), or clears it with null / undefined. */
  setGrad(h: Handle, grad: Handle | null | undefined): void;
  /** Sets grad mode when given a boolean; returns the previous mode. */
  setGradEnabled(on?: boolean): boolean;
  isGradEnabled(): boolean;

  // ---- state.cpp ----
  /** Seeds the CPU and every CUDA generator: an integer in [0, 2^53), or a BigInt in [0, 2^64). */
  manualSeed(seed: number | bigint): void;
  /** The generator state of a device ('cpu' when not a string) as a new uint8 tensor. */
  getRngState(device?: DeviceString): Handle;
  /** Restores a generator state (a 1-D uint8 tensor). */
  setRngState(device: DeviceString | undefined, state: Handle): void;
  /** Intra-op threads, an integer in [1, 1024]. */
  setNumThreads(n: number): void;
  getNumThreads(): number;
  /** Inter-op threads, [1, 1024]; throws once the pool has started. */
  setNumInteropThreads(n: number): void;
  /** glibc mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD), bytes in [0, 2^31); whether glibc accepted both (false off glibc). */
  mallocTune(mmapThreshold: number, trimThreshold: number): boolean;
  /** at::get_parallel_info(). */
  parallelInfo(): string;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  /** Waits for a CUDA device (index; the current one when not a number); E_DEVICE without CUDA. */
  cudaSynchronize(device?: number): void;
  /** Enters an autocast region for 'cpu' or 'cuda' (enabled defaults to true); returns the state to restore. */
  autocastEnter(device: DeviceString, dtype: DTypeCode, enabled?: boolean): AutocastState;
  /** Leaves an autocast region, restoring autocastEnter's returned state. */
  autocastExit(device: DeviceString, prevEnabled: boolean, prevDtype: DTypeCode): void;
  autocastState(device: DeviceString): AutocastState;
  buildInfo(): BuildInfo;
  /** Opens a forward-AD level (torch.autograd.forward_ad.dual_level); returns its number. */
  forwardAdEnter(): number;
  forwardAdExit(level: number): void;
  /** The enabled scaled-dot-product-attention backends as a bit mask (native/compat.h). */
  sdpBackends(): number;
  setSdpBackends(mask: number): void;

  // ---- jit.cpp ----
  /** Set once: how results become JS objects, and which class marks a Tensor argument. */
  jitInit(wrapTensor: (h: Handle) => object, wrapModule: (h: ModuleHandle) => object, tensorClass: TensorClass): void;
  /** torch.jit.load, optionally onto a device (ignored when null / undefined); E_IO, E_FORMAT. */
  jitLoad(path: string, device?: DeviceString | null): ModuleHandle;
  /** An empty module (with `training`) of a fresh class named after `name`, an identifier. */
  jitCreate(name: string): ModuleHandle;
  /**
   * A deep copy (Module::clone): own copies of every parameter, buffer and attribute, own class types;
   * copies are leaves with the originals' requires_grad, gradients not copied.
   */
  jitClone(m: ModuleHandle): ModuleHandle;
  /** Frees a module handle; false for a stale or foreign one. */
  jitFree(m: ModuleHandle): boolean;
  jitLiveModules(): number;
  jitTypeName(m: ModuleHandle): string;
  /** Whether both handles name the same module object. */
  jitSame(a: ModuleHandle, b: ModuleHandle): boolean;
  jitMethods(m: ModuleHandle): string[];
  jitSchema(m: ModuleHandle, method: string): string;
  /** The method's graph as text. */
  jitCode(m: ModuleHandle, method: string): string;
  /** Calls a method: positional args, then kwargs by name (read when a non-array object), then defaults. */
  jitCall(m: ModuleHandle, method: string, args: readonly JitArg[], kwargs?: Readonly<Record<string, JitArg>> | null): JitResult;
  /** Sets whether TorchScript's graph executor optimizes graphs run on this thread (thread-local; jitCallAsync carries it); returns the previous value. */
  jitSetOptimize(on: boolean): boolean;
  /** jitCall on a worker thread; argument errors throw synchronously. */
  jitCallAsync(m: ModuleHandle, method: string, args: readonly JitArg[], kwargs?: Readonly<Record<string, JitArg>> | null): Promise<JitResult>;
  /** train(on) on the module and every submodule (on defaults to true). */
  jitTrain(m: ModuleHandle, on?: boolean): void;
  jitIsTraining(m: ModuleHandle): boolean;
  /** nn.Module.to: every tensor to the device, floating ones to the dtype (floating only); null / undefined keeps. */
  jitTo(m: ModuleHandle, device: DeviceString | null | undefined, dtype: DTypeCode | null | undefined, nonBlocking?: boolean): void;
  /** [name, new tensor handle] in Python's order; recurse defaults to true. */
  jitNamedParameters(m: ModuleHandle, recurse?: boolean): [name: string, h: Handle][];
  jitNamedBuffers(m: ModuleHandle, recurse?: boolean): [name: string, h: Handle][];
  /** [name, new module handle] of the direct children. */
  jitNamedChildren(m: ModuleHandle): [name: string, m: ModuleHandle][];
  /** state_dict order: each module's parameters, then buffers, then children. */
  jitStateEntries(m: ModuleHandle): [name: string, h: Handle][];
  jitAttributes(m: ModuleHandle): JitAttribute[];
  jitHasAttr(m: ModuleHandle, name: string): boolean;
  /** An attribute's value (E_ATTR when absent). */
  jitGetAttr(m: ModuleHandle, name: string): JitResult;
  /** Sets a registered attribute, converted by its type (submodules cannot be replaced). */
  jitSetAttr(m: ModuleHandle, name: string, value: JitArg): void;
  /** Module::save to the path (not atomic: lib/torch/jit.ts writes a temporary file and renames it). */
  jitSave(m: ModuleHandle, path: string): void;
  /** Like nn.Parameter(t): a detached leaf sharing t's storage; requiresGrad defaults to true. Built modules only (E_MODULE). */
  jitRegisterParameter(m: ModuleHandle, name: string, t: Handle, requiresGrad?: boolean): void;
  jitRegisterBuffer(m: ModuleHandle, name: string, t: Handle): void;
  /** An attribute of a TorchScript type given as source ('int', 'List[float]', 'Optional[Tensor]'). */
  jitRegisterAttribute(m: ModuleHandle, name: string, type: string, value: JitArg): void;
  jitRegisterModule(m: ModuleHandle, name: string, child: ModuleHandle): void;
  /** Compiles TorchScript source into the module (checked on a scratch copy first: E_COMPILE). */
  jitDefine(m: ModuleHandle, source: string): void;

  // ---- safetensors.cpp ----
  /** Opens a safetensors file (header checked against the file size), or with raw any non-empty file. */
  stOpen(path: string, raw?: false): SafetensorsOpened;
  stOpen(path: string, raw: true): RawFileOpened;
  /** Releases the file (tensors already read stay valid); later use throws E_IO. */
  stClose(file: SafetensorsFileRef): void;
  /** Reads one tensor: mapped (zero-copy) when aligned unless copy, else read into fresh memory. */
  stTensor(file: SafetensorsFileRef, dtype: DTypeCode, shape: readonly number[], begin: number, end: number, copy?: boolean): Handle;
  /** Reads tensors on a worker thread (mapped pages touched there). */
  stReadAsync(file: SafetensorsFileRef, requests: readonly SafetensorsRequest[], copy?: boolean): Promise<Handle[]>;
  /**
   * Writes header + tensors (contiguous, on the CPU) to exactly `path` (created or truncated) and fsyncs
   * it; atomic replacement is the caller's (lib/torch/io/atomic.ts passes a temporary path). header:
   * 8-byte little-endian length + JSON padded to a multiple of 8; nbytes: each tensor's size as the
   * header says. failAfter (tests only): fail once that many bytes are written.
   */
  stWrite(path: string, header: Buffer, tensors: readonly Handle[], nbytes: readonly number[], async: false, failAfter?: number): void;
  stWrite(path: string, header: Buffer, tensors: readonly Handle[], nbytes: readonly number[], async: true, failAfter?: number): Promise<void>;

  // ---- distributed.cpp ----
  /**
   * Joins the process group (TCPStore, then gloo or nccl). deviceKind 'interface' / 'hostname' picks the
   * gloo device by deviceName, anything else the default device. storeServer: this rank hosts the store.
   */
  distInit(
    backend: DistBackend, rank: number, worldSize: number, masterAddr: string, masterPort: number, timeoutMs: number,
    deviceKind: string, deviceName: string, storeServer: boolean, storePrefix: string,
  ): Promise<void>;
  /** In place, on a contiguous tensor. */
  distAllReduce(h: Handle, op: DistReduceOp): Promise<void>;
  distBroadcast(h: Handle, src: number): Promise<void>;
  /** One new handle per rank, in rank order. */
  distAllGather(h: Handle): Promise<Handle[]>;
  distBarrier(): Promise<void>;
  distDestroy(): Promise<void>;
  distInfo(): DistInfo;

  // ---- cpu_cache.cpp ----
  /** Serves CPU blocks of minBytes (an integer >= 4096) or more from the block cache from now on. */
  cpuCacheInstall(minBytes: number, slack: number, hugeBytes: number): void;
  cpuCacheStats(): CpuCacheStats;
  /** Unmaps cached (free) blocks, least recently freed first, until at most maxCachedBytes stay cached; returns the bytes unmapped. */
  cpuCacheTrim(maxCachedBytes: number): number;
  cpuCacheResetPeaks(): void;
}

/**
 * Every function NativeBinding declares, as a list the test compares with the loaded addon's exports.
 * The two type checks below make it exhaustive: a name here that the interface lacks, or a function of
 * the interface missing here, is a compile error.
 */
export const NATIVE_FUNCTIONS = [
  // handles.cpp
  'free', 'freeMany', 'isLive', 'memoryStats',
  // errors.cpp
  'setErrorClass',
  // tensor.cpp
  'fromData', 'toBuffer', 'item', 'shape', 'strides', 'dtype', 'device', 'requiresGrad', 'setRequiresGrad', 'info',
  // ops.cpp
  'opTypes', 'resolveOp', 'opSchema', 'call', 'callVoid', 'callAsync',
  // autograd.cpp
  'backward', 'backwardAsync', 'grad', 'getGrad', 'setGrad', 'setGradEnabled', 'isGradEnabled',
  // state.cpp
  'manualSeed', 'getRngState', 'setRngState', 'setNumThreads', 'getNumThreads', 'setNumInteropThreads', 'mallocTune',
  'parallelInfo', 'cudaIsAvailable', 'cudaDeviceCount', 'cudaSynchronize', 'autocastEnter', 'autocastExit', 'autocastState',
  'buildInfo', 'forwardAdEnter', 'forwardAdExit', 'sdpBackends', 'setSdpBackends',
  // jit.cpp
  'jitInit', 'jitLoad', 'jitCreate', 'jitClone', 'jitFree', 'jitLiveModules', 'jitTypeName', 'jitSame', 'jitMethods', 'jitSchema',
  'jitCode', 'jitCall', 'jitCallAsync', 'jitSetOptimize', 'jitTrain', 'jitIsTraining', 'jitTo', 'jitNamedParameters', 'jitNamedBuffers',
  'jitNamedChildren', 'jitStateEntries', 'jitAttributes', 'jitHasAttr', 'jitGetAttr', 'jitSetAttr', 'jitSave',
  'jitRegisterParameter', 'jitRegisterBuffer', 'jitRegisterAttribute', 'jitRegisterModule', 'jitDefine',
  // safetensors.cpp
  'stOpen', 'stClose', 'stTensor', 'stReadAsync', 'stWrite',
  // distributed.cpp
  'distInit', 'distAllReduce', 'distBroadcast', 'distAllGather', 'distBarrier', 'distDestroy', 'distInfo',
  // cpu_cache.cpp
  'cpuCacheInstall', 'cpuCacheStats', 'cpuCacheTrim', 'cpuCacheResetPeaks',
] as const satisfies readonly (keyof NativeBinding)[];

// Compile-time: every key of NativeBinding is listed above (the `satisfies` checks the converse).
type Unlisted = Exclude<keyof NativeBinding, (typeof NATIVE_FUNCTIONS)[number]>;
const everyFunctionListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyFunctionListed;

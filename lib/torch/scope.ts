/**
 * Deterministic memory: every tensor belongs to the innermost open scope when it is created.
 * Closing a scope frees all of its tensors except the ones it returns (they move to the enclosing
 * scope) and the ones marked with keep() (they become the caller's to dispose). Tensors created
 * outside any scope, and kept or returned-to-top-level ones, are owned by the caller: dispose() or
 * `using` frees them, and a FinalizationRegistry frees them if they are garbage-collected first.
 *
 * Note: Node runs finalizers only between event-loop turns, so a long synchronous loop frees
 * nothing by GC. Scopes are the main path; GC is only a backstop.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { hot as native } from './ops.js';
import { argError } from './errors.js';

/** What a scope needs to know of a tensor (implemented by Tensor). */
export interface Owned {
  _h: number;
  _kept: boolean;
  /** GC-backstop state: undefined = not the caller's, false = registration pending, true = registered */
  _reg: boolean | undefined;
}

class Scope {
  readonly tensors: Owned[] = [];
  /** Set when the scope has freed its tensors: late async code must not add to it any more. */
  closed = false;
  constructor(readonly parent: Scope | null) {}
}

// Sync scopes form a stack (syncTop) that is only non-null while a scope's fn runs synchronously, so
// it is always null when a microtask or timer starts. Async scopes live in an AsyncLocalStorage
// that follows each async function's own continuations, so concurrent scopeAsync calls never see
// each other's scope. The store is only consulted while an async scope is open (it costs a lookup).
let syncTop: Scope | null = null;
let asyncScopes = 0;
const asyncStore = new AsyncLocalStorage<Scope | null>();

function currentScope(): Scope | null {
  let s = syncTop ?? (asyncScopes > 0 ? (asyncStore.getStore() ?? null) : null);
  // Fire-and-forget work started inside a scope can outlive it: its tensors go to the nearest
  // scope still open, or to the caller (GC backstop).
  while (s && s.closed) s = s.parent;
  return s;
}

// The GC backstop. Handles carry a generation (native/handles.cpp), so even if this callback ran
// for a handle whose slot was since reused by a newer tensor, native.free would refuse it.
const registry = new FinalizationRegistry<number>((h) => {
  native.free(h);
});

// Tensors owned by the caller are registered with the GC backstop lazily, at the end of the current
// job (a microtask) or once PENDING_MAX are waiting: a tensor disposed before then (the common
// `const c = a.add(b); ...; c.dispose()`) never touches the FinalizationRegistry, whose register +
// unregister cost ~300-700 ns a tensor (bench/perop.ts). Finalizers only run between event-loop
// turns, so registering at the end of the job loses nothing.
let pending: Owned[] = [];
let flushQueued = false;
const PENDING_MAX = 4096;

function flushPending(): void {
  flushQueued = false;
  const batch = pending;
  pending = [];
  for (const t of batch) {
    if (t._h >= 0 && t._reg === false) {
      t._reg = true;
      registry.register(t, t._h, t);
    }
  }
}

function registerLater(t: Owned): void {
  t._reg = false;
  if (pending.push(t) >= PENDING_MAX) flushPending();
  else if (!flushQueued) {
    flushQueued = true;
    queueMicrotask(flushPending);
  }
}

/** Called for every new tensor. */
export function adopt(t: Owned): void {
  const s = currentScope();
  if (s) s.tensors.push(t);
  else registerLater(t);
}

/** Called when a tensor is disposed explicitly: the GC backstop must forget its handle. */
export function forget(t: Owned): void {
  if (t._reg) registry.unregister(t);
  // `a.add(b).dispose()`: the tensor is still the last one waiting for registration; dropping it
  // here keeps the pending list from holding thousands of dead tensors (which V8 would then copy
  // and promote at each young-generation GC) until the next flush.
  else if (t._reg === false && pending[pending.length - 1] === t) pending.pop();
  t._reg = undefined;
}

function collectReturned(value: unknown, out: Set<Owned>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 6) return;
  if ('_h' in (value as object) && '_kept' in (value as object)) {
    out.add(value as Owned);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectReturned(v, out, depth + 1);
  } else if (value instanceof Map) {
    for (const v of value.values()) collectReturned(v, out, depth + 1);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as Record<string, unknown>)) collectReturned(v, out, depth + 1);
  }
}

function close(scope: Scope, result: unknown): void {
  scope.closed = true;
  const returned = new Set<Owned>();
  collectReturned(result, returned);
  const tensors = scope.tensors;
  // Handles go to native in a Float64Array, read in place there with no napi call per handle. One
  // buffer serves every scope (freeMany never calls back into JS): a fresh one per scope would be a
  // calloc of 8 bytes per tensor each time.
  if (freeBuf.length < tensors.length) freeBuf = new Float64Array(Math.max(tensors.length, 2 * freeBuf.length));
  const handles = freeBuf;
  let n = 0;
  for (const t of tensors) {
    if (t._h < 0) continue;
    if (t._kept || (returned.size > 0 && returned.has(t))) {
      const parent = openParent(scope);
      if (parent && returned.has(t) && !t._kept) parent.tensors.push(t);
      else registerLater(t);
      t._kept = false;
      continue;
    }
    handles[n++] = t._h;
    t._h = -1;
  }
  if (n) native.freeMany(handles.subarray(0, n));
}
let freeBuf = new Float64Array(1024);

function openParent(scope: Scope): Scope | null {
  let p = scope.parent;
  while (p && p.closed) p = p.parent;
  return p;
}

/**
 * Runs fn; frees every tensor created inside except what fn returns (tensors in the returned
 * value, arrays, Maps or plain objects) and what keep() marks. Nestable.
 */
export function scope<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw argError('type', 'torch.scope(fn): fn must be a function');
  const s = new Scope(currentScope());
  const prev = syncTop;
  syncTop = s;
  let result: T | undefined;
  try {
    result = fn();
    if (result instanceof Promise) {
      throw argError('type', 'torch.scope(fn): fn returned a Promise; use torch.scopeAsync for async functions');
    }
    return result;
  } finally {
    syncTop = prev;
    close(s, result);
  }
}

/**
 * Like scope(), for async functions: tensors created inside fn, across its awaits, belong to it.
 * Concurrent scopeAsync calls each keep their own tensors.
 */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  if (typeof fn !== 'function') throw argError('type', 'torch.scopeAsync(fn): fn must be a function');
  const s = new Scope(currentScope());
  asyncScopes++;
  let result: T | undefined;
  try {
    // The synchronous start of fn runs with syncTop cleared so that it, too, sees the async store;
    // syncTop is restored as soon as fn returns its promise, because the caller (maybe inside a
    // sync scope) continues right away.
    const prev = syncTop;
    syncTop = null;
    let p: Promise<T>;
    try {
      p = asyncStore.run(s, fn);
    } finally {
      syncTop = prev;
    }
    result = await p;
    return result;
  } finally {
    asyncScopes--;
    close(s, result);
  }
}

/** Marks a tensor (or tensors in an array/object) to survive the enclosing scope; the caller then owns it. */
export function keep<T>(value: T): T {
  const found = new Set<Owned>();
  collectReturned(value, found);
  for (const t of found) t._kept = true;
  return value;
}

/** Live native tensors and the bytes their storages hold (views counted once). */
export interface MemoryStats {
  liveTensors: number;
  bytes: { cpu: number; cuda: number };
}

export function memory(): MemoryStats {
  const m = native.memoryStats() as { liveTensors: number; cpu: number; cuda: number };
  return { liveTensors: m.liveTensors, bytes: { cpu: m.cpu, cuda: m.cuda } };
}

/**
 * torch.distributed: collectives between processes on libtorch's c10d (TCPStore rendezvous hosted by
 * rank 0, ProcessGroupGloo on CPU, ProcessGroupNCCL on CUDA builds that have it). See
 * docs/distributed.md.
 *
 *   await torch.distributed.init();                 // from RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
 *   await torch.distributed.allReduce(grad, 'avg'); // in place
 *   await torch.distributed.destroy();
 *
 * Every call that talks to peers returns a Promise and waits on libuv's pool, so a slow or hung peer
 * never blocks the event loop. A dead peer or one that stops answering for `timeoutMs` makes the
 * pending call reject with a TorchError whose code is 'E_DIST'. After such an error the group is
 * broken (the peers disagree on which collective comes next): destroy() and exit.
 */
import { createServer } from 'node:net';
import { native } from '../native.js';
import { TorchError, argError } from '../errors.js';
import { Tensor, _wrap as wrap, handleOf } from '../tensor.js';

export type Backend = 'gloo' | 'nccl';
/** 'avg' is 'sum' followed by a division by worldSize (floating tensors only), as in torch. */
export type ReduceOp = 'sum' | 'avg' | 'product' | 'max' | 'min';

export interface InitOptions {
  /** 'gloo' (CPU tensors; default) or 'nccl' (CUDA tensors; CUDA builds with NCCL only). */
  backend?: Backend;
  /** This process's rank, 0..worldSize-1. Default: env RANK, else 0. */
  rank?: number;
  /** Number of processes. Default: env WORLD_SIZE, else 1. */
  worldSize?: number;
  /** Rank within this machine (device index for NCCL). Default: env LOCAL_RANK, else rank. */
  localRank?: number;
  /** Address of rank 0, which hosts the TCPStore. Default: env MASTER_ADDR, else 127.0.0.1. */
  masterAddr?: string;
  /** Port of the TCPStore on rank 0. Default: env MASTER_PORT, else 29500. */
  masterPort?: number;
  /**
   * How long init waits for all ranks, and how long any collective waits for a peer before it fails
   * with E_DIST. Default: env TIM_DIST_TIMEOUT_MS, else 300000 (5 min; torch's own default of 30 min
   * hides dead peers for too long in a training job).
   */
  timeoutMs?: number;
  /**
   * Network interface Gloo binds to (e.g. 'eth0'). Default: env GLOO_SOCKET_IFNAME (as in torch);
   * without it, loopback masterAddr → bind to that address; otherwise the address this machine's
   * hostname resolves to.
   */
  interface?: string;
  /** Environment to read the defaults from (tests). Default: process.env. */
  env?: NodeJS.ProcessEnv;
}

/** The options init() would use: explicit options first, then the env variables, then defaults. */
export interface ResolvedInit {
  backend: Backend;
  rank: number;
  worldSize: number;
  localRank: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  /** How the Gloo device is chosen (see InitOptions.interface). */
  device: { kind: 'interface' | 'hostname' | 'default'; name: string };
  /**
   * Who hosts the TCPStore and under which key prefix. Normally rank 0, no prefix. Under torchrun
   * (TORCHELASTIC_USE_AGENT_STORE=True) its agent already serves the store on MASTER_PORT, so every
   * rank is a client and keys live under /worker/attempt_<TORCHELASTIC_RESTART_COUNT>, as in torch.
   */
  store: { server: boolean; prefix: string };
}

export const DEFAULT_PORT = 29500;
export const DEFAULT_TIMEOUT_MS = 300_000;

const distError = (kind: 'type' | 'range', msg: string): Error => argError(kind, `torch.distributed: ${msg}`, 'E_DIST');

function intFrom(explicit: number | undefined, envName: string, env: NodeJS.ProcessEnv, dflt: number | undefined, what: string): number {
  let v: unknown = explicit;
  let from = `options.${what}`;
  if (v === undefined && env[envName] !== undefined && env[envName] !== '') {
    from = `env ${envName}`;
    const s = env[envName]!.trim();
    v = /^[+-]?\d+$/.test(s) ? Number(s) : NaN;
    if (Number.isNaN(v)) throw distError('type', `${from} must be an integer, got '${env[envName]}'`);
  }
  if (v === undefined) {
    if (dflt === undefined) throw distError('type', `${what} is required`);
    return dflt;
  }
  if (typeof v !== 'number' || !Number.isInteger(v)) throw distError('type', `${from} must be an integer, got ${String(v)}`);
  return v;
}

/** Validates init options and fills them from the env; throws RangeError/TypeError with code E_DIST. */
export function resolveInitOptions(opts: InitOptions = {}): ResolvedInit {
  if (opts === null || typeof opts !== 'object') throw distError('type', 'init options must be an object');
  const env = opts.env ?? process.env;
  const backend = opts.backend ?? 'gloo';
  if (backend !== 'gloo' && backend !== 'nccl') throw distError('range', `backend must be 'gloo' or 'nccl', got '${String(backend)}'`);
  const worldSize = intFrom(opts.worldSize, 'WORLD_SIZE', env, 1, 'worldSize');
  if (worldSize < 1) throw distError('range', `worldSize must be >= 1, got ${worldSize}`);
  const rank = intFrom(opts.rank, 'RANK', env, 0, 'rank');
  if (rank < 0 || rank >= worldSize) throw distError('range', `rank must be in [0, worldSize=${worldSize}), got ${rank}`);
  const localRank = intFrom(opts.localRank, 'LOCAL_RANK', env, rank, 'localRank');
  if (localRank < 0) throw distError('range', `localRank must be >= 0, got ${localRank}`);
  const masterAddr = opts.masterAddr ?? (env.MASTER_ADDR || '127.0.0.1');
  if (typeof masterAddr !== 'string' || masterAddr.trim() === '') throw distError('type', 'masterAddr must be a non-empty host name or address');
  const masterPort = intFrom(opts.masterPort, 'MASTER_PORT', env, DEFAULT_PORT, 'masterPort');
  // Port 0 would make rank 0 listen on a random port the other ranks cannot know.
  if (masterPort < 1 || masterPort > 65535) throw distError('range', `masterPort must be in [1, 65535], got ${masterPort}`);
  const timeoutMs = intFrom(opts.timeoutMs, 'TIM_DIST_TIMEOUT_MS', env, DEFAULT_TIMEOUT_MS, 'timeoutMs');
  if (timeoutMs < 1 || timeoutMs > 2 ** 31 - 1) throw distError('range', `timeoutMs must be in [1, 2^31-1], got ${timeoutMs}`);
  const iface = opts.interface ?? (env.GLOO_SOCKET_IFNAME ? env.GLOO_SOCKET_IFNAME.split(',')[0]!.trim() : undefined);
  if (iface !== undefined && (typeof iface !== 'string' || iface === '')) throw distError('type', 'interface must be a non-empty string');
  const loopback = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/i.test(masterAddr);
  const device: ResolvedInit['device'] = iface
    ? { kind: 'interface', name: iface }
    : loopback ? { kind: 'hostname', name: masterAddr } : { kind: 'default', name: '' };
  const agentStore = env.TORCHELASTIC_USE_AGENT_STORE === 'True';
  const store = agentStore
    ? { server: false, prefix: `/worker/attempt_${env.TORCHELASTIC_RESTART_COUNT || '0'}` }
    : { server: rank === 0, prefix: '' };
  return { backend, rank, worldSize, localRank, masterAddr, masterPort, timeoutMs, device, store };
}

let current: ResolvedInit | null = null;

/**
 * Joins the process group: rank 0 starts the TCPStore on masterAddr:masterPort and waits for the
 * others; every rank then connects to every other. Rejects with E_DIST when the ranks do not all
 * arrive within timeoutMs, or when the port is taken, and with RangeError/TypeError (code E_DIST)
 * for bad options.
 */
export async function init(opts: InitOptions = {}): Promise<void> {
  const o = resolveInitOptions(opts);
  try {
    await native.distInit(o.backend, o.rank, o.worldSize, o.masterAddr, o.masterPort, o.timeoutMs, o.device.kind, o.device.name,
      o.store.server, o.store.prefix);
  } catch (e) {
    throw explain(e, 'init', o);
  }
  current = o;
}

function need(): ResolvedInit {
  if (!current || !native.distInfo().initialized) {
    throw new TorchError('torch.distributed: not initialized (call torch.distributed.init() first)', 'E_DIST');
  }
  return current;
}

export function isInitialized(): boolean {
  return current !== null && native.distInfo().initialized === true;
}
/** Whether this build can run a backend (gloo needs gloo headers at build time; nccl a CUDA libtorch with NCCL). */
export function isAvailable(backend: Backend = 'gloo'): boolean {
  const info = native.distInfo() as { gloo: boolean; nccl: boolean };
  return backend === 'nccl' ? info.nccl : info.gloo;
}
export function rank(): number {
  return need().rank;
}
export function worldSize(): number {
  return need().worldSize;
}
export function localRank(): number {
  return need().localRank;
}
export function backend(): Backend {
  return need().backend;
}

/**
 * Rewords a native failure: which call, which rank, and what most likely happened, keeping c10d's
 * or Gloo's own message at the end (it names the peer's address).
 */
function explain(e: unknown, what: string, o: ResolvedInit | null): Error {
  if (!(e instanceof Error)) return new TorchError(`torch.distributed.${what}: ${String(e)}`, 'E_DIST');
  if (e instanceof TypeError || e instanceof RangeError) return e;
  const raw = e.message;
  const where = o ? ` on rank ${o.rank} of ${o.worldSize}` : '';
  const peer = o && o.worldSize === 2 ? `rank ${1 - o.rank}` : 'a peer rank';
  let why = '';
  if (/timed? ?out|timeout/i.test(raw)) {
    why = what === 'init'
      ? `not all ${o?.worldSize ?? ''} ranks joined ${o?.masterAddr}:${o?.masterPort} within timeoutMs=${o?.timeoutMs}`
      : `${peer} did not respond within timeoutMs=${o?.timeoutMs} (it hung, is stuck before this call, or died)`;
  } else if (/closed by peer|reset by peer|broken pipe|connection (refused|closed|reset)|EOF|end of file|read error|socket/i.test(raw)) {
    why = what === 'init'
      ? `could not reach the store at ${o?.masterAddr}:${o?.masterPort}`
      : `${peer} lost: its connection closed (the process died or destroyed its group)`;
  } else if (/address already in use|EADDRINUSE/i.test(raw)) {
    why = `port ${o?.masterPort} on ${o?.masterAddr} is already in use`;
  }
  const msg = `torch.distributed.${what} failed${where}${why ? `: ${why}` : ''} [${raw}]`;
  const err = new TorchError(msg, 'E_DIST');
  (err as Error & { cause?: unknown }).cause = e;
  return err;
}

async function run<T>(what: string, start: () => Promise<T>): Promise<T> {
  const o = current;
  try {
    return await start();
  } catch (e) {
    throw explain(e, what, o);
  }
}

/** Reduces `tensor` across all ranks, in place; resolves with the same tensor. */
export async function allReduce(tensor: Tensor, op: ReduceOp = 'sum'): Promise<Tensor> {
  const h = handleOf(tensor, 'torch.distributed.allReduce tensor');
  if (!['sum', 'avg', 'product', 'max', 'min'].includes(op)) {
    throw distError('range', `allReduce op must be 'sum', 'avg', 'product', 'max' or 'min', got '${String(op)}'`);
  }
  if (op === 'avg' && !/^(float|bfloat)/.test(tensor.dtype)) {
    throw distError('type', `allReduce 'avg' needs a floating tensor, got ${tensor.dtype} (use 'sum')`);
  }
  const o = need();
  await run('allReduce', () => native.distAllReduce(h, op === 'avg' ? 'sum' : op));
  if (op === 'avg' && o.worldSize > 1) tensor.div_(o.worldSize);
  return tensor;
}

/** Copies rank `src`'s tensor into `tensor` on every rank, in place; resolves with the same tensor. */
export async function broadcast(tensor: Tensor, src = 0): Promise<Tensor> {
  const h = handleOf(tensor, 'torch.distributed.broadcast tensor');
  const o = need();
  if (!Number.isInteger(src) || src < 0 || src >= o.worldSize) throw distError('range', `broadcast src must be in [0, ${o.worldSize}), got ${src}`);
  await run('broadcast', () => native.distBroadcast(h, src));
  return tensor;
}

/** Every rank's `tensor` (same shape and dtype on all ranks), indexed by rank: new tensors. */
export async function allGather(tensor: Tensor): Promise<Tensor[]> {
  const h = handleOf(tensor, 'torch.distributed.allGather tensor');
  need();
  const hs = (await run('allGather', () => native.distAllGather(h))) as number[];
  return hs.map(wrap);
}

/** Resolves when every rank has called barrier(). */
export async function barrier(): Promise<void> {
  need();
  await run('barrier', () => native.distBarrier());
}

/** Leaves the group (closes connections; rank 0 stops the store). No-op when not initialized. */
export async function destroy(): Promise<void> {
  const o = current;
  current = null;
  try {
    await native.distDestroy();
  } catch (e) {
    throw explain(e, 'destroy', o);
  }
}

/**
 * A TCP port the OS just gave out and took back, for a rendezvous on one machine (the launcher,
 * tests and benchmarks); a race with another process taking it meanwhile is unlikely.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((res, rej) => {
    s.once('error', rej);
    s.listen(0, host, res);
  });
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/**
 * Side-by-side benchmark harness: spawns a Node worker (bench/worker.ts) and a Python worker
 * (bench/py/worker.py; TIM_TORCH_PYTHON, default Debian's python3-torch: the same libtorch) with the SAME environment and
 * thread count, sends both the same tasks interleaved (N, P, P, N, N, P, ...) and reports medians.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD } from '../lib/torch/native.js';
import { writeFileAtomic } from '../lib/torch/io/atomic.js';

export const benchDir = dirname(fileURLToPath(import.meta.url));
export const PYTHON = process.env.TIM_TORCH_PYTHON ?? '/usr/bin/python3';

/**
 * The environment of a Python worker: `env` as is (glibc's default malloc thresholds, what Python users
 * get), or with TIM_BENCH_PY_MALLOC=1 the thresholds tim-torch sets at load (lib/torch/native.ts), given
 * through glibc's MALLOC_*_ variables, to compare the drivers alone.
 */
export function pythonEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (process.env.TIM_BENCH_PY_MALLOC !== '1') return env;
  return { ...env, MALLOC_MMAP_THRESHOLD_: String(MALLOC_MMAP_THRESHOLD), MALLOC_TRIM_THRESHOLD_: String(MALLOC_TRIM_THRESHOLD) };
}

/** A Python benchmark script that prints its info as the first JSON line, then one JSON line per request. */
export interface PyScript {
  info: Record<string, unknown>;
  /** Writes `line` to its stdin and resolves to the next JSON line it prints. */
  request(line: string): Promise<Record<string, unknown>>;
  /** Ends its stdin with `line` (what the script reads as "quit"). */
  close(line: string): void;
}

/** Starts bench/<script> (a path under bench/) with the config as its one argument, in pythonEnv(). */
export function startPyScript(script: string, cfg: unknown): Promise<PyScript> {
  return startJsonChild(`bench/${script}`, PYTHON, [join(benchDir, script), JSON.stringify(cfg)], pythonEnv());
}

/**
 * Starts a child that speaks the benchmarks' line protocol (its info as the first JSON line, then one
 * JSON line per request on its stdin); lines that are not JSON objects (a library's chatter) are skipped.
 */
export async function startJsonChild(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<PyScript> {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const r = await lines.next();
      if (r.done) throw new Error(`${label} exited: ${stderr}`);
      if (r.value.startsWith('{')) return JSON.parse(r.value) as Record<string, unknown>;
    }
  };
  const info = await next();
  return {
    info,
    async request(line) {
      proc.stdin!.write(line + '\n');
      return next();
    },
    close(line) {
      if (proc.exitCode === null) proc.stdin!.end(line + '\n');
    },
  };
}

export interface Options {
  quick: boolean;
  /** Environment for both workers (undefined values are removed). */
  env?: Record<string, string | undefined>;
  /** Intra-op threads for both workers; default: what the Node worker reports (the package default). */
  threads?: number;
}

export class Worker {
  private proc: ChildProcess;
  private rl: Interface;
  private waiting: ((line: string) => void)[] = [];
  private stderr = '';
  readonly ready: Promise<unknown>;

  constructor(readonly side: 'node' | 'python', env: NodeJS.ProcessEnv) {
    const [cmd, args] = side === 'node'
      ? [process.execPath, ['--expose-gc', '--import', 'tsx', join(benchDir, 'worker.ts')]]
      : [PYTHON, [join(benchDir, 'py', 'worker.py')]];
    this.proc = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000); });
    this.rl = createInterface({ input: this.proc.stdout! });
    this.rl.on('line', (l) => this.waiting.shift()?.(l));
    this.ready = this.next();
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`${this.side} worker exited (${code}): ${this.stderr}`));
      this.proc.once('exit', onExit);
      this.waiting.push((line) => {
        this.proc.off('exit', onExit);
        const r = JSON.parse(line) as Record<string, unknown>;
        if (!r.ok) reject(new Error(`${this.side} worker: ${r.error as string}`));
        else resolve(r);
      });
    });
  }

  async ask<T = Record<string, number>>(task: string, args: Record<string, unknown> = {}): Promise<T> {
    await this.ready;
    const p = this.next();
    this.proc.stdin!.write(JSON.stringify({ task, ...args }) + '\n');
    return (await p) as T;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.proc.exitCode !== null) return resolve();
      this.proc.once('exit', () => resolve());
      this.proc.stdin!.end();
      setTimeout(() => this.proc.kill(), 5000).unref();
    });
  }
}

export interface Info { threads: number; env: Record<string, string | null> }

/** A Node and a Python worker with equal environment and intra-op threads. */
export class Pair {
  node!: Worker;
  py!: Worker;
  info!: { threads: number; env: Record<string, string | null> };

  static async start(o: Options): Promise<Pair> {
    const p = new Pair();
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [k, v] of Object.entries(o.env ?? {})) {
      if (v === undefined) delete env[k];
      else env[k] = v;
    }
    // The Node worker applies the package's ENV_DEFAULTS before libtorch loads; read back what it
    // ended up with and give Python exactly that environment.
    p.node = new Worker('node', env);
    const ni = await p.node.ask<Info>('info');
    const pyEnv: NodeJS.ProcessEnv = { ...env };
    for (const [k, v] of Object.entries(ni.env)) {
      if (v === null) delete pyEnv[k];
      else pyEnv[k] = v;
    }
    p.py = new Worker('python', pythonEnv(pyEnv));
    const threads = o.threads ?? ni.threads;
    await p.setThreads(threads);
    p.info = { threads, env: ni.env };
    return p;
  }

  async setThreads(n: number): Promise<void> {
    const [a, b] = await Promise.all([this.node.ask('setThreads', { n }), this.py.ask('setThreads', { n })]);
    if (a.threads !== n || b.threads !== n) throw new Error(`thread count mismatch: node ${a.threads}, python ${b.threads}, wanted ${n}`);
  }

  /**
   * Runs a task on both sides: `warmup` untimed calls each, then `reps` timed calls interleaved
   * (the side that goes first alternates). Returns the medians of the reported `ms`.
   */
  async compare(task: string, args: Record<string, unknown>, reps: number, warmup = 1): Promise<{ node: number; python: number; ratio: number; nodeAll: number[]; pyAll: number[] }> {
    for (let i = 0; i < warmup; i++) { await this.node.ask(task, args); await this.py.ask(task, args); }
    const nodeAll: number[] = [], pyAll: number[] = [];
    for (let r = 0; r < reps; r++) {
      const first = r % 2 === 0 ? this.node : this.py;
      const second = first === this.node ? this.py : this.node;
      for (const w of [first, second]) (w === this.node ? nodeAll : pyAll).push((await w.ask(task, args)).ms!);
    }
    return { node: median(nodeAll), python: median(pyAll), ratio: pairedRatio(nodeAll, pyAll), nodeAll, pyAll };
  }

  async close(): Promise<void> {
    await Promise.all([this.node?.close(), this.py?.close()]);
  }
}

/**
 * The median of the per-rep ratios node[i] / python[i]. Each pair ran back to back, so a load burst
 * on a shared machine that lasts a few reps inflates both sides of the same pairs; the ratio of the
 * two medians can mix samples from calm and busy moments.
 */
export function pairedRatio(node: number[], python: number[]): number {
  return median(node.map((n, i) => n / python[i]!));
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

// ---- results ------------------------------------------------------------------------------------------

export interface Row {
  case: string;
  /** Node and Python measurements in `unit` (ms unless stated). */
  node: number;
  python: number | null;
  unit: string;
  /** Node/Python: the median of per-rep paired ratios where a benchmark has them, else node / python. */
  ratio: number | null;
  goal: string;
  status: 'PASS' | 'MISS' | 'INFO';
}

export interface Result {
  name: string;
  title: string;
  date: string;
  quick: boolean;
  machine: { cpus: number; model: string; loadavg: number[] };
  settings: Record<string, unknown>;
  rows: Row[];
  notes: string[];
  /** Column headers for `node` and `python` when a benchmark compares two things in one process (default Node, Python). */
  columns?: [string, string];
}

/** A table row; `ratio` defaults to node / python (pass pairedRatio(...) when per-rep samples exist). */
export function ratioRow(name: string, node: number, python: number, goal: { max?: number; min?: number; text: string }, unit = 'ms', ratio = node / python): Row {
  const ok = (goal.max === undefined || ratio <= goal.max) && (goal.min === undefined || ratio >= goal.min);
  return { case: name, node, python, unit, ratio, goal: goal.text, status: goal.max === undefined && goal.min === undefined ? 'INFO' : ok ? 'PASS' : 'MISS' };
}

export function newResult(name: string, title: string, quick: boolean, settings: Record<string, unknown>): Result {
  return {
    name, title, date: new Date().toISOString(), quick,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '?', loadavg: os.loadavg().map((x) => +x.toFixed(2)) },
    settings: { ...settings, pythonMalloc: process.env.TIM_BENCH_PY_MALLOC === '1' ? 'tim-torch thresholds (TIM_BENCH_PY_MALLOC=1)' : 'glibc defaults' },
    rows: [], notes: [],
  };
}

const fmt = (x: number | null, d = 3): string => (x === null ? '-' : Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 10 ? x.toFixed(2) : x.toFixed(d));

export function formatTable(r: Result): string {
  const head = ['case', ...(r.columns ?? ['Node', 'Python']), 'unit', 'ratio', 'goal', ''];
  const body = r.rows.map((x) => [x.case, fmt(x.node), fmt(x.python), x.unit, x.ratio === null ? '-' : x.ratio.toFixed(2), x.goal, x.status]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (c: string[]): string => c.map((s, i) => (i === 0 || i === 3 || i === 5 ? s.padEnd(w[i]!) : s.padStart(w[i]!))).join('  ');
  const out = [`## ${r.title}`, `settings: ${JSON.stringify(r.settings)}  load: ${r.machine.loadavg.join(' ')}`, line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line)];
  for (const n of r.notes) out.push(`  note: ${n}`);
  return out.join('\n');
}

/**
 * Writes bench/results/<name><TIM_BENCH_SUFFIX>.json (<name>.quick.json in quick mode). TIM_BENCH_SUFFIX
 * (e.g. '-2.13') keeps the runs of another libtorch beside the default ones.
 */
export function writeResult(r: Result, dir = join(benchDir, 'results')): string {
  mkdirSync(dir, { recursive: true });
  const suffix = process.env.TIM_BENCH_SUFFIX ?? '';
  if (!/^[\w.-]*$/.test(suffix)) throw new Error(`TIM_BENCH_SUFFIX may hold letters, digits, '.', '_' and '-' only, got '${suffix}'`);
  const file = join(dir, `${r.name}${suffix}${r.quick ? '.quick' : ''}.json`);
  writeFileAtomic(file, JSON.stringify(r, null, 2) + '\n', 'writeResult');
  return file;
}

/** A benchmark's command-line options: `--name value` as a number or a string, `--flag` present or not. */
export function cliArgs(argv: string[] = process.argv.slice(2)): {
  num(name: string): number | undefined; str(name: string): string | undefined; flag(name: string): boolean;
} {
  const str = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
  return { str, num: (name) => { const v = str(name); return v === undefined ? undefined : Number(v); }, flag: (name) => argv.includes(`--${name}`) };
}

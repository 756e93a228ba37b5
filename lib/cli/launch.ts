/**
 * The process launcher of `tim train --nproc N` (torchrun-like): starts N worker processes of the
 * same `tim` command on this machine, each with the env variables torch.distributed reads —
 * RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK (node), MASTER_ADDR, MASTER_PORT — and
 * waits for them. Several machines: run it on each with --nnodes M --node-rank K and the same
 * --master-addr/--master-port (rank 0's machine hosts the store).
 *
 * Faults: when a worker exits non-zero or is killed, the launcher names it, gives the others the
 * distributed timeout (+5 s) to notice and report it themselves (a dead peer fails their next
 * collective at once, a hung one after the timeout), kills whoever is left, and exits 1.
 * Signals: SIGINT/SIGTERM are forwarded to every worker (each stops after its step with a
 * checkpoint; a second signal stops them at once). Workers run in their own process groups, so a
 * Ctrl-C reaches them once, through the launcher; each watches its IPC channel to the launcher and
 * exits when the launcher is gone (even SIGKILLed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultNumThreads } from '../torch/native.js';
import { freePort } from '../torch/distributed/process_group.js';

export interface LaunchOptions {
  /** worker processes on this machine */
  nproc: number;
  /** machines (default 1) and this machine's index (default 0) */
  nnodes?: number;
  nodeRank?: number;
  /** rank 0's address (default 127.0.0.1) and port (default: a free port on one machine, 29500 on several) */
  masterAddr?: string;
  masterPort?: number;
  /** the worker command's arguments after the CLI entry, e.g. ['train', '--config', 'x.yaml', ...] */
  args: string[];
  /** the workers' distributed timeout: how long the launcher waits for them after a failure (+5 s) */
  timeoutMs: number;
  /** intra-op threads per worker (default: physical cores / nproc, unless the env sets threads) */
  threadsPerProcess?: number;
  /** the workers' base environment (default process.env) */
  env?: NodeJS.ProcessEnv;
  /** the CLI entry and node flags the workers run (default: this CLI, this process's execArgv) */
  entry?: string;
  execArgv?: string[];
  /** launcher messages (default: stderr) */
  log?: (s: string) => void;
}

/** The CLI entry next to this file: lib/cli/tim.ts under tsx, dist/cli/tim.js when built. */
function cliEntry(): string {
  const self = fileURLToPath(import.meta.url);
  return fileURLToPath(new URL(`./tim${extname(self)}`, import.meta.url));
}


interface Worker {
  rank: number;
  proc: ChildProcess;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

function describeExit(w: Worker): string {
  const e = w.exit!;
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

/** Starts the workers and resolves with the launcher's exit status once they are all gone. */
export async function launch(o: LaunchOptions): Promise<number> {
  const log = o.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const nnodes = o.nnodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  const world = nnodes * o.nproc;
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  const masterPort = o.masterPort ?? (nnodes === 1 ? await freePort(masterAddr) : 29500);
  const base = o.env ?? process.env;
  // N processes each using every core would fight over them (torchrun sets OMP_NUM_THREADS=1).
  const threadsSet = base.TIM_TORCH_NUM_THREADS || base.OMP_NUM_THREADS || base.MKL_NUM_THREADS;
  const threads = o.threadsPerProcess ?? (threadsSet ? undefined : Math.max(1, Math.floor((defaultNumThreads(base) ?? 1) / o.nproc)));
  const entry = o.entry ?? cliEntry();
  const execArgv = o.execArgv ?? process.execArgv;

  const workers: Worker[] = [];
  for (let local = 0; local < o.nproc; local++) {
    const rank = nodeRank * o.nproc + local;
    const env: NodeJS.ProcessEnv = {
      ...base,
      RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(o.nproc),
      GROUP_RANK: String(nodeRank), MASTER_ADDR: masterAddr, MASTER_PORT: String(masterPort),
      // tells the worker its IPC channel is ours (see runTrain): it exits when we are gone
      TIM_LAUNCHER_PID: String(process.pid),
      ...(threads !== undefined ? { TIM_TORCH_NUM_THREADS: String(threads) } : {}),
    };
    // detached: own process group, so a terminal's Ctrl-C reaches a worker once (forwarded below),
    // not twice (a second signal means "exit now"). The IPC channel tells it when we are gone.
    const proc = spawn(process.execPath, [...execArgv, entry, ...o.args], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], detached: true });
    workers.push({ rank, proc, exit: null });
  }
  log(`tim train: started ranks ${nodeRank * o.nproc}..${nodeRank * o.nproc + o.nproc - 1} of ${world} ` +
    `(store ${masterAddr}:${masterPort}): ${workers.map((w) => `rank ${w.rank} pid ${w.proc.pid}`).join(', ')}`);

  let signalled: NodeJS.Signals | null = null;
  let failure: Worker | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const live = () => workers.filter((w) => w.exit === null);
  const forward = (sig: NodeJS.Signals) => {
    signalled ??= sig;
    for (const w of live()) w.proc.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    await new Promise<void>((resolve) => {
      for (const w of workers) {
        w.proc.on('error', (e) => log(`tim train: rank ${w.rank}: ${e.message}`));
        w.proc.on('exit', (code, signal) => {
          w.exit = { code, signal };
          // A stop we asked for ends in 130/143 (the trainer's code for a SIGINT/SIGTERM stop).
          const ok = code === 0 || (signalled !== null && (code === 130 || code === 143));
          if (!ok && !failure) {
            failure = w;
            const rest = live();
            const grace = o.timeoutMs + 5000;
            log(`tim train: rank ${w.rank} (pid ${w.proc.pid}) ${describeExit(w)}` +
              (rest.length ? `; waiting up to ${Math.round(grace / 1000)} s for rank${rest.length > 1 ? 's' : ''} ${rest.map((x) => x.rank).join(', ')} to stop` : ''));
            if (rest.length) {
              killTimer = setTimeout(() => {
                for (const x of live()) {
                  log(`tim train: rank ${x.rank} (pid ${x.proc.pid}) did not stop; killing it`);
                  x.proc.kill('SIGKILL');
                }
              }, grace);
            }
          }
          if (live().length === 0) resolve();
        });
      }
    });
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
  }
  if (failure) {
    const f = failure as Worker;
    log(`tim train: failed: rank ${f.rank} (pid ${f.proc.pid}) ${describeExit(f)}`);
    return 1;
  }
  if (signalled) return signalled === 'SIGINT' ? 130 : 143;
  return 0;
}

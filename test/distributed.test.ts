// torch.distributed: option checks and a 1-rank group in this process; real 2-process groups on
// 127.0.0.1 (test/fixtures/dist_worker.mts) for the collectives and for dead / hung peers.
import { describe, expect, it, afterEach } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { torch } from '../lib/index.js';

import { TorchError } from '../lib/torch/errors.js';
import { PYTHON } from './helpers/python.js';
import { freePort } from '../lib/torch/distributed/process_group.js';

const dist = torch.distributed;
const root = fileURLToPath(new URL('..', import.meta.url));
const worker = fileURLToPath(new URL('./fixtures/dist_worker.mts', import.meta.url));

/** A port that was free a moment ago (the OS picks it; a race with another process is unlikely). */

interface Rank {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string;
  exited: Promise<{ code: number | null; signal: string | null; at: number }>;
  waitFor(event: string): Promise<Record<string, unknown>>;
}

const live: ChildProcess[] = [];
afterEach(() => {
  for (const p of live.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

function startRank(scenario: string, rank: number, worldSize: number, port: number, timeoutMs: number, extraEnv: Record<string, string> = {}): Rank {
  const proc = spawn(process.execPath, ['--import', 'tsx', worker, scenario], {
    cwd: root,
    env: {
      ...process.env,
      RANK: String(rank), WORLD_SIZE: String(worldSize), LOCAL_RANK: String(rank),
      MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), TIM_DIST_TIMEOUT_MS: String(timeoutMs),
      TIM_TORCH_NUM_THREADS: '1', ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.push(proc);
  const lines: Record<string, unknown>[] = [];
  const waiters: { event: string; res: (o: Record<string, unknown>) => void }[] = [];
  let buf = '';
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        lines.push(o);
        for (const w of waiters.filter((w) => w.event === o.event)) w.res(o);
      } catch { /* not a protocol line */ }
    }
  });
  const r: Rank = {
    proc, lines, stderr: '',
    exited: new Promise((res) => proc.on('exit', (code, signal) => res({ code, signal, at: Date.now() }))),
    waitFor: (event) => {
      const seen = lines.find((o) => o.event === event);
      return seen ? Promise.resolve(seen) : new Promise((res) => waiters.push({ event, res }));
    },
  };
  proc.stderr!.on('data', (d: Buffer) => { r.stderr += d.toString(); });
  return r;
}

describe('torch.distributed options (no peers)', () => {
  it('resolves explicit options before env variables, env before defaults', () => {
    const env = { RANK: '1', WORLD_SIZE: '4', LOCAL_RANK: '0', MASTER_ADDR: '10.0.0.5', MASTER_PORT: '1234', TIM_DIST_TIMEOUT_MS: '777' };
    const r = dist.resolveInitOptions({ env });
    expect(r).toMatchObject({ backend: 'gloo', rank: 1, worldSize: 4, localRank: 0, masterAddr: '10.0.0.5', masterPort: 1234, timeoutMs: 777 });
    expect(r.device).toEqual({ kind: 'default', name: '' }); // a remote master: bind to this host's address
    const e = dist.resolveInitOptions({ env, rank: 3, masterAddr: '127.0.0.1', masterPort: 5000, timeoutMs: 9 });
    expect(e).toMatchObject({ rank: 3, worldSize: 4, masterAddr: '127.0.0.1', masterPort: 5000, timeoutMs: 9 });
    expect(e.device).toEqual({ kind: 'hostname', name: '127.0.0.1' });
    expect(dist.resolveInitOptions({ env: { GLOO_SOCKET_IFNAME: 'eth1,eth2' } }).device).toEqual({ kind: 'interface', name: 'eth1' });
    expect(dist.resolveInitOptions({ env: {} })).toMatchObject({ rank: 0, worldSize: 1, localRank: 0, masterAddr: '127.0.0.1', masterPort: 29500, timeoutMs: 300000 });
    // Rank 0 hosts the store, unless torchrun's agent already does (then keys go under its attempt prefix).
    expect(r.store).toEqual({ server: false, prefix: '' });
    expect(dist.resolveInitOptions({ env: { RANK: '0', WORLD_SIZE: '2' } }).store).toEqual({ server: true, prefix: '' });
    const agent = { RANK: '0', WORLD_SIZE: '2', TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RESTART_COUNT: '3' };
    expect(dist.resolveInitOptions({ env: agent }).store).toEqual({ server: false, prefix: '/worker/attempt_3' });
  });

  it('rejects bad options with typed E_DIST errors', async () => {
    const bad = async (o: Parameters<typeof dist.init>[0], kind: typeof RangeError | typeof TypeError, re: RegExp) => {
      const err = await dist.init(o).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(kind);
      expect((err as { code: string }).code).toBe('E_DIST');
      expect((err as Error).message).toMatch(re);
    };
    await bad({ rank: 2, worldSize: 2, env: {} }, RangeError, /rank must be in \[0, worldSize=2\), got 2/);
    await bad({ rank: -1, worldSize: 2, env: {} }, RangeError, /rank must be/);
    await bad({ worldSize: 0, env: {} }, RangeError, /worldSize must be >= 1/);
    await bad({ masterPort: 70000, env: {} }, RangeError, /masterPort must be in \[1, 65535\], got 70000/);
    await bad({ masterPort: 0, env: {} }, RangeError, /masterPort/);
    await bad({ masterPort: 1.5, env: {} }, TypeError, /masterPort must be an integer/);
    await bad({ env: { MASTER_PORT: 'http' } }, TypeError, /env MASTER_PORT must be an integer, got 'http'/);
    await bad({ env: { RANK: '1', WORLD_SIZE: '1' } }, RangeError, /rank must be in \[0, worldSize=1\), got 1/);
    await bad({ backend: 'mpi' as never, env: {} }, RangeError, /backend must be 'gloo' or 'nccl'/);
    await bad({ timeoutMs: 0, env: {} }, RangeError, /timeoutMs/);
    expect(dist.isInitialized()).toBe(false);
  });

  it('refuses collectives before init, and nccl on a build without it', async () => {
    const e = await dist.allReduce(torch.ones([2])).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(TorchError);
    expect((e as TorchError).code).toBe('E_DIST');
    expect((e as Error).message).toMatch(/not initialized/);
    expect(() => dist.rank()).toThrow(/not initialized/);
    expect(dist.isAvailable('gloo')).toBe(true);
    if (!dist.isAvailable('nccl')) {
      const n = await dist.init({ backend: 'nccl', env: {}, masterPort: await freePort() }).then(() => null, (x: unknown) => x);
      expect((n as TorchError).code).toBe('E_DIST');
      expect((n as Error).message).toMatch(/nccl.*not available/);
    }
  });

  it('a rank-0 store whose peers never come fails within timeoutMs, naming the problem', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const e = await dist.init({ rank: 0, worldSize: 2, masterPort: port, timeoutMs: 1500, env: {} }).then(() => null, (x: unknown) => x);
    const ms = Date.now() - t0;
    expect(e).toBeInstanceOf(TorchError);
    expect((e as TorchError).code).toBe('E_DIST');
    expect((e as Error).message).toMatch(/init failed on rank 0 of 2/);
    expect((e as Error).message).toMatch(/not all 2 ranks joined 127\.0\.0\.1:\d+ within timeoutMs=1500/);
    expect(ms).toBeGreaterThanOrEqual(1400);
    expect(ms).toBeLessThan(10_000);
    expect(dist.isInitialized()).toBe(false);
  });

  it('a taken port is an E_DIST error', async () => {
    const s: Server = createServer();
    await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
    const port = (s.address() as { port: number }).port;
    try {
      const e = await dist.init({ masterPort: port, timeoutMs: 2000, env: {} }).then(() => null, (x: unknown) => x);
      expect((e as TorchError).code).toBe('E_DIST');
      expect((e as Error).message).toMatch(/init failed on rank 0 of 1/);
    } finally {
      await new Promise<void>((res) => s.close(() => res()));
    }
    expect(dist.isInitialized()).toBe(false);
  });

  it('a 1-rank group: collectives are identities, destroy and re-init work', async () => {
    for (let round = 0; round < 2; round++) {
      await dist.init({ masterPort: await freePort(), timeoutMs: 10_000, env: {} });
      expect(dist.isInitialized()).toBe(true);
      expect([dist.rank(), dist.worldSize(), dist.backend()]).toEqual([0, 1, 'gloo']);
      const second = await dist.init({ masterPort: 1, env: {} }).then(() => null, (x: unknown) => x);
      expect((second as Error).message).toMatch(/already initialized/);
      const t = torch.tensor([1.5, -2, 3]);
      expect(await dist.allReduce(t, 'avg')).toBe(t);
      expect(t.toArray()).toEqual([1.5, -2, 3]);
      const g = await dist.allGather(t);
      expect(g.length).toBe(1);
      expect(g[0]!.toArray()).toEqual([1.5, -2, 3]);
      await dist.barrier();
      const nc = torch.arange(6, { dtype: 'float32' }).reshape([2, 3]).t();
      const ce = await dist.allReduce(nc).then(() => null, (x: unknown) => x);
      expect((ce as Error).message).toMatch(/contiguous/);
      const ie = await dist.allReduce(torch.tensor([1, 2], { dtype: 'int64' }), 'avg').then(() => null, (x: unknown) => x);
      expect(ie).toBeInstanceOf(TypeError);
      expect((ie as Error).message).toMatch(/'avg' needs a floating tensor/);
      const be = await dist.broadcast(t, 1).then(() => null, (x: unknown) => x);
      expect(be).toBeInstanceOf(RangeError);
      await dist.destroy();
      expect(dist.isInitialized()).toBe(false);
    }
  });
});

describe('torch.distributed between 2 processes on 127.0.0.1', () => {
  it('allReduce sum/avg/max/min/product, broadcast, allGather, barrier give the right values', async () => {
    const port = await freePort();
    const ranks = [0, 1].map((r) => startRank('collectives', r, 2, port, 60_000));
    const exits = await Promise.all(ranks.map((r) => r.exited));
    for (const [i, r] of ranks.entries()) {
      expect(exits[i]!.code, `rank ${i} stderr: ${r.stderr}\nstdout: ${JSON.stringify(r.lines)}`).toBe(0);
    }
    const res = ranks.map((r) => r.lines.find((o) => o.event === 'result')!);
    for (const [r, o] of res.entries()) {
      expect(o).toMatchObject({
        rank: r, worldSize: 2, initialized: true,
        sum: [3, 30, -1],
        avg: [1.5, 1],
        max: [1, 0, 5],
        min: [0, -1, 5],
        product: [6],
        broadcast: [[7, 7], [7, 7]],
        allGather: [[0, 0], [1, 1]],
        pipelined: [[1], [201], [401], [601]],
        big: [3, 3],
        afterDestroy: false,
      });
    }
  }, 120_000);

  // torchrun's agent hosts the TCPStore itself and tells workers so (TORCHELASTIC_USE_AGENT_STORE=True).
  // Debian's torchrun 1.13 crashes on Python 3.11 before starting workers (to_map(None) in
  // elastic/multiprocessing), so the agent is played by Python torch's own TCPStore server plus the
  // env variables torchrun sets (local_elastic_agent.py).
  it('joins a store hosted by a launcher (torchrun agent protocol, Python torch TCPStore)', async () => {
    const port = await freePort();
    const agent = spawn(PYTHON, ['-c', [
      'import sys, datetime',
      'from torch.distributed import TCPStore',
      `s = TCPStore('127.0.0.1', ${port}, None, True, datetime.timedelta(seconds=60), wait_for_workers=False)`,
      "print('up', flush=True)",
      'sys.stdin.read()',
    ].join('\n')], { stdio: ['pipe', 'pipe', 'inherit'] });
    live.push(agent);
    await new Promise<void>((res, rej) => {
      agent.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('up')) res(); });
      agent.on('exit', (c) => rej(new Error(`python TCPStore exited ${c}`)));
    });
    const extra = { TORCHELASTIC_USE_AGENT_STORE: 'True', TORCHELASTIC_RESTART_COUNT: '0' };
    const ranks = [0, 1].map((r) => startRank('collectives', r, 2, port, 60_000, extra));
    const exits = await Promise.all(ranks.map((r) => r.exited));
    agent.stdin!.end();
    for (const [i, r] of ranks.entries()) expect(exits[i]!.code, `rank ${i}: ${r.stderr}`).toBe(0);
    for (const [i, r] of ranks.entries()) {
      expect(r.lines.find((o) => o.event === 'result')).toMatchObject({ rank: i, sum: [3, 30, -1], allGather: [[0, 0], [1, 1]] });
    }
  }, 120_000);

  const cases = [
    { fault: 'SIGKILL', victim: 1 },
    { fault: 'SIGKILL', victim: 0 }, // rank 0 also hosts the store
    { fault: 'SIGSTOP', victim: 1 },
  ] as const;
  for (const { fault, victim } of cases) {
    const what = fault === 'SIGKILL' ? 'dies' : 'hangs';
    const survivor = 1 - victim;
    it(`when rank ${victim} ${what} (${fault}), rank ${survivor}'s pending allReduce rejects within the timeout and it exits non-zero`, async () => {
      const timeoutMs = 4000;
      const port = await freePort();
      const ranks = [0, 1].map((r) => startRank('fault', r, 2, port, timeoutMs, { DIST_VICTIM: String(victim) }));
      const ready = await Promise.race([
        Promise.all(ranks.map((r) => r.waitFor('ready'))),
        ranks[survivor]!.exited.then((x) => { throw new Error(`rank ${survivor} exited early ${JSON.stringify(x)}: ${ranks[survivor]!.stderr}`); }),
      ]);
      expect(ready.map((o) => o.rank)).toEqual([0, 1]);
      const killedAt = Date.now();
      ranks[victim]!.proc.kill(fault);
      const exit = await ranks[survivor]!.exited;
      if (fault === 'SIGSTOP') ranks[victim]!.proc.kill('SIGKILL');
      const err = ranks[survivor]!.lines.find((o) => o.event === 'error');
      expect(err, ranks[survivor]!.stderr).toBeDefined();
      expect(exit.code).toBe(2);
      expect(err).toMatchObject({ name: 'TorchError', code: 'E_DIST', afterDestroy: false });
      expect(Number(err!.destroyMs)).toBeLessThan(timeoutMs + 2000);
      const msg = String(err!.message);
      expect(msg).toContain(`allReduce failed on rank ${survivor} of 2`);
      const took = exit.at - killedAt;
      if (fault === 'SIGKILL') {
        // The kernel closes the dead process's sockets: no need to wait for the timeout.
        expect(msg).toContain(`rank ${victim} lost: its connection closed`);
        expect(Number(err!.elapsedMs)).toBeLessThan(timeoutMs);
        expect(took).toBeLessThan(timeoutMs + 3000);
      } else {
        // A stopped process keeps its sockets open: only the timeout can tell.
        expect(msg).toContain(`rank ${victim} did not respond within timeoutMs=4000`);
        expect(Number(err!.elapsedMs)).toBeGreaterThanOrEqual(timeoutMs - 500);
        expect(took).toBeLessThan(timeoutMs + 6000);
      }
    }, 60_000);
  }
});

describe('bench/allreduce.ts', () => {
  it('measures a positive, finite GB/s for Node and Python pairs', async () => {
    const { run } = await import('../bench/allreduce.js');
    const r = await run({ quick: true, sizes: [1, 2], reps: 2 });
    expect(r.rows.map((x) => x.case)).toEqual(['allReduce 1 MB', 'allReduce 2 MB']);
    for (const row of r.rows) {
      expect(row.unit).toBe('GB/s');
      expect(Number.isFinite(row.node) && row.node > 0).toBe(true);
      expect(row.python !== null && Number.isFinite(row.python) && row.python > 0).toBe(true);
    }
  }, 120_000);
});

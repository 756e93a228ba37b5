/**
 * Data-parallel training (lib/torch/distributed/data_parallel.ts, the Trainer's distributed mode, the `tim train
 * --nproc` launcher) in real processes on the CPU with Gloo over 127.0.0.1:
 *
 * - the global data position: from any position of the global stream, the ranks' next batches are
 *   together the next worldSize·B samples, and their rows in that global batch are known (pure JS);
 * - 2 processes at batch B/2 end with the parameters of 1 process at batch B (and the same RNG
 *   state, data position and logged losses): every rank draws the whole global batch's noise,
 *   times and dropout coins and keeps its rows, so this is the same run, not a similar one;
 * - a checkpoint of 2 processes resumes on 1 and one of 1 on 2 (through the launcher), both ending
 *   where the uninterrupted 1-process run ends;
 * - a SIGKILLed worker makes the other rank fail within the timeout with an E_DIST error naming the
 *   lost rank, and the launcher exit non-zero naming it (also when rank 0, the store host, dies);
 * - in-process, a 1-rank group runs the whole collective path (buckets, broadcast, checks) and
 *   gives exactly the non-distributed result, with no tensor leaked.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { torch } from '../lib/index.js';
import { Trainer } from '../lib/tim/train/trainer.js';
import { DataLoader, type Dataset } from '../lib/tim/data/loader.js';
import { ShardedOrder } from '../lib/tim/data/sampler.js';
import { planBuckets } from '../lib/torch/distributed/data_parallel.js';
import { freePort } from '../lib/torch/distributed/process_group.js';

const STEPS = 5;
const B = 8; // the 1-process batch; 2 processes read B/2 each
let root: string;
let cfg1: string; // batch B, 1 process
let cfg2: string; // batch B/2 per process

/** The tiny MNIST fixture: 5 steps, accumulation 2, class dropout 0.1, diffusion/consistency rows, checkpoints at 2, 4, 5. */
function fixture(batch: number): Record<string, any> {
  const d = parseYaml(readFileSync('test/fixtures/tiny-train.yaml', 'utf8')) as Record<string, any>;
  d.data.dataloader.batch_size = batch;
  d.training.max_train_steps = STEPS;
  d.training.validation_steps = 0;
  d.training.checkpoints_total_limit = null;
  return d;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'tim-dp-test-'));
  cfg1 = join(root, 'b8.yaml');
  cfg2 = join(root, 'b4.yaml');
  writeFileSync(cfg1, toYaml(fixture(B)));
  writeFileSync(cfg2, toYaml(fixture(B / 2)));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

// ---- processes ----------------------------------------------------------------------------------------

const live: ChildProcess[] = [];
const workerPids: number[] = [];
afterEach(() => {
  for (const p of live.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  // the launcher's workers run in their own process groups: kill them by pid too
  for (const pid of workerPids.splice(0)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});


interface Run {
  child: ChildProcess;
  stderr: () => string;
  done: Promise<{ code: number | null; signal: string | null; stderr: string; stdout: string; at: number }>;
}

/** `node --import tsx lib/cli/tim.ts train ...` (one process: signals and pids are its own). */
function tim(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/tim.ts', 'train', ...args], {
    env: { ...process.env, TIM_TORCH_NUM_THREADS: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.push(child);
  let stderr = '', stdout = '';
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
    for (const m of stderr.matchAll(/rank \d+ pid (\d+)/g)) if (!workerPids.includes(Number(m[1]))) workerPids.push(Number(m[1]));
  });
  child.stdout!.on('data', (b: Buffer) => { stdout += b.toString(); });
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string; stdout: string; at: number }>((res) => {
    child.on('exit', (code, signal) => res({ code, signal, stderr, stdout, at: Date.now() }));
  });
  return { child, stderr: () => stderr, done };
}

/** 2 ranks started by hand, torchrun-style: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the env. */
async function byHand(args: string[], timeoutS = 60): Promise<Run[]> {
  const port = await freePort();
  return [0, 1].map((r) => tim(args, {
    RANK: String(r), WORLD_SIZE: '2', LOCAL_RANK: String(r), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port),
    TIM_DIST_TIMEOUT_MS: String(timeoutS * 1000),
  }));
}

async function until(what: string, ok: () => boolean, ms = 180_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- checkpoints ----------------------------------------------------------------------------------------

function ckpt(out: string, step: number): string {
  return join(out, 'checkpoints', String(step));
}

/** Largest |a − b| over every tensor of model.safetensors and ema.safetensors of two checkpoints. */
function maxDiff(a: string, b: string): { model: number; ema: number } {
  const r = { model: 0, ema: 0 };
  for (const f of ['model', 'ema'] as const) {
    torch.scope(() => {
      const A = torch.loadSafetensors(join(a, `${f}.safetensors`)).tensors;
      const Bt = torch.loadSafetensors(join(b, `${f}.safetensors`)).tensors;
      expect(Object.keys(Bt).sort()).toEqual(Object.keys(A).sort());
      for (const k of Object.keys(A)) r[f] = Math.max(r[f], A[k]!.sub(Bt[k]!).abs().max().item() as number);
    });
  }
  return r;
}

function state(dir: string): Record<string, any> {
  return JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as Record<string, any>;
}

function metrics(out: string): Record<string, number>[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
}

// ---- tests ----------------------------------------------------------------------------------------------

/** Sample i is the constant image i. */
class Counting implements Dataset {
  readonly name = 'counting';
  readonly sampleShape = [1, 1, 1] as const;
  readonly numClasses = null;
  constructor(readonly length: number) {}
  async load(index: number, out: Float32Array): Promise<number> {
    out.fill(index);
    return 0;
  }
}

describe('the global data position (world-size independent)', () => {
  it('from any global position, the ranks\' next batches are the next worldSize·B samples, rows in stream order', async () => {
    const n = 10, seed = 4, b = 2;
    const ds = new Counting(n);
    // the global stream: the epochs' permutations one after another (what one rank reads)
    const one = new ShardedOrder(n, { seed, rank: 0, worldSize: 1, shuffle: true });
    const stream = Array.from({ length: 6 }, (_, e) => Array.from(one.slice(e))).flat();
    for (const ws of [1, 2, 3, 4]) {
      for (const g of [0, 1, 5, 9, 10, 13, 27]) {
        const loaders = Array.from({ length: ws }, (_, r) => new DataLoader(ds, {
          batchSize: b, seed, rank: r, worldSize: ws, prefetch: r % 2, globalState: { epoch: Math.floor(g / n), index: g % n, seed },
        }));
        for (let step = 0; step < 3; step++) {
          const global = new Array<number>(ws * b).fill(-1);
          for (const l of loaders) {
            const batch = await l.next();
            expect(batch.rows, `ws ${ws} g ${g}`).not.toBeNull();
            batch.indices.forEach((idx, k) => { global[batch.rows![k]!] = idx; });
            batch.x.dispose();
            batch.y.dispose();
          }
          const from = g + step * ws * b;
          expect(global, `ws ${ws} from ${g}, step ${step}`).toEqual(stream.slice(from, from + ws * b));
          const after = from + ws * b;
          for (const l of loaders) {
            expect(l.globalState).toEqual({ epoch: Math.floor(after / n), index: after % n, seed });
            expect(l.globalSamples).toBe(after);
          }
        }
        for (const l of loaders) await l.close();
      }
    }
  });

  it('one rank: the global state is the rank state (old checkpoints stay valid); unknown positions are refused', () => {
    const ds = new Counting(10);
    const l = new DataLoader(ds, { batchSize: 3, seed: 1, state: { epoch: 2, index: 7, seed: 1 } });
    expect(l.globalState).toEqual(l.state);
    const g = new DataLoader(ds, { batchSize: 3, seed: 1, globalState: { epoch: 2, index: 7, seed: 1 } });
    expect(g.state).toEqual({ epoch: 2, index: 7, seed: 1 });
    // a rank-local state of several ranks says nothing about the global stream
    const local = new DataLoader(ds, { batchSize: 3, rank: 1, worldSize: 2, state: { epoch: 0, index: 2, seed: 0 } });
    expect(() => local.globalState).toThrow(/global position is unknown/);
    const code = (f: () => unknown) => { try { f(); return null; } catch (e) { return (e as { code?: string }).code; } };
    expect(code(() => new DataLoader(ds, { batchSize: 2, worldSize: 2, crossEpochs: false, globalState: { epoch: 0, index: 0, seed: 0 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, state: { epoch: 0, index: 0, seed: 0 }, globalState: { epoch: 0, index: 0, seed: 0 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, globalState: { epoch: 0, index: 11, seed: 0 } }))).toBe('E_STATE');
    expect(code(() => new DataLoader(ds, { batchSize: 2, seed: 3, globalState: { epoch: 0, index: 1, seed: 2 } }))).toBe('E_STATE');
  });
});

describe('gradient buckets', () => {
  it('group same-dtype tensors up to the byte limit, in order; a big tensor is a bucket of its own', () => {
    torch.scope(() => {
      const t = [torch.zeros([10]), torch.zeros([10]), torch.zeros([100]), torch.zeros([5], { dtype: 'float64' }), torch.zeros([10]), torch.zeros([5], { dtype: 'float64' })];
      // float32: 40 + 40 bytes fit in 100, 400 does not; float64 tensors have their own buckets
      expect(planBuckets(t, 100)).toEqual([[0, 1], [2], [4], [3, 5]]);
      expect(planBuckets(t, 1 << 20)).toEqual([[0, 1, 2, 4], [3, 5]]);
      expect(planBuckets([], 100)).toEqual([]);
    });
  });
});

describe('data-parallel trainer, in-process (a 1-rank group)', () => {
  it('runs the collective path (small buckets, broadcast, weights check) with exactly the non-distributed result, no leak', async () => {
    const doc = fixture(B);
    doc.training.max_train_steps = 3;
    const before = torch.memory().liveTensors;
    const run = async (distributed: false | object, out: string) => {
      const tr = Trainer.create({ config: doc, outDir: join(root, out), resume: null, write: () => {}, prefetch: 0, distributed: distributed as never });
      const r = await tr.train();
      const dp = tr.dataParallel;
      await tr.close();
      return { r, dp };
    };
    const plain = await run(false, 'inproc-plain');
    expect(plain.dp).toBeNull();
    const dist = await run({ worldSize: 1, rank: 0, masterPort: await freePort(), timeoutMs: 20_000, bucketBytes: 4096, env: {} }, 'inproc-dp');
    expect(dist.dp).not.toBeNull();
    expect(torch.distributed.isInitialized()).toBe(false); // close() left the group it made
    expect(dist.r.metrics!.loss).toBe(plain.r.metrics!.loss);
    expect(dist.r.metrics!.grad_norm).toBe(plain.r.metrics!.grad_norm);
    for (const f of ['model', 'ema', 'optimizer']) {
      const a = readFileSync(join(ckpt(join(root, 'inproc-plain'), 3), `${f}.safetensors`));
      const b = readFileSync(join(ckpt(join(root, 'inproc-dp'), 3), `${f}.safetensors`));
      expect(b.equals(a), `${f}.safetensors`).toBe(true);
    }
    expect(torch.memory().liveTensors).toBe(before);
  }, 120_000);

  it('refuses a bad distributed option and a bad env with typed errors, before building anything', () => {
    expect(() => Trainer.create({ config: fixture(B), outDir: join(root, 'bad'), distributed: 3 as never })).toThrow(/distributed must be/);
    expect(() => Trainer.create({ config: fixture(B), outDir: join(root, 'bad'), distributed: { env: { WORLD_SIZE: '2', RANK: '5' } } }))
      .toThrow(/rank must be in \[0, worldSize=2\)/);
  });
});

describe('tim train launcher options', () => {
  it('usage errors exit 2 with a message, before any process starts', async () => {
    const { main } = await import('../lib/cli/tim.js');
    const err: string[] = [];
    const run = (argv: string[]) => main(['train', '--config', cfg2, '--out', join(root, 'usage'), ...argv], () => {}, (s) => err.push(s));
    expect(await run(['--nnodes', '2'])).toBe(2);
    expect(err.pop()).toMatch(/--nnodes needs --nproc/);
    expect(await run(['--nproc', '2', '--nnodes', '2'])).toBe(2);
    expect(err.pop()).toMatch(/--master-addr .* is required with --nnodes > 1/);
    expect(await run(['--nproc', '2', '--nnodes', '2', '--node-rank', '2', '--master-addr', '10.0.0.1'])).toBe(2);
    expect(err.pop()).toMatch(/--node-rank must be below --nnodes 2/);
    expect(await run(['--nproc', '0'])).toBe(2);
    expect(err.pop()).toMatch(/--nproc must be an integer >= 1/);
    expect(await run(['--nproc', '2', '--dist-timeout', '0'])).toBe(2);
    expect(err.pop()).toMatch(/--dist-timeout must be a number/);
    expect(await run(['--nproc', '2', '--master-port', '70000'])).toBe(2);
    const help: string[] = [];
    expect(await main(['train', '--help'], (s) => help.push(s))).toBe(0);
    expect(help.join('\n')).toMatch(/--nproc <N>[\s\S]*--dist-timeout <seconds>/);
  });
});

describe('data-parallel training in processes (Gloo, 127.0.0.1)', () => {
  const one = () => join(root, 'one');
  const two = () => join(root, 'two');

  it(`2 processes at batch ${B / 2} end with the parameters of 1 process at batch ${B} (same run: RNG state, data position, losses)`, async () => {
    // torchrun-style: the env variables set by hand, no --nproc
    const [a, ...bs] = [tim(['--config', cfg1, '--out', one()]), ...(await byHand(['--config', cfg2, '--out', two()]))];
    const ra = await a.done;
    expect(ra.code, ra.stderr).toBe(0);
    const rb = await Promise.all(bs.map((r) => r.done));
    for (const [i, r] of rb.entries()) expect(r.code, `rank ${i}: ${r.stderr}`).toBe(0);
    expect(rb[0]!.stderr).toContain(`2 processes (gloo), global batch 16 = ${B / 2}×2×2`);
    // rank 0 alone reports and writes
    expect(rb[1]!.stderr).not.toContain('step 1/');
    expect(rb[1]!.stdout).toBe('');
    expect(JSON.parse(rb[0]!.stdout.trim()).step).toBe(STEPS);

    const d = maxDiff(ckpt(one(), STEPS), ckpt(two(), STEPS));
    expect(d.model).toBeLessThan(1e-5);
    expect(d.ema).toBeLessThan(1e-5);
    // ...while training moved the weights by far more than that (so the equality is not trivial)
    expect(maxDiff(ckpt(one(), 2), ckpt(one(), STEPS)).model).toBeGreaterThan(1e-4);
    // the same draws and the same data: the RNG state and the global position are identical
    const s1 = state(ckpt(one(), STEPS)), s2 = state(ckpt(two(), STEPS));
    expect(s2.rng.cpu).toBe(s1.rng.cpu);
    expect(s2.data).toEqual(s1.data);
    expect(s1.data.samples).toBe(STEPS * 2 * B);
    expect([s1.worldSize, s2.worldSize, s1.globalBatchSize, s2.globalBatchSize]).toEqual([1, 2, 16, 16]);
    // the logged loss is the all-reduced mean: the same per step
    const m1 = metrics(one()), m2 = metrics(two());
    expect(m2.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    for (const [i, m] of m2.entries()) {
      expect(Math.abs(m.loss! - m1[i]!.loss!) / m1[i]!.loss!).toBeLessThan(1e-5);
      expect(Math.abs(m.loss_denoising! - m1[i]!.loss_denoising!) / m1[i]!.loss_denoising!).toBeLessThan(1e-5);
      expect(m.lr).toBe(m1[i]!.lr);
    }
  }, 300_000);

  it('resumes with another number of processes: 2 → 1 and, through the launcher, 1 → 2, ending as the uninterrupted run', async () => {
    expect(existsSync(ckpt(two(), 2)), 'needs the previous test\'s runs').toBe(true);
    const to1 = join(root, 'two-to-one'), to2 = join(root, 'one-to-two');
    const a = tim(['--config', cfg1, '--out', to1, '--resume', ckpt(two(), 2)]);
    const b = tim(['--nproc', '2', '--dist-timeout', '60', '--config', cfg2, '--out', to2, '--resume', ckpt(one(), 2)]);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    expect(ra.stderr).toContain('resumed at step 2 from');
    expect(rb.stderr).toMatch(/started ranks 0\.\.1 of 2 \(store 127\.0\.0\.1:\d+\): rank 0 pid \d+, rank 1 pid \d+/);
    expect(rb.stderr).toContain('2 processes (gloo)');
    expect(rb.stderr).toContain('resumed at step 2 from');
    for (const out of [to1, to2]) {
      expect(metrics(out).map((m) => m.step)).toEqual([3, 4, 5]);
      const d = maxDiff(ckpt(one(), STEPS), ckpt(out, STEPS));
      expect(d.model, out).toBeLessThan(1e-5);
      expect(d.ema, out).toBeLessThan(1e-5);
      expect(state(ckpt(out, STEPS)).data).toEqual(state(ckpt(one(), STEPS)).data);
    }
  }, 300_000);

  it('a SIGKILLed worker: rank 0 fails at once naming rank 1, and the launcher exits 1 naming it', async () => {
    const timeoutS = 15;
    const out = join(root, 'fault-launcher');
    const run = tim(['--nproc', '2', '--dist-timeout', String(timeoutS), '--config', cfg2, '--out', out, '--max-steps', '1000']);
    await until('step 2 of the launched run', () => /step 2\/1000/.test(run.stderr()));
    const pid = Number(/rank 1 pid (\d+)/.exec(run.stderr())![1]);
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(1);
    expect(r.at - killedAt).toBeLessThan((timeoutS + 5) * 1000);
    expect(r.stderr).toContain(`rank 1 (pid ${pid}) was killed by SIGKILL`);
    expect(r.stderr).toContain(`tim train: failed: rank 1 (pid ${pid}) was killed by SIGKILL`);
    // rank 0's own report: an E_DIST error that names the lost rank
    expect(r.stderr).toMatch(/failed on rank 0 of 2: rank 1 lost: its connection closed.*\[E_DIST\]/);
  }, 300_000);

  it('the launcher SIGKILLed: its workers notice and exit', async () => {
    const out = join(root, 'launcher-killed');
    const run = tim(['--nproc', '2', '--dist-timeout', '30', '--config', cfg2, '--out', out, '--max-steps', '1000']);
    await until('step 2 of the launched run', () => /step 2\/1000/.test(run.stderr()));
    const pids = [...run.stderr().matchAll(/rank \d+ pid (\d+)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(2);
    run.child.kill('SIGKILL');
    await run.done;
    const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
    await until('the workers to exit', () => pids.every((pid) => !alive(pid)), 20_000);
  }, 300_000);

  it('rank 0 (the store host) SIGKILLed: rank 1 exits non-zero within the timeout naming rank 0', async () => {
    const timeoutS = 10;
    const out = join(root, 'fault-rank0');
    const ranks = await byHand(['--config', cfg2, '--out', out, '--max-steps', '1000'], timeoutS);
    await until('step 2 on rank 0', () => /step 2\/1000/.test(ranks[0]!.stderr()));
    const killedAt = Date.now();
    ranks[0]!.child.kill('SIGKILL');
    const r = await ranks[1]!.done;
    expect(r.code).toBe(1);
    expect(r.at - killedAt).toBeLessThan((timeoutS + 5) * 1000);
    expect(r.stderr).toMatch(/failed on rank 1 of 2: rank 0 (lost|did not respond within timeoutMs=10000).*\[E_DIST\]/);
  }, 300_000);
});

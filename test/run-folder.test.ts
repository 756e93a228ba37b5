/**
 * Run folders are owned and never silently destroyed, and a diverging run stops:
 * - an exclusive lock (a second trainer on one --out is refused, while the first one runs in
 *   another process and finishes whole; a stale lock of a dead process is taken over; a lock of
 *   another host is refused naming the file);
 * - a folder holding a run is resumed or refused, never restarted (its log and checkpoints stay);
 * - pruning keeps the checkpoint just written and never deletes a later one, and is crash-safe;
 * - state.json is checked against its folder; --max-steps at or below the resumed step says so;
 * - a user's config.yaml is never overwritten; --out that is a file or unwritable is a typed E_IO;
 * - lr 1e6 stops with E_DIVERGED naming the step, NaN shows as NaN, no non-finite checkpoint is
 *   written and none replaces a good one; an RNG-state error names its file.
 */
import { spawn } from 'node:child_process';
import fs, { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { Trainer } from '../lib/tim/train/trainer.js';
import { listCheckpoints, pruneCheckpoints, removeStaleTemps, writeCheckpoint } from '../lib/tim/train/checkpoints.js';
import { LOCK_FILE } from '../lib/tim/train/run_lock.js';
import { main } from '../lib/cli/tim.js';

let root: string;

function doc(training: object = {}): Record<string, any> {
  const d = parseYaml(readFileSync('test/fixtures/tiny-train.yaml', 'utf8')) as Record<string, any>;
  Object.assign(d.training, { validation_steps: 0 }, training);
  return d;
}

function quiet(): { write: (s: string) => void; lines: string[] } {
  const lines: string[] = [];
  return { write: (s) => lines.push(s), lines };
}

const st = (step: number) => ({ format: 'tim-torch.train' as const, version: 1 as const, step });

async function cli(...args: string[]): Promise<{ code: number; err: string; out: string }> {
  const err: string[] = [], out: string[] = [];
  const code = await main(args, (s) => out.push(s), (s) => err.push(s));
  return { code, err: err.join('\n'), out: out.join('\n') };
}

/** Whether every tensor of every safetensors file in a checkpoint folder is finite. */
function finiteCheckpoint(dir: string): boolean {
  return torch.scope(() => {
    for (const f of ['model', 'ema']) {
      for (const t of Object.values(torch.loadSafetensors(join(dir, `${f}.safetensors`)).tensors)) {
        if (Number(t.isfinite().logicalNot().sum().item()) !== 0) return false;
      }
    }
    return true;
  });
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'tim-run-folder-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('run folder lock', () => {
  it('a second trainer on a folder another process trains in is refused, and the first finishes whole', async () => {
    const out = join(root, 'shared');
    const cfg = join(root, 'long.yaml');
    writeFileSync(cfg, toYaml(doc({ max_train_steps: 40, checkpointing_steps: 1, checkpoints_total_limit: 2 })));
    const child = spawn(process.execPath, ['--import', 'tsx', 'lib/cli/tim.ts', 'train', '--config', cfg, '--out', out, '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
    child.stdout!.resume();
    const done = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    // wait until the first run is writing checkpoints
    for (let i = 0; i < 600 && !existsSync(join(out, 'checkpoints', '2', 'state.json')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(out, LOCK_FILE))).toBe(true);
    const lock = JSON.parse(readFileSync(join(out, LOCK_FILE), 'utf8')) as { pid: number; host: string };
    expect(lock.pid).toBe(child.pid);
    expect(lock.host).toBe(hostname());
    for (const resume of [null, 'latest']) {
      expect(() => Trainer.create({ config: doc(), outDir: out, resume, write: () => {} })).toThrow(expect.objectContaining({
        code: 'E_LOCKED', message: expect.stringMatching(new RegExp(`in use by process ${child.pid}.*another --out`)),
      }));
    }
    const r = await cli('train', '--config', cfg, '--out', out, '--resume', 'latest');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/\[E_LOCKED\]/);
    expect(await done, stderr).toBe(0);
    expect(stderr).not.toMatch(/E_IO|No such file/);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([39, 40]);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false); // released at exit
    expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n')).toHaveLength(40);
  }, 300_000);

  it('in one process: held until close(); a stale lock of a dead process is taken over; another host\'s is refused', async () => {
    const out = join(root, 'inproc');
    const a = Trainer.create({ config: doc(), outDir: out, resume: null, write: () => {} });
    expect(() => Trainer.create({ config: doc(), outDir: out, resume: 'latest', write: () => {} })).toThrow(expect.objectContaining({ code: 'E_LOCKED', message: expect.stringMatching(/this process/) }));
    await a.close();
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
    // a lock left by a SIGKILLed process (its pid no longer runs)
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.on('exit', r));
    writeFileSync(join(out, LOCK_FILE), JSON.stringify({ pid: dead.pid, host: hostname(), start: null, since: 'then', token: 'x' }));
    const b = Trainer.create({ config: doc(), outDir: out, resume: 'latest', write: () => {} });
    expect(JSON.parse(readFileSync(join(out, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await b.close();
    // a lock of another machine (shared file system) cannot be checked: refused, naming the file
    writeFileSync(join(out, LOCK_FILE), JSON.stringify({ pid: 1, host: 'elsewhere.example', start: null, since: 'then', token: 'y' }));
    expect(() => Trainer.create({ config: doc(), outDir: out, resume: 'latest', write: () => {} })).toThrow(expect.objectContaining({
      code: 'E_LOCKED', message: expect.stringContaining(`delete '${join(out, LOCK_FILE)}'`),
    }));
    rmSync(join(out, LOCK_FILE));
  });
});

describe('an existing run is resumed or refused', () => {
  it('a folder holding a run is refused without resume: log, checkpoints and config stay as they were', async () => {
    const out = join(root, 'existing');
    const q = quiet();
    const t = Trainer.create({ config: doc({ max_train_steps: 4 }), outDir: out, resume: null, write: q.write, prefetch: 0 });
    await t.train();
    await t.close();
    const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
    const before = listCheckpoints(out).map((c) => c.step);
    expect(before).toEqual([2, 4]);
    for (const resume of [null, undefined]) {
      // (undefined: the config's resume_from_checkpoint, here none)
      expect(() => Trainer.create({ config: doc({ max_train_steps: 8, resume_from_checkpoint: null }), outDir: out, ...(resume === null ? { resume } : {}), write: () => {} }))
        .toThrow(expect.objectContaining({ code: 'E_RUN_EXISTS', message: expect.stringMatching(/checkpoints up to step 4.*--resume latest/) }));
    }
    const r = await cli('train', '--config', join(out, 'config.yaml'), '--out', out, '--resume', 'none');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/already holds a run.*\[E_RUN_EXISTS\]/);
    expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).toBe(metrics);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual(before);
    // a finished run resumed: nothing to train is said, not silently done; nothing is written
    const q2 = quiet();
    const fin = Trainer.create({ config: doc({ max_train_steps: 4 }), outDir: out, resume: 'latest', write: q2.write });
    const res = await fin.train();
    await fin.close();
    expect(res.checkpoint).toBe(join(out, 'checkpoints', '4'));
    expect(q2.lines.join('')).toMatch(/already at step 4 = maxSteps .*nothing to train.*larger --max-steps/);
    expect(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).toBe(metrics);
    expect(() => Trainer.create({ config: doc({ max_train_steps: 8 }), outDir: out, resume: 'latest', maxSteps: 3, write: () => {} }))
      .toThrow(expect.objectContaining({ code: 'E_RANGE', message: expect.stringMatching(/at step 4, past maxSteps 3.*above 4/) }));
    const r2 = await cli('train', '--config', join(out, 'config.yaml'), '--out', out, '--resume', 'latest', '--max-steps', '2');
    expect(r2.code).toBe(1);
    expect(r2.err).toMatch(/nothing to train.*\[E_RANGE\]/);
  });

  it('resumed from an earlier step: the checkpoint just written is kept, later ones are not pruned', async () => {
    const out = join(root, 'rewind');
    const t = Trainer.create({ config: doc({ max_train_steps: 6, checkpoints_total_limit: 3 }), outDir: out, resume: null, write: () => {}, prefetch: 0 });
    await t.train();
    await t.close();
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([2, 4, 6]);
    // from checkpoint 2 to step 4, keeping 1: before, pruning kept step 6 and deleted the 4 it had just written
    const u = Trainer.create({ config: doc({ max_train_steps: 6, checkpoints_total_limit: 1 }), outDir: out, resume: '2', maxSteps: 4, write: () => {}, prefetch: 0 });
    const r = await u.train();
    await u.close();
    expect(r.checkpoint).toBe(join(out, 'checkpoints', '4'));
    expect(existsSync(join(r.checkpoint!, 'state.json'))).toBe(true);
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([4, 6]);
    // and the unit: keep 1 up to step 20 never touches 30
    const o2 = join(root, 'prune-unit');
    for (const s of [10, 20, 30]) writeCheckpoint(o2, st(s), (d) => writeFileSync(join(d, 'model.safetensors'), 'x'));
    expect(pruneCheckpoints(o2, 1, [], 20)).toEqual([10]);
    expect(listCheckpoints(o2).map((c) => c.step)).toEqual([20, 30]);
  });

  it('pruning is crash-safe: killed in the middle, no step folder without state.json is left', () => {
    const out = join(root, 'prune-crash');
    for (const s of [1, 2, 3]) {
      writeCheckpoint(out, st(s), (d) => {
        for (const f of ['model', 'ema', 'optimizer']) writeFileSync(join(d, `${f}.safetensors`), f);
      });
    }
    // the process "dies" at the first recursive delete of a pruned folder
    const orig = fs.rmSync;
    fs.rmSync = ((p: fs.PathLike, o?: fs.RmOptions) => {
      if (o?.recursive) throw new Error('killed');
      return orig(p, o);
    }) as typeof fs.rmSync;
    syncBuiltinESMExports();
    try {
      expect(() => pruneCheckpoints(out, 1, [], 3)).toThrow(/killed/);
    } finally {
      fs.rmSync = orig;
      syncBuiltinESMExports();
    }
    const root2 = join(out, 'checkpoints');
    for (const n of readdirSync(root2).filter((x) => /^\d+$/.test(x))) {
      expect(existsSync(join(root2, n, 'state.json')), `checkpoint folder ${n} without state.json`).toBe(true);
    }
    expect(listCheckpoints(out).map((c) => c.step)).toEqual([3]);
    // the next start clears what the killed prune left
    removeStaleTemps(out);
    expect(readdirSync(root2)).toEqual(['3']);
    // a half-deleted folder of an older version (no state.json, only optimizer.safetensors) is cleared too
    mkdirSync(join(root2, '7'));
    writeFileSync(join(root2, '7', 'optimizer.safetensors'), 'x');
    expect(removeStaleTemps(out)).toEqual(['7']);
  });

  it('state.json must agree with its folder; an RNG-state error names its file', async () => {
    const out = join(root, 'state-check');
    const t = Trainer.create({ config: doc({ max_train_steps: 2 }), outDir: out, resume: null, write: () => {} });
    const dir = t.saveCheckpoint();
    await t.close();
    const statePath = join(dir, 'state.json');
    const good = readFileSync(statePath, 'utf8');
    writeFileSync(statePath, good.replace('"step": 0', '"step": 999'));
    expect(() => Trainer.create({ config: doc({ max_train_steps: 2000 }), outDir: out, resume: 'latest', write: () => {} }))
      .toThrow(expect.objectContaining({ code: 'E_FORMAT', message: expect.stringMatching(/says step 999 but its folder is checkpoint 0/) }));
    const s = JSON.parse(good) as { rng: { cpu: string } };
    s.rng.cpu = Buffer.from('short').toString('base64');
    writeFileSync(statePath, JSON.stringify(s));
    expect(() => Trainer.create({ config: doc({ max_train_steps: 2 }), outDir: out, resume: 'latest', write: () => {} }))
      .toThrow(expect.objectContaining({ message: expect.stringContaining(statePath) }));
    delete (s.rng as Partial<typeof s.rng>).cpu;
    writeFileSync(statePath, JSON.stringify(s));
    expect(() => Trainer.create({ config: doc({ max_train_steps: 2 }), outDir: out, resume: 'latest', write: () => {} }))
      .toThrow(expect.objectContaining({ message: expect.stringMatching(new RegExp(`${statePath.replace(/[.]/g, '\\.')}.*rng\\.cpu is missing`)) }));
  });

  it('a user\'s config.yaml in --out is never rewritten; a bad --out is a typed E_IO naming it', async () => {
    const out = join(root, 'user-config');
    mkdirSync(out);
    const user = '# my notes\n' + toYaml(doc({ max_train_steps: 2 }));
    writeFileSync(join(out, 'config.yaml'), user);
    // the same config: kept as it is, comments and all
    const t = Trainer.create({ config: doc({ max_train_steps: 2 }), outDir: out, resume: null, write: () => {}, prefetch: 0 });
    await t.train();
    await t.close();
    expect(readFileSync(join(out, 'config.yaml'), 'utf8')).toBe(user);
    // another config in a fresh folder holding the user's file: refused, the file untouched
    const out2 = join(root, 'user-config-2');
    mkdirSync(out2);
    writeFileSync(join(out2, 'config.yaml'), user);
    expect(() => Trainer.create({ config: doc({ max_train_steps: 3 }), outDir: out2, resume: null, write: () => {} }))
      .toThrow(expect.objectContaining({ code: 'E_RUN_EXISTS', message: expect.stringMatching(/config\.yaml' was not written by tim train/) }));
    expect(readFileSync(join(out2, 'config.yaml'), 'utf8')).toBe(user);
    expect(existsSync(join(out2, LOCK_FILE))).toBe(false);

    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    // (/sys refuses new folders even to root: a stand-in for a read-only mount)
    for (const bad of [file, join(file, 'sub'), '/sys/tim-run-test']) {
      expect(() => Trainer.create({ config: doc(), outDir: bad, resume: null, write: () => {} }), bad)
        .toThrow(expect.objectContaining({ name: 'TorchError', code: 'E_IO', message: expect.stringContaining(`'${bad}'`) }));
    }
    const r = await cli('train', '--config', 'test/fixtures/tiny-train.yaml', '--out', file);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/is a file, not a folder.*\[E_IO\]/);
  });
});

describe('divergence', () => {
  it('lr 1e6: stops with E_DIVERGED naming the step, shows NaN, writes no non-finite checkpoint', async () => {
    const out = join(root, 'diverge');
    const q = quiet();
    const d = doc({ max_train_steps: 30, checkpointing_steps: 1, checkpoints_total_limit: 2, learning_rate: 1e6, scale_lr: false, lr_warmup_steps: 0 });
    const t = Trainer.create({ config: d, outDir: out, resume: null, write: q.write, prefetch: 0 });
    let err: (Error & { code?: string }) | null = null;
    try {
      await t.train();
    } catch (e) {
      err = e as Error & { code?: string };
    }
    await t.close();
    expect(err).not.toBeNull();
    expect(err!.code).toBe('E_DIVERGED');
    expect(err!.message).toMatch(/training diverged at step \d+: .*for 3 step\(s\) in a row/);
    const at = Number(/at step (\d+)/.exec(err!.message)![1]);
    expect(at).toBeLessThan(30);
    // the progress shows what is not finite (NaN as NaN), where nan_to_num used to print loss 0
    const log = q.lines.join('');
    expect(log).toMatch(/(loss NaN|gnorm (NaN|Infinity))/);
    expect(log).toMatch(/step \d+: (the network output or target is not finite|the gradient norm is (NaN|Infinity)).*; update skipped \(1 of 3/);
    expect(log).not.toMatch(/loss 0 \(/);
    // every checkpoint left is finite, and none is past the last good step
    const left = listCheckpoints(out);
    for (const c of left) expect(finiteCheckpoint(c.dir), `checkpoint ${c.step}`).toBe(true);
    expect(left.every((c) => c.step < at)).toBe(true);
    // the CLI: exit 1 with the message
    const cfg = join(root, 'diverge.yaml');
    writeFileSync(cfg, toYaml(d));
    const r = await cli('train', '--config', cfg, '--out', join(root, 'diverge-cli'), '--max-nonfinite-steps', '2');
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/training diverged at step \d+.*2 step\(s\) in a row.*\[E_DIVERGED\]/);
  });

  it('a non-finite model is never checkpointed and never replaces a good checkpoint', async () => {
    const out = join(root, 'nan-ckpt');
    const t = Trainer.create({ config: doc({ max_train_steps: 4 }), outDir: out, resume: null, write: () => {}, prefetch: 0 });
    await t.trainStep();
    const good = t.saveCheckpoint();
    const bytes = readFileSync(join(good, 'model.safetensors'));
    const mtime = statSync(join(good, 'model.safetensors')).mtimeMs;
    torch.noGrad(() => {
      const p = t.model.parameters()[0]!;
      torch.scope(() => p.mul_(NaN));
    });
    expect(() => t.saveCheckpoint()).toThrow(expect.objectContaining({ code: 'E_DIVERGED', message: expect.stringMatching(/refusing to write checkpoint 1.*non-finite/) }));
    expect(readFileSync(join(good, 'model.safetensors')).equals(bytes)).toBe(true);
    expect(statSync(join(good, 'model.safetensors')).mtimeMs).toBe(mtime);
    expect(readdirSync(join(out, 'checkpoints'))).toEqual(['1']);
    await t.close();
  });
});

/**
 * `tim train` as a real process: a run SIGKILLed after its first checkpoint and resumed with
 * `--resume latest` ends with exactly the bytes (model, EMA, optimizer) of an uninterrupted run,
 * and its metrics.jsonl reads as one run. Also the command's usage errors and exit codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { main } from '../lib/cli/tim.js';

let root: string;
let config: string;
const STEPS = 10;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'tim-train-cli-'));
  const d = parseYaml(readFileSync('test/fixtures/tiny-train.yaml', 'utf8')) as Record<string, any>;
  d.training.max_train_steps = STEPS;
  d.training.validation_steps = 5; // sample grids during the run: they must not disturb training
  config = join(root, 'tiny.yaml');
  writeFileSync(config, toYaml(d));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

/**
 * `npx tsx lib/cli/tim.ts train ...` in its own process group (npx and tsx start children), or with
 * `direct`, `node --import tsx ...`: one process, for signals aimed at the trainer itself.
 */
function train(args: string[], direct = false): { child: ChildProcess; done: Promise<{ code: number | null; signal: string | null; stderr: string }> } {
  const cmd = direct ? [process.execPath, '--import', 'tsx'] : ['npx', 'tsx'];
  const child = spawn(cmd[0]!, [...cmd.slice(1), 'lib/cli/tim.ts', 'train', ...args], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString(); });
  child.stdout!.resume();
  const done = new Promise<{ code: number | null; signal: string | null; stderr: string }>((res) => {
    child.on('exit', (code, signal) => res({ code, signal, stderr }));
  });
  return { child, done };
}

function files(dir: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const f of ['model', 'ema', 'optimizer']) out[f] = readFileSync(join(dir, `${f}.safetensors`));
  return out;
}

describe('tim train (process)', () => {
  it('killed after its first checkpoint and resumed: the same final bytes as an uninterrupted run', async () => {
    const a = join(root, 'a'), b = join(root, 'b');
    const full = await train(['--config', config, '--out', a]).done;
    expect(full.code, full.stderr).toBe(0);
    expect(full.stderr).toContain(`step ${STEPS}/${STEPS} [100%]`);

    const killed = train(['--config', config, '--out', b]);
    const first = join(b, 'checkpoints', '2', 'state.json');
    const t0 = Date.now();
    while (!existsSync(first)) {
      if (Date.now() - t0 > 120_000) throw new Error('no checkpoint within 2 minutes');
      await new Promise((r) => setTimeout(r, 25));
    }
    process.kill(-killed.child.pid!, 'SIGKILL'); // the whole group: npx, tsx and node
    const k = await killed.done;
    expect(k.signal).toBe('SIGKILL');
    const left = readdirSync(join(b, 'checkpoints')).filter((n) => /^\d+$/.test(n)).map(Number);
    // the kill landed mid-run (else this test proves nothing)
    expect(Math.max(...left)).toBeLessThan(STEPS);

    const resumed = await train(['--config', config, '--out', b, '--resume', 'latest']).done;
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/resumed at step \d+ from/);
    const fa = files(join(a, 'checkpoints', String(STEPS)));
    const fb = files(join(b, 'checkpoints', String(STEPS)));
    for (const k of Object.keys(fa)) expect(fb[k]!.equals(fa[k]!), `${k}.safetensors differs`).toBe(true);
    // checkpoints_total_limit 2: only the newest two remain, no temporaries
    expect(readdirSync(join(b, 'checkpoints')).sort()).toEqual(['10', '8']);
    // the log reads as one run: steps 1..10 once each, the same losses
    const la = readFileSync(join(a, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const lb = readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lb.map((m) => m.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(lb.map((m) => [m.loss_weighted, m.loss_denoising, m.lr, m.grad_norm])).toEqual(la.map((m) => [m.loss_weighted, m.loss_denoising, m.lr, m.grad_norm]));
    // sample grids at 5 and 10, byte-identical too
    for (const s of ['0000005_steps1.png', '0000010_steps2.png']) {
      expect(readFileSync(join(b, 'samples', s)).equals(readFileSync(join(a, 'samples', s)))).toBe(true);
    }
  }, 600_000);

  it('SIGTERM: the trainer stops between steps with a checkpoint, exits 143, and resuming gives the same bytes', async () => {
    const a = join(root, 'a'), c = join(root, 'c');
    const run = train(['--config', config, '--out', c], true);
    const t0 = Date.now();
    while (!existsSync(join(c, 'checkpoints', '2', 'state.json'))) {
      if (Date.now() - t0 > 120_000) throw new Error('no checkpoint within 2 minutes');
      await new Promise((r) => setTimeout(r, 25));
    }
    process.kill(run.child.pid!, 'SIGTERM');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(143);
    expect(r.stderr).toContain('SIGTERM: stopping');
    const steps = readdirSync(join(c, 'checkpoints')).filter((n) => /^\d+$/.test(n)).map(Number);
    const last = Math.max(...steps);
    expect(last).toBeLessThan(STEPS);
    // the stop wrote a checkpoint of the step it stopped at (also when that is no checkpointing step)
    const logged = readFileSync(join(c, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step as number);
    expect(last).toBe(logged[logged.length - 1]);
    const resumed = await train(['--config', config, '--out', c, '--resume', 'latest']).done;
    expect(resumed.code, resumed.stderr).toBe(0);
    const fa = files(join(a, 'checkpoints', String(STEPS)));
    const fc = files(join(c, 'checkpoints', String(STEPS)));
    for (const k of Object.keys(fa)) expect(fc[k]!.equals(fa[k]!), `${k}.safetensors differs`).toBe(true);
  }, 600_000);

  it('usage errors exit 2, run errors exit 1, both with a message', async () => {
    const err: string[] = [];
    const run = (argv: string[]) => main(argv, () => {}, (s) => err.push(s));
    expect(await run(['train', '--out', join(root, 'x')])).toBe(2);
    expect(err.pop()).toMatch(/--config <yaml> is required/);
    expect(await run(['train', '--config', config])).toBe(2);
    expect(err.pop()).toMatch(/--out <dir> is required/);
    expect(await run(['train', '--config', config, '--out', join(root, 'x'), '--max-steps', 'ten'])).toBe(2);
    expect(err.pop()).toMatch(/--max-steps must be an integer/);
    expect(await run(['train', '--config', config, '--out', join(root, 'x'), '--precision', 'fp8'])).toBe(2);
    expect(await run(['train', '--config', join(root, 'nope.yaml'), '--out', join(root, 'x')])).toBe(1);
    expect(err.pop()).toMatch(/cannot read training config .*\[E_IO\]/);
    expect(await run(['train', '--config', config, '--out', join(root, 'x'), '--resume', '7'])).toBe(1);
    expect(err.pop()).toMatch(/not a complete checkpoint/);
    const out: string[] = [];
    expect(await main(['train', '--help'], (s) => out.push(s))).toBe(0);
    expect(out.join('\n')).toContain('--resume');
  });
});

/**
 * The `tim` CLI (lib/cli/tim.ts), run as a user runs it (through `npx tsx`, the TypeScript twin of
 * the `tim` bin): help, `info` (per-part parameter counts against the official figures), `convert`
 * between .safetensors / .bin / .pt, and exit status 2 with a message for bad usage.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { parameterCounts } from '../lib/tim/network/index.js';
import { maxAbsDiff, repoRoot } from './helpers/golden_adamw.js';
import { PYTHON } from './helpers/python.js';

const GOLDEN = path.join(repoRoot, 'test', 'fixtures', 'golden', 'forward');
const WEIGHTS = path.join(GOLDEN, 'weights.safetensors');
let dir: string;

/**
 * Runs the CLI without blocking this worker's event loop (a synchronous child would starve
 * vitest's worker RPC for the seconds tsx takes to start).
 */
function tim(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', path.join(repoRoot, 'lib', 'cli', 'tim.ts'), ...args], {
      cwd: repoRoot,
      env: { ...process.env, OMP_NUM_THREADS: '1' },
      timeout: 120_000,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tim-cli-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('tim CLI', () => {
  it('the entry has a node shebang (the bin is dist/cli/tim.js)', async () => {
    expect(readFileSync(path.join(repoRoot, 'lib', 'cli', 'tim.ts'), 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(pkg.bin.tim).toBe('./dist/cli/tim.js');
  });

  it('--help lists the commands; per-command help; no command is a usage error', async () => {
    const h = await tim('--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/Usage: tim <command>/);
    expect(h.stdout).toMatch(/^\s+info\s+<preset\|file>/m);
    expect(h.stdout).toMatch(/^\s+convert\s+<in> <out>/m);
    const c = await tim('convert', '--help');
    expect(c.status).toBe(0);
    expect(c.stdout).toMatch(/Usage: tim convert <in> <out> \[options\]/);
    expect(c.stdout).toMatch(/--config <preset\|file>/);
    expect((await tim()).status).toBe(2);
  });

  it('bad usage exits 2 with a clear message', async () => {
    const cases: [string[], RegExp][] = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['info', '--bogus', 'TiM-B/4'], /unknown option '--bogus'/],
      [['info'], /missing argument/],
      [['info', 'TiM-B/4', 'extra'], /unexpected argument 'extra'/],
      [['info', 'TiM-B/4', '--config'], /'--config' needs a value/],
      [['convert', WEIGHTS, path.join(dir, 'x.npz')], /cannot tell the output format/],
    ];
    // Independent runs: two at a time (the machine has few cores).
    const results: Awaited<ReturnType<typeof tim>>[] = [];
    for (let i = 0; i < cases.length; i += 2) results.push(...(await Promise.all(cases.slice(i, i + 2).map(([args]) => tim(...args)))));
    for (const [i, [args, msg]] of cases.entries()) {
      const r = results[i]!;
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.stdout).toBe('');
    }
  });

  it('info TiM-XL/2 prints per-part counts: 664M without the projector, as the official README', async () => {
    const r = await tim('info', 'TiM-XL/2');
    expect(r.status).toBe(0);
    const row = (name: string): number => Number(new RegExp(`^\\s+${name}\\s+([\\d,]+)`, 'm').exec(r.stdout)![1]!.replace(/,/g, ''));
    // The official model's counts (eager reference built from the official code; docs/network.md).
    expect(row('x_embedder')).toBe(19_584);
    expect(row('t_embedder')).toBe(1_624_320);
    expect(row('delta_embedder')).toBe(1_624_320);
    expect(row('y_embedder')).toBe(1_153_152);
    expect(row('blocks')).toBe(657_030_528);
    expect(row('projector')).toBe(8_131_328);
    expect(row('final_layer')).toBe(2_676_112);
    expect(row('total')).toBe(672_259_344);
    expect(row('without projector')).toBe(664_128_016);
    expect(r.stdout).toMatch(/TiM-XL\/2-256 \(preset\)/);
  });

  it('info --json on presets agrees with parameterCounts (T2I 865M, B/4)', async () => {
    for (const [name, without] of [['TiM-T2I', 864_978_080], ['TiM-B/4', 128_828_224]] as const) {
      const r = await tim('info', name, '--json');
      expect(r.status).toBe(0);
      const j = JSON.parse(r.stdout) as { counts: { total: number; withoutProjector: number; parts: Record<string, number> } };
      expect(j.counts).toEqual(parameterCounts(name));
      expect(j.counts.withoutProjector).toBe(without);
    }
  });

  it('info on a checkpoint counts its tensors and checks them against its config', async () => {
    const r = await tim('info', WEIGHTS);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/shapes match the config's architecture/);
    expect(r.stdout).toMatch(/^\s+total\s+411,200/m);
    // The wrong config: reported, exit 1.
    const bad = await tim('info', WEIGHTS, '--config', 'TiM-B/4');
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/do NOT match/);
  });

  it('convert .safetensors -> .pt -> .bin -> .safetensors keeps every weight; Python reads the .bin', async () => {
    const pt = path.join(dir, 'm.pt');
    const bin = path.join(dir, 'm.bin');
    const st = path.join(dir, 'm.safetensors');
    expect((await tim('convert', WEIGHTS, pt)).status).toBe(0);
    expect((await tim('convert', pt, bin)).stderr).toMatch(/--allow-torchscript.*E_UNSAFE/s); // code: only on opt-in
    const a = await tim('convert', pt, bin, '--allow-torchscript');
    expect(a.status).toBe(0);
    expect(a.stdout).toMatch(/411,200 parameters/);
    // A .bin has no config inside: without one, a clear runtime error (exit 1).
    const noCfg = await tim('convert', bin, st);
    expect(noCfg.status).toBe(1);
    expect(noCfg.stderr).toMatch(/holds no config.*E_CONFIG/s);
    const cfg = path.join(dir, 'network.json');
    const meta = torch.loadSafetensors(WEIGHTS).metadata!;
    writeFileSync(cfg, meta.config!);
    expect((await tim('convert', bin, st, '--config', cfg)).status).toBe(0);
    const got = torch.loadSafetensors(st, { lazy: false });
    const ref = torch.load(WEIGHTS, { lazy: false });
    try {
      expect(Object.keys(got.tensors).sort()).toEqual(Object.keys(ref).sort());
      for (const k of Object.keys(ref)) expect(maxAbsDiff(got.tensors[k]!, ref[k]!), k).toBe(0);
      expect(JSON.parse(got.metadata!.config!)).toMatchObject(JSON.parse(meta.config!));
    } finally {
      for (const t of [...Object.values(got.tensors), ...Object.values(ref)]) t.dispose();
    }
    const py = spawnSync(PYTHON, ['-c', `import torch\nsd = torch.load(${JSON.stringify(bin)})\nprint(len(sd), sum(v.numel() for v in sd.values()))`], { encoding: 'utf8' });
    expect(py.stdout.trim()).toBe('109 411200');
  });
});

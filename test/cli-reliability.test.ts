/**
 * CLI failure cases: `tim convert --non-strict` lists missing and unexpected keys, keeps the
 * official init for the missing ones (never uninitialised memory) and refuses a file in which no
 * key matches; `tim info` on a valid safetensors file of 300k top-level tensors prints a bounded
 * table (it overflowed the call stack); `tim sample` says up front what the run takes and streams
 * its samples file to disk batch by batch (it held every image in memory), the file reading back
 * as before.
 */
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, rmSync, statSync, writeFileSync, writeSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, torch } from '../lib/index.js';
import { main } from '../lib/cli/tim.js';
import { parseArgs } from '../lib/cli/args.js';
import { SAMPLE, runSample } from '../lib/cli/sample.js';
import { readSamples } from '../lib/tim/eval/evaluate.js';

const FIXTURE = 'test/fixtures/tiny-train.yaml';
const dir = mkdtempSync(join(tmpdir(), 'tim-cli-rel-'));

async function cli(...args: string[]): Promise<{ code: number; err: string; out: string }> {
  const err: string[] = [], out: string[] = [];
  const code = await main(args, (s) => out.push(s), (s) => err.push(s));
  return { code, err: err.join('\n'), out: out.join('\n') };
}

/** Captures what convert writes to stderr (its key lists). */
async function withStderr<T>(fn: () => Promise<T>): Promise<{ r: T; stderr: string }> {
  const orig = process.stderr.write.bind(process.stderr);
  let stderr = '';
  process.stderr.write = ((s: string | Uint8Array) => { stderr += String(s); return true; }) as typeof process.stderr.write;
  try {
    return { r: await fn(), stderr };
  } finally {
    process.stderr.write = orig;
  }
}

function allFinite(rec: Record<string, { isfinite(): any }>): boolean {
  return torch.scope(() => Object.values(rec).every((t) => Number((t as any).isfinite().logicalNot().sum().item()) === 0));
}

beforeAll(() => {
  torch.manualSeed(3);
  using m = TiM.fromOfficialConfig(FIXTURE);
  m.save(join(dir, 'tiny.safetensors'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('tim convert --non-strict', () => {
  it('no matching key: exit 1 (E_STATE_DICT), nothing written', async () => {
    const other = join(dir, 'other.safetensors');
    torch.scope(() => torch.save({ 'foo.weight': torch.ones([3]), 'bar.bias': torch.ones([2]) }, other));
    const out = join(dir, 'other-out.safetensors');
    const { r } = await withStderr(() => cli('convert', other, out, '--config', FIXTURE, '--non-strict'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/none of the 2 tensors .* is a parameter of this network.*\[E_STATE_DICT\]/);
    expect(existsSync(out)).toBe(false);
  });

  it('some keys missing: listed with the unexpected ones; the output is finite, missing ones at the official init', async () => {
    const src = torch.loadSafetensors(join(dir, 'tiny.safetensors'), { lazy: false });
    const partial: Record<string, any> = { ...src.tensors };
    const dropped = ['final_layer.linear.weight', 'blocks.0.attn.qkv.weight'].filter((k) => k in partial);
    expect(dropped.length).toBe(2);
    for (const k of dropped) delete partial[k];
    partial['stray.tensor'] = torch.ones([4]);
    const inPath = join(dir, 'partial.safetensors');
    torch.save(partial, inPath, src.metadata!);
    partial['stray.tensor'].dispose();
    const out = join(dir, 'partial-out.safetensors');
    const { r, stderr } = await withStderr(() => cli('convert', inPath, out, '--non-strict'));
    expect(r.code, r.err).toBe(0);
    expect(stderr).toMatch(/2 missing key\(s\), left at the official init: .*final_layer\.linear\.weight/);
    expect(stderr).toMatch(/blocks\.0\.attn\.qkv\.weight/);
    expect(stderr).toMatch(/1 unexpected key\(s\), not converted: stray\.tensor/);
    const got = torch.loadSafetensors(out, { lazy: false });
    try {
      expect(allFinite(got.tensors)).toBe(true);
      // the official init zeroes the final layer (docs/network.md)
      expect(torch.scope(() => got.tensors['final_layer.linear.weight']!.abs().sum().item())).toBe(0);
      // the rest is the file's
      expect(torch.scope(() => got.tensors['x_embedder.proj.weight']!.sub(src.tensors['x_embedder.proj.weight']!).abs().max().item())).toBe(0);
    } finally {
      for (const t of [...Object.values(got.tensors), ...Object.values(src.tensors)]) t.dispose();
    }
    // strict (the default) still refuses it
    const strict = await cli('convert', inPath, join(dir, 'strict-out.safetensors'));
    expect(strict.code).toBe(1);
    expect(strict.err).toMatch(/E_STATE_DICT/);
  });
});

describe('tim info', () => {
  it('a valid safetensors file of 300,000 top-level tensors: a bounded table, no stack overflow', async () => {
    const n = 300_000;
    const header: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) header[`t${i}`] = { dtype: 'F32', shape: [1], data_offsets: [4 * i, 4 * i + 4] };
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    const p = join(dir, 'many.safetensors');
    const fd = openSync(p, 'w');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json));
    writeSync(fd, Buffer.alloc(4 * n));
    closeSync(fd);
    const r = await cli('info', p);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/\(299,960 more parts\)\s+299,960/);
    expect(r.out).toMatch(/total\s+300,000/);
    expect(r.out.split('\n').length).toBeLessThan(60);
  }, 120_000);
});

describe('tim sample', () => {
  it('says what the run takes up front and streams the samples file batch by batch', async () => {
    const run = join(dir, 'run');
    mkdirSync(join(run, 'checkpoints', '1'), { recursive: true });
    copyFileSync(FIXTURE, join(run, 'config.yaml'));
    copyFileSync(join(dir, 'tiny.safetensors'), join(run, 'checkpoints', '1', 'ema.safetensors'));
    writeFileSync(join(run, 'checkpoints', '1', 'state.json'), JSON.stringify({ format: 'tim-torch.train', version: 1, step: 1 }));
    const out = join(dir, 'samples');
    const lines: string[] = [];
    const seen: number[] = [];
    const p = parseArgs(['--ckpt', run, '--out', out, '--class', '0,1', '--n', '6', '--steps', '1', '--batch', '4'], SAMPLE);
    let printed = '';
    const code = await runSample(p, (s) => { printed = s; }, (s) => {
      lines.push(s);
      // while sampling, the file grows on disk (a temporary, published at the end)
      const tmp = existsSync(out) ? readdirSync(out).find((f) => f.startsWith('.nfe-1.safetensors.')) : undefined;
      if (tmp && /images \[/.test(s)) seen.push(statSync(join(out, tmp)).size);
    });
    expect(code).toBe(0);
    const text = lines.join('');
    expect(text).toMatch(/12 images per step count; memory about [\d.]+ GB per batch of 4 \(images are streamed to disk\); samples files [\d.]+ GB each/);
    // 12 images of 1×32×32 float32 in batches of 4: the file grew by 4 images at each batch
    const img = 32 * 32 * 4;
    expect(seen.length).toBe(3);
    expect(seen[1]! - seen[0]!).toBe(4 * img);
    expect(seen[2]! - seen[1]!).toBe(4 * img);
    expect(readdirSync(out).filter((f) => f.startsWith('.'))).toEqual([]);
    // and it reads back as the samples file it always was
    const samples = join(out, 'nfe-1.safetensors');
    expect(JSON.parse(printed).nfe[0].samples).toBe(samples);
    const s = readSamples(samples);
    try {
      expect(s.images.shape).toEqual([12, 1, 32, 32]);
      expect(Array.from(s.labels!.toTypedArray() as BigInt64Array, Number)).toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
      expect(allFinite({ images: s.images })).toBe(true);
    } finally {
      s.images.dispose();
      s.labels?.dispose();
    }
    const meta = torch.loadSafetensors(samples).metadata!;
    expect(meta.format).toBe('tim-torch.samples');
    expect(meta.n).toBe('6');
  });
});

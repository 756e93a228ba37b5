/**
 * `tim eval` beyond MNIST (lib/tim/eval/sources.ts, evaluate.ts): 1000-class RGB samples read from
 * an .npz (the ADM sample batch), a `tim sample --num` run folder (PNGs + run.json labels) and a
 * safetensors file give the same FD on a TorchScript extractor against reference images (--ref) or
 * statistics; identical sets give FD 0; the MNIST classifier is neither trained nor used for them (no
 * floor, no class accuracy, said why); and the errors for missing references, mixed sizes and bad
 * flags are clear.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { runTim } from './helpers/cli.js';
import { encodePngHost } from '../lib/torch/io/image.js';
import { writeNpzUint8 } from '../lib/torch/io/npz.js';
import { evaluateSamples } from '../lib/tim/eval/evaluate.js';
import { imageName } from '../lib/cli/sample_run.js';

const dir = mkdtempSync(join(tmpdir(), 'tim-eval-sources-'));
const cache = join(dir, 'cache');
const N = 24, S = 16;
const exPath = join(dir, 'toy.pt');

/** N deterministic RGB images S x S (uint8 HWC), `shift` changes their statistics. */
function images(seed: number, shift: number): Uint8Array[] {
  return Array.from({ length: N }, (_, i) => {
    const d = new Uint8Array(S * S * 3);
    for (let p = 0; p < S * S; p++) for (let c = 0; c < 3; c++) {
      d[p * 3 + c] = Math.max(0, Math.min(255, Math.floor(128 + shift + 100 * Math.sin((p + 7 * i + 13 * c + seed) / 9))));
    }
    return d;
  });
}
const labels = Array.from({ length: N }, (_, i) => (i * 97) % 1000); // ImageNet-style: up to 999

function writeFolder(at: string, imgs: Uint8Array[]): void {
  mkdirSync(join(at, 'images'), { recursive: true });
  imgs.forEach((d, i) => writeFileSync(join(at, 'images', imageName(i, N)), encodePngHost({ width: S, height: S, channels: 3, data: d })));
  writeFileSync(join(at, 'run.json'), JSON.stringify({ format: 'tim-torch.sample-run', version: 1, settings: {}, labels }));
}
function writeNpz(at: string, imgs: Uint8Array[]): void {
  writeNpzUint8(at, [N, S, S, 3], (put) => imgs.forEach((d) => put(d)));
}

beforeAll(() => {
  torch.manualSeed(5);
  const ex = torch.jit.createModule('ToyExtractor');
  const w = torch.randn([12, 3, 3, 3]).mul(0.3);
  ex.registerParameter('w', w, false);
  w.dispose();
  ex.define(`
def forward(self, x: Tensor) -> Tensor:
    h = torch.tanh(torch.conv2d(x, self.w, None, [2, 2]))
    return torch.mean(h, [2, 3], True)
`);
  ex.save(exPath);
  ex.dispose();
  const a = images(1, 0), b = images(2, 20);
  writeFolder(join(dir, 'run-a'), a);
  writeNpz(join(dir, 'a.npz'), a);
  writeNpz(join(dir, 'b.npz'), b);
  torch.scope(() => {
    const t = torch.stack(a.map((d) => torch.fromBuffer(d, 'uint8', [S, S, 3], { copy: true })), 0).permute(0, 3, 1, 2).float().div(127.5).sub(1);
    torch.save({ images: t.contiguous(), labels: torch.tensor(labels, { dtype: 'int64' }) }, join(dir, 'a.safetensors'));
  });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tim = (...args: string[]): ReturnType<typeof runTim> => runTim('eval', ...args);

describe('tim eval: image folders, .npz, 1000 classes', () => {
  it('the same images as an .npz, a run folder and a safetensors file give the same FD against --ref', () => {
    const opts = { features: exPath, ref: join(dir, 'b.npz'), cacheDir: cache, batchSize: 7 };
    const fromNpz = evaluateSamples(join(dir, 'a.npz'), opts);
    const fromFolder = evaluateSamples(join(dir, 'run-a'), opts);
    const fromImagesDir = evaluateSamples(join(dir, 'run-a', 'images'), opts);
    const fromFile = evaluateSamples(join(dir, 'a.safetensors'), opts);
    expect(fromNpz.n).toBe(N);
    expect(fromNpz.featureDim).toBe(12);
    expect(fromNpz.fd).toBeGreaterThan(1e-3);
    for (const r of [fromFolder, fromImagesDir, fromFile]) expect(Math.abs(r.fd - fromNpz.fd)).toBeLessThan(1e-9 * Math.max(1, fromNpz.fd));
    // no MNIST classifier: not trained, no floor, no accuracy (with the reason)
    for (const r of [fromNpz, fromFolder, fromFile]) {
      expect(r.classifier).toBeNull();
      expect(r.floor).toBeNull();
      expect(r.classAccuracy).toBeNull();
      expect(r.classAccuracyNote).toMatch(/MNIST-shaped/);
    }
    expect(fromNpz.reference).toEqual({ source: join(dir, 'b.npz'), n: N });
    // precision/recall against the --ref images' features: the same from every form, in [0, 1]
    for (const r of [fromFolder, fromImagesDir, fromFile]) expect([r.precision, r.recall]).toEqual([fromNpz.precision, fromNpz.recall]);
    for (const v of [fromNpz.precision, fromNpz.recall]) {
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThanOrEqual(1);
    }
    // a set against itself: FD 0 up to rounding, precision = recall = 1
    const self = evaluateSamples(join(dir, 'a.npz'), { ...opts, ref: join(dir, 'run-a') });
    expect(Math.abs(self.fd)).toBeLessThan(1e-6);
    expect([self.precision, self.recall]).toEqual([1, 1]);
  });

  it('the CLI takes a folder with 1000-class labels and prints the FD; missing references and bad inputs are clear errors', async () => {
    const ok = await tim('--samples', join(dir, 'run-a'), '--features', exPath, '--ref', join(dir, 'b.npz'), '--cache', cache, '--json');
    expect(ok.code, ok.err).toBe(0);
    const r = JSON.parse(ok.out);
    expect(r.n).toBe(N);
    expect(r.fd).toBeGreaterThan(0);
    const table = await tim('--samples', join(dir, 'a.npz'), '--features', exPath, '--ref', join(dir, 'b.npz'), '--cache', cache);
    expect(table.out).toMatch(/class accuracy\s+- \(class accuracy uses the MNIST classifier/);

    let e = await tim('--samples', join(dir, 'a.npz'), '--cache', cache);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/needs images \(N, 1, 32, 32\), got \[24, 3, 16, 16\].*--features.*\[E_SHAPE\]/);
    e = await tim('--samples', join(dir, 'a.npz'), '--features', exPath, '--cache', cache);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/not MNIST's.*--ref-stats.*--ref.*\[E_CONFIG\]/);
    e = await tim('--samples', join(dir, 'a.npz'), '--features', exPath, '--ref', join(dir, 'b.npz'), '--ref-stats', join(dir, 'x.safetensors'));
    expect(e.code).toBe(2);
    expect(e.err).toMatch(/two references/);
    e = await tim('--samples', join(dir, 'nothing-here'), '--features', exPath, '--ref', join(dir, 'b.npz'), '--cache', cache);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/no file at .*nothing-here \[E_IO\]/);
    const mixed = join(dir, 'mixed');
    mkdirSync(mixed);
    writeFileSync(join(mixed, 'a.png'), encodePngHost({ width: S, height: S, channels: 3, data: images(1, 0)[0]! }));
    writeFileSync(join(mixed, 'b.png'), encodePngHost({ width: 8, height: 8, channels: 3, data: new Uint8Array(8 * 8 * 3) }));
    e = await tim('--samples', mixed, '--features', exPath, '--ref', join(dir, 'b.npz'), '--cache', cache);
    expect(e.code).toBe(1);
    expect(e.err).toMatch(/b\.png' is 8x8.*every image must have one size \[E_SHAPE\]/);
  });
});

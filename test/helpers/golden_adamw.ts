/**
 * The golden AdamW case (test/fixtures/golden/adamw, computed by the official TiM code under torch 1.13),
 * read in place with torch.loadSafetensors, and Python snippets that read/write safetensors files so
 * that Python references can use the very same tensors (exact float32 bytes, no JSON trip).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { torch } from '../../lib/index.js';
import type { Tensor } from '../../lib/torch/tensor.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ADAMW_DIR = join(repoRoot, 'test', 'fixtures', 'golden', 'adamw');

export interface GoldenAdamW {
  /** parameter names in the order the case lists them */
  names: string[];
  weights: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
  config: { optimizer_params: { lr: number; betas: [number, number]; eps: number; weight_decay: number }; max_grad_norm: number; clipping_active: boolean };
  dispose(): void;
}

export function loadGoldenAdamW(): GoldenAdamW {
  const config = JSON.parse(readFileSync(join(ADAMW_DIR, 'case.json'), 'utf8')) as GoldenAdamW['config'] & { outputs: Record<string, unknown> };
  const names = Object.keys(config.outputs).filter((k) => k.startsWith('grad/')).map((k) => k.slice('grad/'.length));
  const weights = torch.load(join(ADAMW_DIR, 'weights.safetensors'), { lazy: false });
  const outputs = torch.load(join(ADAMW_DIR, 'outputs.safetensors'), { lazy: false });
  return {
    names, weights, outputs, config,
    dispose() {
      for (const t of [...Object.values(weights), ...Object.values(outputs)]) t.dispose();
    },
  };
}

/** max |a - b| over all elements. */
export function maxAbsDiff(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  return torch.scope(() => (a.numel === 0 ? 0 : a.sub(b).abs().max().item()));
}

/** Python: st_read(path) -> {name: tensor}, st_write(path, {name: tensor}) (float32/int64). */
export const PY_SAFETENSORS = `
import struct
def st_read(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    res = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']
        dt = {'F32': torch.float32, 'I64': torch.int64}[v['dtype']]
        res[k] = torch.frombuffer(bytearray(data[a:b]), dtype=dt).reshape(v['shape']).clone()
    return res
def st_write(path, d):
    hdr, blobs, off = {}, [], 0
    for k, t in d.items():
        t = t.detach().contiguous().float()
        b = t.numpy().tobytes()
        hdr[k] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs: f.write(b)
`;

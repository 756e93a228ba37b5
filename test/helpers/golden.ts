/**
 * Reading a golden case (test/fixtures/golden/<case>, computed by the official TiM code) in place:
 * its case.json and its inputs/outputs safetensors, via torch.load.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { torch } from '../../lib/index.js';
import type { Tensor } from '../../lib/torch/tensor.js';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Copied byte-for-byte from the project's shared/golden (see its README.md there): a clone has no ../shared. */
export const GOLDEN_DIR = join(repoRoot, 'test', 'fixtures', 'golden');

export interface GoldenCase {
  /** case.json */
  meta: Record<string, any>;
  inputs: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
  /** frees inputs and outputs */
  dispose(): void;
}

/** Loads a case; its tensors are the caller's (dispose() frees them). */
export function loadGolden(name: string): GoldenCase {
  const dir = join(GOLDEN_DIR, name);
  const meta = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as Record<string, any>;
  const inputs = torch.load(join(dir, 'inputs.safetensors'), { lazy: false });
  const outputs = torch.load(join(dir, 'outputs.safetensors'), { lazy: false });
  return {
    meta, inputs, outputs,
    dispose() {
      for (const t of [...Object.values(inputs), ...Object.values(outputs)]) t.dispose();
    },
  };
}

/** A named tensor of a record, failing the test (not throwing undefined errors later) when absent. */
export function get(rec: Record<string, Tensor>, name: string): Tensor {
  const t = rec[name];
  expect(t, `tensor '${name}'`).toBeDefined();
  return t!;
}

/** max |a − b| over all elements; shapes must be equal (no broadcasting hides a wrong shape). */
export function maxAbsDiff(a: Tensor, b: Tensor): number {
  expect(a.shape, 'shape').toEqual(b.shape);
  return torch.scope(() => (a.numel === 0 ? 0 : a.double().sub(b.double()).abs().max().item()));
}

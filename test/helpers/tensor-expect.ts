/**
 * Assertions for tensor tests: compare a Tensor with a Python reference (PyTensor) or plain values,
 * and check that a test body frees every tensor it creates.
 */
import { expect } from 'vitest';
import { torch } from '../../lib/index.js';
import type { PyTensor } from './python.js';

type Tensor = torch.Tensor;

export interface CloseOptions {
  rtol?: number;
  atol?: number;
  /** compare values only, not the dtype */
  ignoreDtype?: boolean;
}

const TOL: Record<string, [number, number]> = {
  float64: [1e-12, 1e-12],
  float32: [1e-5, 1e-6],
  float16: [2e-3, 1e-3],
  bfloat16: [1e-2, 1e-2],
};

/** t has ref's dtype, shape and values (NaN matches NaN, ±Infinity exact, floats within tolerance). */
export function expectTensor(t: Tensor, ref: PyTensor | { dtype?: string; shape?: number[]; data: unknown }, o: CloseOptions = {}): void {
  const dtype = t.dtype;
  if (!o.ignoreDtype && ref.dtype !== undefined) expect(dtype, 'dtype').toBe(ref.dtype);
  const shape = ref.shape ?? inferShape(ref.data);
  expect(t.shape, 'shape').toEqual(shape);
  const [rtol, atol] = [o.rtol ?? TOL[dtype]?.[0] ?? 0, o.atol ?? TOL[dtype]?.[1] ?? 0];
  const got = flatten(t.toArray());
  const want = flatten(ref.data);
  expect(got.length, 'number of elements').toBe(want.length);
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    if (typeof w === 'boolean' || typeof g === 'boolean') {
      expect(g, `element ${i}`).toBe(w);
    } else if (Number.isNaN(w)) {
      expect(Number.isNaN(g as number), `element ${i} is NaN (got ${String(g)})`).toBe(true);
    } else if (!Number.isFinite(w as number) || (rtol === 0 && atol === 0)) {
      expect(g, `element ${i}`).toBe(w);
    } else {
      const diff = Math.abs((g as number) - (w as number));
      const ok = diff <= atol + rtol * Math.abs(w as number);
      if (!ok) expect(g, `element ${i}: |${String(g)} - ${String(w)}| > ${atol} + ${rtol}*|want|`).toBe(w);
    }
  }
}

function inferShape(d: unknown): number[] {
  const s: number[] = [];
  while (Array.isArray(d)) {
    s.push(d.length);
    d = d[0];
  }
  return s;
}

function flatten(x: unknown): unknown[] {
  if (!Array.isArray(x)) return [x];
  const out: unknown[] = [];
  const rec = (v: unknown): void => {
    if (Array.isArray(v)) for (const e of v) rec(e);
    else out.push(v);
  };
  rec(x);
  return out;
}

/** Wraps a test body: runs it in torch.scope and asserts the live-tensor count is back to where it was. */
export function scoped(fn: () => void): () => void {
  return () => {
    const before = torch.memory().liveTensors;
    torch.scope(fn);
    expect(torch.memory().liveTensors, 'live tensors after the scope').toBe(before);
  };
}

/** Calls fn and returns what it threw (fails the test if nothing was thrown). */
export function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected an error, none was thrown');
}

/** fn throws an error of class `cls` with `code` (any code when omitted). */
export function expectError(fn: () => unknown, cls: abstract new (...a: never[]) => Error, code?: string): void {
  const e = thrown(fn);
  expect(e, `${e.constructor.name}: ${e.message}`).toBeInstanceOf(cls);
  if (code !== undefined) expect(e.code, e.message).toBe(code);
  else expect(typeof e.code, 'errors carry a code').toBe('string');
}

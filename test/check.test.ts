/**
 * lib/torch/check.ts: the one set of argument asserters used at public entry points. Each throws the
 * project's typed errors (class, code) with a message naming the owner, the parameter and the value.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import * as check from '../lib/torch/check.js';
import { thrown } from './helpers/tensor-expect.js';

type Err = Error & { code?: string };
const err = (fn: () => unknown): Err => thrown(fn) as Err;

describe('check', () => {
  it('predicates', () => {
    expect(check.isObject({})).toBe(true);
    expect(check.isObject([])).toBe(false);
    expect(check.isObject(null)).toBe(false);
    expect(check.isFiniteNumber(1)).toBe(true);
    expect(check.isFiniteNumber(NaN)).toBe(false);
    expect(check.isInteger(2)).toBe(true);
    expect(check.isInteger(2.5)).toBe(false);
    torch.scope(() => {
      const a = torch.zeros([2, 3]);
      expect(check.isTensor(a)).toBe(true);
      expect(check.isSameShape(a, torch.ones([2, 3]))).toBe(true);
      expect(check.isSameShape(a, torch.ones([3, 2]))).toBe(false);
    });
  });

  it('knownKeys refuses non-objects (arrays too) and unknown keys', () => {
    expect(check.knownKeys({ a: 1 }, ['a'], 'Own')).toEqual({ a: 1 });
    for (const v of [null, 3, 'x', [1]]) {
      const e = err(() => check.knownKeys(v as object, ['a'], 'Own'));
      expect(e).toBeInstanceOf(TypeError);
      expect(e.code).toBe('E_ARG');
      expect(e.message).toMatch(/^Own: options must be an object, got /);
    }
    const e = err(() => check.knownKeys({ pmean: 1 }, ['pMean'], 'Own'));
    expect(e.code).toBe('E_OPTION');
    expect(e.message).toBe("Own: unknown option 'pmean' (known: pMean)");
  });

  it('numbers', () => {
    expect(err(() => check.number('1', 'n', 'Own')).message).toBe('Own: n must be a number, got string');
    expect(err(() => check.number('1', 'n', 'Own')).code).toBe('E_ARG');
    const inf = err(() => check.number(Infinity, 'n', 'Own'));
    expect(inf).toBeInstanceOf(RangeError);
    expect(inf.code).toBe('E_RANGE');
    expect(inf.message).toBe('Own: n must be finite, got Infinity');
    expect(err(() => check.positive(0, 'n', 'Own')).message).toBe('Own: n must be > 0, got 0');
    expect(err(() => check.nonNegative(-1, 'n', 'Own')).message).toBe('Own: n must be >= 0, got -1');
    expect(err(() => check.inRange(NaN, 'n', 'Own', 0, 1)).message).toBe('Own: n must be in [0, 1], got NaN');
    expect(check.inRange(1, 'n', 'Own', 0, 1)).toBe(1);
    expect(err(() => check.integer(1.5, 'n', 'Own', 0)).code).toBe('E_ARG');
    expect(err(() => check.integer(-1, 'n', 'Own', 0)).message).toBe('Own: n must be >= 0, got -1');
    expect(err(() => check.integer(9, 'n', 'Own', 0, 8)).message).toBe('Own: n must be <= 8, got 9');
    expect(err(() => check.bool(1, 'b', 'Own')).message).toBe('Own: b must be a boolean, got number');
    const o = err(() => check.oneOf('c', 'k', 'Own', ['a', 'b'] as const));
    expect(o.code).toBe('E_OPTION');
    expect(o.message).toBe("Own: k must be one of 'a', 'b', got c");
  });

  it('tensors', () => {
    torch.scope(() => {
      const e = err(() => check.tensor([1, 2], 'x', 'Own'));
      expect(e.code).toBe('E_ARG');
      expect(e.message).toBe('Own: x must be a Tensor, got an array');
      const d = torch.zeros([2]);
      d.dispose();
      const ed = err(() => check.tensor(d, 'x', 'Own'));
      expect(ed).toBeInstanceOf(torch.TorchError);
      expect(ed.code).toBe('E_DISPOSED');
      const ei = err(() => check.floatTensor(torch.zeros([2], { dtype: 'int64' }), 'x', 'Own'));
      expect(ei.code).toBe('E_DTYPE');
      expect(ei.message).toBe('Own: x must be a floating-point tensor, got int64');
      for (const dt of ['float32', 'float64', 'float16', 'bfloat16'] as const) check.floatTensor(torch.zeros([1], { dtype: dt }), 'x', 'Own');
      const es = err(() => check.sameShape(torch.zeros([2, 3]), torch.zeros([2]), 'F', 'xT', 'Own'));
      expect(es.code).toBe('E_SHAPE');
      expect(es.message).toBe('Own: F [2, 3] must have the shape of xT [2]');
    });
  });
});

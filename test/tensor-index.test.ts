/**
 * Indexing: t.index(...) with numbers, slices (strings and objects, with steps), '...', null, boolean
 * masks and index tensors/arrays; indexPut_; gather / where / indexSelect / maskedFill / scatter.
 * Each case is the same expression in Python's torch (noted beside it).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py } from './helpers/python.js';
import { expectError, expectTensor, scoped } from './helpers/tensor-expect.js';

let R: Record<string, any>;
beforeAll(() => {
  R = py(`
    x = torch.arange(60).reshape(3, 4, 5)
    m = torch.arange(12).reshape(3, 4)
    out['basic'] = [x[1], x[-1], x[1, 2], x[1, 2, 3], x[:, 1], x[..., 2], x[1, ..., 3], x[None], x[:, None, 1],
                    x[..., None], x[1:3], x[::2], x[:, 1::2, ::3], x[-2:], x[:-1, -3:-1], x[0, 1:100], x[5:], x[2:1]]
    out['adv'] = [m[[0, 2]], m[:, [1, 3]], m[[0, 2], [1, 3]], m[torch.tensor([[0, 1], [2, 2]])],
                  x[:, [0, 2], 1], x[[0, 1], :, [1, 2]], x[[0, 2], 1:3], x[..., [0, -1]], m[torch.tensor([-1, 0])]]
    mask = m % 3 == 0
    out['mask'] = [m[mask], m[m > 5], m[torch.tensor([True, False, True])], m[:, torch.tensor([False, True, True, False])],
                   x[torch.tensor([True, False, True])], x[x[:, :, 0] > 20], m[[True, False, True]]]
    def put(f):
        t = torch.arange(12, dtype=torch.float32).reshape(3, 4); f(t); return t
    def p0(t): t[t > 5] = 0
    def p1(t): t[t > 5] = torch.tensor(-1.5)
    def p2(t): t[:, 1] = 7
    def p3(t): t[1] = torch.tensor([1., 2., 3., 4.])
    def p4(t): t[[0, 2], [1, 3]] = torch.tensor([10., 20.])
    def p5(t): t.index_put_((torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3])), torch.tensor([1., 2., 3.]), accumulate=True)
    def p6(t): t[..., 0] = torch.tensor([9., 8., 7.])
    def p7(t): t[::2, 1:3] = 0.5
    def p8(t): t[:, None, 2] = 4
    def p9(t): t[0] += 100
    out['put'] = [put(f) for f in [p0, p1, p2, p3, p4, p5, p6, p7, p8, p9]]
    i = torch.tensor([[0, 0], [1, 0]])
    g = torch.tensor([[1, 2], [3, 4]])
    out['gather'] = [g.gather(1, i), g.gather(0, i), x.gather(-1, torch.tensor([[[4], [3], [2], [1]]] * 3))]
    c = torch.tensor([[True, False], [False, True]])
    out['where'] = [torch.where(c, g, -g), torch.where(c, g, 0.5), torch.where(c, 2.5, g), torch.where(c, 1, 0),
                    torch.where(c, torch.tensor([1.5, 2.5]), torch.tensor([[0.], [1.]])), torch.where(c, g, 9)]  # g.where(c, 9) in JS
    out['select'] = [m.index_select(1, torch.tensor([3, 0])), m.masked_fill(m > 8, -1), m.masked_fill(m < 2, 0.5),
                     m.nonzero(), torch.zeros(3, 4).scatter(1, torch.tensor([[0], [1], [3]]), torch.ones(3, 1)),
                     m.select(1, -1), m[:, 1:4:2]]
  `);
});

const X = (): torch.Tensor => torch.arange(60).reshape(3, 4, 5);
const M = (): torch.Tensor => torch.arange(12).reshape(3, 4);

describe('basic indexing (views)', () => {
  it('numbers, slices, ... and null', scoped(() => {
    const x = X();
    const got = [
      x.index(1), x.index(-1), x.index(1, 2), x.index(1, 2, 3), x.index(':', 1), x.index('...', 2), x.index(1, '...', 3),
      x.index(null), x.index(':', null, 1), x.index('...', null), x.index('1:3'), x.index('::2'),
      x.index(':', '1::2', '::3'), x.index('-2:'), x.index(':-1', '-3:-1'), x.index(0, '1:100'), x.index('5:'), x.index('2:1'),
    ];
    got.forEach((t, i) => expectTensor(t, R.basic[i]));
  }));

  it('slice objects are the same as slice strings', scoped(() => {
    const x = X();
    expectTensor(x.index({ start: 1, stop: 3 }), R.basic[10]);
    expectTensor(x.index({ step: 2 }), R.basic[11]);
    expectTensor(x.index({}, { start: 1, step: 2 }, { step: 3 }), R.basic[12]);
  }));

  it('results share memory with the source', scoped(() => {
    const x = torch.zeros([3, 4]);
    x.index(1).fill_(2);
    x.index(':', '::2').add_(1);
    expect(x.toArray()).toEqual([[1, 0, 1, 0], [3, 2, 3, 2], [1, 0, 1, 0]]);
    // no index at all: an alias of the whole tensor
    x.index().zero_();
    expect(x.sum().item()).toBe(0);
  }));

  it('0-d results and item()', scoped(() => {
    const x = X();
    const e = x.index(2, 3, 4);
    expect([e.shape, e.item()]).toEqual([[], 59]);
    expect(x.index(-1, -1, -1).item()).toBe(59);
  }));
});

describe('advanced indexing', () => {
  it('index arrays and int64 tensors (broadcast together, dims first when split)', scoped(() => {
    const m = M(), x = X();
    const got = [m.index([0, 2]), m.index(':', [1, 3]), m.index([0, 2], [1, 3]), m.index(torch.tensor([[0, 1], [2, 2]])),
      x.index(':', [0, 2], 1), x.index([0, 1], ':', [1, 2]), x.index([0, 2], '1:3'), x.index('...', [0, -1]), m.index(torch.tensor([-1, 0]))];
    got.forEach((t, i) => expectTensor(t, R.adv[i]));
  }));

  it('boolean masks: whole-tensor, per-dim, multi-dim and JS boolean arrays', scoped(() => {
    const m = M(), x = X();
    const mask = m.remainder(3).eq(0);
    const got = [m.index(mask), m.index(m.gt(5)), m.index(torch.tensor([true, false, true])), m.index(':', torch.tensor([false, true, true, false])),
      x.index(torch.tensor([true, false, true])), x.index(x.index(':', ':', 0).gt(20)), m.index([true, false, true])];
    got.forEach((t, i) => expectTensor(t, R.mask[i]));
  }));

  it('advanced results are copies', scoped(() => {
    const m = M();
    m.index([0, 1]).fill_(-1);
    m.index(m.gt(5)).fill_(-1);
    expect(m.min().item()).toBe(0);
  }));
});

describe('indexPut_', () => {
  it('assigns through masks, slices, index tensors, with and without accumulate', scoped(() => {
    const mk = (): torch.Tensor => torch.arange(12, undefined, 1, { dtype: 'float32' }).reshape(3, 4);
    const ops: ((t: torch.Tensor) => void)[] = [
      (t) => t.indexPut_([t.gt(5)], 0),
      (t) => t.indexPut_([t.gt(5)], torch.tensor(-1.5)),
      (t) => t.indexPut_([':', 1], 7),
      (t) => t.indexPut_([1], torch.tensor([1, 2, 3, 4], { dtype: 'float32' })),
      (t) => t.indexPut_([[0, 2], [1, 3]], torch.tensor([10, 20], { dtype: 'float32' })),
      (t) => t.indexPut_([torch.tensor([0, 0, 2]), torch.tensor([1, 1, 3])], torch.tensor([1, 2, 3], { dtype: 'float32' }), true),
      (t) => t.indexPut_(['...', 0], torch.tensor([9, 8, 7], { dtype: 'float32' })),
      (t) => t.indexPut_(['::2', '1:3'], 0.5),
      (t) => t.indexPut_([':', null, 2], 4),
      (t) => t.indexPut_([0], 100, true),
    ];
    ops.forEach((f, i) => {
      const t = mk();
      const r = f(t) as unknown;
      expectTensor(t, R.put[i]);
      expect(r === undefined || r === t).toBe(true);
    });
  }));

  it('returns this and rejects bad values', scoped(() => {
    const t = torch.zeros([2, 2]);
    expect(t.indexPut_([0], 1)).toBe(t);
    expectError(() => t.indexPut_([0], 'a' as never), TypeError, 'E_ARG');
    expectError(() => t.indexPut_(0 as never, 1), TypeError, 'E_INDEX');
    expectError(() => t.indexPut_([t.gt(0)], torch.ones([3])), torch.TorchError, 'E_SHAPE');
  }));
});

describe('gather / where / select family', () => {
  it('gather', scoped(() => {
    const g = torch.tensor([[1, 2], [3, 4]]), i = torch.tensor([[0, 0], [1, 0]]);
    expectTensor(g.gather(1, i), R.gather[0]);
    expectTensor(g.gather(0, i), R.gather[1]);
    const idx = torch.tensor([[[4], [3], [2], [1]]]).repeat(3, 1, 1);
    expectTensor(X().gather(-1, idx), R.gather[2]);
    expectError(() => g.gather(1, torch.tensor([[5, 0], [0, 0]])), torch.TorchError, 'E_INDEX');
  }));

  it('where with tensors and numbers (promotion as Python)', scoped(() => {
    const c = torch.tensor([[true, false], [false, true]]), g = torch.tensor([[1, 2], [3, 4]]);
    const got = [torch.where(c, g, g.neg()), torch.where(c, g, 0.5), torch.where(c, 2.5, g), torch.where(c, 1, 0),
      torch.where(c, torch.tensor([1.5, 2.5]), torch.tensor([[0], [1]], { dtype: 'float32' })), g.where(c, 9)];
    got.forEach((t, i) => expectTensor(t, R.where[i]));
    expectError(() => torch.where(c, 'a' as never, g), TypeError, 'E_ARG');
    expectError(() => torch.where(g as never, g, g), torch.TorchError, 'E_DTYPE');
  }));

  it('indexSelect / maskedFill / nonzero / scatter / select / stepped slice', scoped(() => {
    const m = M();
    const got = [m.indexSelect(1, torch.tensor([3, 0])), m.maskedFill(m.gt(8), -1), m.maskedFill(m.lt(2), 0.5), m.nonzero(),
      torch.zeros([3, 4]).scatter(1, torch.tensor([[0], [1], [3]]), torch.ones([3, 1])), m.select(1, -1), m.index(':', '1:4:2')];
    // masked_fill keeps the dtype: 0.5 into int64 truncates, as in Python
    got.forEach((t, i) => expectTensor(t, R.select[i]));
  }));
});

describe('index errors', () => {
  it('JS mistakes are typed before libtorch; out-of-range indices come from libtorch as E_INDEX', scoped(() => {
    const x = X();
    expectError(() => x.index(0, 0, 0, 0), RangeError, 'E_INDEX');
    expectError(() => x.index('...', 0, '...'), TypeError, 'E_INDEX');
    expectError(() => x.index(1.5), TypeError, 'E_INDEX');
    expectError(() => x.index('::0'), RangeError, 'E_INDEX');
    expectError(() => x.index('::-1'), RangeError, 'E_INDEX');
    expectError(() => x.index('a:b'), TypeError, 'E_ARG');
    expectError(() => x.index('1'), TypeError, 'E_ARG');
    expectError(() => x.index([0.5]), TypeError, 'E_INDEX');
    expectError(() => x.index(true as never), TypeError, 'E_INDEX');
    expectError(() => x.index(3), torch.TorchError, 'E_INDEX');
    expectError(() => x.index(':', -5), torch.TorchError, 'E_INDEX');
    expectError(() => x.index([0, 3]), torch.TorchError, 'E_INDEX');
    expectError(() => x.index(torch.tensor([true, false])), torch.TorchError, 'E_INDEX');
  }));
});

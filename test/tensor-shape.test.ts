/**
 * Shape ops (views, joins, splits) against Python's torch, with negative dims and the typed errors
 * for JS-side mistakes.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { py } from './helpers/python.js';
import { expectError, expectTensor, scoped } from './helpers/tensor-expect.js';

let R: Record<string, any>;
beforeAll(() => {
  R = py(`
    x = torch.arange(24).reshape(2, 3, 4)
    f = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 4
    out['view'] = [x.view(6, 4), x.view(-1), x.view(4, -1, 2), x.reshape(3, 8), x.permute(2, 0, 1).reshape(-1)]
    out['permute'] = [x.permute(2, 0, 1), x.permute(-1, -3, -2), x.transpose(0, 2), x.transpose(-1, -2), f.t(), x.mT]
    out['squeeze'] = [x.unsqueeze(0).shape, x.unsqueeze(-1).shape, x.unsqueeze(1).shape,
                      torch.zeros(1, 3, 1, 2).squeeze().shape, torch.zeros(1, 3, 1, 2).squeeze(2).shape,
                      torch.zeros(1, 3, 1, 2).squeeze(-1).shape, torch.zeros(1, 3, 1, 2).squeeze(0).shape]
    out['flatten'] = [x.flatten(), x.flatten(1), x.flatten(0, 1), x.flatten(-2, -1)]
    out['expand'] = [f[:, :1].expand(2, 5), torch.tensor([1, 2]).expand(3, -1), torch.tensor([[1], [2]]).expand(2, 2, 3)]
    out['repeat'] = [torch.tensor([1, 2]).repeat(3), torch.tensor([1, 2]).repeat(2, 2), f.repeat(1, 2), torch.tensor([[1], [2]]).repeat(1, 1, 2)]
    a, b = torch.arange(6).reshape(2, 3), torch.arange(6, 12).reshape(2, 3)
    out['cat'] = [torch.cat([a, b]), torch.cat([a, b], 1), torch.cat([a, b], -1), torch.cat([a, torch.zeros(1, 3, dtype=torch.long)])]
    out['stack'] = [torch.stack([a, b]), torch.stack([a, b], 1), torch.stack([a, b], -1), torch.stack([a, b], 2)]
    out['unbind'] = [list(x.unbind()), list(x.unbind(1)), list(x.unbind(-1))]
    out['chunk'] = [list(torch.arange(10).chunk(3)), list(x.chunk(2, -1)), list(torch.arange(5).chunk(2))]
    out['split'] = [list(torch.arange(10).split(4)), list(x.split([1, 3], -1)), list(x.split(2, 1))]
    out['narrow'] = [x.narrow(2, 1, 2), x.narrow(-1, 0, 1), x.narrow(0, 1, 1), x.narrow(1, -2, 2)]
    out['flip'] = [x.flip(0), x.flip(0, 2), x.flip(-1)]
    out['roll'] = [torch.arange(5).roll(2, 0), x.roll(1, -1), x.roll([1, -1], [0, 2])]
    out['tri'] = [torch.ones(3, 4).tril(), torch.ones(3, 4).triu(1), torch.ones(3, 4).tril(-1)]
  `);
});

describe('views and reshapes', () => {
  it('view / reshape with -1 (array or rest arguments)', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    expectTensor(x.view(6, 4), R.view[0]);
    expectTensor(x.view(-1), R.view[1]);
    expectTensor(x.view([4, -1, 2]), R.view[2]);
    expectTensor(x.reshape([3, 8]), R.view[3]);
    // reshape copies what view cannot express
    expectTensor(x.permute(2, 0, 1).reshape(-1), R.view[4]);
    expectError(() => x.permute(2, 0, 1).view(-1), torch.TorchError, 'E_SHAPE');
  }));

  it('permute / transpose / t / mT, negative dims included', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    const f = torch.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3).div(4);
    expectTensor(x.permute(2, 0, 1), R.permute[0]);
    expectTensor(x.permute([-1, -3, -2]), R.permute[1]);
    expectTensor(x.transpose(0, 2), R.permute[2]);
    expectTensor(x.transpose(-1, -2), R.permute[3]);
    expectTensor(f.t(), R.permute[4]);
    expectTensor(x.mT, R.permute[5]);
    expect(x.transpose(0, 2).isContiguous).toBe(false);
    expect(x.transpose(0, 2).contiguous().isContiguous).toBe(true);
    expect(x.transpose(0, 2).strides).toEqual([1, 4, 12]);
  }));

  it('unsqueeze / squeeze', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    const z = torch.zeros([1, 3, 1, 2]);
    const got = [x.unsqueeze(0).shape, x.unsqueeze(-1).shape, x.unsqueeze(1).shape, z.squeeze().shape, z.squeeze(2).shape, z.squeeze(-1).shape, z.squeeze(0).shape];
    expect(got).toEqual(R.squeeze);
  }));

  it('flatten / expand / expandAs / repeat', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    expectTensor(x.flatten(), R.flatten[0]);
    expectTensor(x.flatten(1), R.flatten[1]);
    expectTensor(x.flatten(0, 1), R.flatten[2]);
    expectTensor(x.flatten(-2, -1), R.flatten[3]);
    const f = torch.arange(6, undefined, 1, { dtype: 'float32' }).reshape(2, 3).div(4);
    expectTensor(f.index(':', ':1').expand(2, 5), R.expand[0]);
    expectTensor(torch.tensor([1, 2]).expand(3, -1), R.expand[1]);
    expectTensor(torch.tensor([[1], [2]]).expand([2, 2, 3]), R.expand[2]);
    expectTensor(torch.tensor([[1], [2]]).expandAs(torch.zeros([2, 2, 3])), R.expand[2]);
    // expand is a view: its stride along the new dim is 0
    expect(torch.tensor([1, 2]).expand(3, -1).strides).toEqual([0, 1]);
    expectTensor(torch.tensor([1, 2]).repeat(3), R.repeat[0]);
    expectTensor(torch.tensor([1, 2]).repeat(2, 2), R.repeat[1]);
    expectTensor(f.repeat([1, 2]), R.repeat[2]);
    expectTensor(torch.tensor([[1], [2]]).repeat(1, 1, 2), R.repeat[3]);
  }));

  it('clone and contiguous copy; views share memory', scoped(() => {
    const x = torch.zeros([2, 3]);
    const v = x.view(6);
    const c = x.clone();
    const t = x.t();
    const tc = t.contiguous();
    x.fill_(5);
    expect(v.toArray()).toEqual([5, 5, 5, 5, 5, 5]);
    expect(c.toArray()).toEqual([[0, 0, 0], [0, 0, 0]]);
    expect(tc.toArray()).toEqual([[0, 0], [0, 0], [0, 0]]);
    // contiguous() of a contiguous tensor is the same memory
    const same = x.contiguous();
    same.fill_(1);
    expect(x.sum().item()).toBe(6);
  }));
});

describe('joining and splitting', () => {
  it('cat / stack along positive and negative dims', scoped(() => {
    const a = torch.arange(6).reshape(2, 3), b = torch.arange(6, 12).reshape(2, 3);
    expectTensor(torch.cat([a, b]), R.cat[0]);
    expectTensor(torch.cat([a, b], 1), R.cat[1]);
    expectTensor(torch.cat([a, b], -1), R.cat[2]);
    expectTensor(torch.cat([a, torch.zeros([1, 3], { dtype: 'int64' })]), R.cat[3]);
    expectTensor(torch.stack([a, b]), R.stack[0]);
    expectTensor(torch.stack([a, b], 1), R.stack[1]);
    expectTensor(torch.stack([a, b], -1), R.stack[2]);
    expectTensor(torch.stack([a, b], 2), R.stack[3]);
    expectError(() => torch.cat([a, torch.zeros([2, 2])], 0), torch.TorchError, 'E_SHAPE');
    expectError(() => torch.stack([a, torch.zeros([3, 2])]), torch.TorchError, 'E_SHAPE');
    expectError(() => torch.cat([]), RangeError, 'E_SHAPE');
    expectError(() => torch.cat([a, 3 as never]), TypeError, 'E_ARG');
    expectError(() => torch.stack('ab' as never), TypeError, 'E_ARG');
  }));

  it('unbind / chunk / split / narrow', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    const all = (ts: torch.Tensor[], refs: any[]): void => {
      expect(ts.length).toBe(refs.length);
      ts.forEach((t, i) => expectTensor(t, refs[i]));
    };
    all(x.unbind(), R.unbind[0]);
    all(x.unbind(1), R.unbind[1]);
    all(x.unbind(-1), R.unbind[2]);
    all(torch.arange(10).chunk(3), R.chunk[0]);
    all(x.chunk(2, -1), R.chunk[1]);
    all(torch.arange(5).chunk(2), R.chunk[2]);
    all(torch.arange(10).split(4), R.split[0]);
    all(x.split([1, 3], -1), R.split[1]);
    all(x.split(2, 1), R.split[2]);
    expectTensor(x.narrow(2, 1, 2), R.narrow[0]);
    expectTensor(x.narrow(-1, 0, 1), R.narrow[1]);
    expectTensor(x.narrow(0, 1, 1), R.narrow[2]);
    expectTensor(x.narrow(1, -2, 2), R.narrow[3]);
    expectError(() => x.split([1, 2], -1), torch.TorchError, 'E_SHAPE');
  }));

  it('flip / roll / tril / triu', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    expectTensor(x.flip(0), R.flip[0]);
    expectTensor(x.flip(0, 2), R.flip[1]);
    expectTensor(x.flip([-1]), R.flip[2]);
    expectTensor(torch.arange(5).roll(2, 0), R.roll[0]);
    expectTensor(x.roll(1, -1), R.roll[1]);
    expectTensor(x.roll([1, -1], [0, 2]), R.roll[2]);
    expectTensor(torch.ones([3, 4]).tril(), R.tri[0]);
    expectTensor(torch.ones([3, 4]).triu(1), R.tri[1]);
    expectTensor(torch.ones([3, 4]).tril(-1), R.tri[2]);
  }));
});

describe('argument errors', () => {
  it('non-integers are TypeErrors, negative sizes RangeErrors, before libtorch', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    expectError(() => x.view(1.5, 16), TypeError, 'E_ARG');
    expectError(() => x.reshape(['a'] as never), TypeError, 'E_ARG');
    expectError(() => x.view(-2, 12), RangeError, 'E_SHAPE');
    expectError(() => x.expand(-2, 3, 4), RangeError, 'E_SHAPE');
    expectError(() => x.repeat(1, -1, 1), RangeError, 'E_SHAPE');
    expectError(() => x.permute(0, 1.5, 2), TypeError, 'E_ARG');
    expectError(() => x.transpose(0.5, 1), TypeError, 'E_ARG');
    expectError(() => x.unsqueeze('1' as never), TypeError, 'E_ARG');
    expectError(() => x.narrow(0, 0, -1), RangeError, 'E_SHAPE');
    expectError(() => x.chunk(0), RangeError, 'E_RANGE');
    expectError(() => x.split(-1), RangeError, 'E_SHAPE');
    expectError(() => x.size(3), RangeError, 'E_INDEX');
    expectError(() => x.size(0.5), TypeError, 'E_ARG');
  }));

  it('libtorch errors carry codes and name the op and shapes', scoped(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    expectError(() => x.view(5, 5), torch.TorchError, 'E_SHAPE');
    expectError(() => x.transpose(0, 3), torch.TorchError, 'E_INDEX');
    expectError(() => x.unsqueeze(5), torch.TorchError, 'E_INDEX');
    expectError(() => x.permute(0, 1), torch.TorchError, 'E_SHAPE');
    try {
      x.view(5, 5);
    } catch (e) {
      expect((e as Error).message).toContain('aten::view');
      expect((e as Error).message).toContain('Tensor[2, 3, 4] Long');
    }
    const d = torch.zeros([2]);
    d.dispose();
    expectError(() => d.view(2), torch.TorchError, 'E_DISPOSED');
    expectError(() => d.add(1), torch.TorchError, 'E_DISPOSED');
    expect(d.isDisposed).toBe(true);
  }));

  it('size() and the shape properties', scoped(() => {
    const x = torch.zeros([2, 3, 4]);
    expect([x.size(), x.size(0), x.size(-1), x.dim, x.numel]).toEqual([[2, 3, 4], 2, 4, 3, 24]);
    // shape returns a copy: mutating it does not change the tensor
    const s = x.shape;
    s[0] = 9;
    expect(x.shape).toEqual([2, 3, 4]);
    expect(torch.tensor(1.5).shape).toEqual([]);
  }));
});

import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';

describe('smoke', () => {
  it('adds tensors through libtorch', () => {
    const a = torch.tensor([1, 2, 3], { dtype: 'float32' });
    const b = a.add(a).mul(2);
    expect(b.toArray()).toEqual([4, 8, 12]);
    a.dispose();
    b.dispose();
  });
});

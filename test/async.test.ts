/**
 * Async variants run on libuv's pool: same results as the sync calls, the caller's grad mode and
 * autocast state travel into the worker, errors reject typed, the main thread stays responsive,
 * and inputs disposed while a call is in flight stay valid for that call.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';

type Tensor = torch.Tensor;
type Err = Error & { code?: string };

const rejection = (p: Promise<unknown>): Promise<Err> =>
  p.then(() => { throw new Error('expected a rejection'); }, (e: Err) => e);

/** Runs an async test body in scopeAsync and checks that every tensor is freed afterwards. */
function scopedAsync(fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    const before = torch.memory().liveTensors;
    await torch.scopeAsync(fn);
    expect(torch.memory().liveTensors).toBe(before);
  };
}

describe('results equal the synchronous calls', () => {
  it('matmulAsync, linearAsync, conv2dAsync, cloneAsync', scopedAsync(async () => {
    torch.manualSeed(1);
    const a = torch.randn([33, 47]), b = torch.randn([47, 29]);
    expect((await torch.matmulAsync(a, b)).toArray()).toEqual(a.matmul(b).toArray());
    const w = torch.randn([29, 47]), bias = torch.randn([29]);
    expect((await torch.linearAsync(a, w, bias)).toArray()).toEqual(torch.linear(a, w, bias).toArray());
    const x = torch.randn([2, 3, 9, 9]), k = torch.randn([4, 3, 3, 3]), kb = torch.randn([4]);
    const opts = { stride: 2, padding: 1 } as const;
    expect((await torch.conv2dAsync(x, k, kb, opts)).toArray()).toEqual(torch.conv2d(x, k, kb, opts).toArray());
    const c = await torch.cloneAsync(a);
    expect(c.toArray()).toEqual(a.toArray());
    expect(c._h).not.toBe(a._h);
  }));

  it('callOpAsync: single, multiple and non-tensor results follow the schema', scopedAsync(async () => {
    torch.manualSeed(2);
    const a = torch.randn([5, 6]), b = torch.randn([6, 4]);
    const mm = (await torch.callOpAsync('aten::mm', '', a, b)) as Tensor;
    expect(mm.toArray()).toEqual(a.mm(b).toArray());
    const [values, indices] = (await torch.callOpAsync('aten::max', 'dim', a, 1, false)) as Tensor[];
    expect(values!.toArray()).toEqual(a.max(1).values.toArray());
    expect(indices!.dtype).toBe('int64');
    const parts = (await torch.callOpAsync('aten::unbind', 'int', a, 0)) as Tensor[];
    expect(parts.length).toBe(5);
    expect(parts[4]!.toArray()).toEqual(a.index(4).toArray());
    const size = await torch.callOpAsync('aten::size', 'int', a, 1);
    expect(size).toBe(6);
  }));
});

describe('thread-local state is carried into the worker', () => {
  it('grad mode: under noGrad the async result has no grad_fn; outside it does', scopedAsync(async () => {
    const x = torch.ones([3]).requiresGrad_();
    let off: Promise<unknown> | undefined;
    torch.noGrad(() => {
      off = torch.callOpAsync('aten::mul', 'Tensor', x, x);
    });
    const on = torch.callOpAsync('aten::mul', 'Tensor', x, x);
    const [r0, r1] = (await Promise.all([off!, on])) as Tensor[];
    expect(r0!.requiresGrad).toBe(false);
    expect(r0!.gradFn).toBeNull();
    expect(r1!.requiresGrad).toBe(true);
    expect(r1!.gradFn).toBe('MulBackward0');
    // the worker's graph is usable from the main thread
    r1!.sum().backward();
    expect(x.grad!.toArray()).toEqual([2, 2, 2]);
  }));

  it('autocast: an async matmul started inside autocast is bfloat16 and equals the sync one', scopedAsync(async () => {
    torch.manualSeed(3);
    const a = torch.randn([16, 16]), b = torch.randn([16, 16]);
    let p: Promise<Tensor> | undefined, q: Promise<unknown> | undefined, sync: Tensor | undefined;
    torch.autocast({ dtype: 'bfloat16' }, () => {
      p = torch.matmulAsync(a, b);
      q = torch.callOpAsync('aten::mm', '', a, b);
      sync = a.matmul(b);
    });
    const outside = await torch.matmulAsync(a, b); // started after autocast ended
    const [r, r2] = [await p!, (await q!) as Tensor];
    expect(r.dtype).toBe('bfloat16');
    expect(r2.dtype).toBe('bfloat16');
    expect(r.toArray()).toEqual(sync!.toArray());
    expect(outside.dtype).toBe('float32');
    expect(torch.isAutocastEnabled()).toBe(false);
  }));
});

describe('errors', () => {
  it('an error in the worker rejects with a typed TorchError naming the op and shapes', scopedAsync(async () => {
    const e = await rejection(torch.matmulAsync(torch.ones([2, 3]), torch.ones([4, 5])));
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_SHAPE');
    expect(e.message).toMatch(/^aten::matmul\(Tensor\[2, 3\] Float, Tensor\[4, 5\] Float\): mat1 and mat2 shapes cannot be multiplied/);
    expect(e.message).not.toMatch(/Exception raised from/);
    const d = await rejection(torch.callOpAsync('aten::mm', '', torch.ones([2, 2]), torch.ones([2, 2], { dtype: 'float64' })));
    expect(d.code).toBe('E_DTYPE');
    const oom = await rejection(torch.callOpAsync('aten::zeros', '', [2 ** 40]));
    expect(oom.code).toBe('E_OOM');
  }));

  it('bad arguments reject (never throw synchronously), typed', scopedAsync(async () => {
    const t = torch.ones([2]);
    t.dispose();
    let p: Promise<unknown> | undefined;
    expect(() => { p = torch.matmulAsync(t, t); }).not.toThrow();
    const e = await rejection(p!);
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_DISPOSED');
    const tErr = await rejection(torch.matmulAsync('x' as never, torch.ones([2])));
    expect(tErr).toBeInstanceOf(TypeError);
    expect(tErr.code).toBe('E_ARG');
    const unknown = await rejection(torch.callOpAsync('aten::no_such_op', ''));
    expect(unknown.code).toBe('E_NOT_IMPLEMENTED');
    const arity = await rejection(torch.callOpAsync('aten::mm', '', torch.ones([1, 1]), torch.ones([1, 1]), 3));
    expect(arity).toBeInstanceOf(TypeError);
    // arguments are checked against the schema: a Tensor where an int[] belongs would otherwise
    // reach C++ as its handle number (a size!), and a number where a Tensor belongs as a handle
    const asSize = await rejection(torch.callOpAsync('aten::zeros', '', torch.ones([4])));
    expect(asSize).toBeInstanceOf(TypeError);
    expect(asSize.message).toMatch(/schema expects int\[\]/);
    const forged = await rejection(torch.callOpAsync('aten::neg', '', 0));
    expect(forged).toBeInstanceOf(TypeError);
    expect(forged.message).toMatch(/expected a Tensor/);
    const list = (await torch.callOpAsync('aten::cat', '', [torch.ones([1]), torch.zeros([2])], 0)) as Tensor;
    expect(list.toArray()).toEqual([1, 0, 0]);
  }));
});

describe('off the main thread', () => {
  it('timers keep firing while a big matmul runs; the sync one blocks them', async () => {
    const before = torch.memory().liveTensors;
    const a = torch.randn([1024, 1024], { dtype: 'float64' });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    try {
      // sync: the event loop cannot turn while it runs
      const t0 = performance.now();
      a.matmul(a).dispose();
      const syncMs = performance.now() - t0;
      expect(ticks).toBe(0);
      // async: several big products back to back, the loop turns meanwhile
      const t1 = performance.now();
      for (let i = 0; i < 3; i++) (await torch.matmulAsync(a, a)).dispose();
      const asyncMs = performance.now() - t1;
      expect(ticks).toBeGreaterThanOrEqual(5);
      console.log(`1024^2 float64 matmul: sync ${syncMs.toFixed(0)} ms; 3 async ${asyncMs.toFixed(0)} ms with ${ticks} timer ticks`);
    } finally {
      clearInterval(timer);
      a.dispose();
    }
    expect(torch.memory().liveTensors).toBe(before);
  });

  it('disposing inputs while the call is in flight is safe: the worker holds its own reference', async () => {
    const before = torch.memory();
    torch.manualSeed(4);
    const a = torch.randn([512, 512], { dtype: 'float64' }), b = torch.randn([512, 512], { dtype: 'float64' });
    const expected = a.matmul(b);
    const want = torch.scope(() => expected.sum().item());
    const p = torch.matmulAsync(a, b);
    a.dispose();
    b.dispose(); // freed from the table now; the storage lives until the worker is done
    const r = await p;
    expect(torch.scope(() => r.sum().item())).toBe(want);
    expect(r.toArray()).toEqual(expected.toArray());
    r.dispose();
    expected.dispose();
    // every byte is accounted back: the worker's references died with the task
    const after = torch.memory();
    expect(after.bytes.cpu).toBe(before.bytes.cpu);
    expect(after.liveTensors).toBe(before.liveTensors);
  });
});

/**
 * torch.jit: modules scripted in Python (test/fixtures/jit_scripted.py, run with Debian's
 * python3-torch at test time) load here and give identical outputs; state, modes, async calls,
 * errors and memory.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PYTHON } from './helpers/python.js';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { ScriptModule, StateDictError } from '../lib/torch/jit.js';
import { codeOf } from './helpers/error_code.js';

const PY = PYTHON;
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');
type Nested = number | Nested[];
interface Expected {
  x: Nested; y: Nested; xs: Nested[];
  state_keys: string[]; state: Record<string, Nested>;
  param_names: string[]; buffer_names: string[]; children: string[];
  forward_train: Nested; forward: Nested; forward_scaled: Nested; forward_kw: Nested;
  pair: [Nested, Nested]; as_dict: Record<string, Nested>; names: string[];
  opt_none: Nested; opt_y: Nested; ints: number; ints_k10: number; total: Nested;
  nested: [number, number, string[]];
}

let dir: string;
let ptPath: string;
let exp: Expected;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tim-jit-'));
  execFileSync(PY, [join(FIXTURES, 'jit_scripted.py'), dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  ptPath = join(dir, 'scripted.pt');
  exp = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as Expected;
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const f32 = (v: Nested): Tensor => torch.tensor(v as number[], { dtype: 'float32' });

describe('torch.jit.load: a Python-scripted module', () => {
  it('gives outputs identical to Python for forward (defaults, positional, keyword) and eval/train', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      const x = f32(exp.x);
      m.eval();
      expect(m.forward(x).toArray()).toEqual(exp.forward);
      expect(m.forward(x, 2.0, true).toArray()).toEqual(exp.forward_scaled);
      expect(m.callWith<Tensor>('forward', [x], { flag: true }).toArray()).toEqual(exp.forward_kw);
      m.train();
      expect(m.forward(x).toArray()).toEqual(exp.forward_train);
      m.dispose();
    });
  });

  it('calls other methods: tuple, dict, List[str], Optional, List[int], List[Tensor], nested tuple/dict', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath, { device: 'cpu' });
      const x = f32(exp.x);
      const [a, b] = m.call<[Tensor, Tensor]>('pair', x);
      expect([a.toArray(), b.toArray()]).toEqual(exp.pair);
      const d = m.call<Record<string, Tensor>>('as_dict', x);
      expect(Object.keys(d).sort()).toEqual(Object.keys(exp.as_dict).sort());
      for (const k of Object.keys(exp.as_dict)) expect(d[k]!.toArray()).toEqual(exp.as_dict[k]);
      expect(m.call('names', ['a', 'b'], 4)).toEqual(exp.names);
      expect(m.call<Tensor>('opt', x).toArray()).toEqual(exp.opt_none);
      expect(m.call<Tensor>('opt', x, null).toArray()).toEqual(exp.opt_none);
      expect(m.call<Tensor>('opt', x, f32(exp.y)).toArray()).toEqual(exp.opt_y);
      expect(m.call('ints', [1, 2, 3])).toBe(exp.ints);
      expect(m.call<Tensor>('total', exp.xs.map(f32)).toArray()).toEqual(exp.total);
      expect(m.call('nested', [4, 0.5], { b: 1.0, a: 0.25 })).toEqual(exp.nested);
      expect(m.methods()).toEqual(expect.arrayContaining(['forward', 'pair', 'as_dict', 'names', 'mode']));
      expect(m.schema('opt')).toMatch(/opt\(.*Tensor x, Tensor\? y=None\) -> Tensor/);
      m.dispose();
    });
  });

  it('stateDict has Python state_dict names, order and values; named* lists match Python', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      const sd = m.stateDict();
      expect(Object.keys(sd)).toEqual(exp.state_keys);
      for (const k of exp.state_keys) expect(sd[k]!.toArray()).toEqual(exp.state[k]);
      expect(sd.steps!.dtype).toBe('int64');
      expect(m.namedParameters().map(([n]) => n)).toEqual(exp.param_names);
      expect(m.namedBuffers().map(([n]) => n)).toEqual(exp.buffer_names);
      expect(m.namedParameters(false).map(([n]) => n)).toEqual(['w']);
      const kids = m.namedChildren();
      expect(kids.map(([n]) => n)).toEqual(exp.children);
      const inner = kids[0]![1];
      expect(inner.namedParameters().map(([n]) => n)).toEqual(['lin.weight', 'lin.bias']);
      expect(inner.isSameModule(m.getAttr<ScriptModule>('inner'))).toBe(true);
      expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
      expect(m.attributes().find((a) => a.name === 'inner')?.kind).toBe('module');
      expect(m.attributes().find((a) => a.name === 'w')?.kind).toBe('parameter');
      m.dispose();
    });
  });

  it('attributes: get and set (typed by the attribute), visible to methods', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      expect(m.getAttr('k')).toBe(3);
      expect(m.getAttr('eps')).toBe(0.25);
      expect(m.getAttr('tag')).toBe('net');
      expect(m.getAttr('on')).toBe(true);
      expect(m.getAttr('sizes')).toEqual([1, 2, 3]);
      m.setAttr('k', 10);
      expect(m.call('ints', [1, 2, 3])).toBe(exp.ints_k10);
      m.setAttr('sizes', [4, 5]);
      expect(m.getAttr('sizes')).toEqual([4, 5]);
      expect(() => m.setAttr('k', 'ten')).toThrow(TypeError);
      expect(() => m.setAttr('k', 1.5)).toThrow(/expected an integer/);
      expect(codeOf(() => m.setAttr('nope', 1))).toBe('E_ATTR');
      expect(codeOf(() => m.getAttr('nope'))).toBe('E_ATTR');
      expect(m.hasAttr('eps')).toBe(true);
      expect(m.hasAttr('nope')).toBe(false);
      m.dispose();
    });
  });

  it('train()/eval() set self.training recursively', () => {
    const m = torch.jit.load(ptPath);
    const inner = m.getAttr<ScriptModule>('inner');
    expect(m.call('mode')).toBe(true);
    m.eval();
    expect(m.call('mode')).toBe(false);
    expect(m.isTraining).toBe(false);
    expect(inner.isTraining).toBe(false);
    m.train();
    expect(m.call('mode')).toBe(true);
    expect(inner.isTraining).toBe(true);
    inner.dispose();
    m.dispose();
  });

  it('loadStateDict: strict reports missing, unexpected and shape-mismatched keys in one error and copies nothing', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      const before = m.stateDict();
      const w0 = before.w!.toArray();
      const bad: Record<string, Tensor> = { ...before };
      delete bad['inner.shift'];
      bad.extra = torch.zeros([1]);
      bad.w = torch.zeros([2, 3]);
      bad.scale_buf = torch.full([2], 9);
      let err: unknown;
      try {
        m.loadStateDict(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(StateDictError);
      const se = err as StateDictError;
      expect(se.code).toBe('E_STATE_DICT');
      expect(se.missingKeys).toEqual(['inner.shift']);
      expect(se.unexpectedKeys).toEqual(['extra']);
      expect(se.mismatchedKeys).toEqual([{ key: 'w', expected: [3, 2], got: [2, 3] }]);
      expect(se.message).toMatch(/missing keys: inner\.shift.*unexpected keys: extra.*shape mismatches: w/);
      // nothing copied, not even the valid entry
      expect(m.getAttr<Tensor>('scale_buf').toArray()).toEqual(exp.state.scale_buf);
      expect(m.getAttr<Tensor>('w').toArray()).toEqual(w0);

      // non-strict: missing/unexpected are reported, not thrown; shape mismatches still are
      expect(() => m.loadStateDict({ w: torch.zeros([2, 3]) }, { strict: false })).toThrow(StateDictError);
      const r = m.loadStateDict({ scale_buf: torch.tensor([2, 3], { dtype: 'float64' }), extra: torch.zeros([1]) }, { strict: false });
      expect(r.unexpectedKeys).toEqual(['extra']);
      expect(r.missingKeys).toHaveLength(exp.state_keys.length - 1);
      const sb = m.getAttr<Tensor>('scale_buf');
      expect(sb.dtype).toBe('float32'); // converted to the buffer's dtype
      expect(sb.toArray()).toEqual([2, 3]);
      expect(() => m.loadStateDict({ w: 3 } as unknown as Record<string, Tensor>)).toThrow(TypeError);

      // a full round trip through another instance (strict) copies in place
      const m2 = torch.jit.load(ptPath);
      const ones = Object.fromEntries(Object.entries(m2.stateDict()).map(([k, v]) => [k, torch.onesLike(v)]));
      m2.loadStateDict(ones);
      const after = m2.stateDict();
      for (const k of exp.state_keys) expect(after[k]!.sum().item()).toBe(after[k]!.numel);
      m.dispose();
      m2.dispose();
    });
  });

  it('to(dtype) casts floating parameters/buffers only, in place (handles stay valid)', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      m.eval();
      const w = m.getAttr<Tensor>('w');
      m.to('float64');
      expect(w.dtype).toBe('float64');
      expect(m.getAttr<Tensor>('steps').dtype).toBe('int64');
      expect(m.getAttr<Tensor>('w').dtype).toBe('float64');
      const y = m.forward(f32(exp.x).to('float64'));
      expect(y.dtype).toBe('float64');
      const ref = f32(exp.forward);
      expect(y.to('float32').sub(ref).abs().max().item()).toBeLessThan(1e-5);
      m.to({ dtype: 'float32', device: 'cpu' });
      expect(m.forward(f32(exp.x)).toArray()).toEqual(exp.forward);
      m.to('cpu', 'float64');
      expect(w.dtype).toBe('float64');
      m.to('cpu', 'float32');
      expect(m.forward(f32(exp.x)).toArray()).toEqual(exp.forward);
      expect(() => m.to('int64')).toThrow(TypeError);
      expect(() => m.to('tpu' as never)).toThrow();
      m.dispose();
    });
  });

  it('forwardAsync equals forward and carries grad mode and autocast from the call site', async () => {
    // A fresh module: libtorch 1.13's profiling executor (Python's too) can return requires_grad
    // outputs under no_grad once a different branch ran with grad, so grad mode is checked first.
    const m = torch.jit.load(ptPath);
    m.eval();
    const x = f32(exp.x);
    const prev = torch.setGradEnabled(false);
    const pending = m.forwardAsync(x);
    torch.setGradEnabled(prev); // restored before the work runs: the call site's mode must win
    const z = await pending;
    expect(z.requiresGrad).toBe(false);
    expect(z.toArray()).toEqual(exp.forward);
    const zg = await m.forwardAsync(x);
    expect(zg.requiresGrad).toBe(true);
    const y = await m.forwardAsync(x, 2.0, true);
    expect(y.toArray()).toEqual(exp.forward_scaled);
    const [a] = await m.callAsync<[Tensor, Tensor]>('pair', x);
    expect(a.toArray()).toEqual(exp.pair[0]);
    const kw = await m.callWithAsync<Tensor>('forward', [x], { flag: true });
    expect(kw.toArray()).toEqual(exp.forward_kw);
    let pendingAc: Promise<Tensor> | undefined;
    torch.autocast({ dtype: 'bfloat16' }, () => {
      pendingAc = m.forwardAsync(x); // started inside the region, runs after it closed
    });
    const ac = await pendingAc!;
    // TorchScript in libtorch 1.13 does not apply CPU autocast inside scripted code (Python neither),
    // so the async call must simply agree with the synchronous call under the same autocast.
    const acSync = torch.autocast({ dtype: 'bfloat16' }, () => m.forward(x));
    expect(ac.dtype).toBe(acSync.dtype);
    expect(ac.toArray()).toEqual(acSync.toArray());
    acSync.dispose();
    await expect(m.callAsync('forward', 3)).rejects.toThrow(TypeError);
    await expect(m.callAsync('nope')).rejects.toMatchObject({ code: 'E_ATTR' });
    // a runtime error inside the method rejects with a TorchError instead of crashing
    await expect(m.forwardAsync(torch.zeros([2, 7]))).rejects.toMatchObject({ name: 'TorchError' });
    for (const t of [x, y, z, zg, a, kw, ac]) t.dispose();
    m.dispose();
  });

  it('bad calls are typed errors', () => {
    const m = torch.jit.load(ptPath);
    const x = f32(exp.x);
    expect(codeOf(() => m.call('nope'))).toBe('E_ATTR');
    expect(() => m.forward()).toThrow(TypeError);
    expect(() => m.forward(x, 1, false, 4)).toThrow(/takes 3 arguments/);
    expect(() => m.forward(3)).toThrow(TypeError); // a number is never taken for a tensor handle
    expect(() => m.forward(x, 'a')).toThrow(TypeError);
    expect(() => m.callWith('forward', [x], { bogus: 1 })).toThrow(/unexpected keyword argument 'bogus'/);
    expect(() => m.callWith('forward', [x], { x })).toThrow(/both by position and by name/);
    expect(() => m.call('names', ['a', 1], 2)).toThrow(TypeError);
    expect(codeOf(() => m.forward(torch.zeros([2, 7])))).toMatch(/^E_/);
    const d = torch.zeros([5, 4]);
    d.dispose();
    expect(codeOf(() => m.forward(d))).toBe('E_DISPOSED');
    x.dispose();
    m.dispose();
    expect(codeOf(() => m.forward(x))).toBe('E_DISPOSED');
    expect(m.isDisposed).toBe(true);
  });

  it('load errors: missing file and directory → E_IO, corrupt and truncated archives → E_FORMAT (no crash)', () => {
    expect(codeOf(() => torch.jit.load(join(dir, 'missing.pt')))).toBe('E_IO');
    const sub = join(dir, 'adir');
    mkdirSync(sub, { recursive: true });
    expect(codeOf(() => torch.jit.load(sub))).toBe('E_IO');
    const junk = join(dir, 'junk.pt');
    writeFileSync(junk, Buffer.from('this is not a zip archive at all'.repeat(10)));
    expect(codeOf(() => torch.jit.load(junk))).toBe('E_FORMAT');
    const whole = readFileSync(ptPath);
    for (const frac of [0.1, 0.5, 0.9, 0.99]) {
      const cut = join(dir, `cut-${frac}.pt`);
      writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * frac)));
      expect(codeOf(() => torch.jit.load(cut))).toBe('E_FORMAT');
    }
    const empty = join(dir, 'empty.pt');
    writeFileSync(empty, Buffer.alloc(0));
    expect(codeOf(() => torch.jit.load(empty))).toBe('E_FORMAT');
    expect(() => torch.jit.load('')).toThrow(TypeError);
    expect(() => torch.jit.load(ptPath, { device: 'gpu' as never })).toThrow(RangeError);
  });

  it('save is atomic: a failing save leaves no temporary file; a saved module reloads identically', () => {
    torch.scope(() => {
      const m = torch.jit.load(ptPath);
      m.eval();
      const target = join(dir, 'occupied');
      mkdirSync(target, { recursive: true });
      writeFileSync(join(target, 'keep.txt'), 'x');
      expect(codeOf(() => m.save(target))).toBe('E_IO'); // rename onto a non-empty directory fails
      expect(readdirSync(dir).filter((n) => n.includes('.tmp'))).toEqual([]);
      expect(codeOf(() => m.save(join(dir, 'no', 'such', 'dir', 'm.pt')))).toBe('E_IO');
      const out = join(dir, 'resaved.pt');
      m.save(out);
      expect(readdirSync(dir).filter((n) => n.includes('.tmp'))).toEqual([]);
      const m2 = torch.jit.load(out);
      m2.eval();
      expect(m2.forward(f32(exp.x)).toArray()).toEqual(exp.forward);
      m.dispose();
      m2.dispose();
    });
  });

  it('memory: live tensors and module handles return to baseline after disposing outputs and parameter handles', () => {
    const base = torch.memory().liveTensors;
    const baseMods = torch.jit.liveModuleHandles();
    const m = torch.jit.load(ptPath);
    const x = f32(exp.x);
    for (let i = 0; i < 3; i++) {
      const outs: Tensor[] = [m.forward(x), ...m.call<Tensor[]>('pair', x), ...Object.values(m.call<Record<string, Tensor>>('as_dict', x))];
      const ps = [...m.parameters(), ...m.buffers(), ...Object.values(m.stateDict())];
      const kids = m.children();
      expect(torch.jit.liveModuleHandles()).toBe(baseMods + 2);
      for (const t of [...outs, ...ps]) t.dispose();
      for (const k of kids) k.dispose();
    }
    x.dispose();
    expect(torch.memory().liveTensors).toBe(base);
    m.dispose();
    expect(torch.jit.liveModuleHandles()).toBe(baseMods);
  });
});

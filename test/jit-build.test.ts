/**
 * Building TorchScript modules in TypeScript (torch.jit.createModule): state registration, define()
 * with rollback on compile errors, aliasing parameters, gradients, modes, and the round trip into
 * Python's torch.jit.load (test/fixtures/jit_check_built.py, run with Debian's python3-torch).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PYTHON } from './helpers/python.js';
import { torch } from '../lib/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { ModuleBuilder, ScriptModule } from '../lib/torch/jit.js';
import { codeOf } from './helpers/error_code.js';

const PY = PYTHON;
const CHECK = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'jit_check_built.py');
type Nested = number | Nested[];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tim-jit-build-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface PyReport {
  results: unknown[];
  type: string;
  training: boolean;
  state_keys: string[];
  state: Record<string, Nested>;
  param_names: string[];
  requires_grad: Record<string, boolean>;
  attrs: Record<string, unknown>;
}

/** Saves `m`, loads it in Python, runs `calls` there (tensor args as {tensor: list}) and returns its report. */
function inPython(m: ScriptModule, name: string, calls: [string, unknown[]][], attrs: string[] = []): PyReport {
  const pt = join(dir, `${name}.pt`);
  m.save(pt);
  const inputs = join(dir, `${name}.in.json`);
  const out = join(dir, `${name}.out.json`);
  const enc = (v: unknown): unknown => (v instanceof torch.Tensor ? { tensor: v.toArray() } : Array.isArray(v) ? v.map(enc) : v);
  writeFileSync(inputs, JSON.stringify({ calls: calls.map(([n, args]) => [n, args.map(enc)]), attrs }));
  execFileSync(PY, [CHECK, pt, inputs, out], { stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(readFileSync(out, 'utf8')) as PyReport;
}

// Deterministic values that are exact in float32 (k/8), so both sides start from identical state.
function grid(shape: [number, number], offset = 0): number[][] {
  return Array.from({ length: shape[0] }, (_, i) => Array.from({ length: shape[1] }, (_, j) => (((i * shape[1] + j + offset) % 13) - 6) / 8));
}
const f32 = (v: Nested): Tensor => torch.tensor(v as number[], { dtype: 'float32' });

function makeBlock(offset: number): ModuleBuilder {
  const b = torch.jit.createModule('Block');
  b.registerParameter('weight', f32(grid([4, 4], offset)));
  b.registerBuffer('bias', f32([0.5, -0.25, 0.125, 1]));
  b.define(`
def forward(self, x: Tensor) -> Tensor:
    return torch.tanh(torch.matmul(x, self.weight) + self.bias)

def mode(self) -> bool:
    return self.training
`);
  return b;
}

function makeNet(): { net: ModuleBuilder; block: ModuleBuilder; block2: ModuleBuilder } {
  const block = makeBlock(0);
  const block2 = makeBlock(5);
  const net = torch.jit.createModule('Net');
  net.registerModule('block', block);
  net.registerModule('block2', block2);
  net.registerParameter('proj', f32(grid([4, 2], 3)));
  net.registerBuffer('count', torch.tensor([3], { dtype: 'int64' }));
  net.registerAttribute('k', 2);
  net.registerAttribute('eps', 0.5);
  net.registerAttribute('flag', true);
  net.registerAttribute('tag', 'tim');
  net.registerAttribute('dims', [1, 2, 3]);
  net.registerAttribute('gain', 1, 'float');
  net.registerAttribute('maybe', null, 'Optional[int]');
  net.define(`
def forward(self, x: Tensor) -> Tensor:
    h = self.block2.forward(self.block.forward(x))
    y = torch.matmul(h, self.proj) * self.eps * self.gain + float(self.k)
    if self.flag:
        y = y + 1.0
    if self.training:
        y = y * 2.0
    return y

def pair(self, x: Tensor) -> Tuple[Tensor, Tensor]:
    return self.forward(x), x.sum(dim=0)

def stats(self, x: Tensor) -> Dict[str, Tensor]:
    return {'mean': x.mean(), 'max': x.max(), 'count': self.count * 2}

def describe(self) -> Tuple[int, float, bool, str, List[int]]:
    return (self.k, self.eps, self.flag, self.tag, self.dims)

def is_training(self) -> bool:
    return self.training
`);
  return { net, block, block2 };
}

describe('torch.jit.createModule', () => {
  it('a built module (params, buffers, submodules, attributes, tuple/dict methods) saves and gives identical outputs in Python', () => {
    torch.scope(() => {
      const { net, block, block2 } = makeNet();
      expect(block.typeName).not.toBe(block2.typeName); // alike names, distinct classes
      expect(block.typeName).toMatch(/^__torch__\.tim\.Block_\d+$/);
      net.eval();
      const x = f32(grid([3, 4], 1));
      const y = net.forward(x);
      const [p0, p1] = net.call<[Tensor, Tensor]>('pair', x);
      const st = net.call<Record<string, Tensor>>('stats', x);
      const desc = net.call('describe');
      expect(desc).toEqual([2, 0.5, true, 'tim', [1, 2, 3]]);
      expect(net.getAttr('maybe')).toBe(null);
      expect(net.getAttr('gain')).toBe(1);
      expect(net.attributes().find((a) => a.name === 'gain')?.type).toBe('float');
      const sd = net.stateDict();
      expect(Object.keys(sd)).toEqual(['proj', 'count', 'block.weight', 'block.bias', 'block2.weight', 'block2.bias']);

      const py = inPython(net, 'net', [['forward', [x]], ['pair', [x]], ['stats', [x]], ['describe', []], ['is_training', []]], ['k', 'eps', 'flag', 'tag', 'dims', 'maybe']);
      expect(py.type).toBe(net.typeName);
      expect(py.training).toBe(false);
      expect(py.state_keys).toEqual(Object.keys(sd));
      for (const k of py.state_keys) expect(py.state[k]).toEqual(sd[k]!.toArray());
      expect(py.param_names).toEqual(net.namedParameters().map(([n]) => n));
      expect(Object.values(py.requires_grad).every(Boolean)).toBe(true);
      const [pf, pp, ps, pd, pt] = py.results as [
        { tensor: Nested }, [{ tensor: Nested }, { tensor: Nested }], Record<string, { tensor: Nested }>, unknown, boolean,
      ];
      expect(pf.tensor).toEqual(y.toArray());
      expect([pp[0].tensor, pp[1].tensor]).toEqual([p0.toArray(), p1.toArray()]);
      expect(Object.keys(ps).sort()).toEqual(['count', 'max', 'mean']);
      for (const k of Object.keys(ps)) expect(ps[k]!.tensor).toEqual(st[k]!.toArray());
      expect(pd).toEqual(desc);
      expect(pt).toBe(false);
      expect(py.attrs).toEqual({ k: 2, eps: 0.5, flag: true, tag: 'tim', dims: [1, 2, 3], maybe: null });

      // and the saved file loads back here with the same outputs and attributes
      const back = torch.jit.load(join(dir, 'net.pt'));
      expect(back.forward(x).toArray()).toEqual(y.toArray());
      expect(back.call('describe')).toEqual(desc);
      expect(back.isTraining).toBe(false);
      for (const m of [net, block, block2, back]) m.dispose();
    });
  });

  it('a failed define leaves the module untouched, usable and saveable (Python loads it), with the compiler message', () => {
    torch.scope(() => {
      const m = torch.jit.createModule('Safe');
      m.registerParameter('w', f32(grid([2, 2])));
      m.define(`
def forward(self, x: Tensor) -> Tensor:
    return torch.matmul(x, self.w)
`);
      const before = m.methods();
      let err: Error & { code?: string } = new Error('none');
      try {
        m.define(`
def ok_one(self, x: Tensor) -> Tensor:
    return x + 1.0

def bad(self, x: Tensor) -> Tensor:
    return x + self.nope
`);
      } catch (e) {
        err = e as Error & { code?: string };
      }
      expect(err.name).toBe('TorchError');
      expect(err.code).toBe('E_COMPILE');
      expect(err.message).toMatch(/has no attribute or method 'nope'/);
      expect(err.message).toMatch(/self\.nope/); // the highlighted source line
      expect(m.methods()).toEqual(before); // ok_one was not added either
      expect(codeOf(() => m.define('def broken(self) return 1\n'))).toBe('E_COMPILE');
      expect(codeOf(() => m.define('def forward(self, x: Tensor) -> Tensor:\n    return x\n'))).toBe('E_COMPILE'); // redefinition
      expect(codeOf(() => m.define('def typed(self, x: int) -> int:\n    return x + "a"\n'))).toBe('E_COMPILE');
      expect(m.methods()).toEqual(before);
      // methods defined later may call earlier ones (the scratch compile sees them)
      m.define('def helper(self, x: Tensor) -> Tensor:\n    return x * 2.0\n');
      m.define('def use(self, x: Tensor) -> Tensor:\n    return self.helper(self.forward(x)) + 1.0\n');
      const x = f32(grid([3, 2], 2));
      const y = m.forward(x);
      const u = m.call<Tensor>('use', x);
      expect(u.toArray()).toEqual(y.mul(2).add(1).toArray());
      const py = inPython(m, 'safe', [['forward', [x]], ['use', [x]]]);
      expect((py.results[0] as { tensor: Nested }).tensor).toEqual(y.toArray());
      expect((py.results[1] as { tensor: Nested }).tensor).toEqual(u.toArray());
      m.dispose();
    });
  });

  it('parameters alias the module: in-place updates (as an optimizer does) show in forward', () => {
    torch.scope(() => {
      const src = f32([[1, 2], [3, 4]]);
      const m = torch.jit.createModule('Alias');
      m.registerParameter('w', src);
      m.define('def forward(self, x: Tensor) -> Tensor:\n    return torch.matmul(x, self.w)\n');
      const x = f32([[1, 1]]);
      expect(m.forward(x).toArray()).toEqual([[4, 6]]);
      const [w] = m.parameters();
      torch.noGrad(() => w!.mul_(2));
      expect(m.forward(x).toArray()).toEqual([[8, 12]]);
      const viaState = m.stateDict().w!;
      torch.noGrad(() => viaState.add_(1));
      expect(m.forward(x).toArray()).toEqual([[10, 14]]);
      // like nn.Parameter(t), the registered parameter shares the source tensor's memory
      expect(src.toArray()).toEqual([[3, 5], [7, 9]]);
      expect(src.requiresGrad).toBe(false);
      expect(w!.requiresGrad).toBe(true);
      m.dispose();
    });
  });

  it('gradients flow from forward to the parameters (.grad populated, exact values)', () => {
    torch.scope(() => {
      const { net } = makeNet();
      net.train();
      const x = f32(grid([3, 4], 1));
      net.forward(x).sum().backward();
      for (const [name, p] of net.namedParameters()) {
        const g = p.grad;
        expect(g, name).not.toBeNull();
        expect(g!.shape).toEqual(p.shape);
        expect(g!.abs().sum().item()).toBeGreaterThan(0);
      }
      for (const b of net.buffers()) expect(b.requiresGrad).toBe(false);

      // d/dw sum(x @ w) = x^T @ ones: each row i of the gradient is sum_b x[b][i]
      const lin = torch.jit.createModule('Lin');
      lin.registerParameter('w', torch.zeros([4, 2]));
      lin.define('def forward(self, x: Tensor) -> Tensor:\n    return torch.matmul(x, self.w)\n');
      lin.forward(x).sum().backward();
      const colSums = (grid([3, 4], 1) as number[][]).reduce((acc, row) => acc.map((a, i) => a + row[i]!), [0, 0, 0, 0]);
      expect(lin.getAttr<Tensor>('w').grad!.toArray()).toEqual(colSums.map((s) => [s, s]));
      net.dispose();
      lin.dispose();
    });
  });

  it('train()/eval() reach self.training of the module and its submodules', () => {
    torch.scope(() => {
      const { net, block } = makeNet();
      expect(net.call('is_training')).toBe(true);
      net.eval();
      expect(net.call('is_training')).toBe(false);
      expect(block.call('mode')).toBe(false);
      expect(net.isTraining).toBe(false);
      net.train();
      expect(block.call('mode')).toBe(true);
      const x = f32(grid([3, 4], 1));
      const yTrain = net.forward(x);
      net.eval();
      expect(yTrain.toArray()).toEqual(net.forward(x).mul(2).toArray());
      net.dispose();
    });
  });

  it('forwardAsync equals forward and runs with the caller grad mode', async () => {
    const m = torch.jit.createModule('Grad');
    m.registerParameter('w', f32(grid([2, 2])));
    m.define(`
def forward(self, x: Tensor) -> Tensor:
    return torch.matmul(x, self.w)

def grad_on(self) -> bool:
    return torch.is_grad_enabled()
`);
    const x = f32(grid([3, 2], 4));
    const sync = m.forward(x);
    const asyncY = await m.forwardAsync(x);
    expect(asyncY.toArray()).toEqual(sync.toArray());
    expect(await m.callAsync('grad_on')).toBe(true);
    const prev = torch.setGradEnabled(false);
    const off = m.callAsync('grad_on');
    const offY = m.forwardAsync(x);
    torch.setGradEnabled(prev);
    expect(await off).toBe(false);
    expect((await offY).requiresGrad).toBe(false);
    expect(torch.noGrad(() => m.call('grad_on'))).toBe(false);
    for (const t of [x, sync, asyncY]) t.dispose();
    m.dispose();
  });

  it('bad registrations are typed errors', () => {
    torch.scope(() => {
      const a = torch.jit.createModule('A');
      const b = torch.jit.createModule('B');
      b.registerModule('a', a);
      expect(() => a.registerModule('b', b)).toThrow(RangeError); // cycle
      expect(codeOf(() => a.registerModule('self', a))).toBe('E_MODULE');
      expect(() => torch.jit.createModule('not a name')).toThrow(TypeError);
      expect(() => a.registerParameter('x.y', torch.zeros([1]))).toThrow(TypeError);
      expect(() => a.registerParameter('p', 3 as never)).toThrow(TypeError);
      expect(() => a.registerAttribute('n', null)).toThrow(TypeError);
      expect(() => a.registerAttribute('n', [])).toThrow(TypeError);
      expect(() => a.registerAttribute('n', 1, 'NotAType[')).toThrow(TypeError);
      expect(() => a.registerAttribute('n', 'x', 'int')).toThrow(TypeError);
      a.registerAttribute('n', 4);
      expect(codeOf(() => a.registerBuffer('n', torch.zeros([1])))).toBe('E_ATTR');
      a.registerAttribute('t', [[1, 2], [3, 4]], 'List[List[int]]');
      expect(a.getAttr('t')).toEqual([[1, 2], [3, 4]]);
      a.registerAttribute('pair', [1, 0.5], 'Tuple[int, float]');
      expect(a.getAttr('pair')).toEqual([1, 0.5]);
      a.registerAttribute('table', { x: 1.5 }, 'Dict[str, float]');
      expect(a.getAttr('table')).toEqual({ x: 1.5 });
      a.registerAttribute('tt', torch.ones([2]));
      expect(a.getAttr<Tensor>('tt').toArray()).toEqual([1, 1]);
      expect(a.attributes().find((x) => x.name === 'tt')).toEqual({ name: 'tt', type: 'Tensor', kind: 'attribute' });
      expect(Object.keys(a.stateDict())).toEqual([]); // a plain Tensor attribute is not state
      a.setAttr('table', { y: 2 });
      expect(a.getAttr('table')).toEqual({ y: 2 });
      expect(() => a.setAttr('tt', 1)).toThrow(TypeError);
      expect(() => a.define(42 as never)).toThrow(TypeError);
      expect(() => a.registerParameter('q', torch.zeros([2], { dtype: 'int64' }))).toThrow(); // ints cannot require grad
      expect(a.hasAttr('q')).toBe(false);
      a.registerParameter('q', torch.zeros([2], { dtype: 'int64' }), false);
      // a loaded module cannot be extended (its class may be shared by other instances)
      const path = join(dir, 'b.pt');
      b.save(path);
      const loaded = torch.jit.load(path);
      expect(codeOf(() => ModuleBuilder.prototype.registerAttribute.call(loaded as ModuleBuilder, 'z', 1))).toBe('E_MODULE');
      expect(codeOf(() => ModuleBuilder.prototype.define.call(loaded as ModuleBuilder, 'def f(self) -> int:\n    return 1\n'))).toBe('E_MODULE');
      for (const m of [a, b, loaded]) m.dispose();
      expect(codeOf(() => a.registerAttribute('z', 1))).toBe('E_DISPOSED');
    });
  });

  it('memory: building, calling and reading state leave no live tensors behind', () => {
    const base = torch.memory().liveTensors;
    const baseMods = torch.jit.liveModuleHandles();
    for (let i = 0; i < 3; i++) {
      torch.scope(() => {
        const { net, block, block2 } = makeNet();
        const x = f32(grid([3, 4], 1));
        net.forward(x);
        net.call('pair', x);
        net.parameters();
        net.stateDict();
        const kids = net.children();
        expect(torch.jit.liveModuleHandles()).toBe(baseMods + 5);
        for (const m of [net, block, block2, ...kids]) m.dispose();
      });
    }
    expect(torch.memory().liveTensors).toBe(base);
    expect(torch.jit.liveModuleHandles()).toBe(baseMods);
    // the tensors given to registerParameter were freed by the scope, yet the module keeps its own
    const m = torch.jit.createModule('Keep');
    torch.scope(() => m.registerParameter('w', f32([[2]])));
    expect(torch.memory().liveTensors).toBe(base);
    m.define('def forward(self, x: Tensor) -> Tensor:\n    return x * self.w\n');
    const y = torch.scope(() => m.forward(f32([[3]])));
    expect(y.toArray()).toEqual([[6]]);
    y.dispose();
    m.dispose();
    expect(torch.memory().liveTensors).toBe(base);
  });
});

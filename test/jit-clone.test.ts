/**
 * ScriptModule.clone() (native jitClone, libtorch's Module::clone): equal outputs, independent
 * parameters / buffers / attributes, leaves with the same requiresGrad, and no leaked tensors, module
 * handles or memory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import type { ScriptModule } from '../lib/torch/jit.js';

const f32 = (v: number[]) => torch.tensor(v, { dtype: 'float32' });

/** A parent with a parameter, a frozen parameter, a buffer, an int attribute and a child with its own parameter. */
function build(): ScriptModule {
  const child = torch.jit.createModule('CloneChild');
  child.registerParameter('v', f32([0.5, -0.5, 2]));
  child.define('def forward(self, x: Tensor) -> Tensor:\n    return x * self.v\n');
  const m = torch.jit.createModule('CloneNet');
  m.registerParameter('w', f32([1, 2, 3]));
  m.registerParameter('frozen', f32([1, 1, 1]), false);
  m.registerBuffer('b', f32([10, 20, 30]));
  m.registerAttribute('k', 2, 'int');
  m.registerModule('child', child);
  child.dispose();
  m.define('def forward(self, x: Tensor) -> Tensor:\n    return (x * self.w + self.b) * self.k + self.child.forward(x) + self.frozen\n');
  return m;
}

const param = (m: ScriptModule, name: string) => Object.fromEntries(m.namedParameters())[name]!;

describe('ScriptModule.clone', () => {
  it('gives the same outputs, methods, training mode and requiresGrad; parameters are leaves', () => {
    torch.scope(() => {
      const m = build();
      m.eval();
      const c = m.clone();
      const x = f32([1, -2, 4]);
      expect(c.forward<ReturnType<typeof x.add>>(x).toArray()).toEqual(m.forward<ReturnType<typeof x.add>>(x).toArray());
      expect(c.methods()).toEqual(m.methods());
      expect(c.isTraining).toBe(false);
      expect(c.isSameModule(m)).toBe(false);
      expect(c.namedParameters().map(([n]) => n)).toEqual(m.namedParameters().map(([n]) => n));
      for (const [n, p] of c.namedParameters()) {
        expect(p.isLeaf).toBe(true);
        expect(p.gradFn).toBe(null);
        expect(p.requiresGrad).toBe(param(m, n).requiresGrad);
      }
      expect(param(c, 'frozen').requiresGrad).toBe(false);
      expect(c.getAttr('k')).toBe(2);
      c.dispose();
      m.dispose();
    });
  });

  it('owns its parameters, buffers and attributes: mutating one side leaves the other unchanged', () => {
    torch.scope(() => {
      const m = build();
      const c = m.clone();
      torch.noGrad(() => {
        param(c, 'w').add_(100);
        param(c, 'child.v').mul_(0);
        c.stateDict()['b']!.fill_(-1);
      });
      c.setAttr('k', 7);
      expect(param(m, 'w').toArray()).toEqual([1, 2, 3]);
      expect(param(m, 'child.v').toArray()).toEqual([0.5, -0.5, 2]);
      expect(m.stateDict()['b']!.toArray()).toEqual([10, 20, 30]);
      expect(m.getAttr('k')).toBe(2);
      torch.noGrad(() => param(m, 'w').sub_(1));
      expect(param(c, 'w').toArray()).toEqual([101, 102, 103]);
      // gradients flow to the clone's own leaves only
      const x = f32([1, 1, 1]);
      c.forward<ReturnType<typeof x.add>>(x).sum().backward();
      expect(param(c, 'w').grad?.toArray()).toEqual([7, 7, 7]);
      expect(param(m, 'w').grad).toBe(null);
      c.dispose();
      m.dispose();
    });
  });

  it('clones a loaded module too, and refuses a disposed one (E_DISPOSED)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tim-clone-test-'));
    try {
      torch.scope(() => {
        const built = build();
        built.save(join(dir, 'm.pt'));
        const m = torch.jit.load(join(dir, 'm.pt'));
        const c = m.clone();
        const x = f32([3, 2, 1]);
        expect(c.forward<ReturnType<typeof x.add>>(x).toArray()).toEqual(built.forward<ReturnType<typeof x.add>>(x).toArray());
        m.dispose();
        // the clone lives on without the original
        expect(c.forward<ReturnType<typeof x.add>>(x).toArray()).toEqual(built.forward<ReturnType<typeof x.add>>(x).toArray());
        expect(() => m.clone()).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
        c.dispose();
        built.dispose();
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('leaks nothing: tensors, module handles and memory return to baseline', () => {
    const base = torch.memory().liveTensors;
    const baseMods = torch.jit.liveModuleHandles();
    const m = torch.jit.createModule('CloneBig');
    // 64 MiB: above the mmap threshold, so a leaked copy would show in RSS
    const w = torch.zeros([16 * 1024 * 1024]);
    m.registerParameter('w', w);
    w.dispose();
    m.define('def forward(self, x: Tensor) -> Tensor:\n    return x + self.w[0]\n');
    const rss0 = process.memoryUsage.rss();
    for (let i = 0; i < 8; i++) {
      const c = m.clone();
      torch.scope(() => expect(c.forward<ReturnType<typeof torch.zeros>>(torch.zeros([1])).toArray()).toEqual([0]));
      c.dispose();
    }
    const grown = process.memoryUsage.rss() - rss0;
    expect(grown).toBeLessThan(3 * 64 * 2 ** 20);
    m.dispose();
    expect(torch.memory().liveTensors).toBe(base);
    expect(torch.jit.liveModuleHandles()).toBe(baseMods);
  });
});

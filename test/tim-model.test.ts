/**
 * TiM (lib/tim/network/model.ts): the official network built in-process through the module builder, checked
 * against the official code's golden vectors (test/fixtures/golden/forward, square and non-square), the
 * eager reference of the official code (test/fixtures/tim_reference.py) for T2I, Python's
 * torch.jit.load for saved modules, and Python's torch.save for .bin checkpoints.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TiM, torch } from '../lib/index.js';
import { buildTiMSpec, defaultAttention, parameterCounts, resolveConfig, stateDictEntries, type TiMConfig } from '../lib/tim/network/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { PY_SAFETENSORS, maxAbsDiff, repoRoot } from './helpers/golden_adamw.js';
import { PYTHON, pythonEnv } from './helpers/python.js';
import { thrown } from './helpers/tensor-expect.js';

const GOLDEN = path.join(repoRoot, 'test', 'fixtures', 'golden', 'forward');
const WEIGHTS = path.join(GOLDEN, 'weights.safetensors');
/** README tolerances (float32, abs). */
const TOL_OUT = 2e-6;
const TOL_HPROJ = 1e-7;

let dir: string;
let inputs: Record<string, Tensor>;
let golden: Record<string, Tensor>;
let goldenWeights: Record<string, Tensor>;
let goldenParams: Record<string, unknown>;

/** Runs the reference Python (one intra-op thread, BLAS threads as ours: pythonEnv), with st_read / st_write defined. */
function python(code: string): string {
  return execFileSync(PYTHON, ['-c', `import json, sys\nimport torch\ntorch.set_num_threads(1)\n${PY_SAFETENSORS}\n${code}`], {
    encoding: 'utf8',
    env: pythonEnv(),
    maxBuffer: 16 << 20,
  });
}

beforeAll(() => {
  // One thread, like the Python side: identical reduction order, so saved modules match bit for bit.
  torch.setNumThreads(1);
  dir = mkdtempSync(path.join(os.tmpdir(), 'tim-model-'));
  inputs = torch.load(path.join(GOLDEN, 'inputs.safetensors'), { lazy: false });
  golden = torch.load(path.join(GOLDEN, 'outputs.safetensors'), { lazy: false });
  const st = torch.loadSafetensors(WEIGHTS, { lazy: false });
  goldenWeights = st.tensors;
  goldenParams = JSON.parse(st.metadata!.config!) as Record<string, unknown>;
});

afterAll(() => {
  for (const r of [inputs, golden, goldenWeights]) for (const t of Object.values(r ?? {})) t.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Compares forward / forward_with_zs / intermediates of `model` with the golden outputs. */
function expectGolden(model: TiM): { out: number; hProj: number; outNonSquare: number; hProjNonSquare: number; worstIntermediate: number } {
  return torch.scope(() => {
    model.eval();
    const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
    const a = model.forward(x, t, r, y, { returnZs: true });
    const b = model.forward(inputs.x_nonsquare!, t, r, y, { returnZs: true });
    const plain = model.forward(x, t, r, y);
    const res = {
      out: maxAbsDiff(a.out, golden.out!),
      hProj: maxAbsDiff(a.hProj, golden.h_proj!),
      outNonSquare: maxAbsDiff(b.out, golden.out_nonsquare!),
      hProjNonSquare: maxAbsDiff(b.hProj, golden.h_proj_nonsquare!),
      worstIntermediate: 0,
    };
    expect(maxAbsDiff(plain, a.out)).toBe(0);
    expect(res.out).toBeLessThanOrEqual(TOL_OUT);
    expect(res.outNonSquare).toBeLessThanOrEqual(TOL_OUT);
    expect(res.hProj).toBeLessThanOrEqual(TOL_HPROJ);
    expect(res.hProjNonSquare).toBeLessThanOrEqual(TOL_HPROJ);
    const inter = model.forwardIntermediates(x, t, r, y);
    const names = Object.keys(golden).filter((k) => !k.endsWith('_nonsquare'));
    expect(Object.keys(inter).sort()).toEqual(names.sort());
    for (const k of names) {
      const d = maxAbsDiff(inter[k]!.to(golden[k]!.dtype), golden[k]!);
      // RoPE tables and the grid are exact; everything else within the output tolerance.
      expect(d, k).toBeLessThanOrEqual(k.startsWith('rope') ? 0 : TOL_OUT);
      res.worstIntermediate = Math.max(res.worstIntermediate, d);
    }
    return res;
  });
}

describe('TiM.create + golden weights', () => {
  it('matches the official forward (out, h_proj, intermediates; square and non-square)', () => {
    const config = TiM.fromOfficialConfig(goldenParams).config;
    using model = TiM.create({ ...config });
    expect(model.loadStateDict(goldenWeights)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    // The state_dict keys and order are the official ones (the golden file's keys).
    const sd = model.stateDict();
    expect(Object.keys(sd).sort()).toEqual(Object.keys(goldenWeights).sort());
    for (const t of Object.values(sd)) t.dispose();
    const errs = expectGolden(model);
    console.log('golden forward errors (TiM.create + loadStateDict):', errs);
  });

  it('TiM.load reads the config from the weights file metadata', () => {
    using model = TiM.load(WEIGHTS);
    expect(model.config).toMatchObject({ variant: 'c2i', hiddenSize: 64, depth: 4, numHeads: 4, loraHiddenSize: 48, ropeGrid: 'official' });
    expectGolden(model);
  });

  it('picks the attention implementation the libtorch offers (math on 1.13)', () => {
    expect(defaultAttention()).toBe(torch.hasOp('aten::scaled_dot_product_attention') ? 'sdpa' : 'math');
    using model = TiM.create('TiM-B/4', { init: 'empty' });
    expect(model.module.typeName).toMatch(/TiM_C2I/);
  });

  it('ropeGrid "rowcol" equals the official grid on square inputs and differs on non-square ones', () => {
    const base = TiM.fromOfficialConfig(goldenParams).config;
    using official = TiM.load(WEIGHTS);
    using rowcol = TiM.load(WEIGHTS, { config: { ...base, ropeGrid: 'rowcol' } });
    torch.scope(() => {
      const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
      expect(maxAbsDiff(official.forward(x, t, r, y), rowcol.forward(x, t, r, y))).toBe(0);
      const xs = inputs.x_nonsquare!;
      // Far outside the parity tolerance (the golden non-square output needs the official grid) ...
      expect(maxAbsDiff(official.forward(xs, t, r, y), rowcol.forward(xs, t, r, y))).toBeGreaterThan(10 * TOL_OUT);
      expect(maxAbsDiff(rowcol.forward(xs, t, r, y), golden.out_nonsquare!)).toBeGreaterThan(10 * TOL_OUT);
      // ... because the tokens get other positions: token n at (n % w, n // w) instead of (n % h, n // h).
      const grid = rowcol.forwardIntermediates(xs, t, r, y).rope_grid!;
      const w = 6;
      expect(grid.toArray()).toEqual([Array.from({ length: 24 }, (_, n) => n % w), Array.from({ length: 24 }, (_, n) => Math.floor(n / w))]);
    });
  });
});

describe('official initialization', () => {
  it('zeros where initialize_weights zeroes, xavier/normal statistics elsewhere', () => {
    const config = resolveConfig({
      qkNorm: true, inputSize: 8, patchSize: 2, inChannels: 4, hiddenSize: 256, depth: 2, numHeads: 4, encoderDepth: 1,
      zDim: 64, projectorDim: 256, numClasses: 10, loraHiddenSize: 64, useNewEmbed: true, distanceAware: true,
    });
    torch.manualSeed(0);
    using model = TiM.create(config);
    const inits = new Map(stateDictEntries(buildTiMSpec(config)).map((e) => [e.key, e.init]));
    const sd = model.stateDict();
    let checkedStats = 0;
    torch.scope(() => {
      for (const [k, t] of Object.entries(sd)) {
        const init = inits.get(k)!;
        const n = t.numel;
        if (init.kind === 'zeros') expect(t.abs().max().item(), k).toBe(0);
        else if (init.kind === 'ones') expect(t.sub(1).abs().max().item(), k).toBe(0);
        else if (init.kind === 'xavier_uniform') {
          const a = Math.sqrt(6 / (init.fanIn + init.fanOut));
          expect(t.abs().max().item(), k).toBeLessThanOrEqual(a);
          if (n >= 4096) {
            expect(t.std().item() / (a / Math.sqrt(3)), k).toBeCloseTo(1, 1);
            expect(Math.abs(t.mean().item()), k).toBeLessThan(a * 0.05);
            checkedStats++;
          }
        } else if (init.kind === 'normal' && n >= 2560) {
          expect(t.std().item() / init.std, k).toBeCloseTo(1, 1);
          checkedStats++;
        }
      }
    });
    // Named official cases, so a wrong spec entry cannot hide behind the table above.
    expect(inits.get('blocks.1.adaLN_modulation.fc2.weight')).toEqual({ kind: 'zeros' });
    expect(inits.get('final_layer.linear.weight')).toEqual({ kind: 'zeros' });
    expect(inits.get('t_embedder.mlp.0.weight')).toMatchObject({ kind: 'normal', std: 0.02 });
    expect(inits.get('delta_embedder.mlp.0.weight')).toMatchObject({ kind: 'xavier_uniform' });
    expect(inits.get('x_embedder.proj.weight')).toEqual({ kind: 'xavier_uniform', fanIn: 16, fanOut: 256 });
    expect(checkedStats).toBeGreaterThan(15);
    for (const t of Object.values(sd)) t.dispose();
    // A freshly initialized TiM predicts exactly zero (zeroed final layer), as the official one does.
    torch.scope(() => {
      const out = model.forward(torch.randn([2, 4, 8, 8]), torch.tensor([0.5, 0.9]), torch.tensor([0.1, 0.9]), torch.tensor([1, 10], { dtype: 'int64' }));
      expect(out.abs().max().item()).toBe(0);
    });
  });

  it('parameter counts from shapes equal the live module', () => {
    using model = TiM.load(WEIGHTS);
    const counts = parameterCounts(model.config as TiMConfig);
    expect(model.numParameters()).toBe(counts.total);
    expect(counts.total).toBe(411_200);
    expect(counts.withoutProjector).toBe(counts.total - counts.parts.projector!);
  });
});

describe('gradients and memory', () => {
  it('backward reaches every parameter', () => {
    using model = TiM.load(WEIGHTS);
    model.train();
    torch.scope(() => {
      const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
      const { out, hProj } = model.forward(x, t, r, y, { returnZs: true });
      out.square().mean().add(hProj.square().mean()).backward();
      const named = model.namedParameters();
      expect(named.length).toBe(109);
      for (const [name, p] of named) {
        const g = p.grad;
        expect(g, name).not.toBeNull();
        expect(g!.shape).toEqual(p.shape);
        expect(g!.abs().sum().item(), name).toBeGreaterThan(0);
      }
    });
  });

  it('creating, running and disposing models leaves no tensor behind', () => {
    const cycle = (): void => {
      using model = TiM.load(WEIGHTS);
      torch.scope(() => {
        const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
        model.forward(x, t, r, y, { returnZs: true });
        model.forwardIntermediates(x, t, r, y);
      });
    };
    cycle();
    const before = torch.memory().liveTensors;
    const modules = torch.jit.liveModuleHandles();
    for (let i = 0; i < 3; i++) cycle();
    expect(torch.memory().liveTensors).toBe(before);
    expect(torch.jit.liveModuleHandles()).toBe(modules);
    // Repeated forwards on one model stay flat too.
    using model = TiM.load(WEIGHTS);
    const base = torch.memory().liveTensors;
    for (let i = 0; i < 5; i++) {
      torch.scope(() => {
        const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
        model.forward(x, t, r, y, { returnZs: true });
      });
      expect(torch.memory().liveTensors).toBe(base);
    }
  });
});

describe('save / load', () => {
  it('a saved .pt loads in Python torch.jit.load with identical outputs, and back in TiM.load', () => {
    const pt = path.join(dir, 'golden.pt');
    {
      using model = TiM.load(WEIGHTS);
      model.eval();
      model.save(pt);
      torch.scope(() => {
        const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
        const a = model.forward(x, t, r, y, { returnZs: true });
        const b = model.forward(inputs.x_nonsquare!, t, r, y);
        torch.save({ out: a.out, h_proj: a.hProj, out_nonsquare: b }, path.join(dir, 'node_out.safetensors'));
      });
    }
    expect(readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
    const report = python(`
inp = st_read(${JSON.stringify(path.join(GOLDEN, 'inputs.safetensors'))})
ours = st_read(${JSON.stringify(path.join(dir, 'node_out.safetensors'))})
m = torch.jit.load(${JSON.stringify(pt)})
m.eval()
with torch.no_grad():
    out, h = m.forward_with_zs(inp['x'], inp['t'], inp['r'], inp['y'])
    ns = m(inp['x_nonsquare'], inp['t'], inp['r'], inp['y'])
print(json.dumps({'out': (out - ours['out']).abs().max().item(), 'h_proj': (h - ours['h_proj']).abs().max().item(),
                  'ns': (ns - ours['out_nonsquare']).abs().max().item(), 'keys': len(m.state_dict()),
                  'config': json.loads(m.tim_config)['config']['hiddenSize']}))
`);
    const r = JSON.parse(report) as Record<string, number>;
    expect(r).toEqual({ out: 0, h_proj: 0, ns: 0, keys: 109, config: 64 });
    expect(() => TiM.load(pt)).toThrow(expect.objectContaining({ code: 'E_UNSAFE' })); // code: only on opt-in
    using back = TiM.load(pt, { allowTorchScript: true });
    expect(back.config).toMatchObject({ hiddenSize: 64, depth: 4 });
    expectGolden(back);
  });

  it('.safetensors: config from metadata, from a sidecar, or explicit; missing config is E_CONFIG', () => {
    const st = path.join(dir, 'tim.safetensors');
    {
      using model = TiM.load(WEIGHTS);
      model.save(st);
    }
    const meta = torch.loadSafetensors(st);
    expect(JSON.parse(meta.metadata!.config!)).toMatchObject(goldenParams);
    expect(meta.metadata!.target).toBe('tim.models.c2i.tim_model.TiM');
    for (const [k, t] of Object.entries(meta.tensors)) expect(maxAbsDiff(t, goldenWeights[k]!), k).toBe(0);
    for (const t of Object.values(meta.tensors)) t.dispose();
    {
      using m = TiM.load(st);
      expectGolden(m);
    }
    // Bare weights (no metadata): config from a sidecar beside them, or given explicitly.
    const bareDir = mkdtempSync(path.join(dir, 'bare-'));
    const bare = path.join(bareDir, 'model.safetensors');
    torch.save(goldenWeights, bare);
    const e = thrown(() => TiM.load(bare));
    expect(e).toBeInstanceOf(torch.TorchError);
    expect(e.code).toBe('E_CONFIG');
    {
      using m = TiM.load(bare, { config: goldenParams });
      expectGolden(m);
    }
    // An official YAML (whole file) as the sidecar.
    const yaml = ['model:', '  network:', '    target: tim.models.c2i.tim_model.TiM', '    params:', ...Object.entries(goldenParams).map(([k, v]) => `      ${k}: ${JSON.stringify(v)}`), ''].join('\n');
    writeFileSync(path.join(bareDir, 'model.yaml'), yaml);
    {
      using m = TiM.load(bare);
      expect(m.config.numClasses).toBe(10);
      expectGolden(m);
    }
    {
      using m = TiM.fromOfficialConfig(path.join(bareDir, 'model.yaml'), { init: 'empty' });
      expect(m.config).toMatchObject({ hiddenSize: 64, loraHiddenSize: 48 });
    }
  });

  it('.bin written by Python torch.save(state_dict) loads; TiM.save(.bin) loads in Python torch.load', () => {
    const bin = path.join(dir, 'py.bin');
    python(`
sd = st_read(${JSON.stringify(WEIGHTS)})
import collections
torch.save(collections.OrderedDict(sd), ${JSON.stringify(bin)})
`);
    expect(thrown(() => TiM.load(bin)).code).toBe('E_CONFIG');
    writeFileSync(path.join(dir, 'py.json'), JSON.stringify(goldenParams));
    using m = TiM.load(bin); // sidecar py.json
    expectGolden(m);
    // A Python state dict saved as .pt is still a state dict: told apart from TorchScript by content.
    copyFileSync(bin, path.join(dir, 'py_state.pt'));
    {
      using s = TiM.load(path.join(dir, 'py_state.pt'), { config: goldenParams });
      expectGolden(s);
    }
    const ours = path.join(dir, 'ours.bin');
    m.save(ours);
    const r = JSON.parse(python(`
sd = torch.load(${JSON.stringify(ours)})
ref = st_read(${JSON.stringify(WEIGHTS)})
print(json.dumps({'n': len(sd), 'diff': max((sd[k] - ref[k]).abs().max().item() for k in ref), 'same_keys': sorted(sd) == sorted(ref)}))
`)) as { n: number; diff: number; same_keys: boolean };
    expect(r).toEqual({ n: 109, diff: 0, same_keys: true });
    copyFileSync(path.join(dir, 'py.json'), path.join(dir, 'ours.json'));
    using back = TiM.load(ours);
    expectGolden(back);
  });

  it('strict loading reports missing/unexpected keys; bad inputs are typed errors', () => {
    using m = TiM.load(WEIGHTS);
    const partial = { ...goldenWeights, extra: goldenWeights['x_embedder.proj.bias']! } as Record<string, Tensor>;
    delete partial['final_layer.linear.bias'];
    const e = thrown(() => m.loadStateDict(partial)) as Error & { missingKeys?: string[]; unexpectedKeys?: string[]; code?: string };
    expect(e.code).toBe('E_STATE_DICT');
    expect(e.missingKeys).toEqual(['final_layer.linear.bias']);
    expect(e.unexpectedKeys).toEqual(['extra']);
    expect(m.loadStateDict(partial, { strict: false })).toEqual({ missingKeys: ['final_layer.linear.bias'], unexpectedKeys: ['extra'] });

    const { x, t, r, y } = inputs as Record<'x' | 't' | 'r' | 'y', Tensor>;
    torch.scope(() => {
      const bad = thrown(() => m.forward(torch.zeros([3, 4, 7, 8]), t, r, y));
      expect(bad).toBeInstanceOf(RangeError);
      expect(bad.code).toBe('E_SHAPE');
      expect(thrown(() => m.forward(x, t, r, y.to('float32'))).code).toBe('E_DTYPE');
      expect(thrown(() => m.forward(x, torch.zeros([2]), r, y)).code).toBe('E_SHAPE');
    });
    const cfg = thrown(() => TiM.create({ qkNorm: true, hiddenSiz: 64 } as never));
    expect(cfg).toBeInstanceOf(TypeError);
    expect(cfg.code).toBe('E_CONFIG');
    expect(thrown(() => TiM.create({ hiddenSize: 64 } as never)).code).toBe('E_CONFIG');
    expect(thrown(() => TiM.create({ qkNorm: true, hiddenSize: 60, numHeads: 4 })).code).toBe('E_CONFIG');
    expect(thrown(() => TiM.create('TiM-Z/9' as never))).toBeInstanceOf(RangeError);
    expect(thrown(() => TiM.load(path.join(dir, 'nope.safetensors'))).code).toBe('E_IO');
    expect(existsSync(path.join(dir, 'nope.safetensors'))).toBe(false);
  });
});

describe('T2I', () => {
  it('a small T2I TiM matches the eager reference of the official code on the same weights', () => {
    const params = {
      input_size: 8, patch_size: 2, in_channels: 4, hidden_size: 64, depth: 3, num_heads: 4, encoder_depth: 2,
      z_dim: 32, projector_dim: 64, qk_norm: true, new_condition: 't-r', use_new_embed: true, distance_aware: true,
      lora_hidden_size: 48, cap_feat_dim: 40,
    };
    using model = TiM.fromOfficialConfig(params, { variant: 't2i' });
    expect(model.config.variant).toBe('t2i');
    torch.manualSeed(7);
    // Random weights everywhere (the official init zeroes the output, which would prove nothing).
    torch.scope(() => {
      const rec: Record<string, Tensor> = {};
      for (const [k, p] of model.namedParameters()) rec[k] = torch.randn(p.shape).mul(0.05);
      model.loadStateDict(rec);
    });
    const weights = path.join(dir, 't2i.safetensors');
    model.save(weights);
    const io = path.join(dir, 't2i_inputs.safetensors');
    torch.scope(() => {
      torch.save({
        x: torch.randn([2, 4, 8, 8]), x_ns: torch.randn([2, 4, 8, 12]), t: torch.tensor([0.7, 0.4]), r: torch.tensor([0.2, 0.4]),
        cap: torch.randn([2, 5, 40]),
      }, io);
    });
    const pyOut = path.join(dir, 't2i_ref.safetensors');
    python(`
sys.path.insert(0, ${JSON.stringify(path.join(repoRoot, 'test', 'fixtures'))})
from tim_reference import TiMT2I
params = json.loads(${JSON.stringify(JSON.stringify(params))})
ref = TiMT2I(**params)
ref.load_state_dict(st_read(${JSON.stringify(weights)}), strict=True)
ref.eval()
i = st_read(${JSON.stringify(io)})
with torch.no_grad():
    o, h = ref(i['x'], i['t'], i['r'], i['cap'], return_zs=True)
    ons, hns = ref(i['x_ns'], i['t'], i['r'], i['cap'], return_zs=True)
st_write(${JSON.stringify(pyOut)}, {'out': o, 'h_proj': h, 'out_ns': ons, 'h_proj_ns': hns})
`);
    const ref = torch.load(pyOut, { lazy: false });
    const inp = torch.load(io, { lazy: false });
    try {
      torch.scope(() => {
        model.eval();
        const a = model.forward(inp.x!, inp.t!, inp.r!, inp.cap!, { returnZs: true });
        const b = model.forward(inp.x_ns!, inp.t!, inp.r!, inp.cap!, { returnZs: true });
        const errs = { out: maxAbsDiff(a.out, ref.out!), hProj: maxAbsDiff(a.hProj, ref.h_proj!), outNs: maxAbsDiff(b.out, ref.out_ns!), hProjNs: maxAbsDiff(b.hProj, ref.h_proj_ns!) };
        console.log('T2I vs eager reference:', errs, 'max |out|', a.out.abs().max().item());
        expect(a.out.abs().max().item()).toBeGreaterThan(0.1);
        expect(errs.out).toBeLessThanOrEqual(TOL_OUT);
        expect(errs.outNs).toBeLessThanOrEqual(TOL_OUT);
        expect(errs.hProj).toBeLessThanOrEqual(TOL_HPROJ);
        expect(errs.hProjNs).toBeLessThanOrEqual(TOL_HPROJ);
      });
    } finally {
      for (const t of [...Object.values(ref), ...Object.values(inp)]) t.dispose();
    }
  });
});

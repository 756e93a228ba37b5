/**
 * The TiM network spec (lib/tim/network): configuration and presets, the module tree's structure,
 * and — through the Python harness scripts/tim_spec_to_python.py — the TorchScript sources compiled
 * by torch.jit.script (Debian's torch 1.13) and compared with the official implementation's golden
 * outputs (test/fixtures/golden/forward) and with an eager reference of the official code
 * (test/fixtures/tim_reference.py) for what has no golden data (T2I, other new_condition values).
 * No native addon is needed.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  NEW_CONDITIONS,
  OFFICIAL_TIM_XL_P2_256,
  PRESETS,
  buildTiMSpec,
  countParameters,
  fromOfficialConfig,
  stateDictEntries,
  toOfficialParams,
  typeSignature,
  validateConfig,
  walkModules,
  type ModuleSpec,
  type TiMConfig,
} from '../lib/tim/network/index.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const GOLDEN_FORWARD = path.join(repoRoot, 'test', 'fixtures', 'golden', 'forward');
import { PYTHON, pythonEnv } from './helpers/python.js';

/** The JSON header of a .safetensors file (8-byte little-endian length, then JSON). */
function safetensorsHeader(file: string): { tensors: Record<string, { dtype: string; shape: number[] }>; metadata: Record<string, string> } {
  const fd = openSync(file, 'r');
  try {
    const len = Buffer.alloc(8);
    readSync(fd, len, 0, 8, 0);
    const n = Number(len.readBigUInt64LE(0));
    const buf = Buffer.alloc(n);
    readSync(fd, buf, 0, n, 8);
    const header = JSON.parse(buf.toString('utf8')) as Record<string, any>;
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    delete header.__metadata__;
    return { tensors: header, metadata };
  } finally {
    closeSync(fd);
  }
}

const goldenWeights = safetensorsHeader(path.join(GOLDEN_FORWARD, 'weights.safetensors'));
/** The tiny model of the golden cases, as official snake_case params (from the weights' metadata). */
const GOLDEN_PARAMS = JSON.parse(goldenWeights.metadata.config!) as Record<string, unknown>;
const GOLDEN_CONFIG = fromOfficialConfig(GOLDEN_PARAMS);

const TINY_T2I_PARAMS = {
  input_size: 8, patch_size: 2, in_channels: 4, hidden_size: 64, depth: 3, num_heads: 4, encoder_depth: 2,
  z_dim: 32, projector_dim: 64, qk_norm: true, new_condition: 't-r', use_new_embed: true, distance_aware: true,
  lora_hidden_size: 48, cap_feat_dim: 40,
};

// ---- configuration --------------------------------------------------------------------------------

describe('TiM config and presets', () => {
  it('presets carry the official YAML values plus the official constructor defaults', () => {
    const xl = PRESETS['TiM-XL/2-256'];
    expect(xl).toMatchObject({
      variant: 'c2i', inputSize: 32, patchSize: 2, inChannels: 4, hiddenSize: 1152, depth: 28, numHeads: 16,
      encoderDepth: 8, zDim: 768, numClasses: 1000, classDropoutProb: 0.1, qkNorm: true, newCondition: 't-r',
      useNewEmbed: true, distanceAware: true, loraHiddenSize: 384,
      // not in the YAML: TiM.__init__ defaults
      mlpRatio: 4, projectorDim: 2048, ropeGrid: 'official',
    });
    expect(PRESETS['TiM-B/4']).toMatchObject({ patchSize: 4, hiddenSize: 768, depth: 12, numHeads: 12, encoderDepth: 4, loraHiddenSize: 256 });
    expect(PRESETS['TiM-XL/1-512']).toMatchObject({ inputSize: 16, patchSize: 1, inChannels: 32, hiddenSize: 1152, depth: 28 });
    expect(PRESETS['TiM-T2I']).toMatchObject({ variant: 't2i', inputSize: 16, patchSize: 1, inChannels: 32, capFeatDim: 1152, depth: 28 });
  });

  it('fromOfficialConfig applies official defaults and rejects what the official code would not accept', () => {
    const c = fromOfficialConfig({ qk_norm: false });
    // TiM() defaults; lora_hidden_size None -> (hidden_size // 4) * 3
    expect(c).toMatchObject({ hiddenSize: 1152, depth: 28, useNewEmbed: false, distanceAware: false, loraHiddenSize: 864, newCondition: 't-r' });
    expect(fromOfficialConfig({ qk_norm: true }, { target: 'tim.models.t2i.tim_model.TiM' }).variant).toBe('t2i');
    expect(() => fromOfficialConfig({})).toThrow(/qk_norm is required/);
    expect(() => fromOfficialConfig({ qk_norm: true, hiden_size: 8 })).toThrow(/unknown key 'hiden_size'/);
    expect(() => fromOfficialConfig({ qk_norm: true, new_condition: 't+r' })).toThrow(/newCondition/);
    // head_dim 1152/64 = 18 is not a multiple of 4 (RoPE splits it in two halves of even size)
    expect(() => fromOfficialConfig({ qk_norm: true, num_heads: 64 })).toThrow(/multiple of 4/);
    expect(() => fromOfficialConfig({ qk_norm: true, encoder_depth: 29 })).toThrow(/exceeds depth/);
    expect(() => validateConfig({ ...GOLDEN_CONFIG, ropeGrid: 'diagonal' as never })).toThrow(/ropeGrid/);
  });

  it('toOfficialParams inverts fromOfficialConfig', () => {
    for (const cfg of Object.values(PRESETS)) {
      expect(fromOfficialConfig(toOfficialParams(cfg), { variant: cfg.variant })).toEqual(cfg);
    }
    expect(fromOfficialConfig(OFFICIAL_TIM_XL_P2_256)).toEqual(PRESETS['TiM-XL/2-256']);
  });
});

// ---- spec structure -----------------------------------------------------------------------------

/** Configurations whose specs are checked for structural consistency. */
function structuralConfigs(): TiMConfig[] {
  const out: TiMConfig[] = [...Object.values(PRESETS), GOLDEN_CONFIG, { ...GOLDEN_CONFIG, ropeGrid: 'rowcol' }];
  for (const newCondition of NEW_CONDITIONS) {
    out.push({ ...GOLDEN_CONFIG, newCondition }, { ...GOLDEN_CONFIG, newCondition, useNewEmbed: false });
  }
  out.push({ ...GOLDEN_CONFIG, qkNorm: false, distanceAware: false, classDropoutProb: 0 });
  out.push({ ...GOLDEN_CONFIG, qkNorm: false }, { ...GOLDEN_CONFIG, distanceAware: false });
  const t2i = fromOfficialConfig(TINY_T2I_PARAMS, { variant: 't2i' });
  out.push(t2i, { ...t2i, qkNorm: false, distanceAware: false, newCondition: 'r', useNewEmbed: false });
  return out;
}

describe('TiM module spec', () => {
  it('has exactly the official state_dict keys and shapes (golden weights header)', () => {
    const entries = stateDictEntries(buildTiMSpec(GOLDEN_CONFIG));
    const ours = Object.fromEntries(entries.map((e) => [e.key, e.shape]));
    const theirs = Object.fromEntries(Object.entries(goldenWeights.tensors).map(([k, v]) => [k, v.shape]));
    expect(Object.keys(ours).sort()).toEqual(Object.keys(theirs).sort());
    expect(ours).toEqual(theirs);
    expect(entries.every((e) => e.kind === 'param')).toBe(true);
  });

  it('gives a typeName to one signature only, across all configurations and both attention paths', () => {
    const seen = new Map<string, string>();
    for (const cfg of structuralConfigs()) {
      for (const impl of ['math', 'sdpa'] as const) {
        for (const { path: p, spec } of walkModules(buildTiMSpec(cfg, { attention: impl }))) {
          expect(spec.typeName, p).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
          const sig = typeSignature(spec);
          const prev = seen.get(spec.typeName);
          if (prev !== undefined) expect(sig, `${spec.typeName} at ${p}`).toBe(prev);
          else seen.set(spec.typeName, sig);
        }
      }
    }
    // Several blocks variants and roots exist, so the check above compared distinct configurations.
    expect([...seen.keys()].filter((n) => n.startsWith('TiM_C2I_')).length).toBeGreaterThan(5);
  });

  it('sources only reference members that exist, and only call methods defined before them', () => {
    for (const cfg of structuralConfigs()) {
      for (const { path: p, spec } of walkModules(buildTiMSpec(cfg))) {
        checkSources(spec, p);
      }
    }
  });

  it('initializes parameters with the official scheme (initialize_weights)', () => {
    const init = Object.fromEntries(stateDictEntries(buildTiMSpec(PRESETS['TiM-XL/2-256'])).map((e) => [e.key, e.init]));
    const D = 1152;
    // Patch embedding: xavier on the (D, C·p·p) view, zero bias.
    expect(init['x_embedder.proj.weight']).toEqual({ kind: 'xavier_uniform', fanIn: 4 * 2 * 2, fanOut: D });
    expect(init['x_embedder.proj.bias']).toEqual({ kind: 'zeros' });
    expect(init['y_embedder.embedding_table.weight']).toEqual({ kind: 'normal', mean: 0, std: 0.02 });
    // Only t_embedder's MLP weights get normal(0.02); the official code leaves delta_embedder with xavier.
    expect(init['t_embedder.mlp.0.weight']).toEqual({ kind: 'normal', mean: 0, std: 0.02 });
    expect(init['t_embedder.mlp.2.weight']).toEqual({ kind: 'normal', mean: 0, std: 0.02 });
    expect(init['delta_embedder.mlp.0.weight']).toEqual({ kind: 'xavier_uniform', fanIn: 256, fanOut: D });
    expect(init['blocks.27.attn.qkv.weight']).toEqual({ kind: 'xavier_uniform', fanIn: D, fanOut: 3 * D });
    expect(init['blocks.27.attn.qkv_d.weight']).toEqual({ kind: 'xavier_uniform', fanIn: D, fanOut: 3 * D });
    expect(init['blocks.27.attn.q_norm.weight']).toEqual({ kind: 'ones' });
    expect(init['blocks.27.attn.k_norm.bias']).toEqual({ kind: 'zeros' });
    // adaLN-Zero and the zeroed output layer
    expect(init['blocks.0.adaLN_modulation.fc2.weight']).toEqual({ kind: 'zeros' });
    expect(init['blocks.0.adaLN_modulation.fc2.bias']).toEqual({ kind: 'zeros' });
    expect(init['blocks.0.adaLN_modulation.fc1_g.weight']).toEqual({ kind: 'xavier_uniform', fanIn: D, fanOut: 384 });
    expect(init['final_layer.adaLN_modulation.fc2.weight']).toEqual({ kind: 'zeros' });
    expect(init['final_layer.linear.weight']).toEqual({ kind: 'zeros' });
    expect(init['final_layer.linear.bias']).toEqual({ kind: 'zeros' });
    // T2I caption embedder: all three SwiGLU weights normal(0.02), LayerNorm ones/zeros.
    const t2i = Object.fromEntries(stateDictEntries(buildTiMSpec(PRESETS['TiM-T2I'])).map((e) => [e.key, e.init]));
    expect(t2i['y_embedder.mlp.fc2.weight']).toEqual({ kind: 'normal', mean: 0, std: 0.02 });
    expect(t2i['y_embedder.norm.weight']).toEqual({ kind: 'ones' });
    expect(t2i['blocks.3.cross_attn.kv.weight']).toEqual({ kind: 'xavier_uniform', fanIn: D, fanOut: 2 * D });
  });

  it('counts the official parameter numbers from shapes alone', () => {
    // README of the official repo: XL 664M, T2I 865M, B 131M, counted without the REPA projector
    // (training only). The exact counts (with and without it) are cross-checked against the eager
    // reference built on the meta device in the Python suite below.
    const M = 1e6;
    const xl = buildTiMSpec(PRESETS['TiM-XL/2-256']);
    expect(countParameters(xl, { excludePrefixes: ['projector.'] }) / M).toBeCloseTo(664.1, 1);
    expect(countParameters(buildTiMSpec(PRESETS['TiM-XL/1-512']), { excludePrefixes: ['projector.'] }) / M).toBeCloseTo(664.2, 1);
    expect(countParameters(buildTiMSpec(PRESETS['TiM-T2I']), { excludePrefixes: ['projector.'] }) / M).toBeCloseTo(865.0, 1);
    // B/4: 128.8M (the README's "131M" is not reproducible from configs/c2i/tim_b_p4.yaml; within 2%).
    const b = countParameters(buildTiMSpec(PRESETS['TiM-B/4']), { excludePrefixes: ['projector.'] });
    expect(Math.abs(b / (131 * M) - 1)).toBeLessThan(0.02);
    // the projector is 1152·2048 + 2048·2048 + 2048·768 weights plus biases
    expect(countParameters(xl) - countParameters(xl, { excludePrefixes: ['projector.'] })).toBe(1152 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 768 + 768);
  });

  it('uses the official LayerNorm eps: 1e-5 for q/k and caption norms, 1e-6 for the modulated norms', () => {
    const mods = Object.fromEntries(walkModules(buildTiMSpec(PRESETS['TiM-T2I'])).map((m) => [m.path, m.spec]));
    const attr = (p: string, name: string): unknown => mods[p]!.attributes.find((a) => a.name === name)?.value;
    expect(attr('blocks.0.attn.q_norm', 'eps')).toBe(1e-5);
    expect(attr('blocks.0.attn.k_norm', 'eps')).toBe(1e-5);
    expect(attr('blocks.0.cross_attn.q_norm', 'eps')).toBe(1e-5);
    expect(attr('y_embedder.norm', 'eps')).toBe(1e-5);
    expect(attr('blocks.0', 'norm_eps')).toBe(1e-6);
    expect(attr('final_layer', 'norm_eps')).toBe(1e-6);
    // −ln(10000) exactly as Python's float
    expect(attr('t_embedder', 'neg_log_max_period')).toBe(-Math.log(10000));
    expect(mods['blocks.0.attn']!.attributes.find((a) => a.name === 'scale')).toEqual({ name: 'scale', type: 'float', value: 72 ** -0.5 });
  });

  it('uses the math attention path by default and SDPA only on request', () => {
    const attnSources = (impl?: 'math' | 'sdpa'): string =>
      walkModules(buildTiMSpec(GOLDEN_CONFIG, impl ? { attention: impl } : {}))
        .find((m) => m.path === 'blocks.0.attn')!
        .spec.methods.join('\n');
    expect(attnSources()).toContain('torch.matmul(q, k.transpose(-2, -1))');
    expect(attnSources()).not.toContain('scaled_dot_product_attention');
    expect(attnSources('sdpa')).toContain('torch.scaled_dot_product_attention(q, k, v)');
    expect(() => buildTiMSpec(GOLDEN_CONFIG, { attention: 'flash' as never })).toThrow(/attention/);
  });
});

/** Static checks of a module's sources against its own members (what C++ define would reject late). */
function checkSources(spec: ModuleSpec, where: string): void {
  const members = new Set<string>(['training', ...spec.params.map((p) => p.name), ...spec.buffers.map((b) => b.name), ...spec.attributes.map((a) => a.name), ...spec.children.map((c) => c.name)]);
  const children = new Set(spec.children.map((c) => c.name));
  const defined = new Set<string>();
  const allDefs = spec.methods.map((m) => /^def (\w+)\(self/.exec(m)?.[1]);
  for (const [i, m] of spec.methods.entries()) {
    const name = allDefs[i];
    expect(name, `${where}: method ${i} must start with 'def NAME(self'`).toBeTruthy();
    expect(m.match(/^def /gm)?.length, `${where}.${name}: one def per source`).toBe(1);
    for (const [, ref, call] of m.matchAll(/self\.(\w+)(\s*\()?/g)) {
      if (call) {
        expect(defined.has(ref!), `${where}.${name} calls self.${ref} before it is defined`).toBe(true);
      } else {
        expect(members.has(ref!), `${where}.${name} references missing member self.${ref}`).toBe(true);
      }
    }
    for (const [, ref] of m.matchAll(/getattr\(self, "(\w+)"\)/g)) expect(children.has(ref!), `${where}.${name}: child ${ref}`).toBe(true);
    defined.add(name!);
  }
}

// ---- TorchScript vs the official implementation (Python harness) ---------------------------------

interface HarnessReport {
  cases: Record<string, any>;
  type_names: string[];
}

describe('TorchScript sources vs the official TiM (torch.jit.script, torch 1.13)', () => {
  let report: HarnessReport;
  let tmp: string;

  beforeAll(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'tim-network-spec-'));
    const requests: Record<string, unknown> = {
      golden: { role: 'golden', official: GOLDEN_PARAMS },
      rowcol: { role: 'rowcol', official: GOLDEN_PARAMS, ropeGrid: 'rowcol' },
      t2i: { role: 'reference', variant: 't2i', official: TINY_T2I_PARAMS, seed: 5 },
      t2i_plain: {
        role: 'reference', variant: 't2i', seed: 6,
        official: { ...TINY_T2I_PARAMS, qk_norm: false, distance_aware: false, new_condition: 'r', use_new_embed: false },
      },
      plain_attention: {
        role: 'reference', seed: 7,
        official: { ...GOLDEN_PARAMS, qk_norm: false, distance_aware: false, lora_hidden_size: null, class_dropout_prob: 0 },
      },
      'shared_embedder_t,r,t-r': { role: 'reference', seed: 8, official: { ...GOLDEN_PARAMS, new_condition: 't,r,t-r', use_new_embed: false } },
    };
    for (const cond of NEW_CONDITIONS) requests[`condition_${cond}`] = { role: 'reference', seed: 21, official: { ...GOLDEN_PARAMS, new_condition: cond } };
    for (const [name, cfg] of Object.entries(PRESETS)) requests[`count_${name}`] = { role: 'count', variant: cfg.variant, official: toOfficialParams(cfg) };
    writeFileSync(path.join(tmp, 'requests.json'), JSON.stringify(requests));
    // The spec JSON comes from the TS code through its CLI, as a developer would produce it.
    execFileSync(path.join(repoRoot, 'node_modules', '.bin', 'tsx'), ['test/fixtures/dump-tim-specs.ts', path.join(tmp, 'requests.json'), path.join(tmp, 'specs.json')], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = execFileSync(
      PYTHON,
      ['scripts/tim_spec_to_python.py', 'check', path.join(tmp, 'specs.json'), GOLDEN_FORWARD, path.join('test', 'fixtures', 'tim_reference.py')],
      { cwd: repoRoot, encoding: 'utf8', maxBuffer: 64 << 20, env: pythonEnv() },
    );
    report = JSON.parse(out) as HarnessReport;
  }, 300_000);

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('scripted spec loads the golden weights strictly and has their keys', () => {
    const g = report.cases.golden;
    expect(g.golden_config).toEqual(GOLDEN_PARAMS);
    expect(g.keys).toMatchObject({ missing: [], unexpected: [], shape_mismatch: [], count: 109, expected_count: 109 });
  });

  it('matches the golden forward outputs and every recorded intermediate, square and non-square', () => {
    const g = report.cases.golden;
    const e = g.errors as Record<string, number>;
    // README tolerances for out (2e-6) and h_proj (1e-7). Every other recorded tensor: 4× the
    // float32-vs-float64 error the official code itself shows on it (case.json), at least 3e-8
    // (a quarter ulp at 1): tight enough to notice a changed op, loose enough for float32 rounding.
    const fp64 = (JSON.parse(readFileSync(path.join(GOLDEN_FORWARD, 'case.json'), 'utf8')) as { observed_fp32_vs_fp64: Record<string, { max_abs: number }> }).observed_fp32_vs_fp64;
    const tol = (name: string): number => {
      const base = name.replace(/^forward(_with_zs)?\./, '');
      if (/^rope_grid/.test(base)) return 0;
      if (/^h_proj/.test(base)) return 1e-7;
      if (/^out(_nonsquare)?$/.test(base)) return 2e-6;
      const observed = fp64[base]?.max_abs;
      expect(observed, `case.json has no fp32-vs-fp64 figure for ${base}`).toBeTypeOf('number');
      return Math.max(4 * observed!, 3e-8);
    };
    expect(g.golden_outputs_not_compared).toEqual([]);
    expect(Object.keys(e).length).toBeGreaterThan(30);
    for (const [name, err] of Object.entries(e)) expect(err, name).toBeLessThanOrEqual(tol(name));
    // forward, forward_with_zs and forward_intermediates run the same computation
    expect(g.forward_equals_forward_with_zs).toBe(true);
    expect(g.intermediates_equal_forward).toBe(true);
  });

  it('agrees with the eager reference of the official code, which itself matches the golden data', () => {
    const g = report.cases.golden;
    for (const [k, v] of Object.entries(g.reference_errors as Record<string, number>)) expect(v, k).toBeLessThanOrEqual(k.startsWith('h_proj') ? 1e-7 : 2e-6);
    // Same aten ops in the same order on the same machine: (practically) bit-identical; measured 0.
    for (const [k, v] of Object.entries(g.script_vs_reference as Record<string, number>)) expect(v, k).toBeLessThanOrEqual(5e-8);
  });

  it('backpropagates to every parameter', () => {
    expect(report.cases.golden.params_without_grad).toEqual([]);
  });

  it('drops labels to the null class like the official trainer (forced, or at random in train mode only)', () => {
    const d = report.cases.golden.label_dropout;
    expect(d.forced).toEqual([10, 4, 10]);
    expect(d.forced).toEqual(d.expected_forced);
    expect(d.forced_bool).toEqual(d.expected_forced);
    expect(d.eval_unforced_unchanged).toBe(true);
    // same draws as where(rand(B) < p, num_classes, y) under the same seed
    expect(d.train_matches_official_rule).toBe(true);
    expect(d.train_drop_fraction).toBeGreaterThan(0.07);
    expect(d.train_drop_fraction).toBeLessThan(0.13);
  });

  it("'rowcol' RoPE equals 'official' on square grids and uses (column, row) on non-square ones", () => {
    const r = report.cases.rowcol;
    expect(r.square_equals_official).toBe(true);
    expect(r.grid_is_col_row).toBe(true);
    expect(r.grid_shape).toEqual([2, 24]);
    // the quirk matters: a non-square input gives a different output
    expect(r.nonsquare_diff_vs_official).toBeGreaterThan(1e-6);
  });

  it('matches the reference for every new_condition, shared embedders and plain attention', () => {
    const names = [...NEW_CONDITIONS.map((c) => `condition_${c}`), 'shared_embedder_t,r,t-r', 'plain_attention'];
    for (const name of names) {
      const c = report.cases[name];
      expect(c.keys, name).toMatchObject({ missing: [], unexpected: [], shape_mismatch: [], same_order: true });
      for (const tag of ['square', 'nonsquare']) {
        expect(c.errors[`out_scale_${tag}`], name).toBeGreaterThan(0.1);
        // same ops as the eager reference in the same order: (practically) bit-identical; measured 0
        expect(c.errors[`out_${tag}`], `${name} out ${tag}`).toBeLessThanOrEqual(5e-8);
        expect(c.errors[`h_proj_${tag}`], `${name} h_proj ${tag}`).toBeLessThanOrEqual(5e-8);
      }
    }
  });

  it('T2I: matches the reference of the official T2I model (caption embedder, cross-attention)', () => {
    for (const name of ['t2i', 't2i_plain']) {
      const c = report.cases[name];
      expect(c.keys, name).toMatchObject({ missing: [], unexpected: [], shape_mismatch: [], same_order: true });
      for (const tag of ['square', 'nonsquare']) {
        expect(c.errors[`out_scale_${tag}`], name).toBeGreaterThan(0.1);
        // same ops as the eager reference in the same order: (practically) bit-identical; measured 0
        expect(c.errors[`out_${tag}`], `${name} out ${tag}`).toBeLessThanOrEqual(5e-8);
        expect(c.errors[`h_proj_${tag}`], `${name} h_proj ${tag}`).toBeLessThanOrEqual(5e-8);
      }
      expect(c.errors.intermediates_out_square, name).toBeLessThanOrEqual(5e-8);
    }
  });

  it('InitSpec reproduces the official initialize_weights (zeros/ones exactly, random laws statistically)', () => {
    for (const name of ['golden', 't2i', 't2i_plain']) {
      const init = report.cases[name].init;
      expect(init.problems, name).toEqual([]);
      for (const kind of ['zeros', 'ones', 'normal', 'xavier_uniform']) expect(init.checked[kind], `${name} ${kind}`).toBeGreaterThan(0);
    }
  });

  it('parameter counts equal those of the official model structure', () => {
    for (const [name, cfg] of Object.entries(PRESETS)) {
      expect(countParameters(buildTiMSpec(cfg)), name).toBe(report.cases[`count_${name}`].reference_params);
    }
  });
});

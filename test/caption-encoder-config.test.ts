/**
 * parseGemma3Config against transformers' reading of the same config.json
 * (test/fixtures/golden/gemma3_configs/configs.json, scripts/golden/gemma3.py): gemma-3-1b-it as
 * published (rope_theta / rope_local_base_freq / sliding_window_pattern), the same config as
 * transformers 5 writes it (rope_parameters / layer_types), and a multimodal gemma-3-4b-style folder
 * (text_config, linear rope_scaling factor 8 on full-attention layers). The spec built from each has
 * exactly Gemma3TextModel's parameter count (999,885,952 for gemma-3-1b-it).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { gemma3ModuleSpec, parseGemma3Config } from '../lib/text/index.js';
import type { ModuleSpec } from '../lib/torch/modules/spec.js';
import { GOLDEN_DIR } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

interface Ref {
  hidden_size: number; num_hidden_layers: number; num_attention_heads: number; num_key_value_heads: number; head_dim: number;
  sliding_window: number; query_pre_attn_scalar: number; vocab_size: number; layer_types: string[]; parameters: number;
  rope_parameters: Record<'full_attention' | 'sliding_attention', { rope_type: string; rope_theta: number; factor?: number }>;
}
const G = JSON.parse(readFileSync(join(GOLDEN_DIR, 'gemma3_configs', 'configs.json'), 'utf8')) as { configs: Record<string, { raw: unknown; transformers: Ref }> };

function paramCount(s: ModuleSpec): number {
  return s.params.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0) + s.children.reduce((a, c) => a + paramCount(c.spec), 0);
}

describe('parseGemma3Config reads config.json as transformers does', () => {
  for (const [name, { raw, transformers: t }] of Object.entries(G.configs)) {
    it(name, () => {
      const c = parseGemma3Config(raw);
      expect(c.hiddenSize).toBe(t.hidden_size);
      expect(c.numLayers).toBe(t.num_hidden_layers);
      expect(c.numHeads).toBe(t.num_attention_heads);
      expect(c.numKvHeads).toBe(t.num_key_value_heads);
      expect(c.headDim).toBe(t.head_dim);
      expect(c.slidingWindow).toBe(t.sliding_window);
      expect(c.queryPreAttnScalar).toBe(t.query_pre_attn_scalar);
      expect(c.vocabSize).toBe(t.vocab_size);
      expect(c.layerTypes).toEqual(t.layer_types);
      for (const [mine, theirs] of [[c.rope.full, t.rope_parameters.full_attention], [c.rope.sliding, t.rope_parameters.sliding_attention]] as const) {
        expect(mine.theta).toBe(theirs.rope_theta);
        expect(mine.factor).toBe(theirs.rope_type === 'linear' ? theirs.factor : 1);
      }
      const spec = gemma3ModuleSpec(c, { attention: 'math', paddedRows: 'zero', maskMin: -3.4e38 });
      expect(paramCount(spec)).toBe(t.parameters);
    });
  }

  it('gemma-3-1b-it: 26 layers, every 6th full attention, one kv head', () => {
    const c = parseGemma3Config(G.configs['gemma-3-1b-it']!.raw);
    expect(c.layerTypes.map((x, i) => (x === 'full_attention' ? i : -1)).filter((i) => i >= 0)).toEqual([5, 11, 17, 23]);
    expect(c.numKvHeads).toBe(1);
    expect(c.rope.full).toEqual({ theta: 1_000_000, factor: 1 });
    expect(c.rope.sliding).toEqual({ theta: 10_000, factor: 1 });
  });

  it('refuses what it cannot run, with E_TEXT_CONFIG', () => {
    const base = G.configs['gemma-3-1b-it']!.raw as Record<string, unknown>;
    for (const bad of [
      null, [], 'x', { ...base, rope_parameters: { rope_type: 'default', rope_theta: 1 } },
      { ...base, rope_parameters: { full_attention: { rope_type: 'dynamic', factor: 2 } } },
      { ...base, use_bidirectional_attention: true }, { ...base, attention_bias: true },
      { ...base, num_hidden_layers: 2.5 }, { ...base, attn_logit_softcapping: 'x' }, { ...base, text_config: 5 },
    ]) {
      expect(thrown(() => parseGemma3Config(bad)).code, JSON.stringify(bad)?.slice(0, 80)).toBe('E_TEXT_CONFIG');
    }
  });
});

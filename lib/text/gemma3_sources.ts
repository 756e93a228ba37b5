/**
 * TorchScript method sources of the Gemma-3 text decoder (transformers' Gemma3TextModel), one `def`
 * per string. They follow the rules at the top of lib/torch/modules/sources.ts (aten ops and Tensor
 * methods only, children called as `.forward`, callees defined first, no dtype constants), so the
 * same text compiles in libtorch 1.13's C++ Module::define and in 2.x.
 *
 * Every op is the one transformers 5.17 runs with attn_implementation='eager', in the same order and
 * dtype (RMSNorm in float32 then back, softmax in float32, embeddings scaled in the weights' dtype),
 * so float32 results match it to ~1e-6. Where the official caption path (flash_attention_2) differs
 * from eager — padded query rows — the 'zero' variant reproduces flash (docs/caption-encoder.md).
 */

/** How attention scores are computed: 'math' (libtorch 1.13, or soft-capping) or 'sdpa' (libtorch ≥ 2.1). */
export type TextAttentionImpl = 'math' | 'sdpa';

/**
 * What padded query rows get from attention:
 * - 'zero': nothing (flash_attention_2's varlen path unpads them away and pads its output with
 *   zeros), as the official TiM caption path ran; the default;
 * - 'attend': they attend to the real tokens before them, as transformers' eager attention does.
 * Real (unpadded) rows are the same either way.
 */
export type PaddedRows = 'zero' | 'attend';

const lines = (...ls: string[]): string => ls.join('\n') + '\n';

export const GEMMA3_LINEAR_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return torch.linear(x, self.weight, None)'),
];

/** Gemma3RMSNorm: normalized in float32, scaled by (1 + w) in float32, cast back to x's dtype. */
export const GEMMA3_RMSNORM_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    h = x.float()',
    '    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)',
    '    h = h * (1.0 + self.weight.float())',
    '    return h.type_as(x)',
  ),
];

/**
 * Gemma3TextScaledWordEmbedding: embedding(ids) * embed_scale.to(weight.dtype), where embed_scale is
 * a float32 tensor of sqrt(hidden): `ones.float() * s` rounds sqrt(hidden) to float32 first, then
 * `.to(dtype)` rounds it to the weights' dtype, the same double rounding transformers does.
 */
export const GEMMA3_EMBEDDING_SOURCES = [
  lines(
    'def forward(self, ids: Tensor) -> Tensor:',
    '    scale = (self.weight.new_ones([1]).float() * self.embed_scale).to(self.weight.dtype)',
    '    return torch.embedding(self.weight, ids) * scale',
  ),
];

/** Gemma3MLP: down(gelu_tanh(gate(x)) * up(x)). */
export const GEMMA3_MLP_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return self.down_proj.forward(torch.gelu(self.gate_proj.forward(x), approximate="tanh") * self.up_proj.forward(x))',
  ),
];

/**
 * Gemma3Attention with the additive mask built by the root module (0 where allowed, the dtype's
 * lowest finite value elsewhere, as transformers' eager mask). `rows` (B, L, 1) is the padding mask
 * in x's dtype, used by the 'zero' variant only.
 */
export function gemma3AttentionSources(o: { impl: TextAttentionImpl; paddedRows: PaddedRows; softcap: boolean }): string[] {
  const scores =
    o.impl === 'sdpa'
      ? ['    o = torch.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, scale=self.scaling)']
      : [
          '    s = torch.matmul(q, k.transpose(2, 3)) * self.scaling',
          ...(o.softcap ? ['    s = torch.tanh(s / self.softcap) * self.softcap'] : []),
          '    s = s + mask',
          // F.softmax(s, -1, dtype=float32) converts to float32, then softmax; back to q's dtype.
          '    p = s.float().softmax(-1).to(q.dtype)',
          '    o = torch.matmul(p, v)',
        ];
  return [
    lines(
      'def rotate_half(self, x: Tensor) -> Tensor:',
      '    h = x.size(-1) // 2',
      '    return torch.cat([-x[..., h:], x[..., :h]], -1)',
    ),
    lines(
      'def repeat_kv(self, x: Tensor) -> Tensor:',
      '    if self.n_rep == 1:',
      '        return x',
      '    b = x.size(0)',
      '    n = x.size(1)',
      '    l = x.size(2)',
      '    d = x.size(3)',
      '    return x.unsqueeze(2).expand([b, n, self.n_rep, l, d]).reshape([b, n * self.n_rep, l, d])',
    ),
    lines(
      'def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, rows: Tensor) -> Tensor:',
      '    b = x.size(0)',
      '    l = x.size(1)',
      '    q = self.q_proj.forward(x).view([b, l, -1, self.head_dim]).transpose(1, 2)',
      '    k = self.k_proj.forward(x).view([b, l, -1, self.head_dim]).transpose(1, 2)',
      '    v = self.v_proj.forward(x).view([b, l, -1, self.head_dim]).transpose(1, 2)',
      '    q = self.q_norm.forward(q)',
      '    k = self.k_norm.forward(k)',
      '    cos = cos.unsqueeze(1)',
      '    sin = sin.unsqueeze(1)',
      '    q = q * cos + self.rotate_half(q) * sin',
      '    k = k * cos + self.rotate_half(k) * sin',
      '    k = self.repeat_kv(k)',
      '    v = self.repeat_kv(v)',
      ...scores,
      '    o = o.transpose(1, 2).contiguous().reshape([b, l, -1])',
      // flash_attention_2 (varlen): padded rows are unpadded away and come back as zeros.
      ...(o.paddedRows === 'zero' ? ['    o = o * rows'] : []),
      '    return self.o_proj.forward(o)',
    ),
  ];
}

/** Gemma3DecoderLayer: sandwich norms around attention and MLP. */
export const GEMMA3_LAYER_SOURCES = [
  lines(
    'def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor, rows: Tensor) -> Tensor:',
    '    h = self.input_layernorm.forward(x)',
    '    h = self.self_attn.forward(h, cos, sin, mask, rows)',
    '    x = x + self.post_attention_layernorm.forward(h)',
    '    h = self.pre_feedforward_layernorm.forward(x)',
    '    h = self.mlp.forward(h)',
    '    return x + self.post_feedforward_layernorm.forward(h)',
  ),
];

/**
 * The `layers` container: each layer gets its type's RoPE table and mask (unrolled, no ModuleList).
 * `forward_all_but_last` stops before the last layer: transformers' hidden_states[-2], what the
 * official encode_prompt takes with use_last_hidden_state=False.
 */
export function gemma3LayersSources(layerTypes: readonly ('full_attention' | 'sliding_attention')[]): string[] {
  const calls = layerTypes.map((t, i) => {
    const s = t === 'sliding_attention' ? 's' : 'f';
    return `    x = getattr(self, "${i}").forward(x, cos_${s}, sin_${s}, mask_${s}, rows)`;
  });
  const sig = '(self, x: Tensor, cos_f: Tensor, sin_f: Tensor, cos_s: Tensor, sin_s: Tensor, mask_f: Tensor, mask_s: Tensor, rows: Tensor) -> Tensor:';
  return [
    lines(`def forward${sig}`, ...calls, '    return x'),
    lines(`def forward_all_but_last${sig}`, ...calls.slice(0, -1), '    return x'),
  ];
}

/**
 * Gemma3TextModel. `rope` is Gemma3RotaryEmbedding (inv_freq from float32 arange on the CPU, as
 * transformers computes it at init, divided by the linear factor, then rounded to the weights' dtype
 * as `.to(dtype)` rounds the buffer; positions 0..L-1); `masks` the
 * causal + padding (+ window) masks of transformers' masking_utils, made additive with `mask_min`
 * (finfo(dtype).min, an attribute the encoder sets with the dtype). The output is float32.
 */
export const GEMMA3_MODEL_SOURCES = [
  lines(
    'def rope(self, x: Tensor, theta: float, factor: float) -> Tuple[Tensor, Tensor]:',
    '    inv = 1.0 / torch.pow(theta, torch.arange(0, self.head_dim, 2).float() / self.head_dim)',
    '    if factor != 1.0:',
    '        inv = inv / factor',
    // inv_freq is a buffer: model.to(bfloat16) rounds it (the official encoder was moved to bf16 so).
    '    inv = inv.to(x.dtype).float()',
    '    pos = torch.arange(x.size(1), device=x.device).float()',
    '    f = torch.matmul(inv.to(x.device).unsqueeze(0).unsqueeze(2), pos.unsqueeze(0).unsqueeze(1)).transpose(1, 2)',
    '    emb = torch.cat([f, f], -1)',
    '    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)',
  ),
  lines(
    'def masks(self, attention_mask: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:',
    '    i = torch.arange(x.size(1), device=x.device)',
    '    qi = i.unsqueeze(1)',
    '    ki = i.unsqueeze(0)',
    '    keys = (attention_mask.to(x.device) != 0).unsqueeze(1).unsqueeze(2)',
    '    full = (ki <= qi).unsqueeze(0).unsqueeze(0) & keys',
    '    sliding = full & (ki > qi - self.sliding_window).unsqueeze(0).unsqueeze(0)',
    '    zf = torch.zeros(full.size(), dtype=x.dtype, device=x.device)',
    '    zs = torch.zeros(sliding.size(), dtype=x.dtype, device=x.device)',
    '    return zf.masked_fill(full.logical_not(), self.mask_min), zs.masked_fill(sliding.logical_not(), self.mask_min)',
  ),
  lines(
    'def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:',
    '    x = self.embed_tokens.forward(input_ids)',
    '    cos_f, sin_f = self.rope(x, self.rope_theta_full, self.rope_factor_full)',
    '    cos_s, sin_s = self.rope(x, self.rope_theta_sliding, self.rope_factor_sliding)',
    '    mask_f, mask_s = self.masks(attention_mask, x)',
    '    rows = attention_mask.to(x.device).to(x.dtype).unsqueeze(-1)',
    '    x = self.layers.forward(x, cos_f, sin_f, cos_s, sin_s, mask_f, mask_s, rows)',
    '    return self.norm.forward(x).float()',
  ),
  // hidden_states[-2]: the output of the last-but-one layer, before the final norm.
  lines(
    'def forward_penultimate(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:',
    '    x = self.embed_tokens.forward(input_ids)',
    '    cos_f, sin_f = self.rope(x, self.rope_theta_full, self.rope_factor_full)',
    '    cos_s, sin_s = self.rope(x, self.rope_theta_sliding, self.rope_factor_sliding)',
    '    mask_f, mask_s = self.masks(attention_mask, x)',
    '    rows = attention_mask.to(x.device).to(x.dtype).unsqueeze(-1)',
    '    x = self.layers.forward_all_but_last(x, cos_f, sin_f, cos_s, sin_s, mask_f, mask_s, rows)',
    '    return x.float()',
  ),
];

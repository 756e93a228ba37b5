/**
 * TorchScript method sources of the TiM network, one `def` per string. They follow the rules at the
 * top of lib/torch/modules/sources.ts (aten ops and Tensor methods only, children through
 * `.forward`, callees first, the official code's ops in its order). Structural options
 * (distance-aware, q/k norm, new_condition, use_new_embed, depth) change the source text rather than
 * branching at run time.
 */
import type { NewCondition, RopeGrid } from './config.js';
import type { AttentionImpl } from '../../torch/modules/sources.js';

// the generic leaves (nn.Linear with and without bias) and AttentionImpl live in lib/torch/modules/sources.ts
export { LINEAR_SOURCES, LINEAR_NO_BIAS_SOURCES, type AttentionImpl } from '../../torch/modules/sources.js';

const lines = (...ls: string[]): string => ls.join('\n') + '\n';

// ---- leaves -------------------------------------------------------------------------------------

/** nn.LayerNorm(dim, eps) with affine weight and bias; `eps` is an attribute. */
export const LAYER_NORM_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return torch.layer_norm(x, [self.weight.size(0)], self.weight, self.bias, self.eps)',
  ),
];

/** nn.Conv2d(C, D, kernel_size=p, stride=p) as timm's PatchEmbed.proj uses it. */
export const PATCH_CONV_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return torch.conv2d(x, self.weight, self.bias, [self.stride, self.stride])',
  ),
];

/** nn.Embedding (no padding index). */
export const EMBEDDING_SOURCES = [
  lines('def forward(self, ids: Tensor) -> Tensor:', '    return torch.embedding(self.weight, ids)'),
];

// ---- small composites ---------------------------------------------------------------------------

/** timm PatchEmbed(strict_img_size=False, flatten=True): any H, W divisible by the patch. */
export const PATCH_EMBED_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    assert x.size(2) % self.patch_size == 0 and x.size(3) % self.patch_size == 0, "TiM: input height and width must be divisible by the patch size"',
    '    return self.proj.forward(x).flatten(2).transpose(1, 2)',
  ),
];

/** timm SwiGLU: fc2(silu(fc1_g(x)) * fc1_x(x)); dropout p = 0 and norm = Identity in TiM. */
export const SWIGLU_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    x_gate = self.fc1_g.forward(x)',
    '    x = self.fc1_x.forward(x)',
    '    return self.fc2.forward(torch.silu(x_gate) * x)',
  ),
];

/** nn.Sequential(Linear, SiLU, Linear) with children '0' and '2' (the SiLU has no state). */
export const TIMESTEP_MLP_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return getattr(self, "2").forward(torch.silu(getattr(self, "0").forward(x)))',
  ),
];

/** build_mlp: Linear, SiLU, Linear, SiLU, Linear with children '0', '2', '4'. */
export const PROJECTOR_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    x = torch.silu(getattr(self, "0").forward(x))',
    '    x = torch.silu(getattr(self, "2").forward(x))',
    '    return getattr(self, "4").forward(x)',
  ),
];

/**
 * TimestepEmbedder. The sinusoid frequencies are computed in float32 on the CPU and then moved to
 * t's device, exactly like the official positional_embedding (so GPU runs see the same table).
 * `neg_log_max_period` = −ln(10000) as a float attribute (no `math` module in TorchScript's native resolver).
 */
export const TIMESTEP_EMBEDDER_SOURCES = [
  lines(
    'def timestep_embedding(self, t: Tensor) -> Tensor:',
    '    half = self.frequency_embedding_size // 2',
    '    freqs = torch.exp(self.neg_log_max_period * torch.arange(0, half).float() / half).to(t.device)',
    '    args = t.unsqueeze(1).float() * freqs.unsqueeze(0)',
    '    return torch.cat([torch.cos(args), torch.sin(args)], -1)',
  ),
  lines(
    'def forward(self, t: Tensor) -> Tensor:',
    '    return self.mlp.forward(self.timestep_embedding(t).to(t.dtype))',
  ),
];

/**
 * LabelEmbedder. `forward` is the official lookup (the official model never drops labels itself:
 * its trainer does `where(rand(B) < p, num_classes, y)` before calling the model). `token_drop`
 * reproduces that step: with force_drop_ids (nonzero = drop) it is deterministic and applies in
 * any mode; without it, labels are dropped at random only in training mode and only when p > 0.
 */
export const LABEL_EMBEDDER_SOURCES = [
  lines('def forward(self, labels: Tensor) -> Tensor:', '    return self.embedding_table.forward(labels)'),
  lines(
    'def token_drop(self, labels: Tensor, force_drop_ids: Optional[Tensor]) -> Tensor:',
    '    if force_drop_ids is None:',
    '        if (not self.training) or self.dropout_prob <= 0.0:',
    '            return labels',
    '        drop_ids = torch.rand([labels.size(0)], device=labels.device) < self.dropout_prob',
    '    else:',
    '        assert self.embedding_table.weight.size(0) > self.num_classes, "TiM: this label table has no null class (class_dropout_prob == 0)"',
    '        drop_ids = force_drop_ids.to(labels.device) != 0',
    '    return torch.where(drop_ids, torch.full_like(labels, self.num_classes), labels)',
  ),
];

/** T2I CaptionEmbedder: SwiGLU(LayerNorm(cap_feats)) → (B, M, D). */
export const CAPTION_EMBEDDER_SOURCES = [
  lines('def forward(self, cap_feats: Tensor) -> Tensor:', '    return self.mlp.forward(self.norm.forward(cap_feats))'),
];

// ---- RoPE ---------------------------------------------------------------------------------------

/**
 * 2D RoPE tables for an h × w token grid (VisionRotaryEmbedding, custom_freqs 'normal').
 * Frequencies f_i = 1 / theta^(2i/dim), dim = head_dim/2, each repeated twice (interleaved);
 * the first head_dim/2 channels rotate by grid[0], the rest by grid[1]. Positions × frequencies are
 * formed in float32 on the CPU (the official code caches them at init, on the CPU) and cos/sin are
 * taken on the device of `like`. Returns (cos, sin), each (1, 1, N, head_dim).
 */
export function ropeSources(grid: RopeGrid): string[] {
  const gridDef =
    grid === 'official'
      ? lines(
          'def grid(self, h: int, w: int) -> Tensor:',
          '    # official get_rope: token n gets (n % h, n // h), its (column, row) only when h == w',
          '    g = torch.meshgrid([torch.arange(h), torch.arange(w)], indexing="xy")',
          '    return torch.stack(g, 0).reshape([2, -1])',
        )
      : lines(
          'def grid(self, h: int, w: int) -> Tensor:',
          '    # row-major tokens: token n = row * w + col gets (col, row) = (n % w, n // w)',
          '    g = torch.meshgrid([torch.arange(w), torch.arange(h)], indexing="xy")',
          '    return torch.stack(g, 0).reshape([2, -1])',
        );
  return [
    gridDef,
    lines(
      'def freqs(self) -> Tensor:',
      '    dim = self.head_dim // 2',
      '    return torch.reciprocal(torch.pow(self.theta, torch.arange(0, dim, 2).float() / dim))',
    ),
    lines(
      'def forward(self, h: int, w: int, like: Tensor) -> Tuple[Tensor, Tensor]:',
      '    grid = self.grid(h, w)',
      '    freqs = self.freqs()',
      '    f0 = (grid[0].float().unsqueeze(1) * freqs.unsqueeze(0)).repeat_interleave(2, -1)',
      '    f1 = (grid[1].float().unsqueeze(1) * freqs.unsqueeze(0)).repeat_interleave(2, -1)',
      '    f = torch.cat([f0, f1], -1).to(like.device)',
      '    return f.cos().unsqueeze(0).unsqueeze(0), f.sin().unsqueeze(0).unsqueeze(0)',
    ),
  ];
}

// ---- attention ----------------------------------------------------------------------------------

/** rotate_half on (B, H, N, d): pairs (2i, 2i+1) map (a, b) → (−b, a). */
const ROTATE_HALF = lines(
  'def rotate_half(self, x: Tensor) -> Tensor:',
  '    s = x.size()',
  '    pairs = x.reshape([s[0], s[1], s[2], s[3] // 2, 2])',
  '    x1, x2 = pairs.unbind(-1)',
  '    return torch.stack([-x2, x1], -1).reshape(s)',
);

/**
 * softmax(q kᵀ / √d) v on (B, H, N, d) tensors. 'math' is the official 'vanilla_attn' path, op for
 * op (q is scaled first). 'sdpa' is the hook for libtorch ≥ 2.0 (aten::scaled_dot_product_attention,
 * the official 'fused_attn' path); it does not compile on 1.13.
 */
function attentionCore(impl: AttentionImpl): string {
  return impl === 'math'
    ? lines(
        'def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:',
        '    q = q * self.scale',
        '    attn = torch.matmul(q, k.transpose(-2, -1))',
        '    attn = attn.softmax(-1)',
        '    return torch.matmul(attn, v)',
      )
    : lines(
        'def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:',
        '    return torch.scaled_dot_product_attention(q, k, v)',
      );
}

/**
 * Self-attention with fused qkv, optional distance-aware term qkv_d(delta) (no bias), optional q/k
 * LayerNorm over head_dim (eps 1e-5, affine) and 2D RoPE on q and k. `delta` is (B, 1, D) and is
 * ignored when not distance-aware (one signature for every variant keeps the block source fixed).
 */
export function attentionSources(o: { distanceAware: boolean; qkNorm: boolean; impl: AttentionImpl }): string[] {
  return [
    ROTATE_HALF,
    attentionCore(o.impl),
    lines(
      'def forward(self, x: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, delta: Tensor) -> Tensor:',
      '    B = x.size(0)',
      '    N = x.size(1)',
      '    C = x.size(2)',
      o.distanceAware ? '    qkv = self.qkv.forward(x) + self.qkv_d.forward(delta)' : '    qkv = self.qkv.forward(x)',
      '    qkv = qkv.reshape([B, N, 3, self.num_heads, self.head_dim]).permute([2, 0, 3, 1, 4])',
      '    ori_dtype = qkv.dtype',
      '    q, k, v = qkv.unbind(0)',
      ...(o.qkNorm ? ['    q = self.q_norm.forward(q)', '    k = self.k_norm.forward(k)'] : []),
      '    q = q * freqs_cos + self.rotate_half(q) * freqs_sin',
      '    k = k * freqs_cos + self.rotate_half(k) * freqs_sin',
      '    q = q.to(ori_dtype)',
      '    k = k.to(ori_dtype)',
      '    x = self.attention(q, k, v)',
      '    x = x.transpose(1, 2).reshape([B, N, C])',
      '    return self.proj.forward(x)',
    ),
  ];
}

/**
 * T2I cross-attention: queries from image tokens (with RoPE), keys/values from caption tokens
 * (q/k LayerNorm, no RoPE on k), no mask: like the official model, every caption token given is
 * attended to (the official pipeline trims the batch's captions to its longest real prompt).
 */
export function crossAttentionSources(o: { qkNorm: boolean; impl: AttentionImpl }): string[] {
  return [
    ROTATE_HALF,
    attentionCore(o.impl),
    lines(
      'def forward(self, x: Tensor, y: Tensor, freqs_cos: Tensor, freqs_sin: Tensor) -> Tensor:',
      '    B = x.size(0)',
      '    N = x.size(1)',
      '    C = x.size(2)',
      '    M = y.size(1)',
      '    q = self.q.forward(x).reshape([B, N, self.num_heads, self.head_dim]).permute([0, 2, 1, 3])',
      '    kv = self.kv.forward(y).reshape([B, M, 2, self.num_heads, self.head_dim]).permute([2, 0, 3, 1, 4])',
      '    ori_dtype = q.dtype',
      '    k, v = kv.unbind(0)',
      ...(o.qkNorm ? ['    q = self.q_norm.forward(q)', '    k = self.k_norm.forward(k)'] : []),
      '    q = q * freqs_cos + self.rotate_half(q) * freqs_sin',
      '    q = q.to(ori_dtype)',
      '    k = k.to(ori_dtype)',
      '    x = self.attention(q, k, v)',
      '    x = x.transpose(1, 2).reshape([B, N, C])',
      '    return self.proj.forward(x)',
    ),
  ];
}

// ---- blocks and final layer ---------------------------------------------------------------------

const MODULATE = lines(
  'def modulate(self, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:',
  '    return x * (1 + scale) + shift',
);

/** LayerNorm without affine parameters (norm1/norm2/norm3/norm_final, eps = self.norm_eps = 1e-6). */
const LN = (x: string): string => `torch.layer_norm(${x}, [${x}.size(-1)], None, None, self.norm_eps)`;

/**
 * C2I TiMBlock. `forward_parts` returns (out, adaLN_modulation(c), attention output before its gate)
 * so the intermediates the golden case records come from the very same code as `forward`.
 */
export const TIM_BLOCK_SOURCES = [
  MODULATE,
  lines(
    'def forward_parts(self, x: Tensor, c: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, delta: Tensor) -> Tuple[Tensor, Tensor, Tensor]:',
    '    mod = self.adaLN_modulation.forward(c)',
    '    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, -1)',
    `    attn_out = self.attn.forward(self.modulate(${LN('x')}, shift_msa, scale_msa), freqs_cos, freqs_sin, delta)`,
    '    x = x + gate_msa * attn_out',
    `    x = x + gate_mlp * self.mlp.forward(self.modulate(${LN('x')}, shift_mlp, scale_mlp))`,
    '    return x, mod, attn_out',
  ),
  lines(
    'def forward(self, x: Tensor, c: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, delta: Tensor) -> Tensor:',
    '    return self.forward_parts(x, c, freqs_cos, freqs_sin, delta)[0]',
  ),
];

/** T2I TiMBlock: self-attention, cross-attention to the caption tokens, SwiGLU MLP; 9-way adaLN. */
export const TIM_BLOCK_T2I_SOURCES = [
  MODULATE,
  lines(
    'def forward_parts(self, x: Tensor, y: Tensor, c: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, delta: Tensor) -> Tuple[Tensor, Tensor, Tensor]:',
    '    mod = self.adaLN_modulation.forward(c)',
    '    shift_msa, scale_msa, gate_msa, shift_msc, scale_msc, gate_msc, shift_mlp, scale_mlp, gate_mlp = mod.chunk(9, -1)',
    `    attn_out = self.attn.forward(self.modulate(${LN('x')}, shift_msa, scale_msa), freqs_cos, freqs_sin, delta)`,
    '    x = x + gate_msa * attn_out',
    `    x = x + gate_msc * self.cross_attn.forward(self.modulate(${LN('x')}, shift_msc, scale_msc), ${LN('y')}, freqs_cos, freqs_sin)`,
    `    x = x + gate_mlp * self.mlp.forward(self.modulate(${LN('x')}, shift_mlp, scale_mlp))`,
    '    return x, mod, attn_out',
  ),
  lines(
    'def forward(self, x: Tensor, y: Tensor, c: Tensor, freqs_cos: Tensor, freqs_sin: Tensor, delta: Tensor) -> Tensor:',
    '    return self.forward_parts(x, y, c, freqs_cos, freqs_sin, delta)[0]',
  ),
];

export const FINAL_LAYER_SOURCES = [
  MODULATE,
  lines(
    'def forward(self, x: Tensor, c: Tensor) -> Tensor:',
    '    shift, scale = self.adaLN_modulation.forward(c).chunk(2, -1)',
    `    return self.linear.forward(self.modulate(${LN('x')}, shift, scale))`,
  ),
];

// ---- root ---------------------------------------------------------------------------------------

/** get_delta_embed for each official new_condition (delta embedder = t_embedder unless use_new_embed). */
function deltaEmbedSource(cond: NewCondition, useNewEmbed: boolean): string {
  const d = useNewEmbed ? 'self.delta_embedder' : 'self.t_embedder';
  const expr: Record<NewCondition, string> = {
    't-r': `${d}.forward(t - r)`,
    r: `${d}.forward(r)`,
    't,r': `self.t_embedder.forward(t) + ${d}.forward(r)`,
    't,t-r': `self.t_embedder.forward(t) + ${d}.forward(t - r)`,
    'r,t-r': `self.t_embedder.forward(r) + ${d}.forward(t - r)`,
    't,r,t-r': `self.t_embedder.forward(t) + self.t_embedder.forward(r) + ${d}.forward(t - r)`,
  };
  return lines('def get_delta_embed(self, t: Tensor, r: Tensor) -> Tensor:', `    return ${expr[cond]}`);
}

const UNPATCHIFY = lines(
  'def unpatchify(self, x: Tensor, H: int, W: int) -> Tensor:',
  '    # (B, h*w, p*p*C) with last dim ordered (p_row, p_col, c) -> (B, C, H, W)',
  '    c = self.out_channels',
  '    p = self.patch_size',
  '    h = H // p',
  '    w = W // p',
  '    x = x.reshape([x.size(0), h, w, p, p, c])',
  '    x = x.permute([0, 5, 1, 3, 2, 4])',
  '    return x.reshape([x.size(0), c, h * p, w * p])',
);

export interface RootSourceOptions {
  variant: 'c2i' | 't2i';
  depth: number;
  encoderDepth: number;
  newCondition: NewCondition;
  useNewEmbed: boolean;
}

/**
 * The root TiM methods. C2I: forward(x, t, r, y), forward_with_zs → (out, h_proj),
 * forward_intermediates → Dict (golden names), drop_labels(y, force_drop_ids). T2I: the same with
 * cap_feats (B, M, cap_feat_dim) in place of y, and no drop_labels (the official T2I trainer drops
 * prompts to "" before the text encoder). Blocks are called unrolled (no ModuleList iteration).
 */
export function rootSources(o: RootSourceOptions): string[] {
  const t2i = o.variant === 't2i';
  const condArg = t2i ? 'cap_feats' : 'y';
  const blockExtra = t2i ? 'y_embed, ' : '';
  const condition = t2i
    ? lines(
        'def condition(self, t: Tensor, r: Tensor) -> Tuple[Tensor, Tensor]:',
        '    # returns (c, delta_embed), both (B, 1, D); c = t_embed + delta_embed',
        '    t_embed = self.t_embedder.forward(t).unsqueeze(1)',
        '    delta_embed = self.get_delta_embed(t, r).unsqueeze(1)',
        '    return t_embed + delta_embed, delta_embed',
      )
    : lines(
        'def condition(self, t: Tensor, r: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:',
        '    # returns (c, delta_embed), both (B, 1, D); c = t_embed + delta_embed + y_embed',
        '    t_embed = self.t_embedder.forward(t).unsqueeze(1)',
        '    delta_embed = self.get_delta_embed(t, r).unsqueeze(1)',
        '    y_embed = self.y_embedder.forward(y).unsqueeze(1)',
        '    return t_embed + delta_embed + y_embed, delta_embed',
      );
  const condCall = t2i ? 'self.condition(t, r)' : 'self.condition(t, r, y)';
  const prologue = [
    '    H = x.size(2)',
    '    W = x.size(3)',
    '    x = self.x_embedder.forward(x)',
    `    c, delta_embed = ${condCall}`,
    ...(t2i ? ['    y_embed = self.y_embedder.forward(cap_feats)'] : []),
    '    freqs_cos, freqs_sin = self.rope.forward(H // self.patch_size, W // self.patch_size, x)',
  ];
  const blockCalls = (withZs: boolean): string[] => {
    const out: string[] = [];
    for (let i = 0; i < o.depth; i++) {
      out.push(`    x = getattr(self.blocks, "${i}").forward(x, ${blockExtra}c, freqs_cos, freqs_sin, delta_embed)`);
      if (withZs && i + 1 === o.encoderDepth) out.push('    h_proj = self.projector.forward(x)');
    }
    return out;
  };
  const sig = `self, x: Tensor, t: Tensor, r: Tensor, ${condArg}: Tensor`;
  const forward = lines(
    `def forward(${sig}) -> Tensor:`,
    ...prologue,
    ...blockCalls(false),
    '    x = self.final_layer.forward(x, c)',
    '    return self.unpatchify(x, H, W)',
  );
  const forwardWithZs = lines(
    `def forward_with_zs(${sig}) -> Tuple[Tensor, Tensor]:`,
    '    # the official forward(..., return_zs=True): (output, projector(features after block encoder_depth - 1))',
    ...prologue,
    ...blockCalls(true),
    '    x = self.final_layer.forward(x, c)',
    '    return self.unpatchify(x, H, W), h_proj',
  );
  const inter: string[] = [
    `def forward_intermediates(${sig}) -> Dict[str, Tensor]:`,
    '    # every tensor the golden forward case records, under its name there (debugging parity)',
    '    out: Dict[str, Tensor] = {}',
    '    H = x.size(2)',
    '    W = x.size(3)',
    '    x = self.x_embedder.forward(x)',
    '    out["x_embed"] = x',
    '    out["t_emb"] = self.t_embedder.forward(t)',
    '    out["delta_emb"] = self.get_delta_embed(t, r)',
    ...(t2i
      ? ['    y_embed = self.y_embedder.forward(cap_feats)', '    out["y_emb"] = y_embed']
      : ['    out["y_emb"] = self.y_embedder.forward(y)']),
    `    c, delta_embed = ${condCall}`,
    '    out["c"] = c',
    '    h = H // self.patch_size',
    '    w = W // self.patch_size',
    '    freqs_cos, freqs_sin = self.rope.forward(h, w, x)',
    '    out["rope_cos"] = freqs_cos.squeeze(0).squeeze(0)',
    '    out["rope_sin"] = freqs_sin.squeeze(0).squeeze(0)',
    '    out["rope_grid"] = self.rope.grid(h, w)',
  ];
  for (let i = 0; i < o.depth; i++) {
    inter.push(
      `    x, mod, attn_out = getattr(self.blocks, "${i}").forward_parts(x, ${blockExtra}c, freqs_cos, freqs_sin, delta_embed)`,
      `    out["block${i}_adaLN_out"] = mod`,
      `    out["block${i}_attn_out"] = attn_out`,
      `    out["block${i}_out"] = x`,
    );
    if (i + 1 === o.encoderDepth) inter.push('    out["h_proj"] = self.projector.forward(x)');
  }
  inter.push(
    '    x = self.final_layer.forward(x, c)',
    '    out["final_layer_out"] = x',
    '    out["out"] = self.unpatchify(x, H, W)',
    '    return out',
  );
  const methods = [deltaEmbedSource(o.newCondition, o.useNewEmbed), condition, UNPATCHIFY, forward, forwardWithZs, lines(...inter)];
  if (!t2i) {
    methods.push(
      lines(
        'def drop_labels(self, y: Tensor, force_drop_ids: Optional[Tensor]) -> Tensor:',
        '    # classifier-free-guidance label dropout (train mode, or forced): dropped labels become num_classes',
        '    return self.y_embedder.token_drop(y, force_drop_ids)',
      ),
    );
  }
  return methods;
}

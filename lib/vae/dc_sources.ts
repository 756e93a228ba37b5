/**
 * TorchScript method sources of the DC-AE autoencoder (diffusers' AutoencoderDC,
 * diffusers/models/autoencoders/autoencoder_dc.py), one `def` per string.
 *
 * They follow the rules of lib/torch/modules/sources.ts, so the same text compiles through libtorch's
 * C++ `Module::define` on libtorch 1.13 and 2.x: only `torch.<aten op>` and Tensor methods (no
 * `torch.nn.functional`, no dtype constants: `.float()` is the float32 cast and a 16-bit float is
 * recognized by `element_size() == 2`), children called as `self.child.forward(...)` and numbered
 * children through `getattr(x, "0")`, callees defined before callers. Structural options (norm type,
 * activation, shortcut on/off, pixel (un)shuffle or conv/interpolate, number of children) change the
 * source text rather than branching at run time. Each source names the diffusers code it follows,
 * and runs the same aten ops in the same order, so float32 results match diffusers to rounding.
 */

export type DcActivation = 'silu' | 'relu' | 'gelu' | 'mish' | 'identity';
export type DcNorm = 'rms_norm' | 'batch_norm';

const lines = (...ls: string[]): string => ls.join('\n') + '\n';

/** get_activation(name)(x): nn.SiLU / ReLU / GELU() (exact erf) / Mish, or nn.Identity for a None act_fn. */
export function activation(act: DcActivation, x: string): string {
  switch (act) {
    case 'silu':
      return `torch.silu(${x})`;
    case 'relu':
      return `torch.relu(${x})`;
    case 'gelu':
      return `torch.gelu(${x})`;
    case 'mish':
      return `torch.mish(${x})`;
    case 'identity':
      return x;
  }
}

// ---- leaves -------------------------------------------------------------------------------------

/** nn.Conv2d(padding=p, stride=s, groups=g); `stride`, `padding`, `groups` are int attributes. */
export function conv2dSources(bias: boolean): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      `    return torch.conv2d(x, self.weight, ${bias ? 'self.bias' : 'None'}, [self.stride, self.stride], [self.padding, self.padding], [1, 1], self.groups)`,
    ),
  ];
}

/** nn.Linear(bias=False), applied channels-last. */
export const LINEAR_NO_BIAS_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return torch.linear(x, self.weight, None)'),
];

/**
 * diffusers RMSNorm(dim, eps, elementwise_affine=True, bias=True) over the last axis (callers move
 * channels there). The variance is taken in float32 and the input is multiplied by its rsqrt without
 * a cast (so a 16-bit input becomes float32), then cast to the weight's dtype when that is a 16-bit
 * float, exactly as diffusers does.
 */
export const RMS_NORM_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    variance = x.float().pow(2).mean([-1], True)',
    '    x = x * torch.rsqrt(variance + self.eps)',
    '    if self.weight.is_floating_point() and self.weight.element_size() == 2:',
    '        x = x.to(self.weight.dtype)',
    '    x = x * self.weight',
    '    return x + self.bias',
  ),
];

/**
 * nn.BatchNorm2d(C, eps, affine=True) in eval mode: normalizes with the running statistics (this
 * autoencoder is used for inference; the running statistics are never updated here).
 */
export const BATCH_NORM_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, False, 0.1, self.eps, True)',
  ),
];

/** A norm over the channels of an NCHW tensor: RMSNorm moves channels last and back, BatchNorm2d takes NCHW. */
function norm2d(norm: DcNorm, child: string, x: string): string {
  return norm === 'rms_norm' ? `self.${child}.forward(${x}.movedim(1, -1)).movedim(-1, 1)` : `self.${child}.forward(${x})`;
}

// ---- blocks -------------------------------------------------------------------------------------

/** ResBlock: conv1 → act → conv2 → norm (+ residual). */
export function resBlockSources(norm: DcNorm, act: DcActivation): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    residual = x',
      '    h = self.conv1.forward(x)',
      `    h = ${activation(act, 'h')}`,
      '    h = self.conv2.forward(h)',
      `    h = ${norm2d(norm, 'norm', 'h')}`,
      '    return h + residual',
    ),
  ];
}

/** SanaMultiscaleAttentionProjection: depthwise k×k conv, then the grouped 1×1 conv. */
export const MULTISCALE_PROJECTION_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return self.proj_out.forward(self.proj_in.forward(x))'),
];

/**
 * SanaMultiscaleLinearAttention with SanaMultiscaleAttnProcessor2_0 (residual_connection=True).
 * `scales` is the number of qkv multiscale projections (children of to_qkv_multiscale).
 *
 * Linear attention (H·W > attention_head_dim) runs in float32 whatever the input dtype — the qkv
 * tensor is upcast before the ReLU kernel and the result cast back — as diffusers does, because the
 * normalizer (last padded row) loses too much in bf16/fp16. The quadratic path (small maps) keeps the
 * input dtype except for its normalization, again as diffusers does.
 */
export function liteMlaSources(scales: number, norm: DcNorm): string[] {
  const ms = Array.from({ length: scales }, (_, i) => `    multi_scale_qkv.append(getattr(self.to_qkv_multiscale, "${i}").forward(h))`);
  return [
    lines(
      'def linear_attention(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:',
      '    value = torch.constant_pad_nd(value, [0, 0, 0, 1], 1.0)',
      '    scores = torch.matmul(value, key.transpose(-1, -2))',
      '    h = torch.matmul(scores, query)',
      '    h = h.float()',
      '    return h[:, :, :-1] / (h[:, :, -1:] + self.eps)',
    ),
    lines(
      'def quadratic_attention(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:',
      '    scores = torch.matmul(key.transpose(-1, -2), query)',
      '    scores = scores.float()',
      '    scores = scores / (torch.sum(scores, [2], True) + self.eps)',
      '    return torch.matmul(value, scores.to(value.dtype))',
    ),
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    size = x.size()',
      '    batch_size = size[0]',
      '    height = size[2]',
      '    width = size[3]',
      '    use_linear_attention = height * width > self.attention_head_dim',
      '    residual = x',
      '    original_dtype = x.dtype',
      '    h = x.movedim(1, -1)',
      '    query = self.to_q.forward(h)',
      '    key = self.to_k.forward(h)',
      '    value = self.to_v.forward(h)',
      '    h = torch.cat([query, key, value], 3)',
      '    h = h.movedim(-1, 1)',
      '    multi_scale_qkv = [h]',
      ...ms,
      '    h = torch.cat(multi_scale_qkv, 1)',
      '    if use_linear_attention:',
      '        h = h.float()',
      '    h = h.reshape([batch_size, -1, 3 * self.attention_head_dim, height * width])',
      '    qkv = h.chunk(3, 2)',
      '    query = torch.relu(qkv[0])',
      '    key = torch.relu(qkv[1])',
      '    value = qkv[2]',
      '    if use_linear_attention:',
      '        h = self.linear_attention(query, key, value)',
      '        h = h.to(original_dtype)',
      '    else:',
      '        h = self.quadratic_attention(query, key, value)',
      '    h = torch.reshape(h, [batch_size, -1, height, width])',
      '    h = self.to_out.forward(h.movedim(1, -1)).movedim(-1, 1)',
      `    h = ${norm2d(norm, 'norm_out', 'h')}`,
      '    return h + residual',
    ),
  ];
}

/** GLUMBConv(norm_type="rms_norm", residual_connection=True) as EfficientViTBlock.conv_out. */
export const GLUMBCONV_SOURCES = [
  lines(
    'def forward(self, x: Tensor) -> Tensor:',
    '    residual = x',
    '    h = self.conv_inverted.forward(x)',
    '    h = torch.silu(h)',
    '    h = self.conv_depth.forward(h)',
    '    parts = torch.chunk(h, 2, 1)',
    '    h = parts[0] * torch.silu(parts[1])',
    '    h = self.conv_point.forward(h)',
    `    h = ${norm2d('rms_norm', 'norm', 'h')}`,
    '    return h + residual',
  ),
];

/** EfficientViTBlock: attn (multi-scale linear attention, residual) then conv_out (GLUMBConv, residual). */
export const EFFICIENT_VIT_BLOCK_SOURCES = [
  lines('def forward(self, x: Tensor) -> Tensor:', '    return self.conv_out.forward(self.attn.forward(x))'),
];

/**
 * DCDownBlock2d(factor 2): `downsample` (pixel_unshuffle mode) = stride-1 conv then pixel_unshuffle;
 * otherwise the conv has stride 2. The shortcut averages groups of `group_size` channels of the
 * pixel-unshuffled input (unflatten(1, (-1, g)).mean(2), written as the equivalent reshape).
 */
export function downBlockSources(downsample: boolean, shortcut: boolean): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    h = self.conv.forward(x)',
      ...(downsample ? ['    h = torch.pixel_unshuffle(h, 2)'] : []),
      ...(shortcut
        ? [
            '    y = torch.pixel_unshuffle(x, 2)',
            '    s = y.size()',
            '    y = y.reshape([s[0], -1, self.group_size, s[2], s[3]]).mean([2])',
            '    h = h + y',
          ]
        : []),
      '    return h',
    ),
  ];
}

/**
 * DCUpBlock2d(factor 2): `interpolate` = nearest ×2 then conv; otherwise conv then pixel_shuffle. The
 * shortcut repeats each channel `repeats` times and pixel-shuffles. Nearest ×2 is aten's
 * upsample_nearest2d at twice the size, which is what F.interpolate(scale_factor=2) computes.
 */
export function upBlockSources(interpolate: boolean, shortcut: boolean): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      ...(interpolate
        ? ['    h = torch.upsample_nearest2d(x, [x.size(2) * 2, x.size(3) * 2])', '    h = self.conv.forward(h)']
        : ['    h = self.conv.forward(x)', '    h = torch.pixel_shuffle(h, 2)']),
      ...(shortcut ? ['    y = x.repeat_interleave(self.repeats, 1)', '    y = torch.pixel_shuffle(y, 2)', '    h = h + y'] : []),
      '    return h',
    ),
  ];
}

/** nn.Sequential of `n` children named "0".."n-1" (n may be 0: an empty stage is the identity). */
export function sequentialSources(n: number): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      ...Array.from({ length: n }, (_, i) => `    x = getattr(self, "${i}").forward(x)`),
      '    return x',
    ),
  ];
}

// ---- encoder, decoder, root ---------------------------------------------------------------------

/** Encoder.forward: conv_in, the stages in order, conv_out (+ the channel-averaging out shortcut). */
export function encoderSources(stages: number, outShortcut: boolean): string[] {
  return [
    lines(
      'def forward(self, x: Tensor) -> Tensor:',
      '    h = self.conv_in.forward(x)',
      ...Array.from({ length: stages }, (_, i) => `    h = getattr(self.down_blocks, "${i}").forward(h)`),
      ...(outShortcut
        ? [
            '    s = h.size()',
            '    y = h.reshape([s[0], -1, self.out_shortcut_average_group_size, s[2], s[3]]).mean([2])',
            '    return self.conv_out.forward(h) + y',
          ]
        : ['    return self.conv_out.forward(h)']),
    ),
  ];
}

/**
 * Decoder.forward: conv_in (+ the channel-repeating in shortcut), the stages from the deepest up,
 * norm_out (RMSNorm over channels), conv_act, conv_out.
 */
export function decoderSources(stages: number, inShortcut: boolean, convAct: DcActivation): string[] {
  return [
    lines(
      'def forward(self, z: Tensor) -> Tensor:',
      ...(inShortcut
        ? ['    y = z.repeat_interleave(self.in_shortcut_repeats, 1)', '    h = self.conv_in.forward(z) + y']
        : ['    h = self.conv_in.forward(z)']),
      ...Array.from({ length: stages }, (_, k) => `    h = getattr(self.up_blocks, "${stages - 1 - k}").forward(h)`),
      `    h = ${norm2d('rms_norm', 'norm_out', 'h')}`,
      `    h = ${activation(convAct, 'h')}`,
      '    return self.conv_out.forward(h)',
    ),
  ];
}

/**
 * The root: `encode` is AutoencoderDC.encode(x).latent and `decode` is AutoencoderDC._decode(z)
 * (no tiling, no slicing: slicing a batch does not change the result). Both check their input's rank,
 * channels and (encode) that H and W are multiples of the downsampling factor, so a wrong input fails
 * with a message instead of a shape error deep inside.
 */
export const ROOT_SOURCES = [
  lines(
    'def encode(self, x: Tensor) -> Tensor:',
    '    assert x.dim() == 4 and x.size(1) == self.in_channels, "AutoencoderDC.encode: expected an image batch (B, in_channels, H, W)"',
    '    assert x.size(2) % self.downsample_factor == 0 and x.size(3) % self.downsample_factor == 0, "AutoencoderDC.encode: H and W must be multiples of the downsampling factor"',
    '    return self.encoder.forward(x)',
  ),
  lines(
    'def decode(self, z: Tensor) -> Tensor:',
    '    assert z.dim() == 4 and z.size(1) == self.latent_channels, "AutoencoderDC.decode: expected a latent batch (B, latent_channels, h, w)"',
    '    return self.decoder.forward(z)',
  ),
];

/**
 * The released TiM networks: `model.network.params` copied verbatim from the official configs
 * (github WZDTHU/TiM @ b431859, configs/c2i/*.yaml and configs/t2i/*.yaml), converted with
 * fromOfficialConfig so every official default (mlp_ratio 4, projector_dim 2048, ...) is applied the
 * same way as for any user-supplied official config.
 */
import { fromOfficialConfig, type TiMConfig, type OfficialNetworkParams } from './config.js';

const C2I_TARGET = 'tim.models.c2i.tim_model.TiM';
const T2I_TARGET = 'tim.models.t2i.tim_model.TiM';

/** configs/c2i/tim_b_p4.yaml: ImageNet 256 (SD-VAE latents 32×32×4), patch 4. */
export const OFFICIAL_TIM_B_P4: OfficialNetworkParams = {
  input_size: 32, patch_size: 4, in_channels: 4, class_dropout_prob: 0.1, num_classes: 1000,
  depth: 12, hidden_size: 768, num_heads: 12, encoder_depth: 4, qk_norm: true, z_dim: 768,
  new_condition: 't-r', use_new_embed: true, distance_aware: true, lora_hidden_size: 256,
};

/** configs/c2i/tim_xl_p2_256.yaml (tim_xl_p2_256_mg.yaml has the same network). */
export const OFFICIAL_TIM_XL_P2_256: OfficialNetworkParams = {
  input_size: 32, patch_size: 2, in_channels: 4, class_dropout_prob: 0.1, num_classes: 1000,
  depth: 28, hidden_size: 1152, num_heads: 16, encoder_depth: 8, qk_norm: true, z_dim: 768,
  new_condition: 't-r', use_new_embed: true, distance_aware: true, lora_hidden_size: 384,
};

/** configs/c2i/tim_xl_p1_512.yaml: ImageNet 512 (DC-AE f32c32 latents 16×16×32), patch 1. */
export const OFFICIAL_TIM_XL_P1_512: OfficialNetworkParams = {
  input_size: 16, patch_size: 1, in_channels: 32, class_dropout_prob: 0.1, num_classes: 1000,
  depth: 28, hidden_size: 1152, num_heads: 16, encoder_depth: 8, qk_norm: true, z_dim: 768,
  new_condition: 't-r', use_new_embed: true, distance_aware: true, lora_hidden_size: 384,
};

/** configs/t2i/tim_xl_p1_t2i.yaml: text-to-image, DC-AE latents, Gemma-3-1B caption features (1152). */
export const OFFICIAL_TIM_T2I: OfficialNetworkParams = {
  input_size: 16, patch_size: 1, in_channels: 32, depth: 28, hidden_size: 1152, cap_feat_dim: 1152,
  num_heads: 16, encoder_depth: 8, qk_norm: true, z_dim: 768, new_condition: 't-r',
  use_new_embed: true, distance_aware: true, lora_hidden_size: 384,
};

export type TiMPresetName = 'TiM-B/4' | 'TiM-XL/2-256' | 'TiM-XL/1-512' | 'TiM-T2I';

export const PRESETS: Readonly<Record<TiMPresetName, TiMConfig>> = {
  'TiM-B/4': fromOfficialConfig(OFFICIAL_TIM_B_P4, { target: C2I_TARGET }),
  'TiM-XL/2-256': fromOfficialConfig(OFFICIAL_TIM_XL_P2_256, { target: C2I_TARGET }),
  'TiM-XL/1-512': fromOfficialConfig(OFFICIAL_TIM_XL_P1_512, { target: C2I_TARGET }),
  'TiM-T2I': fromOfficialConfig(OFFICIAL_TIM_T2I, { target: T2I_TARGET }),
};

/** A preset by name (a fresh copy, so callers may change e.g. ropeGrid). */
export function preset(name: TiMPresetName): TiMConfig {
  const c = PRESETS[name];
  if (!c) throw new RangeError(`unknown TiM preset '${name}' (known: ${Object.keys(PRESETS).join(', ')})`);
  return { ...c };
}

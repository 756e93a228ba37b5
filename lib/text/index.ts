/** The T2I caption path: the Gemma-3 caption encoder, its tokenizer and the official caption transform. */
export { CaptionEncoder, defaultTextAttention, type CaptionEncoderLoadOptions, type CaptionTokens, type CaptionFeatures } from './caption_encoder.js';
export { CaptionTokenizer, type TokenizedBatch } from './tokenizer.js';
export { parseGemma3Config, type Gemma3Config, type Gemma3LayerType, type Gemma3Rope } from './gemma3_config.js';
export { gemma3ModuleSpec, maskMinOf, type Gemma3SpecOptions } from './gemma3_spec.js';
export { type PaddedRows, type TextAttentionImpl } from './gemma3_sources.js';
export { unicodeEscapeCaption } from './caption_transform.js';

/**
 * The caption tokenizer: a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) read by
 * @huggingface/tokenizers, called the way the official encode_prompt calls AutoTokenizer:
 * `tokenizer(captions, padding='max_length', max_length, truncation=True)` with
 * `padding_side = 'right'` (load_text_encoder sets it; Gemma's own config says 'left') and the
 * default add_special_tokens (Gemma: a leading <bos>).
 *
 * Truncation is done as the Rust tokenizers do it: the text's own tokens are cut so that they and
 * the special tokens the post-processor adds fit in max_length (the special tokens always stay).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { argError } from '../torch/errors.js';

export interface TokenizedBatch {
  /** (B, maxLength) token ids, right-padded with the pad id. */
  ids: number[][];
  /** (B, maxLength) 1 for real tokens, 0 for padding. */
  mask: number[][];
}

function readJson(path: string, code: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw argError('range', `${what}: cannot read '${path}': ${(e as Error).message}`, code);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw argError('range', `${what}: '${path}' is not valid JSON (${(e as Error).message})`, code);
  }
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

export class CaptionTokenizer {
  readonly padId: number;
  private readonly tok: Tokenizer;

  private constructor(tok: Tokenizer, padId: number) {
    this.tok = tok;
    this.padId = padId;
  }

  /** From a folder with tokenizer.json (required) and tokenizer_config.json (optional, as for AutoTokenizer). */
  static fromFolder(dir: string, fallbackPadId = 0): CaptionTokenizer {
    const jsonPath = join(dir, 'tokenizer.json');
    if (!existsSync(jsonPath)) throw argError('range', `CaptionEncoder: '${dir}' has no tokenizer.json`, 'E_TEXT_FOLDER');
    const tj = readJson(jsonPath, 'E_TEXT_CONFIG', 'CaptionEncoder tokenizer.json');
    const cfgPath = join(dir, 'tokenizer_config.json');
    const tc = existsSync(cfgPath) ? readJson(cfgPath, 'E_TEXT_CONFIG', 'CaptionEncoder tokenizer_config.json') : {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tj, tc);
    } catch (e) {
      throw argError('range', `CaptionEncoder: '${jsonPath}' is not a tokenizer this library reads: ${(e as Error).message}`, 'E_TEXT_CONFIG');
    }
    const padToken = tokenContent(tc.pad_token);
    const padId = padToken === null ? undefined : tok.token_to_id(padToken);
    return new CaptionTokenizer(tok, padId ?? fallbackPadId);
  }

  /** Token ids of one text with the special tokens, truncated to maxLength (no padding). */
  encode(text: string, maxLength: number): number[] {
    const withSpecial: number[] = this.tok.encode(text).ids;
    if (withSpecial.length <= maxLength) return withSpecial;
    const plain: number[] = this.tok.encode(text, { add_special_tokens: false }).ids;
    // withSpecial = prefix + plain + suffix (a template post-processor); keep both ends whole.
    const extra = withSpecial.length - plain.length;
    let prefix = 0;
    while (prefix <= extra && !plain.every((id, i) => withSpecial[prefix + i] === id)) prefix++;
    if (prefix > extra) throw argError('range', 'CaptionTokenizer: the special tokens do not wrap the text tokens; cannot truncate as transformers does', 'E_TEXT_CONFIG');
    const suffix = extra - prefix;
    const keep = maxLength - extra;
    if (keep < 0) throw argError('range', `CaptionTokenizer: maxLength ${maxLength} is shorter than the ${extra} special tokens`, 'E_RANGE');
    return [...withSpecial.slice(0, prefix), ...plain.slice(0, keep), ...withSpecial.slice(withSpecial.length - suffix)];
  }

  /** padding='max_length', truncation=True, right padding. */
  batch(texts: readonly string[], maxLength: number): TokenizedBatch {
    const ids: number[][] = [];
    const mask: number[][] = [];
    for (const t of texts) {
      const row = this.encode(t, maxLength);
      const n = row.length;
      ids.push(row.concat(new Array<number>(maxLength - n).fill(this.padId)));
      mask.push(new Array<number>(maxLength).fill(0).fill(1, 0, n));
    }
    return { ids, mask };
  }
}

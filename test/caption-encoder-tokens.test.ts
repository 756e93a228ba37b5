/**
 * The caption tokenizer against transformers' AutoTokenizer on the real Gemma-3 tokenizer.json
 * (scripts/golden/gemma3.py → test/fixtures/golden/gemma3_tokens/tokens.json), called as the
 * official encode_prompt calls it: padding='max_length', truncation=True, right padding, <bos>.
 * Prompts: the null caption "", non-Latin scripts, emoji (skin tones, flags, ZWJ), whitespace runs,
 * text longer than max_length, literal special-token text. Also the official caption transform
 * (`.encode('unicode-escape').decode('utf-8')`) against Python's own output, and the ids of
 * escaped captions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { unicodeEscapeCaption } from '../lib/index.js';
import { CaptionTokenizer } from '../lib/text/index.js';
import { GOLDEN_DIR, repoRoot } from './helpers/golden.js';

interface TokensGolden {
  prompts: string[];
  cases: { max_length: number; input_ids: number[][]; attention_mask: number[][] }[];
  unicode_escape: { prompts: string[]; escaped: string[]; max_length: number; input_ids: number[][]; attention_mask: number[][] };
}

const G = JSON.parse(readFileSync(join(GOLDEN_DIR, 'gemma3_tokens', 'tokens.json'), 'utf8')) as TokensGolden;
let tok: CaptionTokenizer;
beforeAll(() => {
  tok = CaptionTokenizer.fromFolder(join(repoRoot, 'node_modules', '@lenml', 'tokenizer-gemma3', 'models'));
}, 60_000);

describe('Gemma-3 token ids equal transformers AutoTokenizer', () => {
  for (const c of G.cases) {
    it(`max_length ${c.max_length}: ${G.prompts.length} tricky prompts`, () => {
      const { ids, mask } = tok.batch(G.prompts, c.max_length);
      G.prompts.forEach((p, i) => {
        expect(ids[i], JSON.stringify(p).slice(0, 60)).toEqual(c.input_ids[i]);
        expect(mask[i], JSON.stringify(p).slice(0, 60)).toEqual(c.attention_mask[i]);
      });
    });
  }

  it('the null caption is <bos> then padding; a long prompt keeps <bos> and is cut at max_length', () => {
    expect(tok.padId).toBe(0);
    const { ids, mask } = tok.batch(['', 'word '.repeat(400)], 256);
    expect(ids[0]![0]).toBe(2);
    expect(ids[0]!.slice(1).every((x) => x === 0)).toBe(true);
    expect(mask[0]!.reduce((a, b) => a + b, 0)).toBe(1);
    expect(ids[1]!.length).toBe(256);
    expect(ids[1]![0]).toBe(2);
    expect(mask[1]!.every((m) => m === 1)).toBe(true);
  });
});

describe('unicodeEscapeCaption (the official caption transform)', () => {
  it("equals Python's caption.encode('unicode-escape').decode('utf-8')", () => {
    G.unicode_escape.prompts.forEach((p, i) => expect(unicodeEscapeCaption(p), JSON.stringify(p)).toBe(G.unicode_escape.escaped[i]));
  });

  it('hand-checked cases: Latin-1, BMP, astral (emoji), controls, backslash', () => {
    expect(unicodeEscapeCaption('café')).toBe('caf\\xe9');
    expect(unicodeEscapeCaption('日本')).toBe('\\u65e5\\u672c');
    expect(unicodeEscapeCaption('🐱')).toBe('\\U0001f431'); // one code point, not two surrogates
    expect(unicodeEscapeCaption('a\tb\nc\\')).toBe('a\\tb\\nc\\\\');
    expect(unicodeEscapeCaption('plain "text"')).toBe('plain "text"');
    expect(unicodeEscapeCaption('a\ud800b')).toBe('a\\ud800b'); // a lone surrogate, as Python writes '\ud800'
    expect(unicodeEscapeCaption('')).toBe('');
    expect(() => unicodeEscapeCaption(3 as unknown as string)).toThrow(TypeError);
  });

  it('escaped captions tokenize as transformers tokenizes them', () => {
    const u = G.unicode_escape;
    const { ids, mask } = tok.batch(u.prompts.map(unicodeEscapeCaption), u.max_length);
    expect(ids).toEqual(u.input_ids);
    expect(mask).toEqual(u.attention_mask);
  });
});

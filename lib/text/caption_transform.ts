/**
 * The official caption transform `caption.encode('unicode-escape').decode('utf-8')`, applied to every
 * training caption (tim/data/t2i_data.py) and to the GenEval prompts before encoding
 * (projects/sample/sample_t2i_geneval_ddp.py). The model was trained on captions in this form, so
 * prompts must pass through it where the official code passes them (not for the null caption "").
 *
 * Python's unicode-escape codec writes: `\\` for a backslash, `\t` `\n` `\r` for those three controls,
 * other bytes below 0x20 and 0x7f..0xff as `\xhh`, code points up to 0xffff as `\uhhhh`, above as
 * `\Uhhhhhhhh` (lower-case hex), and printable ASCII as itself (quotes are not escaped).
 * A lone surrogate (invalid UTF-16 in JS) is written as `\udxxx`, as Python writes its surrogates.
 */
export function unicodeEscapeCaption(caption: string): string {
  if (typeof caption !== 'string') throw new TypeError('unicodeEscapeCaption: caption must be a string');
  let out = '';
  for (const ch of caption) {
    const cp = ch.codePointAt(0) as number;
    if (cp === 0x5c) out += '\\\\';
    else if (cp === 0x09) out += '\\t';
    else if (cp === 0x0a) out += '\\n';
    else if (cp === 0x0d) out += '\\r';
    else if (cp >= 0x20 && cp < 0x7f) out += ch;
    else if (cp < 0x100) out += '\\x' + cp.toString(16).padStart(2, '0');
    else if (cp < 0x10000) out += '\\u' + cp.toString(16).padStart(4, '0');
    else out += '\\U' + cp.toString(16).padStart(8, '0');
  }
  return out;
}

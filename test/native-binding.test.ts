/**
 * The declared type of the native addon (lib/torch/native_binding.ts) against the addon itself:
 * the functions native/*.cpp registers, the functions the loaded addon exports and the functions the
 * interface declares are one set (NATIVE_FUNCTIONS is tied to the interface at compile time), and
 * each operator declaration `op<R>(...)` in lib/ states what its schema returns.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { native } from '../lib/torch/native.js';
import { NATIVE_FUNCTIONS } from '../lib/torch/native_binding.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { sourceHash } = require(join(root, 'scripts', 'source-hash.cjs')) as { sourceHash(dir: string): string };

const sorted = (xs: Iterable<string>): string[] => [...xs].sort();

/** Names registered in native/*.cpp: `exports.Set("name", ...)`, and jit.cpp's `fn("name", ...)`. */
function sourceExports(): string[] {
  const names = new Set<string>();
  for (const f of readdirSync(join(root, 'native')).filter((n) => n.endsWith('.cpp'))) {
    const src = readFileSync(join(root, 'native', f), 'utf8');
    for (const m of src.matchAll(/\b(?:exports\.Set|fn)\("([A-Za-z_][A-Za-z0-9_]*)"/g)) names.add(m[1]!);
  }
  return sorted(names);
}

describe('the native binding type', () => {
  it('declares exactly the functions native/*.cpp registers', () => {
    expect(sorted(NATIVE_FUNCTIONS)).toEqual(sourceExports());
  });

  it('lists each function once', () => {
    expect(new Set(NATIVE_FUNCTIONS).size).toBe(NATIVE_FUNCTIONS.length);
  });

  // A build older than native/ (build.test.ts 'source hash' reports it) may lack a new export.
  const stale = native.buildInfo().sourceHash !== sourceHash(root);
  it.skipIf(stale)('declares exactly the functions the loaded addon exports (skipped: the build is older than native/)', () => {
    const exported = Object.keys(native);
    expect(sorted(exported)).toEqual(sorted(NATIVE_FUNCTIONS));
    for (const [k, v] of Object.entries(native)) expect(typeof v, k).toBe('function');
  });
});

/**
 * Every `op(...)` / `op<R>(...)` in lib/ with a literal name: R (what native.call returns, a Tensor
 * handle by default) must be what the schema returns. The type parameter is the only place the TS
 * side states it, so a wrong one would type-check and misbehave.
 */
describe('operator declarations', () => {
  function libFiles(dir: string): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? libFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []);
  }
  const decls: { file: string; returns: string | undefined; name: string; overload: string }[] = [];
  for (const file of libFiles(join(root, 'lib'))) {
    const src = readFileSync(file, 'utf8');
    for (const m of src.matchAll(/\bop(?:<([^>]*)>)?\('(aten::[A-Za-z0-9_]+)'(?:, '([A-Za-z0-9_]*)')?\)/g)) {
      decls.push({ file: file.slice(root.length + 1), returns: m[1], name: m[2]!, overload: m[3] ?? '' });
    }
  }

  /** The R a schema's return types call for, as written in the declarations. */
  function fits(declared: string | undefined, returns: string[]): boolean {
    if (declared === 'OpResult') return true; // any operator (callOpAsync)
    const tensorish = (t: string): boolean => /^(\w+: )?Handle( \| null)?$/.test(t.trim());
    if (returns.length === 0) return declared === 'undefined';
    if (returns.length === 1 && returns[0] === 'Tensor') return declared === undefined || declared === 'Handle';
    if (returns.length === 1 && returns[0] === 'Tensor[]') return declared === 'Handle[]';
    if (returns.every((r) => r === 'Tensor') && declared?.startsWith('[') && declared.endsWith(']')) {
      const parts = declared.slice(1, -1).split(',');
      return parts.length === returns.length && parts.every(tensorish);
    }
    return false;
  }

  it('finds the declarations', () => {
    expect(decls.length).toBeGreaterThan(150);
  });

  it("each declared result type matches the operator's schema", () => {
    const wrong: string[] = [];
    for (const d of decls) {
      let returns: string[];
      try {
        returns = native.opTypes(native.resolveOp(d.name, d.overload)).returns;
      } catch {
        continue; // not in this libtorch (e.g. _foreach_lerp_ before 2.0): resolved lazily, never called
      }
      if (!fits(d.returns, returns)) {
        wrong.push(`${d.file}: op${d.returns === undefined ? '' : `<${d.returns}>`}('${d.name}'${d.overload ? `, '${d.overload}'` : ''}) but the schema returns (${returns.join(', ')})`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

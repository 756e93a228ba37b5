/**
 * The layers of docs/architecture.md, checked on the import statements: each layer imports only
 * from the layers below it (native ← torch ← frozen networks (vae and text side by side: neither imports the other) ← tim ← cli).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { describe, expect, it } from 'vitest';

const lib = resolve(__dirname, '..', 'lib');
const rank: Record<string, number> = { torch: 0, vae: 1, text: 1, tim: 2, cli: 3 };

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The top folder under lib/ a path falls in ('' for lib/index.ts itself). */
const layerOf = (p: string): string => relative(lib, p).split('/').length > 1 ? relative(lib, p).split('/')[0]! : '';

describe('layers', () => {
  it('every lib/ file imports only from its own layer or the ones below', () => {
    const bad: string[] = [];
    let checked = 0;
    for (const f of files(lib)) {
      const from = layerOf(f);
      if (!(from in rank)) continue; // lib/index.ts, the barrel, sees everything
      const src = readFileSync(f, 'utf8');
      for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)[^'"\n]*?from\s+'(\.[^']+)'/g)) {
        const to = layerOf(resolve(dirname(f), m[1]!));
        checked++;
        if (to === '' || !(to in rank)) { bad.push(`${relative(lib, f)} → ${m[1]} (outside the layers)`); continue; }
        if (to !== from && rank[to]! >= rank[from]!) bad.push(`${relative(lib, f)} (${from}) → ${m[1]} (${to})`);
      }
    }
    expect(checked).toBeGreaterThan(200);
    expect(bad).toEqual([]);
  });
});

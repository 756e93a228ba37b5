/**
 * The benchmark harness in --quick mode: it runs end to end (Node and Python workers side by side)
 * and prints well-formed tables and JSON. No timing is asserted: goals are for `npm run bench`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { PYTHON } from './helpers/python.js';
const hasPythonTorch = spawnSync(PYTHON, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const FOUNDATION = ['perop', 'throughput', 'memory', 'threads'];

describe.skipIf(!hasPythonTorch)('bench --quick', () => {
  const out = mkdtempSync(join(tmpdir(), 'tim-bench-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('prints a table of Node ms, Python ms, ratio, goal and status for every benchmark', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--quick', '--out', out], {
      encoding: 'utf8', timeout: 230_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const text = r.stdout;
    const files = [...text.matchAll(/^  -> (.+\.quick\.json)$/gm)].map((m) => m[1]!);
    const summary = /^bench: (\d+) benchmark\(s\) in [\d.]+ s, \d+ goal\(s\) missed/m.exec(text);
    expect(summary, 'summary line').not.toBeNull();
    expect(files.length).toBe(Number(summary![1]));
    const names = files.map((f) => JSON.parse(readFileSync(f, 'utf8')).name as string);
    for (const name of FOUNDATION) expect(names).toContain(name);
    for (const file of files) {
      expect(file.startsWith(out)).toBe(true);
      const res = JSON.parse(readFileSync(file, 'utf8'));
      const name = res.name as string;
      expect(res.quick).toBe(true);
      expect(res.rows.length, name).toBeGreaterThan(0);
      for (const row of res.rows) {
        expect(Number.isFinite(row.node), `${name}: ${row.case} node`).toBe(true);
        expect(row.python === null || (Number.isFinite(row.python) && row.python >= 0)).toBe(true);
        if (row.ratio !== null) {
          expect(Number.isFinite(row.ratio) && row.ratio > 0, `${name}: ${row.case} ratio ${row.ratio}`).toBe(true);
        }
        expect(['PASS', 'MISS', 'INFO']).toContain(row.status);
        expect(typeof row.goal).toBe('string');
        // the printed table has the same row, with the ratio to two decimals and the status last
        const line = text.split('\n').find((l) => l.startsWith(row.case));
        expect(line, `table line for ${row.case}`).toBeDefined();
        const cols = line!.slice(row.case.length).trim().split(/\s{2,}/);
        expect(cols[3]).toBe(row.ratio === null ? '-' : row.ratio.toFixed(2));
        expect(cols[cols.length - 1]).toBe(row.status);
      }
    }
  }, 240_000);
});

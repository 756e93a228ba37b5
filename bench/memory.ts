/**
 * Memory: 200,000 small ops (16-element tensors) inside torch.scope chunks. Goals: live native
 * tensors back to the baseline, RSS growth < 20 MB. Python runs the same ops (results kept in a list
 * per chunk, then dropped) for reference.
 */
import { Pair, median, newResult, ratioRow, type Options, type Result } from './harness.js';

export async function run(o: Options): Promise<Result> {
  const pair = await Pair.start(o);
  try {
    const n = o.quick ? 40_000 : 200_000, chunk = 1000, reps = o.quick ? 1 : 3;
    const r = newResult('memory', `Memory: ${n.toLocaleString('en')} small ops in scopes of ${chunk}`, o.quick, { threads: pair.info.threads, env: pair.info.env, n, chunk, reps });
    // warm up both (allocator pools, JIT), then measure from a steady state
    await pair.node.ask('memory', { n: 20_000, chunk });
    await pair.py.ask('memory', { n: 20_000, chunk });
    const nd: Record<string, number>[] = [], py: Record<string, number>[] = [];
    for (let i = 0; i < reps; i++) {
      nd.push(await pair.node.ask('memory', { n, chunk }));
      py.push(await pair.py.ask('memory', { n, chunk }));
    }
    const med = (xs: Record<string, number>[], f: (x: Record<string, number>) => number): number => median(xs.map(f));
    const leaked = Math.max(...nd.map((x) => x.liveAfter! - x.liveBefore!));
    r.rows.push({ case: 'live tensors after - before', node: leaked, python: null, unit: 'tensors', ratio: null, goal: '0', status: leaked === 0 ? 'PASS' : 'MISS' });
    const growN = Math.max(...nd.map((x) => x.rssAfter! - x.rssBefore!)), growP = Math.max(...py.map((x) => x.rssAfter! - x.rssBefore!));
    r.rows.push({ case: 'RSS growth (max over reps)', node: growN, python: growP, unit: 'MB', ratio: null, goal: '< 20 MB', status: growN < 20 ? 'PASS' : 'MISS' });
    r.rows.push(ratioRow('time for all ops', med(nd, (x) => x.ms!), med(py, (x) => x.ms!), { text: 'info' }));
    r.notes.push(`Node RSS before/after/after-gc (first rep): ${[nd[0]!.rssBefore, nd[0]!.rssAfter, nd[0]!.rssAfterGc].map((x) => x!.toFixed(1)).join(' / ')} MB`);
    return r;
  } finally {
    await pair.close();
  }
}

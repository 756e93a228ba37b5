/**
 * Per-op overhead: 100,000 `a.add(b)` on 1-element float32 tensors, Node vs Python on the same
 * libtorch and thread count. Two styles a user would write:
 *  - scope:   torch.scope around chunks of 1,000 ops (Python: keep the 1,000 results in a list, drop it)
 *  - dispose: `a.add(b).dispose()` (Python: the result is dropped at once)
 * Goal: Node/Python <= 1.0.
 */
import { Pair, newResult, ratioRow, type Options, type Result } from './harness.js';

export async function run(o: Options): Promise<Result> {
  const pair = await Pair.start(o);
  try {
    const n = o.quick ? 20_000 : 100_000, chunk = 1000, reps = o.quick ? 3 : 9;
    const r = newResult('perop', `Per-op overhead: ${n.toLocaleString('en')} x a.add(b), 1-element tensors`, o.quick, { threads: pair.info.threads, env: pair.info.env, n, chunk, reps });
    for (const style of ['scope', 'dispose'] as const) {
      const m = await pair.compare('perop', { style, n, chunk }, reps, 2);
      r.rows.push(ratioRow(`${style === 'scope' ? 'torch.scope per 1000 ops' : 'explicit dispose()'} (total ms)`, m.node, m.python, { max: 1.0, text: '<= 1.0' }, 'ms', m.ratio));
      r.notes.push(`${style}: ${(m.node / n * 1e6).toFixed(0)} ns/op Node, ${(m.python / n * 1e6).toFixed(0)} ns/op Python`);
    }
    // Where the time goes: the binding alone (native.call + native.free on handles, no Tensor
    // object, no scope, no GC registration) against the same Python loop as `dispose`.
    const raw = await pair.compare('perop', { style: 'raw', n, chunk }, reps, 1);
    r.rows.push(ratioRow('binding floor: native call+free, no Tensor (info)', raw.node, raw.python, { text: 'info' }, 'ms', raw.ratio));
    r.notes.push(`binding floor: ${(raw.node / n * 1e6).toFixed(0)} ns/op Node (Python row: the dispose loop again)`);
    return r;
  } finally {
    await pair.close();
  }
}

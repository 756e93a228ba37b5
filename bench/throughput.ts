/**
 * Throughput: 1M-element float32 elementwise ops and a 512x512 float32 matmul, Node vs Python.
 * The kernels are the same libtorch kernels (and the same OpenBLAS for matmul), so the ratio should be
 * ~1.0; a large deviation means a different BLAS, thread count or build.
 */
import { Pair, newResult, ratioRow, type Options, type Result } from './harness.js';

const GOAL = { min: 0.8, max: 1.2, text: '~1.0 (0.8-1.2)' };

export async function run(o: Options): Promise<Result> {
  const pair = await Pair.start(o);
  try {
    // many short samples, interleaved, so that load bursts on a shared machine hit both sides alike
    const reps = o.quick ? 3 : 15;
    const numel = 1_000_000, ewIters = o.quick ? 20 : 40, mmIters = o.quick ? 5 : 12;
    const r = newResult('throughput', 'Throughput: 1M-element elementwise ops, 512x512 matmul (ms per op)', o.quick, { threads: pair.info.threads, env: pair.info.env, numel, ewIters, mmIters, reps });
    for (const op of ['add', 'mul', 'exp']) {
      const m = await pair.compare('elementwise', { op, numel, iters: ewIters }, reps);
      r.rows.push(ratioRow(`${op} 1M fp32`, m.node / ewIters, m.python / ewIters, GOAL, 'ms', m.ratio));
    }
    const m = await pair.compare('matmul', { n: 512, iters: mmIters }, reps);
    r.rows.push(ratioRow('matmul 512x512 fp32', m.node / mmIters, m.python / mmIters, GOAL, 'ms', m.ratio));
    const gflops = (2 * 512 ** 3) / (m.node / mmIters) / 1e6;
    r.notes.push(`matmul: ${gflops.toFixed(1)} GFLOP/s in Node`);
    // The same kernels on one intra-op thread: no OpenMP barrier waits on a thread the scheduler has
    // parked, so these hold ~1.0 even when a shared machine is overloaded.
    if (pair.info.threads > 1) {
      await pair.setThreads(1);
      for (const op of ['add', 'exp']) {
        const m1 = await pair.compare('elementwise', { op, numel, iters: ewIters }, reps);
        r.rows.push(ratioRow(`${op} 1M fp32, 1 thread`, m1.node / ewIters, m1.python / ewIters, GOAL, 'ms', m1.ratio));
      }
      await pair.setThreads(pair.info.threads);
    }
    return r;
  } finally {
    await pair.close();
  }
}

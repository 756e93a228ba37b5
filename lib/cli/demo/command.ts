/**
 * `tim demo [--budget-min M] [--out dir] [--steps N] [--fresh]`: train a small TiM on MNIST for a
 * wall-clock budget, sample 100 digits per class at 1, 2, 4, 8 and 16 NFE, evaluate them and write
 * <out>/report.md (lib/cli/demo/recipe.ts, docs/demo.md). Running it again resumes where it stopped. The
 * first SIGINT/SIGTERM stops after the current step with a checkpoint (exit 130/143); a second exits
 * at once (the last checkpoint is still whole).
 */
import { setNumThreads } from '../../torch/state.js';
import { runDemo, type DemoSize } from './recipe.js';
import type { MixedPrecision } from '../../tim/train/config.js';
import { UsageError, choiceOption, intListOption, intOption, type CommandSpec, type Parsed } from '../args.js';

export const DEMO: CommandSpec = {
  name: 'demo',
  brief: 'train a small TiM on MNIST on the CPU, sample at 1-16 NFE, evaluate',
  summary: 'Train a small pixel-space TiM on the embedded MNIST digits for a time budget, sample 100 digits per class at 1, 2, 4, 8 and 16 NFE with the EMA weights, evaluate them (FD, class accuracy) and write a report.',
  usage: '',
  positionals: [0, 0],
  details: [
    'Files under --out (default runs/demo): samples/grid-nfe<N>.png (a row per class), eval/nfe-<N>.safetensors',
    '(images (1000, 1, 32, 32) in [-1, 1], labels (1000)), eval/nfe-<N>.json, report.md, train/ (checkpoints).',
    'Running it again resumes: training continues with the budget left, finished files are kept. See docs/demo.md.',
  ].join('\n'),
  options: {
    'budget-min': { value: true, arg: 'minutes', help: 'training wall-clock budget (default 10)' },
    out: { value: true, arg: 'dir', help: 'run folder (default runs/demo)' },
    steps: { value: true, arg: 'N', help: 'train exactly N optimizer steps instead of a time budget' },
    fresh: { value: false, help: 'delete the run folder and start over instead of resuming' },
    nfe: { value: true, arg: 'list', help: 'sampler step counts, comma-separated (default 1,2,4,8,16)' },
    'per-class': { value: true, arg: 'N', help: 'samples per class per NFE (default 100)' },
    size: { value: true, arg: 'demo|tiny', help: 'network size (default demo; tiny is for smoke tests)' },
    precision: { value: true, arg: 'auto|bf16|no', help: 'training precision (default auto: bf16 where the CPU has native bf16)' },
    seed: { value: true, arg: 'N', help: 'seed (default 0)' },
    'no-eval': { value: false, help: 'skip the evaluation' },
    cache: { value: true, arg: 'dir', help: 'evaluator cache: classifier and reference stats (default $TIM_CACHE_DIR or runs/cache)' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};


export async function runDemoCommand(p: Parsed, print: (s: string) => void): Promise<number> {
  const budget = p.options['budget-min'];
  let budgetMin: number | undefined;
  if (budget !== undefined) {
    budgetMin = Number(budget);
    if (typeof budget !== 'string' || !/^\d+(\.\d+)?$/.test(budget) || !(budgetMin > 0)) throw new UsageError(`--budget-min must be a number > 0, got '${String(budget)}'`, 'demo');
  }
  const out = p.options.out;
  if (out !== undefined && (typeof out !== 'string' || out === '')) throw new UsageError('--out needs a folder', 'demo');
  const steps = intOption(p, 'steps', 'demo', 1);
  const perClass = intOption(p, 'per-class', 'demo', 1);
  const seed = intOption(p, 'seed', 'demo', 0);
  const threads = intOption(p, 'threads', 'demo', 1);
  const nfes = intListOption(p, 'nfe', 'demo', 1);
  const size = choiceOption<DemoSize>(p, 'size', 'demo', ['demo', 'tiny']);
  const precision = choiceOption<MixedPrecision | 'auto'>(p, 'precision', 'demo', ['auto', 'bf16', 'no']);
  if (threads !== undefined) setNumThreads(threads);

  const signal = { stop: false };
  let received: NodeJS.Signals | null = null;
  const onSignal = (s: NodeJS.Signals): void => {
    if (received) process.exit(s === 'SIGINT' ? 130 : 143);
    received = s;
    signal.stop = true;
    process.stderr.write(`\n${s}: stopping after this step (a checkpoint is written; run again to resume); send it again to exit now\n`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    const r = await runDemo({
      ...(out !== undefined ? { outDir: out as string } : {}),
      ...(budgetMin !== undefined ? { budgetMin } : {}),
      ...(steps !== undefined ? { steps } : {}),
      ...(perClass !== undefined ? { perClass } : {}),
      ...(seed !== undefined ? { seed } : {}),
      ...(nfes !== undefined ? { nfes } : {}),
      ...(size !== undefined ? { size } : {}),
      ...(precision !== undefined ? { precision } : {}),
      fresh: Boolean(p.options.fresh),
      evaluate: !p.options['no-eval'],
      ...(typeof p.options.cache === 'string' ? { cacheDir: p.options.cache } : {}),
      signal,
    });
    print(JSON.stringify({
      complete: r.complete, step: r.step, trainSeconds: Number(r.trainSeconds.toFixed(1)), totalSeconds: Number(((Date.now() - t0) / 1000).toFixed(1)),
      report: r.report,
      nfe: r.nfes.map((x) => ({ nfe: x.nfe, fd: x.eval?.fd ?? null, floor: x.eval?.floor?.fd ?? null, classAccuracy: x.eval?.classAccuracy ?? null, precision: x.eval?.precision ?? null, recall: x.eval?.recall ?? null, msPerImage: Number((x.secondsPerImage * 1000).toFixed(3)) })),
    }));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return received === null ? 0 : received === 'SIGINT' ? 130 : 143;
}

/**
 * `tim eval --samples <file.safetensors>`: Fréchet distance, real-vs-real floor and class accuracy
 * of class-conditional MNIST samples (lib/tim/eval/evaluate.ts; docs/eval.md).
 */
import { evaluateSamplesAsync, formatEval, type EvaluateOptions, type InputRange } from '../tim/eval/evaluate.js';
import { UsageError, choiceOption, intOption, type CommandSpec, type Parsed } from './args.js';

export const EVAL: CommandSpec = {
  name: 'eval',
  brief: 'FD, real-vs-real floor and class accuracy of MNIST samples',
  summary: 'Evaluate class-conditional samples: Fréchet distance to real MNIST test digits on the features of a small MNIST classifier (trained with tim-torch and cached on first use), the real-vs-real floor, and class accuracy.',
  usage: '--samples <file>',
  positionals: [0, 0],
  details: [
    'The samples file is safetensors with `images` float32 (N, 1, 32, 32) in [-1, 1] and `labels` int64 (N),',
    'as the demo writes (runs/demo/eval/nfe-<N>.safetensors). Real FID: --features inception.pt (a TorchScript',
    'module mapping images to (N, D) features) with --resize 299 --channels 3 and --ref-stats (safetensors mu, sigma).',
  ].join('\n'),
  options: {
    samples: { value: true, arg: 'file', help: 'safetensors with images (N, 1, 32, 32) in [-1, 1] and labels (N)' },
    'ref-stats': { value: true, arg: 'file', help: 'reference statistics: safetensors mu (D), sigma (D, D) (default: MNIST test digits)' },
    features: { value: true, arg: 'model.pt', help: 'TorchScript feature extractor images -> (N, D) (default: the MNIST classifier)' },
    resize: { value: true, arg: 'px', help: 'bilinear resize before --features (e.g. 299 for Inception)' },
    channels: { value: true, arg: '1|3', help: 'repeat gray to 3 channels before --features' },
    range: { value: true, arg: 'r', help: "value range --features expects: -1,1 (default), 0,1 or 0,255" },
    cache: { value: true, arg: 'dir', help: 'classifier and reference-stats cache (default $TIM_CACHE_DIR or runs/cache)' },
    'batch-size': { value: true, arg: 'n', help: 'images per forward pass (default 250)' },
    'no-floor': { value: false, help: 'skip the real-vs-real floor' },
    json: { value: false, help: 'print JSON instead of a table' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};


/** The command line as evaluateSamples options; every malformed flag is a UsageError (exit 2). */
export function evalOptions(p: Parsed): { samples: string; options: EvaluateOptions } {
  const samples = p.options.samples;
  if (typeof samples !== 'string') throw new UsageError('--samples <file> is required', 'eval');
  const str = (k: string): string | undefined => p.options[k] as string | undefined;
  const channels = intOption(p, 'channels', 'eval', 1, 3);
  if (channels === 2) throw new UsageError("--channels must be 1 or 3, got '2'", 'eval');
  const range = choiceOption<InputRange>(p, 'range', 'eval', ['-1,1', '0,1', '0,255']);
  const features = str('features');
  const resize = intOption(p, 'resize', 'eval', 8, 1024);
  if (features === undefined && (resize !== undefined || channels !== undefined || range !== undefined)) {
    throw new UsageError('--resize, --channels and --range prepare images for --features; the MNIST classifier takes them as they are', 'eval');
  }
  const options: EvaluateOptions = {
    refStats: str('ref-stats'),
    features,
    resize,
    channels: channels as 1 | 3 | undefined,
    range,
    cacheDir: str('cache'),
    batchSize: intOption(p, 'batch-size', 'eval', 1, 100_000),
    floor: !p.options['no-floor'],
  };
  // undefined entries would read as "given" to checks that test `!== undefined` on presence only
  for (const k of Object.keys(options) as (keyof EvaluateOptions)[]) if (options[k] === undefined) delete options[k];
  return { samples, options };
}

export async function runEval(p: Parsed, print: (s: string) => void): Promise<number> {
  const { samples, options } = evalOptions(p);
  const json = Boolean(p.options.json);
  // Progress (classifier training, reference stats) goes to stderr so --json output stays parseable.
  const r = await evaluateSamplesAsync(samples, { ...options, log: (line) => process.stderr.write(`tim eval: ${line}\n`) });
  print(json ? JSON.stringify(r, null, 2) : formatEval(r));
  return 0;
}

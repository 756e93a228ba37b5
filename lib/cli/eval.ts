/**
 * `tim eval --samples <file.safetensors|file.npz|folder>`: Fréchet distance, and for MNIST-shaped
 * samples the real-vs-real floor and class accuracy; precision/recall (diversity) wherever the
 * reference has images, not only statistics (lib/tim/eval/evaluate.ts; docs/eval.md).
 */
import { evaluateSamplesAsync, formatEval, type EvaluateOptions, type InputRange } from '../tim/eval/evaluate.js';
import { UsageError, choiceOption, intOption, type CommandSpec, type Parsed } from './args.js';

export const EVAL: CommandSpec = {
  name: 'eval',
  brief: 'FD of samples (any feature extractor); floor and class accuracy for MNIST',
  summary: 'Evaluate class-conditional samples: Fréchet distance to a reference on the features of a small MNIST classifier (trained with tim-torch and cached on first use) or of any TorchScript extractor (Inception-v3 for FID); for MNIST-shaped samples also the real-vs-real floor and class accuracy; improved precision/recall (k = 3, as the ADM suite) in the same feature space unless the reference is statistics only.',
  usage: '--samples <path>',
  positionals: [0, 0],
  details: [
    '--samples is one of: a safetensors file with `images` float (N, C, H, W) in [-1, 1] and optional `labels` int64 (N)',
    '(the demo\'s runs/demo/eval/nfe-<N>.safetensors, tim sample\'s nfe-<N>.safetensors); an .npz with uint8 arr_0',
    '(N, H, W, 3) (the ADM evaluator\'s sample batch: tim sample --num\'s samples.npz); a folder of PNG/JPEG images',
    '(a tim sample --num run folder or its images/: its labels are read from run.json). Labels may be any class',
    'indices (ImageNet: 0-999); MNIST-shaped samples (1, 32, 32) must use 0-9.',
    'MNIST-shaped samples: FD on the MNIST classifier\'s features to the MNIST test digits, the floor, class accuracy,',
    'precision (samples on the digits\' k-NN manifold) and recall (digits on the samples\' manifold: diversity).',
    'Other images (e.g. 256x256 RGB): FD only, on --features (a TorchScript module images -> (N, D) features, e.g.',
    'Inception-v3 pool3 with --resize 299 --range 0,1), against --ref-stats (safetensors mu, sigma) or --ref (reference',
    'images in any of the --samples forms). For FID/IS/precision/recall comparable with published ImageNet numbers use',
    'the ADM evaluator (guided-diffusion/evaluations/evaluator.py) on samples.npz and its reference batch. See docs/eval.md.',
  ].join('\n'),
  options: {
    samples: { value: true, arg: 'path', help: 'samples: .safetensors (images, labels), .npz (uint8 arr_0 N,H,W,3) or a folder of PNG/JPEG' },
    'ref-stats': { value: true, arg: 'file', help: 'reference statistics: safetensors mu (D), sigma (D, D) (default: MNIST test digits)' },
    ref: { value: true, arg: 'path', help: 'reference images (any --samples form) whose statistics under the extractor are the reference' },
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
  if (typeof samples !== 'string') throw new UsageError('--samples <path> is required', 'eval');
  const str = (k: string): string | undefined => p.options[k] as string | undefined;
  const channels = intOption(p, 'channels', 'eval', 1, 3);
  if (channels === 2) throw new UsageError("--channels must be 1 or 3, got '2'", 'eval');
  const range = choiceOption<InputRange>(p, 'range', 'eval', ['-1,1', '0,1', '0,255']);
  const features = str('features');
  const resize = intOption(p, 'resize', 'eval', 8, 1024);
  if (features === undefined && (resize !== undefined || channels !== undefined || range !== undefined)) {
    throw new UsageError('--resize, --channels and --range prepare images for --features; the MNIST classifier takes them as they are', 'eval');
  }
  if (str('ref') !== undefined && str('ref-stats') !== undefined) throw new UsageError('--ref (reference images) and --ref-stats (reference statistics) are two references; pass one', 'eval');
  const options: EvaluateOptions = {
    refStats: str('ref-stats'),
    ref: str('ref'),
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

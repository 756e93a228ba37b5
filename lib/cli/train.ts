/**
 * `tim train --config <yaml> --out <dir> [--max-steps N] [--resume latest]`: trains a TiM from an
 * official-layout config (lib/tim/trainer.ts). Progress goes to stderr, the run's files to <dir>.
 * The first SIGINT/SIGTERM finishes the current step, writes a checkpoint and exits 130/143; a
 * second one exits at once (the last checkpoint is still whole).
 */
import { setNumThreads } from '../torch/state.js';
import { Trainer } from '../tim/trainer.js';
import type { MixedPrecision } from '../tim/train_config.js';
import { UsageError, intOption, type CommandSpec, type Parsed } from './args.js';

export const TRAIN: CommandSpec = {
  name: 'train',
  brief: 'train a TiM from an official-layout YAML config',
  summary: 'Train a Transition Model as the official trainer does (model.transport, model.transition_loss, model.network, data, training), writing checkpoints, metrics.jsonl and sample grids under --out.',
  usage: '',
  positionals: [0, 0],
  details: [
    'Files under --out: checkpoints/<step>/{model,ema,optimizer}.safetensors + state.json (every',
    'training.checkpointing_steps and at the end, the newest checkpoints_total_limit kept), metrics.jsonl,',
    'samples/<step>_steps<n>.png (every training.validation_steps), config.yaml.',
    '--resume latest continues from the newest checkpoint (or starts fresh when there is none), bit for',
    'bit as if the run had not stopped. See docs/training.md.',
  ].join('\n'),
  options: {
    config: { value: true, arg: 'yaml', help: 'training config (official layout: model, data, training)' },
    out: { value: true, arg: 'dir', help: 'run folder (created if missing)' },
    'max-steps': { value: true, arg: 'N', help: 'stop after step N (the LR schedule still spans training.max_train_steps)' },
    resume: { value: true, arg: 'latest|step|dir|none', help: 'checkpoint to continue from (default: training.resume_from_checkpoint)' },
    seed: { value: true, arg: 'N', help: 'global seed (default: training.seed, else 0)' },
    precision: { value: true, arg: 'no|bf16|fp16', help: 'override training.mixed_precision' },
    device: { value: true, arg: 'cpu|cuda', help: 'default: cuda when available' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s)' },
    help: { value: false, short: 'h', help: 'show this help' },
  },
};


export async function runTrain(p: Parsed, print: (s: string) => void): Promise<number> {
  const config = p.options.config;
  const out = p.options.out;
  if (typeof config !== 'string') throw new UsageError('--config <yaml> is required', 'train');
  if (typeof out !== 'string') throw new UsageError('--out <dir> is required', 'train');
  const maxSteps = intOption(p, 'max-steps', 'train', 1);
  const seed = intOption(p, 'seed', 'train', 0);
  const threads = intOption(p, 'threads', 'train', 1);
  const precision = p.options.precision;
  if (precision !== undefined && precision !== 'no' && precision !== 'bf16' && precision !== 'fp16') {
    throw new UsageError(`--precision must be no, bf16 or fp16, got '${String(precision)}'`, 'train');
  }
  const device = p.options.device;
  if (device !== undefined && (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device))) {
    throw new UsageError(`--device must be cpu or cuda[:i], got '${String(device)}'`, 'train');
  }
  const resumeOpt = p.options.resume;
  const resume = resumeOpt === undefined ? undefined : resumeOpt === 'none' ? null : String(resumeOpt);

  if (threads !== undefined) setNumThreads(threads);
  const trainer = Trainer.create({
    config, outDir: out, ...(maxSteps !== undefined ? { maxSteps } : {}), ...(resume !== undefined ? { resume } : {}),
    ...(seed !== undefined ? { seed } : {}), ...(precision !== undefined ? { mixedPrecision: precision as MixedPrecision } : {}),
    ...(device !== undefined ? { device: device as 'cpu' } : {}),
  });
  let signal: NodeJS.Signals | null = null;
  const onSignal = (s: NodeJS.Signals) => {
    if (signal) process.exit(s === 'SIGINT' ? 130 : 143);
    signal = s;
    process.stderr.write(`\n${s}: stopping after this step (a checkpoint is written); send it again to exit now\n`);
    trainer.requestStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await trainer.train();
    print(JSON.stringify({ step: r.step, checkpoint: r.checkpoint, stepsPerSecond: Number(r.stepsPerSecond.toFixed(4)), metrics: r.metrics }));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await trainer.close();
  }
  return signal === null ? 0 : signal === 'SIGINT' ? 130 : 143;
}

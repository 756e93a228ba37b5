/**
 * `tim train --config <yaml> --out <dir> [--max-steps N] [--resume latest]`: trains a TiM from an
 * official-layout config (lib/tim/train/trainer.ts). Progress goes to stderr, the run's files to <dir>.
 * The first SIGINT/SIGTERM finishes the current step, writes a checkpoint and exits 130/143; a
 * second one exits at once (the last checkpoint is still whole).
 *
 * Text to image (a T2I network, data_type image_ms): `--text-encoder DIR` (Gemma-3 folder) and
 * `--vae DIR` (diffusers VAE folder) override model.text_encoder_dir / model.vae_dir.
 *
 * Data parallel: `--nproc N` starts N workers of this command (lib/cli/launch.ts); a worker (or a
 * process started by torchrun or by hand with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, WORLD_SIZE
 * > 1) joins the process group and trains its shard (docs/distributed.md).
 */
import { setNumThreads } from '../torch/state.js';
import { resolveInitOptions } from '../torch/distributed/process_group.js';
import { Trainer } from '../tim/train/trainer.js';
import { readTrainConfig } from '../tim/train/config.js';
import { UsageError, choiceOption, deviceOption, intOption, numberOption, type CommandSpec, type Parsed } from './args.js';
import { launch } from './launch.js';

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
    'bit as if the run had not stopped. A folder that already holds a run is refused without --resume, and',
    'one --out is locked by one trainer at a time (<dir>/.tim-train.lock). A step with a non-finite loss or',
    'gradient norm is skipped; --max-nonfinite-steps in a row stop the run (exit 1, no checkpoint written).',
    'See docs/training.md.',
    '--nproc N trains data parallel on N processes (each reads batch_size samples per micro-batch: the',
    'global batch is batch_size x processes x gradient_accumulation_steps). Launched by torchrun or by',
    'hand instead (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set), a process joins that group. Resuming',
    'with another number of processes continues the same data stream. See docs/distributed.md.',
    'Text to image (a T2I network, data.data_type image_ms: the official jsonl + packed buckets): the',
    'caption encoder and the VAE run frozen, online; --text-encoder / --vae name their folders (default',
    'model.text_encoder_dir / model.vae_dir). One process; no sample grids.',
  ].join('\n'),
  options: {
    config: { value: true, arg: 'yaml', help: 'training config (official layout: model, data, training)' },
    out: { value: true, arg: 'dir', help: 'run folder (created if missing)' },
    'max-steps': { value: true, arg: 'N', help: 'stop after step N (the LR schedule still spans training.max_train_steps)' },
    resume: { value: true, arg: 'latest|step|dir|none', help: 'checkpoint to continue from (default: training.resume_from_checkpoint)' },
    seed: { value: true, arg: 'N', help: 'global seed (default: training.seed, else 0)' },
    precision: { value: true, arg: 'no|bf16|fp16', help: 'override training.mixed_precision' },
    device: { value: true, arg: 'cpu|cuda', help: 'default: cuda when available' },
    threads: { value: true, arg: 'N', help: 'intra-op CPU threads (default: libtorch\'s; with --nproc: cores / N)' },
    nproc: { value: true, arg: 'N', help: 'start N data-parallel worker processes on this machine' },
    nnodes: { value: true, arg: 'M', help: 'with --nproc: number of machines (default 1)' },
    'node-rank': { value: true, arg: 'K', help: 'with --nproc: this machine\'s index, 0..M-1 (default 0)' },
    'master-addr': { value: true, arg: 'host', help: 'with --nproc: rank 0\'s address (default 127.0.0.1; required with --nnodes > 1)' },
    'master-port': { value: true, arg: 'port', help: 'with --nproc: rank 0\'s store port (default: a free port; 29500 with --nnodes > 1)' },
    'max-nonfinite-steps': { value: true, arg: 'N', help: 'stop (exit 1) after N steps in a row with a non-finite loss or gradient norm, whose updates are skipped (default 3)' },
    'text-encoder': { value: true, arg: 'dir', help: 'text to image: Gemma-3 folder (default: model.text_encoder_dir)' },
    vae: { value: true, arg: 'dir', help: 'text to image: diffusers VAE folder (default: model.vae_dir)' },
    'dist-timeout': { value: true, arg: 'seconds', help: 'how long a rank waits for the others before failing (default: training.dist_timeout, else 300)' },
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
  const maxNonFinite = intOption(p, 'max-nonfinite-steps', 'train', 1);
  const precision = choiceOption(p, 'precision', 'train', ['no', 'bf16', 'fp16']);
  const device = deviceOption(p, 'device', 'train');
  const resumeOpt = p.options.resume;
  const resume = resumeOpt === undefined ? undefined : resumeOpt === 'none' ? null : String(resumeOpt);
  const nproc = intOption(p, 'nproc', 'train', 1);
  const nnodes = intOption(p, 'nnodes', 'train', 1);
  const nodeRank = intOption(p, 'node-rank', 'train', 0);
  const masterPort = intOption(p, 'master-port', 'train', 1, 65535);
  const masterAddr = p.options['master-addr'];
  const distTimeoutS = numberOption(p, 'dist-timeout', 'train', 0.001, (2 ** 31 - 1) / 1000);
  const distTimeoutMs = distTimeoutS === undefined ? undefined : Math.round(distTimeoutS * 1000);
  const launcherOnly = ['nnodes', 'node-rank', 'master-addr', 'master-port'].filter((k) => p.options[k] !== undefined);
  if (nproc === undefined && launcherOnly.length) throw new UsageError(`--${launcherOnly[0]} needs --nproc`, 'train');

  if (nproc !== undefined) {
    if (nodeRank !== undefined && nodeRank >= (nnodes ?? 1)) throw new UsageError(`--node-rank must be below --nnodes ${nnodes ?? 1}, got ${nodeRank}`, 'train');
    if ((nnodes ?? 1) > 1 && typeof masterAddr !== 'string') throw new UsageError('--master-addr (rank 0\'s address, reachable from every machine) is required with --nnodes > 1', 'train');
    // Fail here on a bad config, before starting N processes that would all say so.
    const cfg = readTrainConfig(config);
    const timeoutMs = resolveInitOptions({
      env: process.env, ...(distTimeoutMs !== undefined ? { timeoutMs: distTimeoutMs } : cfg.training.distTimeout !== null ? { timeoutMs: Math.round(cfg.training.distTimeout * 1000) } : {}),
    }).timeoutMs;
    // The workers run this command without the launcher's options.
    const skip = new Set(['nproc', 'nnodes', 'node-rank', 'master-addr', 'master-port']);
    const args = ['train', ...Object.entries(p.options).filter(([k]) => !skip.has(k)).map(([k, v]) => (v === true ? `--${k}` : `--${k}=${v}`))];
    return launch({
      nproc, args, timeoutMs, ...(nnodes !== undefined ? { nnodes } : {}), ...(nodeRank !== undefined ? { nodeRank } : {}),
      ...(typeof masterAddr === 'string' ? { masterAddr } : {}), ...(masterPort !== undefined ? { masterPort } : {}),
      ...(threads !== undefined ? { threadsPerProcess: threads } : {}),
    });
  }

  // A worker of `--nproc`: leave when the launcher is gone (it may have been SIGKILLed), and do not
  // let the IPC channel keep this process alive after training. (Only then: a process with some
  // other IPC channel, such as a test runner's worker calling main(), keeps its channel as it is.)
  if (process.channel && process.env.TIM_LAUNCHER_PID === String(process.ppid)) {
    process.channel.unref();
    process.on('disconnect', () => {
      process.stderr.write(`tim train: rank ${process.env.RANK ?? '?'}: the launcher is gone; exiting\n`);
      process.exit(1);
    });
  }

  if (threads !== undefined) setNumThreads(threads);
  // One of several processes (set by --nproc, torchrun or by hand): data parallel, else alone.
  const worldSize = Number(process.env.WORLD_SIZE ?? '1');
  const distributed = worldSize > 1 ? { ...(distTimeoutMs !== undefined ? { timeoutMs: distTimeoutMs } : {}) } : undefined;
  let trainer: Trainer;
  try {
    trainer = Trainer.create({
      config, outDir: out, ...(maxSteps !== undefined ? { maxSteps } : {}), ...(resume !== undefined ? { resume } : {}),
      ...(seed !== undefined ? { seed } : {}), ...(precision !== undefined ? { mixedPrecision: precision } : {}),
      ...(device !== undefined ? { device } : {}), ...(distributed ? { distributed } : {}),
      ...(maxNonFinite !== undefined ? { maxNonFiniteSteps: maxNonFinite } : {}),
      ...(typeof p.options['text-encoder'] === 'string' ? { textEncoder: p.options['text-encoder'] } : {}),
      ...(typeof p.options.vae === 'string' ? { vae: p.options.vae } : {}),
    });
  } catch (e) {
    throw rankPrefixed(e, worldSize);
  }
  let signal: NodeJS.Signals | null = null;
  const onSignal = (s: NodeJS.Signals) => {
    if (signal) process.exit(s === 'SIGINT' ? 130 : 143);
    signal = s;
    if (trainer.rank === 0) process.stderr.write(`\n${s}: stopping after this step (a checkpoint is written); send it again to exit now\n`);
    trainer.requestStop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await trainer.train();
    if (trainer.rank === 0) {
      print(JSON.stringify({ step: r.step, checkpoint: r.checkpoint, stepsPerSecond: Number(r.stepsPerSecond.toFixed(4)), metrics: r.metrics }));
    }
    await trainer.close();
  } catch (e) {
    throw rankPrefixed(e, trainer.worldSize, trainer.rank);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await trainer.close().catch(() => {});
  }
  return signal === null ? 0 : signal === 'SIGINT' ? 130 : 143;
}

/** With several processes, an error says which rank it comes from (E_DIST messages already do). */
function rankPrefixed(e: unknown, worldSize: number, rank = Number(process.env.RANK ?? 0)): unknown {
  if (worldSize > 1 && e instanceof Error && !/on rank \d+ of \d+/.test(e.message)) e.message = `rank ${rank} of ${worldSize}: ${e.message}`;
  return e;
}

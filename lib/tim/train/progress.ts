/**
 * Training progress: a one-line progress display (step, loss terms, lr, it/s, ETA) and the
 * metrics.jsonl log (one JSON object per logged step, appended and flushed at every log interval
 * so a killed run keeps every line it printed).
 *
 * Hand-written rather than a progress-bar library: `progress` draws nothing off a terminal, and
 * cli-progress owns a stream that it redraws from its own timer, off a terminal nothing by default or
 * a line per timer tick (noTTYOutput). A log here needs one plain line per logged step, when the step
 * is logged, through the writer it is given (the trainer's `write`, rank 0 only; tests; the demo's
 * log). What is left to write is the line's content, which is ours anyway (loss terms, lr, grad
 * norm), `\r` and padding on a terminal, and a sliding-window rate for it/s and the ETA: ~50 lines.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { writeFileAtomicSync } from './checkpoints.js';

/** What one optimizer step reports. */
export interface StepLosses {
  step: number;
  loss_weighted: number;
  loss_denoising: number;
  loss_projector: number;
  loss: number;
  lr: number;
  /** total norm before clipping (null when clipping is off) */
  grad_norm: number | null;
}

/** A logged step: its losses and the speed over the last log interval. */
export interface StepMetrics extends StepLosses {
  /** optimizer steps per second over the last log interval */
  it_s: number;
  /** samples per second over the last log interval */
  sps: number;
}

/** h:mm:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}`;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e-3 && a < 1e4 ? v.toPrecision(4) : v.toExponential(2);
}

/**
 * The progress line for a step: `step 120/1000 [12%] loss 0.4213 (w 0.4213 den 0.83 proj 0) lr 1.00e-4
 * | 3.21 it/s | ETA 0:04:34`.
 */
export function progressLine(m: StepMetrics, total: number, etaSeconds: number): string {
  const pct = Math.floor((100 * m.step) / total);
  const gn = m.grad_norm === null ? '' : ` gnorm ${fmt(m.grad_norm)}`;
  return `step ${m.step}/${total} [${pct}%] loss ${fmt(m.loss)} (w ${fmt(m.loss_weighted)} den ${fmt(m.loss_denoising)} proj ${fmt(m.loss_projector)})${gn} lr ${m.lr.toExponential(2)} | ${m.it_s.toFixed(2)} it/s | ETA ${formatDuration(etaSeconds)}`;
}

/** Writes progress lines: rewriting one line on a terminal, one line per update otherwise (logs). */
export class ProgressDisplay {
  private readonly tty: boolean;
  private lastLen = 0;
  constructor(private readonly write: (s: string) => void, tty = false) {
    this.tty = tty;
  }
  update(line: string): void {
    if (this.tty) {
      const pad = this.lastLen > line.length ? ' '.repeat(this.lastLen - line.length) : '';
      this.write(`\r${line}${pad}`);
      this.lastLen = line.length;
    } else {
      this.write(`${line}\n`);
    }
  }
  /** A message on its own line (checkpoint saved, ...), keeping the progress line intact. */
  message(text: string): void {
    if (this.tty && this.lastLen) this.write('\n');
    this.lastLen = 0;
    this.write(`${text}\n`);
  }
  end(): void {
    if (this.tty && this.lastLen) this.write('\n');
    this.lastLen = 0;
  }
}

/** Appends JSON lines to `<out>/metrics.jsonl`; each flush() fsyncs. */
export class MetricsLog {
  private fd: number | null;
  private pending: string[] = [];

  /**
   * Opens the log for appending. `resumeStep`: the step a resumed run continues from; lines of a
   * killed run past it (steps that will be trained again) are dropped first, so the log reads as
   * one uninterrupted run.
   */
  constructor(readonly path: string, resumeStep: number | null = null) {
    if (resumeStep !== null && existsSync(path)) {
      const kept = readFileSync(path, 'utf8').split('\n').filter((l) => {
        if (!l.trim()) return false;
        try {
          const o = JSON.parse(l) as { step?: unknown };
          return typeof o.step === 'number' && o.step <= resumeStep;
        } catch {
          return false; // a torn last line of a killed run
        }
      });
      writeFileAtomicSync(path, kept.map((l) => l + '\n').join(''));
    } else if (resumeStep === null && existsSync(path)) {
      // a fresh run in an existing folder starts a fresh log
      writeFileAtomicSync(path, '');
    }
    this.fd = openSync(path, 'a');
  }

  add(m: object): void {
    this.pending.push(JSON.stringify(m));
  }

  flush(): void {
    if (this.fd === null || !this.pending.length) return;
    const buf = Buffer.from(this.pending.map((l) => l + '\n').join(''), 'utf8');
    this.pending = [];
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
    fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd === null) return;
    this.flush();
    closeSync(this.fd);
    this.fd = null;
  }
}

/** Steps per second over a sliding window of recent step times, for it/s and the ETA. */
export class RateMeter {
  private times: number[] = [];
  constructor(private readonly window = 20) {}
  tick(now = performance.now()): void {
    this.times.push(now);
    if (this.times.length > this.window + 1) this.times.shift();
  }
  /** steps per second (0 until two ticks) */
  get rate(): number {
    const n = this.times.length;
    if (n < 2) return 0;
    return ((n - 1) * 1000) / (this.times[n - 1]! - this.times[0]!);
  }
}

/**
 * Command-line parsing for the `tim` CLI over Node's own `util.parseArgs` (tokens mode): it splits
 * `--name value`, `--name=value`, boolean `--flag`, short aliases (`-h`, `-hx`) and `--`; this file
 * keeps what it leaves to its callers: one-line messages naming the flag (parseArgs' strict mode
 * words them for a programmer and refuses `--class -1`, which here is a range error of --class),
 * the count of positionals, the help text, and typed flag values. Every problem is a UsageError,
 * which the entry point reports with the command's help and exit code 2 (the usual "bad usage").
 * Not commander: it would bring its own help layout, messages and process.exit, all to override.
 */
import { parseArgs as parseTokens } from 'node:util';
import type { Device } from '../torch/dtype.js';

export class UsageError extends Error {
  readonly code = 'E_USAGE';
  constructor(message: string, readonly command?: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface OptionSpec {
  /** true: the option takes a value (`--config x`); false: a boolean flag. */
  value: boolean;
  short?: string;
  /** Shown in the help text. */
  help: string;
  /** Placeholder of the value in the help text. */
  arg?: string;
}

export interface CommandSpec {
  name: string;
  /** One line for the command list of `tim --help`. */
  brief: string;
  summary: string;
  /** e.g. '<in> <out>' */
  usage: string;
  /** Number of positional arguments: exactly [min, max]. */
  positionals: [number, number];
  options: Record<string, OptionSpec>;
  /** Extra help paragraphs. */
  details?: string;
}

export interface Parsed {
  positionals: string[];
  options: Record<string, string | boolean>;
}

export function parseArgs(argv: string[], spec: CommandSpec): Parsed {
  const { tokens } = parseTokens({
    args: argv,
    options: Object.fromEntries(Object.entries(spec.options).map(([n, o]) => [n, { type: o.value ? 'string' : 'boolean', ...(o.short ? { short: o.short } : {}) }])),
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const positionals: string[] = [];
  const options: Record<string, string | boolean> = {};
  for (const t of tokens) {
    if (t.kind === 'positional') positionals.push(t.value);
    if (t.kind !== 'option') continue;
    const o = spec.options[t.name];
    if (!o) throw new UsageError(`unknown option '${t.rawName}'`, spec.name);
    if (t.name in options) throw new UsageError(`option '--${t.name}' given twice`, spec.name);
    if (!o.value && t.value !== undefined) throw new UsageError(`option '--${t.name}' takes no value`, spec.name);
    // parseArgs takes the next argument whatever it is; `--out --seed 1` is a forgotten value
    if (o.value && (t.value === undefined || (!t.inlineValue && t.value.startsWith('--')))) throw new UsageError(`option '--${t.name}' needs a value`, spec.name);
    options[t.name] = t.value ?? true;
  }
  if (options.help) return { positionals, options };
  const [min, max] = spec.positionals;
  if (positionals.length < min) throw new UsageError(`missing argument${min - positionals.length > 1 ? 's' : ''}: expected ${spec.usage}`, spec.name);
  if (positionals.length > max) throw new UsageError(`unexpected argument '${positionals[max]}' (expected ${spec.usage})`, spec.name);
  return { positionals, options };
}

export function commandHelp(prog: string, spec: CommandSpec): string {
  const lines = [`Usage: ${prog} ${spec.name} ${spec.usage} [options]`, '', spec.summary];
  if (spec.details) lines.push('', spec.details);
  lines.push('', 'Options:');
  const rows = Object.entries(spec.options).map(([n, o]) => [`${o.short ? `-${o.short}, ` : '    '}--${n}${o.value ? ` <${o.arg ?? 'value'}>` : ''}`, o.help] as const);
  const w = Math.max(...rows.map(([l]) => l.length));
  for (const [l, h] of rows) lines.push(`  ${l.padEnd(w)}  ${h}`);
  return lines.join('\n');
}

// ---- typed flag values: undefined when absent, else checked; anything else is a UsageError naming the flag

const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^\d+$/;

function range(min: number | undefined, max: number | undefined): string {
  return min !== undefined && max !== undefined ? ` in [${min}, ${max}]` : min !== undefined ? ` >= ${min}` : max !== undefined ? ` <= ${max}` : '';
}

/** The numbers of a comma-separated flag value, or null when one is not `pattern` or out of range. */
function numbers(v: string | boolean, pattern: RegExp, min?: number, max?: number): number[] | null {
  const items = typeof v === 'string' ? v.split(',') : [];
  const nums = items.map(Number);
  const ok = items.length > 0 && items.every((s, i) => pattern.test(s) && Number.isFinite(nums[i]) && (pattern !== INTEGER || Number.isSafeInteger(nums[i]))
    && (min === undefined || nums[i]! >= min) && (max === undefined || nums[i]! <= max));
  return ok ? nums : null;
}

/** A whole number >= min (and <= max when given). */
export function intOption(p: Parsed, name: string, command: string, min: number, max?: number): number | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const n = numbers(v, INTEGER, min, max);
  if (n?.length !== 1) throw new UsageError(`--${name} must be an integer${range(min, max)}, got '${String(v)}'`, command);
  return n[0];
}

/**
 * A comma-separated list of whole numbers, each >= min (and <= max when given), without repeats
 * (a repeated step count or class would only redo work and overwrite its own files).
 */
export function intListOption(p: Parsed, name: string, command: string, min: number, max?: number): number[] | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const nums = numbers(v, INTEGER, min, max);
  if (!nums) throw new UsageError(`--${name} must be a comma-separated list of integers${range(min, max)}, got '${String(v)}'`, command);
  const dup = nums.find((n, i) => nums.indexOf(n) !== i);
  if (dup !== undefined) throw new UsageError(`--${name} lists ${dup} twice, got '${String(v)}'`, command);
  return nums;
}

/** A decimal number (finite; `1e-3` and `.5` are fine), >= min and <= max when given. */
export function numberOption(p: Parsed, name: string, command: string, min?: number, max?: number): number | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const n = numbers(v, DECIMAL, min, max);
  if (n?.length !== 1) throw new UsageError(`--${name} must be a number${range(min, max)}, got '${String(v)}'`, command);
  return n[0];
}

/** A comma-separated list of exactly `count` decimal numbers (e.g. an interval `lo,hi`). */
export function numberListOption(p: Parsed, name: string, command: string, count: number, arg = `${count} numbers`): number[] | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const nums = numbers(v, DECIMAL);
  if (nums?.length !== count) throw new UsageError(`--${name} must be ${arg} separated by a comma, got '${String(v)}'`, command);
  return nums;
}

/** One of `choices`; `shown` lists them in the message (default: all, "a, b or c"). */
export function choiceOption<T extends string>(p: Parsed, name: string, command: string, choices: readonly T[], shown: readonly string[] = choices): T | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
    throw new UsageError(`--${name} must be ${shown.slice(0, -1).join(', ')} or ${shown.at(-1)}, got '${String(v)}'`, command);
  }
  return v as T;
}

/** A device flag: cpu, cuda or cuda:i. */
export function deviceOption(p: Parsed, name: string, command: string): Device | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(v)) throw new UsageError(`--${name} must be cpu or cuda[:i], got '${String(v)}'`, command);
  return v as Device;
}

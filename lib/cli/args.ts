/**
 * A small command-line parser for the `tim` CLI: `--name value`, `--name=value`, boolean `--flag`,
 * short aliases (`-h`), and `--` to end options. Anything it does not know is a UsageError, which
 * the entry point reports with the command's help and exit code 2 (the usual "bad usage" status).
 */

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
  const positionals: string[] = [];
  const options: Record<string, string | boolean> = {};
  const byShort = new Map(Object.entries(spec.options).filter(([, o]) => o.short).map(([n, o]) => [o.short!, n]));
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (onlyPositionals || a === '-' || !a.startsWith('-')) {
      positionals.push(a);
      continue;
    }
    if (a === '--') {
      onlyPositionals = true;
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
      inline = eq >= 0 ? a.slice(eq + 1) : undefined;
    } else {
      const n = byShort.get(a.slice(1));
      if (!n) throw new UsageError(`unknown option '${a}'`, spec.name);
      name = n;
    }
    const o = spec.options[name];
    if (!o) throw new UsageError(`unknown option '--${name}'`, spec.name);
    if (name in options) throw new UsageError(`option '--${name}' given twice`, spec.name);
    if (o.value) {
      const v = inline ?? argv[++i];
      if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`option '--${name}' needs a value`, spec.name);
      options[name] = v;
    } else {
      if (inline !== undefined) throw new UsageError(`option '--${name}' takes no value`, spec.name);
      options[name] = true;
    }
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

/**
 * An integer flag: undefined when absent, else a whole number >= min (and <= max when given);
 * anything else is a UsageError for `command`.
 */
export function intOption(p: Parsed, name: string, command: string, min: number, max?: number): number | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    const range = max === undefined ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new UsageError(`--${name} must be an integer ${range}, got '${String(v)}'`, command);
  }
  return n;
}

/**
 * A comma-separated list of whole numbers, each >= min (and <= max when given), without repeats
 * (a repeated step count or class would only redo work and overwrite its own files): undefined
 * when absent; anything else is a UsageError for `command`.
 */
export function intListOption(p: Parsed, name: string, command: string, min: number, max?: number): number[] | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const items = typeof v === 'string' ? v.split(',') : [];
  const nums = items.map(Number);
  const ok = items.length > 0 && items.every((s, i) => /^\d+$/.test(s) && Number.isSafeInteger(nums[i]) && nums[i]! >= min && (max === undefined || nums[i]! <= max));
  if (!ok) {
    const range = max === undefined ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new UsageError(`--${name} must be a comma-separated list of integers ${range}, got '${String(v)}'`, command);
  }
  const dup = nums.find((n, i) => nums.indexOf(n) !== i);
  if (dup !== undefined) throw new UsageError(`--${name} lists ${dup} twice, got '${String(v)}'`, command);
  return nums;
}

const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A decimal number (finite; `1e-3` and `.5` are fine), >= min and <= max when given: undefined when
 * absent, else the number; anything else is a UsageError for `command`.
 */
export function numberOption(p: Parsed, name: string, command: string, min?: number, max?: number): number | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !DECIMAL.test(v) || !Number.isFinite(n) || (min !== undefined && n < min) || (max !== undefined && n > max)) {
    const range = min !== undefined && max !== undefined ? ` in [${min}, ${max}]` : min !== undefined ? ` >= ${min}` : max !== undefined ? ` <= ${max}` : '';
    throw new UsageError(`--${name} must be a number${range}, got '${String(v)}'`, command);
  }
  return n;
}

/**
 * A comma-separated list of exactly `count` decimal numbers (e.g. an interval `lo,hi`): undefined
 * when absent; anything else is a UsageError for `command`.
 */
export function numberListOption(p: Parsed, name: string, command: string, count: number, arg = `${count} numbers`): number[] | undefined {
  const v = p.options[name];
  if (v === undefined) return undefined;
  const items = typeof v === 'string' ? v.split(',') : [];
  const nums = items.map(Number);
  if (items.length !== count || !items.every((s, i) => DECIMAL.test(s) && Number.isFinite(nums[i]))) {
    throw new UsageError(`--${name} must be ${arg} separated by a comma, got '${String(v)}'`, command);
  }
  return nums;
}

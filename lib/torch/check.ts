/**
 * Argument checks for public entry points, in one place (in the style of sharp's lib/is.js): small
 * predicates (`isX`, return a boolean) and asserters (named after what they accept, return the value,
 * throw the project's typed errors). Every message starts with the owner (`'OTFM.step'`,
 * `'TransitionLoss'`) and names the parameter and what it got:
 *
 *   wrong JS type                 TypeError  E_ARG       "<owner>: <name> must be a number, got string"
 *   value out of range            RangeError E_RANGE     "<owner>: <name> must be in [0, 1], got 2"
 *   unknown option / bad choice   E_OPTION               "<owner>: unknown option 'pmean' (known: ...)"
 *   disposed tensor               TorchError E_DISPOSED  "<owner>: <name> was disposed"
 *   non-floating tensor           TypeError  E_DTYPE
 *   wrong shape                   RangeError E_SHAPE
 *
 * Use these at public entry points only: internal calls go through unchecked functions, so a value is
 * checked once, where it enters, not on every step of a training loop.
 */
import { argError, TorchError } from './errors.js';
import { isFloating } from './dtype.js';
import { Tensor } from './tensor.js';

// ---- predicates ---------------------------------------------------------------------------------

/** A non-null object that is not an array (an options or inputs bag). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function isBool(v: unknown): v is boolean {
  return typeof v === 'boolean';
}

/** A finite number (not NaN, not ±Infinity). */
export function isFiniteNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

export function isInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

export function isTensor(v: unknown): v is Tensor {
  return v instanceof Tensor;
}

/** The same shape, dimension for dimension (no broadcasting). */
export function isSameShape(a: Tensor, b: Tensor): boolean {
  const sa = a.shape, sb = b.shape;
  return sa.length === sb.length && sa.every((d, i) => d === sb[i]);
}

// ---- asserters -------------------------------------------------------------------------------------

/**
 * An options (or inputs) object whose keys are all known: a misspelt `pmean` would otherwise be
 * ignored silently. Arrays and null are refused.
 */
export function knownKeys<T extends object>(v: T, known: readonly string[], owner: string, what = 'options', code = 'E_OPTION'): T {
  if (!isObject(v)) throw argError('type', `${owner}: ${what} must be an object, got ${describe(v)}`);
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) throw argError('type', `${owner}: unknown option '${k}' (known: ${known.join(', ')})`, code);
  }
  return v;
}

export function bool(v: unknown, name: string, owner: string): boolean {
  if (typeof v !== 'boolean') throw argError('type', `${owner}: ${name} must be a boolean, got ${typeof v}`);
  return v;
}

/** A number (any JS number, NaN included); the range asserters below build on it. */
function numberType(v: unknown, name: string, owner: string): number {
  if (typeof v !== 'number') throw argError('type', `${owner}: ${name} must be a number, got ${typeof v}`);
  return v;
}

/** A finite number. */
export function number(v: unknown, name: string, owner: string): number {
  const n = numberType(v, name, owner);
  if (!Number.isFinite(n)) throw argError('range', `${owner}: ${name} must be finite, got ${n}`);
  return n;
}

/** A finite number > 0. */
export function positive(v: unknown, name: string, owner: string): number {
  const n = number(v, name, owner);
  if (!(n > 0)) throw argError('range', `${owner}: ${name} must be > 0, got ${n}`);
  return n;
}

/** A finite number >= 0. */
export function nonNegative(v: unknown, name: string, owner: string): number {
  const n = number(v, name, owner);
  if (!(n >= 0)) throw argError('range', `${owner}: ${name} must be >= 0, got ${n}`);
  return n;
}

/** A number in the closed interval [lo, hi] (NaN is refused). */
export function inRange(v: unknown, name: string, owner: string, lo: number, hi: number): number {
  const n = numberType(v, name, owner);
  if (!(n >= lo && n <= hi)) throw argError('range', `${owner}: ${name} must be in [${lo}, ${hi}], got ${n}`);
  return n;
}

/** A safe integer >= min (and <= max when given). */
export function integer(v: unknown, name: string, owner: string, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
  if (!isInteger(v)) throw argError('type', `${owner}: ${name} must be an integer, got ${String(v)}`);
  if (v < min) throw argError('range', `${owner}: ${name} must be >= ${min}, got ${v}`);
  if (v > max) throw argError('range', `${owner}: ${name} must be <= ${max}, got ${v}`);
  return v;
}

/** One of the allowed strings (a RangeError with code E_OPTION, or the code given, otherwise). */
export function oneOf<T extends string>(v: unknown, name: string, owner: string, allowed: readonly T[], code = 'E_OPTION'): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw argError('range', `${owner}: ${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${String(v)}`, code);
  }
  return v as T;
}

/** A live (not disposed) Tensor. */
export function tensor(v: unknown, name: string, owner: string): Tensor {
  if (!(v instanceof Tensor)) throw argError('type', `${owner}: ${name} must be a Tensor, got ${describe(v)}`);
  if (v.isDisposed) throw new TorchError(`${owner}: ${name} was disposed`, 'E_DISPOSED');
  return v;
}

/** A live Tensor of a floating dtype (float32/64, float16, bfloat16). */
export function floatTensor(v: unknown, name: string, owner: string): Tensor {
  const t = tensor(v, name, owner);
  if (!isFloating(t.dtype)) throw argError('type', `${owner}: ${name} must be a floating-point tensor, got ${t.dtype}`, 'E_DTYPE');
  return t;
}

/** a's shape is ref's, else E_SHAPE naming both (broadcasting a wrong-sized eps or F would be silent). */
export function sameShape(a: Tensor, ref: Tensor, name: string, refName: string, owner: string): Tensor {
  if (!isSameShape(a, ref)) {
    throw argError('range', `${owner}: ${name} [${a.shape.join(', ')}] must have the shape of ${refName} [${ref.shape.join(', ')}]`, 'E_SHAPE');
  }
  return a;
}

/** A short description of what was given, for messages: 'string', 'null', 'an array', 'Tensor', ... */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Tensor) return v.isDisposed ? 'a disposed Tensor' : `a ${v.dtype} Tensor [${v.shape.join(', ')}]`;
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

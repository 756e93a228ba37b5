/**
 * toString(): the repr of Python's torch (torch/_tensor_str.py, default print options: precision 4,
 * threshold 1000, edgeitems 3, linewidth 80), so printed tensors read the same in both languages.
 * Big tensors are summarized before their values reach JS (see Tensor.toString), so printing a 1M
 * element tensor formats only the few values shown.
 */
import type { DType } from './dtype.js';

export const PRINT = { precision: 4, threshold: 1000, edgeItems: 3, lineWidth: 80 } as const;

export type RawValue = number | bigint | boolean;

/** What formatTensor needs: values of the (already summarized) data and the tensor's metadata. */
export interface FormatInput {
  /** Row-major values; when `summarized`, of the tensor with every dim longer than 2*edgeItems cut to its edges. */
  values: ArrayLike<RawValue>;
  /** The tensor's true shape. */
  shape: number[];
  dtype: DType;
  summarized: boolean;
  device: string;
  requiresGrad: boolean;
  gradFn: string | null;
}

const FLOATING = new Set<DType>(['float32', 'float64', 'float16', 'bfloat16']);
/** dtypes Python leaves out of the repr of a non-empty tensor (the defaults it can infer back). */
const IMPLIED = new Set<DType>(['float32', 'int64', 'bool']);

// ---- number formatting as Python's str.format ------------------------------------------------------

/** Python's '{:.Nf}': rounds half to even on the exact binary value; JS toFixed rounds ties up. */
export function pyFixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  let s = Math.abs(x).toFixed(digits);
  // A tie is an exact half at the rounding position; toFixed then went up, and half-even goes down
  // when that made the last digit odd (odd, so stepping it down never borrows).
  const scaled = Math.abs(x) * 10 ** digits; // exact for float32-sized mantissas and small `digits`
  if (scaled - Math.floor(scaled) === 0.5 && Number.isFinite(scaled) && oddLast(s)) s = decLast(s);
  return (x < 0 || Object.is(x, -0) ? '-' : '') + s;
}

/** Python's '{:.Ne}': mantissa rounded half to even, exponent with at least two digits. */
export function pyExp(x: number, digits: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const a = Math.abs(x);
  let s = a.toExponential(digits);
  const e = Number(s.slice(s.indexOf('e') + 1));
  if (isExpTie(a, e - digits)) {
    const mant = s.slice(0, s.indexOf('e'));
    if (oddLast(mant)) s = decLast(mant) + s.slice(s.indexOf('e'));
  }
  const [m, ex] = s.split('e') as [string, string];
  const sign = ex.startsWith('-') ? '-' : '+';
  const digitsE = ex.replace(/^[+-]/, '').padStart(2, '0');
  return (x < 0 || Object.is(x, -0) ? '-' : '') + `${m}e${sign}${digitsE}`;
}

/** Whether a = (n + 1/2) * 10^k exactly for an integer n. */
function isExpTie(a: number, k: number): boolean {
  if (k >= 0) {
    if (k > 22) return false; // 10^k no longer exact; such ties do not occur in practice
    const q = 10 ** k;
    return a % q === q / 2; // fmod is exact
  }
  // A binary fraction can only be a decimal tie when 5^-k divides an odd number below 2*10^(digits+1):
  // impossible once -k >= 8, and for smaller -k the product below is exact for float32 values.
  if (-k >= 8) return false;
  const y = a * 10 ** -k;
  return y - Math.floor(y) === 0.5;
}

function oddLast(s: string): boolean {
  return (s.charCodeAt(s.length - 1) - 48) % 2 === 1;
}
function decLast(s: string): string {
  return s.slice(0, -1) + String.fromCharCode(s.charCodeAt(s.length - 1) - 1);
}

/** Python's _Formatter: one width and one mode (integer-valued, fixed or scientific) for all values. */
class Formatter {
  private intMode = true;
  private sciMode = false;
  readonly width: number;
  private readonly floating: boolean;
  private readonly bool: boolean;

  constructor(values: ArrayLike<RawValue>, dtype: DType) {
    this.floating = FLOATING.has(dtype);
    this.bool = dtype === 'bool';
    let width = 1;
    if (!this.floating) {
      for (let i = 0; i < values.length; i++) width = Math.max(width, this.plain(values[i]!).length);
      this.width = width;
      return;
    }
    const nz: number[] = [];
    for (let i = 0; i < values.length; i++) {
      const v = values[i] as number;
      if (Number.isFinite(v) && v !== 0) nz.push(v);
    }
    if (nz.length === 0) {
      this.width = width;
      return;
    }
    let min = Infinity, max = 0;
    for (const v of nz) {
      const a = Math.abs(v);
      if (a < min) min = a;
      if (a > max) max = a;
      if (v !== Math.ceil(v)) this.intMode = false;
    }
    const p = PRINT.precision;
    if (this.intMode) {
      this.sciMode = max / min > 1000 || max > 1e8;
      for (const v of nz) width = Math.max(width, this.sciMode ? pyExp(v, p).length : pyFixed(v, 0).length + 1);
    } else {
      this.sciMode = max / min > 1000 || max > 1e8 || min < 1e-4;
      for (const v of nz) width = Math.max(width, (this.sciMode ? pyExp(v, p) : pyFixed(v, p)).length);
    }
    this.width = width;
  }

  private plain(v: RawValue): string {
    if (this.bool) return v ? 'True' : 'False';
    return String(v);
  }

  format(v: RawValue): string {
    let s: string;
    if (!this.floating) s = this.plain(v);
    else {
      const x = v as number;
      if (this.sciMode) s = pyExp(x, PRINT.precision);
      else if (this.intMode) s = pyFixed(x, 0) + (Number.isFinite(x) ? '.' : '');
      else s = pyFixed(x, PRINT.precision);
    }
    return s.length < this.width ? ' '.repeat(this.width - s.length) + s : s;
  }
}

// ---- layout -------------------------------------------------------------------------------------

export function formatTensor(inp: FormatInput): string {
  const { values, shape, dtype, summarized } = inp;
  const numel = shape.reduce((a, b) => a * b, 1);
  const prefix = 'tensor(';
  const indent = prefix.length;
  const suffixes: string[] = [];
  if (inp.device !== 'cpu') suffixes.push(`device='${inp.device}'`);
  let body: string;
  if (numel === 0) {
    // no values to infer the dtype from, so Python names it unless it is the default float32
    if (shape.length !== 1) suffixes.push(`size=(${shape.join(', ')})`);
    if (dtype !== 'float32') suffixes.push(`dtype=torch.${dtype}`);
    body = '[]';
  } else {
    if (!IMPLIED.has(dtype)) suffixes.push(`dtype=torch.${dtype}`);
    body = layout(values, shape, dtype, summarized, indent);
  }
  if (inp.gradFn) suffixes.push(`grad_fn=<${inp.gradFn}>`);
  else if (inp.requiresGrad) suffixes.push('requires_grad=True');
  return addSuffixes(prefix + body, suffixes, indent);
}

function layout(values: ArrayLike<RawValue>, shape: number[], dtype: DType, summarized: boolean, indent: number): string {
  const fmt = new Formatter(values, dtype);
  if (shape.length === 0) return fmt.format(values[0]!);
  const edge = PRINT.edgeItems;
  // the summarized data keeps min(n, 2*edge) entries of each dim longer than 2*edge
  const kept = shape.map((n) => (summarized && n > 2 * edge ? 2 * edge : n));
  const strides: number[] = new Array(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= kept[i]!;
  }
  const rows = (n: number): (number | null)[] => {
    const idx: (number | null)[] = [];
    if (summarized && n > 2 * edge) {
      for (let i = 0; i < edge; i++) idx.push(i);
      idx.push(null);
      for (let i = edge; i < 2 * edge; i++) idx.push(i); // the last `edge` rows of the original dim
    } else for (let i = 0; i < n; i++) idx.push(i);
    return idx;
  };
  const vector = (offset: number, n: number, ind: number): string => {
    const data = rows(n).map((i) => (i === null ? ' ...' : fmt.format(values[offset + i]!)));
    const perLine = Math.max(1, Math.floor((PRINT.lineWidth - ind) / (fmt.width + 2)));
    const lines: string[] = [];
    for (let i = 0; i < data.length; i += perLine) lines.push(data.slice(i, i + perLine).join(', '));
    return '[' + lines.join(',\n' + ' '.repeat(ind + 1)) + ']';
  };
  const rec = (dim: number, offset: number, ind: number): string => {
    if (dim === shape.length - 1) return vector(offset, shape[dim]!, ind);
    const parts = rows(shape[dim]!).map((i) => (i === null ? '...' : rec(dim + 1, offset + i * strides[dim]!, ind + 1)));
    return '[' + parts.join(',' + '\n'.repeat(shape.length - dim - 1) + ' '.repeat(ind + 1)) + ']';
  };
  return rec(0, 0, indent);
}

/** Python's _add_suffixes: a suffix that would pass the line width goes on its own line. */
function addSuffixes(str: string, suffixes: string[], indent: number): string {
  const out = [str];
  let lastLineLen = str.length - str.lastIndexOf('\n') + 1;
  for (const s of suffixes) {
    if (lastLineLen + s.length + 2 > PRINT.lineWidth) {
      out.push(',\n' + ' '.repeat(indent) + s);
      lastLineLen = indent + s.length;
    } else {
      out.push(', ' + s);
      lastLineLen += s.length + 2;
    }
  }
  out.push(')');
  return out.join('');
}

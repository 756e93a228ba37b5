/** A readable repr in the style of torch's: tensor([[1.0000, 2.0000], ...], dtype=torch.float64). */
import type { DType } from './dtype.js';

const EDGE = 3;
const THRESHOLD = 1000;

function formatNumbers(values: number[], dtype: DType): (x: number) => string {
  if (dtype === 'bool') return (x) => (x ? 'True' : 'False');
  if (!(dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16')) {
    return (x) => String(x);
  }
  const finite = values.filter((v) => Number.isFinite(v));
  const allInt = finite.every((v) => Number.isInteger(v));
  const maxAbs = finite.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const minAbs = finite.filter((v) => v !== 0).reduce((m, v) => Math.min(m, Math.abs(v)), Infinity);
  const sci = finite.length > 0 && (maxAbs >= 1e8 || (minAbs < 1e-4 && minAbs !== Infinity) || (maxAbs / (minAbs || 1) > 1000 && !allInt));
  return (x) => {
    if (Number.isNaN(x)) return 'nan';
    if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
    if (sci) return x.toExponential(4).replace(/e([+-])(\d)$/, 'e$10$2');
    if (allInt) return `${x.toFixed(0)}.`;
    return x.toFixed(4);
  };
}

export function formatTensor(values: number[] | boolean[], shape: number[], dtype: DType, suffix: string): string {
  const numel = shape.reduce((a, b) => a * b, 1);
  const summarize = numel > THRESHOLD;
  const nums = (values as (number | boolean)[]).map(Number);
  const fmt = formatNumbers(nums, dtype);
  const strs = nums.map(fmt);
  const width = strs.reduce((m, s) => Math.max(m, s.length), 0);
  const strides: number[] = [];
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= shape[i]!;
  }
  const indent = 'tensor('.length;
  const rec = (dim: number, offset: number): string => {
    if (shape.length === 0) return strs[0]!;
    const n = shape[dim]!;
    const idx: (number | null)[] = [];
    if (summarize && n > 2 * EDGE) {
      for (let i = 0; i < EDGE; i++) idx.push(i);
      idx.push(null);
      for (let i = n - EDGE; i < n; i++) idx.push(i);
    } else for (let i = 0; i < n; i++) idx.push(i);
    if (dim === shape.length - 1) {
      return '[' + idx.map((i) => (i === null ? '...' : strs[offset + i]!.padStart(width))).join(', ') + ']';
    }
    const sep = ',' + '\n'.repeat(shape.length - dim - 1) + ' '.repeat(indent + dim + 1);
    return '[' + idx.map((i) => (i === null ? '...' : rec(dim + 1, offset + i * strides[dim]!))).join(sep) + ']';
  };
  const body = numel === 0 ? (shape.length <= 1 ? '[]' : `[], size=(${shape.join(', ')})`) : rec(0, 0);
  return `tensor(${body}${suffix})`;
}

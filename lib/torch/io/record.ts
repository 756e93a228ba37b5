/**
 * What every checkpoint format in lib/torch/io shares: the record of named tensors that load
 * returns and save takes, its checked entries, and the native reader's open-file handle.
 */
import type { native } from '../native.js';
import { TorchError, argError } from '../errors.js';
import { Tensor } from '../tensor.js';

/** An open file of the native reader (native.stOpen), until native.stClose. */
export type StFile = Parameters<typeof native.stClose>[0];

/** A record of named tensors: what load() returns and save() takes. */
export type TensorRecord = Record<string, Tensor>;

/** A lone UTF-16 surrogate: a JS string that is not valid Unicode (no file format can name it). */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** A property that may be named '__proto__' (an own property, never the prototype). */
export function defineEntry<T>(o: Record<string, T>, k: string, v: T): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** The entries of a record of tensors (an object or a Map), checked: string names, live Tensors. */
export function tensorEntries(rec: TensorRecord | Map<string, Tensor>, what: string): { name: string; tensor: Tensor }[] {
  if (rec === null || typeof rec !== 'object') throw argError('type', `${what}: expected a record { name: Tensor }`);
  const pairs: [string, unknown][] = rec instanceof Map ? [...rec.entries()] : Object.entries(rec);
  return pairs.map(([name, t]) => {
    if (typeof name !== 'string') throw argError('type', `${what}: tensor names must be strings`);
    if (LONE_SURROGATE.test(name)) throw argError('range', `${what}: tensor name ${JSON.stringify(name)} is not valid Unicode`, 'E_VALUE');
    if (!(t instanceof Tensor)) throw argError('type', `${what}: '${name}' is not a Tensor`);
    if (t.isDisposed) throw new TorchError(`${what}: tensor '${name}' was disposed (use after dispose)`, 'E_DISPOSED');
    return { name, tensor: t };
  });
}

/** ATen operators resolved once, by name and overload, to ids for the native dispatcher. */
import { native } from './native.js';
import { argError } from './errors.js';
import type { Handle, OpId, OpResult } from './native_binding.js';

/**
 * The binding for hot paths (Tensor methods, scopes). The addon's exports object is in V8 dictionary
 * mode (its ~90 functions are added one by one), so each `native.call` there is a hash lookup; this
 * copy has fast properties, which optimized code reads as constants (bench/perop.ts).
 */
export const hot: typeof native = { ...native };

const cache = new Map<string, OpId>();

/**
 * Returns a function that yields the operator id, resolving it on first use. R is what native.call
 * returns for this operator, from its schema: a Tensor handle (the default); declare others, e.g.
 * `op<[Handle, Handle]>('aten::max', 'dim')` for a (Tensor, Tensor) return, `op<Handle[]>(...)` for Tensor[].
 */
export function op<R extends OpResult = Handle>(name: string, overload = ''): () => OpId<R> {
  // checked here because the cache key below would turn a Symbol into an untyped TypeError
  if (typeof name !== 'string' || typeof overload !== 'string') throw argError('type', 'operator name and overload must be strings');
  let id: OpId<R> = -1;
  return () => {
    if (id >= 0) return id;
    const key = `${name}.${overload}`;
    // R is this declaration's reading of the schema's returns: the id itself does not carry it.
    id = (cache.get(key) ?? native.resolveOp(name, overload)) as OpId<R>;
    cache.set(key, id);
    return id;
  };
}

/** Whether this libtorch has the operator (e.g. scaled_dot_product_attention only on 2.x). */
export function hasOp(name: string, overload = ''): boolean {
  try {
    op(name, overload)();
    return true;
  } catch {
    return false;
  }
}

/** The operator's schema as libtorch prints it, for docs and error messages. */
export function schemaOf(name: string, overload = ''): string {
  return native.opSchema(op(name, overload)()) as string;
}

/**
 * Errors from libtorch arrive as TorchError with a machine-readable `code`; mistakes in the
 * arguments given from JS arrive as TypeError / RangeError (also with a `code`).
 */
export type TorchErrorCode =
  | 'E_SHAPE'
  | 'E_DTYPE'
  | 'E_DEVICE'
  | 'E_INDEX'
  | 'E_OOM'
  | 'E_DISPOSED'
  | 'E_AUTOGRAD'
  | 'E_NOT_IMPLEMENTED'
  | 'E_VALUE'
  | 'E_IO'
  | 'E_FORMAT'
  | 'E_TORCH'
  | (string & {});

export class TorchError extends Error {
  readonly code: TorchErrorCode;
  constructor(message: string, code: TorchErrorCode = 'E_TORCH') {
    super(message);
    this.name = 'TorchError';
    this.code = code;
  }
}

/** A RangeError or TypeError with a code, for argument checks done in TypeScript. */
export function argError(kind: 'type' | 'range', message: string, code = kind === 'type' ? 'E_ARG' : 'E_RANGE'): Error {
  const e = kind === 'type' ? new TypeError(message) : new RangeError(message);
  (e as Error & { code: string }).code = code;
  return e;
}

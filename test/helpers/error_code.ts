/** The `code` of the error `fn` throws (undefined for an error without one), or 'no error' when it returns. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return 'no error';
}

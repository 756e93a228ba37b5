/**
 * Runs the `tim` CLI in this process (lib/cli/tim.ts main) with stderr captured: the exit status,
 * stdout lines, stderr (progress lines and the error message) and the last stdout line parsed as
 * JSON when the command succeeded and printed one.
 */
import { main } from '../../lib/cli/tim.js';

export interface CliResult {
  code: number;
  out: string;
  err: string;
  json: Record<string, any> | null;
}

export async function runTim(...args: string[]): Promise<CliResult> {
  const out: string[] = [], err: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string | Uint8Array): boolean => {
    err.push(String(s));
    return true;
  }) as typeof process.stderr.write;
  let code: number;
  try {
    code = await main(args, (s) => out.push(s), (s) => err.push(s + '\n'));
  } finally {
    process.stderr.write = write;
  }
  const last = out.at(-1);
  return { code, out: out.join('\n'), err: err.join(''), json: code === 0 && last?.startsWith('{') ? JSON.parse(last) : null };
}

import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const repo = resolve(__dirname, '..', '..');

/**
 * Runs test/fixtures/fault-chain-child.mts in a fresh process with `env`: the median minor page faults
 * per call of a chain of four 16 MiB intermediates (16,384 pages if each were mapped afresh), and
 * whether the CPU block cache was installed.
 */
export function faultChain(env: NodeJS.ProcessEnv): { faults: number; installed: boolean } {
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'test', 'fixtures', 'fault-chain-child.mts')], { cwd: repo, env, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!) as { faults: number; installed: boolean };
}

/**
 * The OpenMP wait default the package puts into the environment before libtorch loads
 * (lib/torch/native.ts envDefaults; why and the measurements: docs/benchmarks.md "Threads"): the
 * environment rules, and that the loaded process really has it (libgomp reads it once, at load).
 */
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { appliedEnvDefaults, envDefaults } from '../lib/torch/native.js';

const repo = resolve(__dirname, '..');

/** What a fresh process that loads the package sees in its environment (env: its starting environment). */
function childEnv(env: NodeJS.ProcessEnv): { GOMP_SPINCOUNT: string | null; OMP_WAIT_POLICY: string | null; applied: Record<string, string> } {
  const code = `import(${JSON.stringify(join(repo, 'lib', 'torch', 'native.ts'))}).then((m) => console.log(JSON.stringify({ ` +
    'GOMP_SPINCOUNT: process.env.GOMP_SPINCOUNT ?? null, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? null, applied: m.appliedEnvDefaults })))';
  const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', code], { cwd: repo, env, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').at(-1)!);
}

describe('envDefaults (OpenMP wait policy)', () => {
  it('sets a short spin (GOMP_SPINCOUNT) by default instead of a passive wait', () => {
    expect(envDefaults({})).toEqual({ GOMP_SPINCOUNT: '10000' });
    expect(envDefaults({})).not.toHaveProperty('OMP_WAIT_POLICY');
    expect(envDefaults({ TIM_TORCH_NO_ENV_DEFAULTS: '0' })).toEqual({ GOMP_SPINCOUNT: '10000' });
  });

  it("leaves the policy to the user when they set one, or when the defaults are off", () => {
    expect(envDefaults({ OMP_WAIT_POLICY: 'PASSIVE' })).toEqual({});
    expect(envDefaults({ OMP_WAIT_POLICY: 'ACTIVE' })).toEqual({});
    expect(envDefaults({ GOMP_SPINCOUNT: '300000' })).toEqual({});
    expect(envDefaults({ TIM_TORCH_NO_ENV_DEFAULTS: '1' })).toEqual({});
  });

  it('is in this process environment after load, as recorded in appliedEnvDefaults', () => {
    for (const [k, v] of Object.entries(appliedEnvDefaults)) expect(process.env[k]).toBe(v);
  });

  it('a fresh process gets the spin count at load, unless its environment sets a policy', () => {
    const base = { ...process.env };
    for (const k of ['GOMP_SPINCOUNT', 'OMP_WAIT_POLICY', 'TIM_TORCH_NO_ENV_DEFAULTS']) delete base[k];
    expect(childEnv(base)).toEqual({ GOMP_SPINCOUNT: '10000', OMP_WAIT_POLICY: null, applied: { GOMP_SPINCOUNT: '10000' } });
    expect(childEnv({ ...base, OMP_WAIT_POLICY: 'PASSIVE' })).toEqual({ GOMP_SPINCOUNT: null, OMP_WAIT_POLICY: 'PASSIVE', applied: {} });
    expect(childEnv({ ...base, TIM_TORCH_NO_ENV_DEFAULTS: '1' })).toEqual({ GOMP_SPINCOUNT: null, OMP_WAIT_POLICY: null, applied: {} });
  }, 60_000);
});

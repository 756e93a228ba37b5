/**
 * The OpenMP wait default the package puts into the environment before libtorch loads
 * (lib/torch/native.ts envDefaults; why and the measurements: docs/benchmarks.md "Threads"): the
 * environment rules, and that the loaded process really has it (libgomp reads it once, at load).
 */
import { describe, expect, it } from 'vitest';
import { appliedEnvDefaults, envDefaults } from '../lib/torch/native.js';

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
    // the test runner sets neither variable, so the default applies here
    if (process.env.TIM_TORCH_NO_ENV_DEFAULTS === undefined && !process.env.OMP_WAIT_POLICY) {
      expect(appliedEnvDefaults).toEqual({ GOMP_SPINCOUNT: '10000' });
    }
  });
});

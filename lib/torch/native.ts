/**
 * Loads the native addon. Thread-pool defaults are put in the environment first, because OpenMP
 * and OpenBLAS read them once, when libtorch is loaded (see README "Threads").
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TorchError } from './errors.js';

const require = createRequire(import.meta.url);
export const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

// OMP_WAIT_POLICY=PASSIVE: idle OpenMP workers sleep instead of spinning, so OpenMP (libtorch) and
// OpenBLAS's own pool stop stealing each other's cores (measured in bench/threads.ts).
const ENV_DEFAULTS: Record<string, string> = {
  OMP_WAIT_POLICY: 'PASSIVE',
};
for (const [k, v] of Object.entries(ENV_DEFAULTS)) {
  if (process.env[k] === undefined && process.env.TIM_TORCH_NO_ENV_DEFAULTS === undefined) process.env[k] = v;
}

/** The raw native binding (internal; use the typed API). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeBinding = any;

function explain(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const lines = [`tim-torch: could not load the native addon.`, `  cause: ${msg.split('\n')[0]}`];
  if (/libtorch|libc10|libtorch_cpu/.test(msg)) {
    lines.push(
      '  libtorch is missing or not the version the addon was built for.',
      "  Fix: run 'sudo bash node_modules/tim-torch/scripts/setup.sh' (Debian: libtorch-dev 1.13) or set",
      '  LIBTORCH / Torch_DIR to your libtorch and rebuild with `npm rebuild tim-torch`.',
    );
  } else if (/GLIBC|GLIBCXX|CXXABI/.test(msg)) {
    lines.push(
      '  The prebuilt addon needs a newer C/C++ runtime than this system has.',
      '  Fix: rebuild from source with `npm rebuild tim-torch` (needs cmake, g++ and libtorch).',
    );
  } else if (/No native build was found|Cannot find module/.test(msg)) {
    lines.push(
      '  No addon matches this platform and no build from source exists.',
      '  Fix: install cmake and g++, then `npm rebuild tim-torch` (it runs cmake-js against your libtorch).',
    );
  } else if (/undefined symbol/.test(msg)) {
    lines.push(
      '  The addon was built against a different libtorch than the one now loaded.',
      '  Fix: `npm rebuild tim-torch` so it compiles against the installed libtorch.',
    );
  }
  return lines.join('\n');
}

function load(): NativeBinding {
  const forced = process.env.TIM_TORCH_ADDON;
  try {
    if (forced) return require(forced);
    const nodeGypBuild = require('node-gyp-build') as ((dir: string) => NativeBinding) & { resolve(dir: string): string };
    return nodeGypBuild(packageRoot);
  } catch (err) {
    const e = new TorchError(explain(err), 'E_LOAD');
    (e as Error & { cause?: unknown }).cause = err;
    throw e;
  }
}

export const native: NativeBinding = load();
native.setErrorClass(TorchError);

/** Where the loaded addon came from (build folder or prebuild). */
export function addonPath(): string {
  const forced = process.env.TIM_TORCH_ADDON;
  if (forced) return forced;
  const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
  return nodeGypBuild.resolve(packageRoot);
}

/** Version of the package (from package.json). */
export const packageVersion: string = (() => {
  const p = join(packageRoot, 'package.json');
  return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as { version: string }).version : '0.0.0';
})();

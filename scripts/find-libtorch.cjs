'use strict';
/**
 * Finds the libtorch that CMakeLists.txt would build against, without running cmake, so that
 * scripts/install.cjs can decide whether the prebuilt addon fits and explain a failure up front.
 * The order and the "explicit choice is strict" rule mirror CMakeLists.txt; keep them in step.
 *
 *   node scripts/find-libtorch.cjs     prints the result as JSON
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const SYSTEM_DIRS = [
  '/usr/lib/x86_64-linux-gnu/cmake/Torch',
  '/usr/lib/aarch64-linux-gnu/cmake/Torch',
  '/usr/local/share/cmake/Torch',
];

/** "1.13.0" from the TorchConfigVersion.cmake next to TorchConfig.cmake, or null. */
function versionOf(cmakeDir) {
  try {
    const text = fs.readFileSync(path.join(cmakeDir, 'TorchConfigVersion.cmake'), 'utf8');
    const m = /set\(PACKAGE_VERSION\s+"([^"]+)"\)/.exec(text);
    return m ? m[1] : null;
  } catch {
    return null;
  }
}

/**
 * @param {NodeJS.ProcessEnv} env
 * @returns {{ found: boolean, label?: string, cmakeDir?: string, version?: string|null,
 *   major?: number, minor?: number, explicit: boolean, tried: string[] }}
 */
function findLibtorch(env = process.env) {
  const tried = [];
  const candidates = [];
  let explicit = false;
  if (env.LIBTORCH) {
    candidates.push([`LIBTORCH=${env.LIBTORCH}`, path.join(env.LIBTORCH, 'share', 'cmake', 'Torch')]);
    explicit = true;
  }
  if (env.Torch_DIR) {
    candidates.push([`Torch_DIR=${env.Torch_DIR}`, env.Torch_DIR]);
    explicit = true;
  }
  if (!explicit) {
    const python = env.PYTHON || 'python3';
    const r = spawnSync(python, ['-c', 'import torch.utils; print(torch.utils.cmake_prefix_path)'], {
      encoding: 'utf8',
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 60_000,
    });
    const prefix = r.status === 0 ? r.stdout.trim() : '';
    if (prefix) candidates.push([`python torch (${python})`, path.join(prefix, 'Torch')]);
    else tried.push(`python torch: '${python} -c "import torch"' failed`);
    for (const d of SYSTEM_DIRS) candidates.push(['system', d]);
  }
  for (const [label, dir] of candidates) {
    if (fs.existsSync(path.join(dir, 'TorchConfig.cmake'))) {
      const version = versionOf(dir);
      const [major, minor] = (version || '').split('.').map((x) => Number.parseInt(x, 10));
      return { found: true, label, cmakeDir: dir, version, major, minor, explicit, tried };
    }
    tried.push(`${label}: no TorchConfig.cmake in ${dir}`);
  }
  return { found: false, explicit, tried };
}

module.exports = { findLibtorch, versionOf, SYSTEM_DIRS };

if (require.main === module) {
  process.stdout.write(JSON.stringify(findLibtorch(), null, 2) + '\n');
}

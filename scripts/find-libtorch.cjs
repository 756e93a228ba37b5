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
 * The folder holding libtorch_cpu.so: <prefix>/lib for a libtorch distribution or a pip torch
 * (cmakeDir = <prefix>/share/cmake/Torch), <libdir> for Debian (cmakeDir = <libdir>/cmake/Torch).
 */
function libDirOf(cmakeDir) {
  const has = (d) => {
    try {
      return fs.readdirSync(d).some((n) => n.startsWith('libtorch_cpu.so'));
    } catch {
      return false;
    }
  };
  const prefixLib = path.resolve(cmakeDir, '..', '..', '..', 'lib');
  if (has(prefixLib)) return prefixLib;
  const debian = path.resolve(cmakeDir, '..', '..');
  return has(debian) ? debian : null;
}

/**
 * The CUDA release a libtorch was built with ('13.0'), null for a CPU build, or 'unknown' when it has
 * libtorch_cuda but says nowhere which release: a pip torch's version.py (`cuda = '13.0'`), a
 * libtorch distribution's build-version ('2.14.1+cu130').
 */
function cudaOf(cmakeDir, libDir) {
  if (!libDir || !fs.existsSync(path.join(libDir, 'libtorch_cuda.so'))) return null;
  const prefix = path.resolve(cmakeDir, '..', '..', '..');
  try {
    const m = /^cuda(?::[^=]*)?=\s*'([0-9.]+)'/m.exec(fs.readFileSync(path.join(prefix, 'version.py'), 'utf8'));
    if (m) return m[1];
  } catch {
    /* not a pip torch */
  }
  try {
    const m = /\+cu(\d+)(\d)\b/.exec(fs.readFileSync(path.join(prefix, 'build-version'), 'utf8'));
    if (m) return `${m[1]}.${m[2]}`;
  } catch {
    /* not a libtorch distribution */
  }
  return 'unknown';
}

/** The prebuild flavour folder name for a libtorch: libtorch-2.13-cpu, libtorch-2.14-cu130. */
function flavourOf(lib) {
  if (!lib.found || !Number.isInteger(lib.major) || !Number.isInteger(lib.minor)) return null;
  const cuda = lib.cuda === null ? 'cpu' : lib.cuda === 'unknown' ? null : `cu${lib.cuda.replace('.', '')}`;
  return cuda ? `libtorch-${lib.major}.${lib.minor}-${cuda}` : null;
}

/**
 * @param {NodeJS.ProcessEnv} env
 * @returns {{ found: boolean, label?: string, cmakeDir?: string, version?: string|null,
 *   major?: number, minor?: number, libDir?: string|null, cuda?: string|null, explicit: boolean, tried: string[] }}
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
      const libDir = libDirOf(dir);
      return { found: true, label, cmakeDir: dir, version, major, minor, libDir, cuda: cudaOf(dir, libDir), explicit, tried };
    }
    tried.push(`${label}: no TorchConfig.cmake in ${dir}`);
  }
  return { found: false, explicit, tried };
}

module.exports = { findLibtorch, versionOf, flavourOf, SYSTEM_DIRS };

if (require.main === module) {
  process.stdout.write(JSON.stringify(findLibtorch(), null, 2) + '\n');
}

'use strict';
/**
 * npm `install` script. Keeps the addon that the runtime loader (node-gyp-build) will pick when it
 * loads and fits the libtorch CMake would choose; otherwise builds from source with cmake-js. When
 * neither works it prints ONE message (why, and what to do) and exits non-zero, so that a broken
 * install fails at `npm install` rather than at the first `import`.
 *
 * Env: TIM_TORCH_SKIP_INSTALL=1 skips everything (CI builds the addon in its own step).
 *      TIM_TORCH_BUILD_FROM_SOURCE=1 always builds from scratch (`npm rebuild` alone keeps a fitting addon).
 *      LIBTORCH / Torch_DIR / PYTHON choose the libtorch, as for CMakeLists.txt.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { findLibtorch, flavourOf, SYSTEM_DIRS } = require('./find-libtorch.cjs');
const { sourceHash } = require('./source-hash.cjs');
const { writeWithRunpath } = require('./runpath.cjs');

const root = path.join(__dirname, '..');
const MIN = [1, 13];

function log(msg) {
  process.stdout.write(`tim-torch: ${msg}\n`);
}

function fail(lines) {
  process.stderr.write(['', 'tim-torch: could not install the native addon.', ...lines.map((l) => `  ${l}`), ''].join('\n'));
  process.exit(1);
}

function rel(p) {
  return path.relative(root, p) || p;
}

const tupleDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
/** Where a flavour prebuild is installed, RUNPATH filled in (lib/torch/native.ts loads it after build/). */
const installedDir = path.join(tupleDir, 'installed');

/**
 * The addons to try, in the loader's order: a build from source (build/Release), an installed
 * flavour prebuild, the system-libtorch prebuild (prebuilds/<platform>-<arch>/*.node), then the
 * flavour prebuild made for the libtorch found (prebuilds/<platform>-<arch>/libtorch-X.Y-<cpu|cuNNN>/),
 * which is installed (copied with its RUNPATH set to that libtorch's folder) only once it has loaded.
 */
function addonCandidates(lib) {
  for (const d of ['build/Release', 'build/Debug']) {
    const dir = path.join(root, d);
    if (!fs.existsSync(dir)) continue;
    const f = fs.readdirSync(dir).find((n) => n.endsWith('.node'));
    if (f) return [{ kind: 'build', file: path.join(dir, f) }];
  }
  const out = [];
  const installed = path.join(installedDir, 'tim_torch.node');
  if (fs.existsSync(installed)) out.push({ kind: 'installed', file: installed });
  if (fs.existsSync(tupleDir)) {
    for (const f of fs.readdirSync(tupleDir).filter((n) => n.endsWith('.node'))) {
      // musl systems cannot load a glibc-tagged prebuild (and node-gyp-build would skip it).
      if (/\.musl\./.test(f) !== fs.existsSync('/etc/alpine-release')) continue;
      out.push({ kind: 'prebuild', file: path.join(tupleDir, f) });
    }
  }
  const flavour = lib.found && lib.libDir ? flavourOf(lib) : null;
  const fdir = flavour && path.join(tupleDir, flavour);
  if (fdir && fs.existsSync(path.join(fdir, 'prebuild.json'))) {
    const f = fs.readdirSync(fdir).find((n) => n.endsWith('.node'));
    if (f) out.push({ kind: 'flavour', flavour, file: path.join(fdir, f) });
  }
  return out;
}

/** A flavour prebuild with its RUNPATH set to lib's folder, in a temp folder to probe before installing. */
function stageFlavour(candidate, lib) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tim-torch-flavour-'));
  const file = path.join(dir, 'tim_torch.node');
  writeWithRunpath(candidate.file, file, lib.libDir);
  return { ...candidate, staged: file, stagedDir: dir };
}

/** Moves a staged flavour into prebuilds/<tuple>/installed/, with a note of what it was made for. */
function installFlavour(staged, lib) {
  fs.mkdirSync(installedDir, { recursive: true });
  const note = { flavour: staged.flavour, libDir: lib.libDir, cmakeDir: lib.cmakeDir, from: path.relative(root, staged.file) };
  const part = path.join(installedDir, `.installed.json.${process.pid}.part`);
  fs.writeFileSync(part, JSON.stringify(note, null, 2) + '\n');
  const dest = path.join(installedDir, 'tim_torch.node');
  fs.copyFileSync(staged.staged, `${dest}.${process.pid}.part`);
  fs.renameSync(`${dest}.${process.pid}.part`, dest);
  fs.renameSync(part, path.join(installedDir, 'installed.json'));
  fs.rmSync(staged.stagedDir, { recursive: true, force: true });
  return dest;
}

/** Loads the addon in a child process (a crash or missing library must not kill npm). */
function probe(file) {
  const code = 'const b = require(process.argv[1]); process.stdout.write(JSON.stringify(b.buildInfo()));';
  const r = spawnSync(process.execPath, ['-e', code, file], { encoding: 'utf8', timeout: 120_000 });
  if (r.status === 0) {
    try {
      return { ok: true, info: JSON.parse(r.stdout) };
    } catch {
      /* fall through: reported below */
    }
  }
  const err = (r.stderr || '').split('\n').find((l) => /Error|error|cannot|not found|undefined symbol/.test(l));
  return { ok: false, error: (err || r.stderr || `exit ${r.status} signal ${r.signal}`).trim() };
}

function real(p) {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** The TorchConfig.cmake folder an addon was linked against: for a build, what its CMake cache
 * says; for an installed flavour, its note; a system prebuild is made against the system libtorch
 * (null); a flavour being installed, against the libtorch found. */
function linkedTorchDir(candidate, lib) {
  if (candidate.kind === 'prebuild') return null;
  if (candidate.kind === 'flavour') return lib.cmakeDir;
  try {
    if (candidate.kind === 'installed') return JSON.parse(fs.readFileSync(path.join(installedDir, 'installed.json'), 'utf8')).cmakeDir;
    const cache = fs.readFileSync(path.join(root, 'build', 'CMakeCache.txt'), 'utf8');
    const m = /^Torch_DIR:PATH=(.*)$/m.exec(cache);
    return m ? m[1].trim() : undefined;
  } catch {
    return undefined;
  }
}

/** Why a loaded addon does not fit, or null when it does. Sets `libtorchChanged` when a build must
 * be configured afresh (cmake-js compile alone would keep the old libtorch). */
function misfit(candidate, info, lib, hash) {
  if (lib.explicit && !lib.found) return { why: `LIBTORCH/Torch_DIR is set but holds no libtorch (${lib.tried.join('; ')})`, libtorchChanged: true };
  if (lib.found && lib.version && (info.torchMajor !== lib.major || info.torchMinor !== lib.minor)) {
    return { why: `it was built for libtorch ${info.torchVersion}, but the libtorch to use is ${lib.version} (${lib.label})`, libtorchChanged: true };
  }
  if (lib.found) {
    const linked = linkedTorchDir(candidate, lib);
    const wanted = real(lib.cmakeDir);
    const ok = linked === null ? SYSTEM_DIRS.some((d) => real(d) === wanted) : linked === undefined || real(linked) === wanted;
    if (!ok) {
      return { why: `it is linked against ${linked ?? 'the system libtorch'}, but the libtorch to use is ${lib.cmakeDir} (${lib.label})`, libtorchChanged: true };
    }
    if ((lib.cuda !== null) !== Boolean(info.cudaBuild)) {
      return { why: `it is a ${info.cudaBuild ? 'CUDA' : 'CPU'} build, but the libtorch to use is ${lib.cuda !== null ? 'a CUDA' : 'a CPU'} libtorch (${lib.label})`, libtorchChanged: true };
    }
  }
  if (info.sourceHash !== hash) {
    return { why: `it was built from other native/ sources (stale: ${String(info.sourceHash).slice(0, 12)}…, sources ${hash.slice(0, 12)}…)`, libtorchChanged: false };
  }
  return null;
}

function explainLoad(error) {
  if (/GLIBC_|GLIBCXX_|CXXABI_/.test(error)) return `it needs a newer C/C++ runtime than this system has (${error})`;
  if (/undefined symbol/.test(error)) return `it does not match the libtorch the loader found (${error})`;
  if (/cannot open shared object/.test(error) && /libtorch|libc10/.test(error)) return `libtorch's shared libraries were not found (${error})`;
  return error;
}

function has(cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

function main() {
  if (process.env.TIM_TORCH_SKIP_INSTALL === '1' || process.env.TIM_TORCH_SKIP_INSTALL === 'true') {
    log('TIM_TORCH_SKIP_INSTALL is set: not checking or building the native addon.');
    return;
  }
  const lib = findLibtorch(process.env);
  const hash = sourceHash(root);
  const notes = [];
  let fresh = false;

  const force = process.env.TIM_TORCH_BUILD_FROM_SOURCE === '1' || process.env.TIM_TORCH_BUILD_FROM_SOURCE === 'true';
  if (force) {
    notes.push('TIM_TORCH_BUILD_FROM_SOURCE is set: not using an existing build or prebuild');
    fresh = true;
  }
  const what = { build: 'the existing build', installed: 'the installed prebuild', prebuild: 'the prebuilt addon', flavour: 'the prebuilt addon' };
  for (const c0 of force ? [] : addonCandidates(lib)) {
    let c = c0;
    if (c.kind === 'flavour') {
      try {
        c = stageFlavour(c, lib);
      } catch (e) {
        notes.push(`prebuild ${rel(c.file)} cannot be used: ${e.message}`);
        continue;
      }
    }
    const p = probe(c.staged ?? c.file);
    if (!p.ok) {
      notes.push(`${c.kind === 'flavour' ? 'prebuild' : c.kind} ${rel(c.file)} does not load: ${explainLoad(p.error)}`);
      if (c.stagedDir) fs.rmSync(c.stagedDir, { recursive: true, force: true });
      continue;
    }
    const bad = misfit(c, p.info, lib, hash);
    if (!bad) {
      const file = c.kind === 'flavour' ? installFlavour(c, lib) : c.file;
      const cuda = p.info.cudaBuild ? `, CUDA ${lib.cuda ?? ''}`.trimEnd() : '';
      log(`using ${what[c.kind]} ${rel(c.file)}${c.kind === 'flavour' ? ` (installed as ${rel(file)}, RUNPATH ${lib.libDir})` : ''} (libtorch ${p.info.torchVersion}${cuda}).`);
      return;
    }
    if (c.stagedDir) fs.rmSync(c.stagedDir, { recursive: true, force: true });
    notes.push(`${c.kind === 'flavour' ? 'prebuild' : c.kind} ${rel(c.file)} is not used: ${bad.why}`);
    if (c.kind === 'build' && bad.libtorchChanged) fresh = true;
    // an installed flavour for another libtorch would shadow the system prebuild and a new build
    if (c.kind === 'installed') fs.rmSync(installedDir, { recursive: true, force: true });
  }
  if (notes.length === 0) notes.push(`no prebuilt addon for ${process.platform}-${process.arch} and no earlier build`);

  // Build from source. Check what it needs first, to say exactly what is missing.
  const missing = [];
  if (!has('cmake')) missing.push('cmake');
  if (!(process.env.CXX ? has(process.env.CXX) : has('c++') || has('g++'))) missing.push('a C++17 compiler (g++)');
  if (!has('make') && !has('ninja')) missing.push('make or ninja');
  if (missing.length) {
    fail([
      ...notes,
      `Building from source needs ${missing.join(', ')}: not found on PATH.`,
      "Fix: on Debian/Ubuntu run 'sudo bash node_modules/tim-torch/scripts/setup.sh' (installs the build tools",
      'and libtorch), then `npm rebuild tim-torch`. Elsewhere install cmake and g++ and see docs/install.md.',
    ]);
  }
  if (!lib.found) {
    fail([
      ...notes,
      'Building from source needs libtorch, which was not found. Tried:',
      ...lib.tried.map((t) => `  - ${t}`),
      lib.explicit
        ? 'Fix: point LIBTORCH at an unpacked libtorch (it has share/cmake/Torch) or Torch_DIR at the folder holding TorchConfig.cmake.'
        : "Fix: on Debian/Ubuntu run 'sudo bash node_modules/tim-torch/scripts/setup.sh'; for CUDA set LIBTORCH=/path/to/libtorch (2.x).",
      'Then run `npm rebuild tim-torch`.',
    ]);
  }
  if (!(lib.major > MIN[0] || (lib.major === MIN[0] && lib.minor >= MIN[1]))) {
    fail([
      ...notes,
      `libtorch ${lib.version} (${lib.label}) is too old: tim-torch needs libtorch >= ${MIN.join('.')}.`,
      'Fix: install libtorch 1.13 (Debian 12: libtorch-dev) or 2.x and point LIBTORCH at it, then `npm rebuild tim-torch`.',
    ]);
  }

  const logFile = path.join(os.tmpdir(), `tim-torch-build-${process.pid}.log`);
  log(`${notes.join('; ')}.`);
  log(`building the native addon from source against libtorch ${lib.version} (${lib.label}); log: ${logFile}`);
  const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  const fd = fs.openSync(logFile, 'w');
  // `compile` is incremental; `rebuild` configures afresh, needed when the libtorch changed.
  const r = spawnSync(process.execPath, [cmakeJs, fresh ? 'rebuild' : 'compile', '--CDCMAKE_BUILD_TYPE=Release'], {
    cwd: root,
    stdio: ['ignore', fd, fd],
  });
  fs.closeSync(fd);
  const out = fs.readFileSync(logFile, 'utf8');
  if (r.status !== 0) {
    const tail = out.trimEnd().split('\n').slice(-25).map((l) => `| ${l}`);
    let why = 'the build failed';
    if (/libtorch not found/.test(out)) why = 'CMake did not find libtorch';
    else if (/error:/.test(out)) why = `the C++ compile failed against libtorch ${lib.version} (a libtorch this package does not support yet, or a broken install)`;
    fail([
      ...notes,
      `Building from source failed: ${why}. Last lines of ${logFile}:`,
      ...tail,
      'Fix: see docs/install.md (Troubleshooting); set LIBTORCH to a libtorch 1.13 or 2.x and run `npm rebuild tim-torch`.',
    ]);
  }
  const built = addonCandidates(lib).find((c) => c.kind === 'build');
  const p = built ? probe(built.file) : { ok: false, error: 'cmake-js finished but build/Release has no .node file' };
  if (!p.ok) {
    fail([
      `The addon was built but does not load: ${explainLoad(p.error)}.`,
      'Fix: make sure the libtorch found at build time is the one found at run time (LD_LIBRARY_PATH, LIBTORCH),',
      'then `npm rebuild tim-torch`. Build log: ' + logFile,
    ]);
  }
  const still = misfit(built, p.info, lib, sourceHash(root));
  if (still) {
    fail([`The addon was built but does not fit: ${still.why}.`, 'Fix: run `npm rebuild tim-torch` again; build log: ' + logFile]);
  }
  fs.rmSync(logFile, { force: true });
  log(`built ${rel(built.file)} (libtorch ${p.info.torchVersion}).`);
}

main();

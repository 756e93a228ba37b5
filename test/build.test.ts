/**
 * The build and what ships: the addon (and the committed prebuild) match the current native/
 * sources, link libtorch through RUNPATH, CMake explains a missing libtorch, the install script
 * picks or rejects addons for stated reasons, and the loader turns each load failure into one message.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tuple = `${process.platform}-${process.arch}`;
const scratch = mkdtempSync(join(tmpdir(), 'tim-build-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** sha256 of native/*.cpp + native/*.h, concatenated in sorted path order, as CMakeLists.txt does. */
function nativeSourceHash(dir = root): string {
  const files = readdirSync(join(dir, 'native'))
    .filter((f) => f.endsWith('.cpp') || f.endsWith('.h'))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(join(dir, 'native', f)));
  return h.digest('hex');
}

const require = createRequire(import.meta.url);
const { findLibtorch, flavourOf } = require(join(root, 'scripts', 'find-libtorch.cjs')) as {
  findLibtorch(env: NodeJS.ProcessEnv): { found: boolean; cmakeDir: string; libDir: string | null; cuda: string | null; version: string };
  flavourOf(lib: unknown): string | null;
};
const { writeWithRunpath } = require(join(root, 'scripts', 'runpath.cjs')) as { writeWithRunpath(src: string, dest: string, libDir: string): void };

/** The system-libtorch prebuild (Debian's 1.13), where node-gyp-build finds it. */
function prebuildFile(): string {
  const dir = join(root, 'prebuilds', tuple);
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  expect(files, `exactly one prebuild in prebuilds/${tuple} (make it with \`npm run prebuild\`)`).toHaveLength(1);
  return join(dir, files[0]!);
}

/** The folder of the libtorch_cpu the loaded addon uses. */
function loadedLibDir(): string {
  const r = spawnSync('ldd', [torch.addonPath()], { encoding: 'utf8' });
  return dirname(/libtorch_cpu\.so\S*\s+=>\s+(\S+)/.exec(r.stdout)![1]!);
}

/**
 * The committed prebuild for the libtorch the loaded addon uses: the system one, or for a pip torch
 * its flavour (prebuilds/<tuple>/libtorch-X.Y-<cpu|cuNNN>/), staged with its RUNPATH filled in as
 * install.cjs does.
 */
function prebuildForLoadedLibtorch(): { file: string; flavour: string | null } {
  const libDir = loadedLibDir();
  const lib = findLibtorch({ ...process.env, LIBTORCH: dirname(libDir), Torch_DIR: '' });
  if (!lib.found) return { file: prebuildFile(), flavour: null }; // Debian: no share/cmake beside lib/
  const flavour = flavourOf(lib);
  expect(flavour, `a flavour name for ${libDir}`).not.toBeNull();
  const dir = join(root, 'prebuilds', tuple, flavour!);
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.node')) : [];
  expect(files, `a prebuild in prebuilds/${tuple}/${flavour} (make it with \`LIBTORCH=${dirname(libDir)} npm run prebuild\`)`).toHaveLength(1);
  const staged = join(scratch, `staged-${flavour}`, 'tim_torch.node');
  writeWithRunpath(join(dir, files[0]!), staged, lib.libDir!);
  return { file: staged, flavour };
}

/** Runs an ES module with tsx in a fresh node, from the repository root. */
function runModule(code: string, env: NodeJS.ProcessEnv = {}): SpawnSyncReturns<string> {
  const file = join(scratch, `child-${Math.random().toString(36).slice(2)}.mts`);
  writeFileSync(file, code);
  return spawnSync(process.execPath, ['--import', 'tsx', file], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
}

const libIndex = JSON.stringify(join(root, 'lib', 'index.ts'));
/** A child that imports tim-torch and prints { code, message } of the load error, or { loaded }. */
const loadProbe = `
try {
  const { torch } = await import(${libIndex});
  const t = torch.tensor([1, 2, 3]).mul(2);
  console.log(JSON.stringify({ loaded: true, values: t.toArray(), info: torch.buildInfo(), addon: torch.addonPath() }));
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
}`;

function parseLast(r: SpawnSyncReturns<string>): Record<string, unknown> {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`child printed no JSON (status ${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
}

describe('source hash', () => {
  it('the loaded addon was built from the current native/ sources', () => {
    const info = torch.buildInfo();
    expect(info.sourceHash).toMatch(/^[0-9a-f]{64}$/);
    expect(info.sourceHash, 'build is stale: run `npm run build:native`').toBe(nativeSourceHash());
  });

  it('scripts/source-hash.cjs (used by install.cjs) computes the same hash', () => {
    const { sourceHash } = require(join(root, 'scripts', 'source-hash.cjs')) as { sourceHash(dir: string): string };
    expect(sourceHash(root)).toBe(nativeSourceHash());
  });

  it('the committed prebuild for this libtorch loads through TIM_TORCH_ADDON (relative path) and matches the sources', () => {
    const { file } = prebuildForLoadedLibtorch();
    const r = runModule(loadProbe, { TIM_TORCH_ADDON: relative(root, file) });
    const out = parseLast(r);
    expect(out.message).toBeUndefined();
    expect(out.values).toEqual([2, 4, 6]);
    expect(out.addon).toBe(file);
    const info = out.info as { sourceHash: string; torchVersion: string };
    expect(info.sourceHash, 'prebuild is stale: run `npm run prebuild`').toBe(nativeSourceHash());
    expect(info.torchVersion).toBe(torch.buildInfo().torchVersion);
  });
});

describe('linking', () => {
  function runpath(file: string): { runpath: string[]; rpath: boolean } {
    const r = spawnSync('readelf', ['-d', file], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const m = /\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(r.stdout);
    return { runpath: m ? m[1]!.split(':') : [], rpath: /\(RPATH\)/.test(r.stdout) };
  }

  function libtorchDir(file: string): string {
    const r = spawnSync('ldd', [file], { encoding: 'utf8' });
    const m = /libtorch_cpu\.so\S*\s+=>\s+(\S+)/.exec(r.stdout);
    expect(m, `ldd ${file} resolves libtorch_cpu`).not.toBeNull();
    return dirname(m![1]!);
  }

  it.each([
    ['the loaded addon', () => torch.addonPath()],
    ['the prebuild for this libtorch', () => prebuildForLoadedLibtorch().file],
  ])('%s has a RUNPATH (not RPATH) naming the folder libtorch_cpu is loaded from', (_name, file) => {
    const f = file();
    const { runpath: dirs, rpath } = runpath(f);
    expect(rpath).toBe(false);
    expect(dirs.length).toBeGreaterThan(0);
    const dir = libtorchDir(f);
    expect(dirs).toContain(dir);
    expect(readdirSync(dir).some((n) => n.startsWith('libtorch_cpu.so'))).toBe(true);
  });
});

describe('CMake libtorch discovery', () => {
  const flat = (r: SpawnSyncReturns<string>) => `${r.stdout}\n${r.stderr}`.replace(/\s+/g, ' ');
  // One build folder for both runs: the compiler checks are cached after the first.
  const buildDir = join(scratch, 'cmake');
  const cmake = (env: NodeJS.ProcessEnv, args: string[] = []) => {
    const clean = { ...process.env };
    delete clean.LIBTORCH;
    delete clean.Torch_DIR;
    return spawnSync('cmake', ['-S', root, '-B', buildDir, ...args], { encoding: 'utf8', env: { ...clean, ...env }, timeout: 120_000 });
  };

  it('lists every place it tried when no libtorch is found', () => {
    const r = cmake({ PYTHON: '/nonexistent/python3' }, ['-DTIM_TORCH_SYSTEM_DIRS=/nonexistent/sys1;/nonexistent/sys2']);
    expect(r.status).not.toBe(0);
    const out = flat(r);
    expect(out).toContain('tim-torch: libtorch not found. Tried:');
    expect(out).toContain(`python torch: '/nonexistent/python3 -c "import torch"' failed`);
    expect(out).toContain('system: no TorchConfig.cmake in /nonexistent/sys1');
    expect(out).toContain('system: no TorchConfig.cmake in /nonexistent/sys2');
    expect(out).toContain('scripts/setup.sh');
  });

  it('a re-configure keeps the libtorch found before, even when discovery would now fail', () => {
    const lib = findLibtorch({ ...process.env, LIBTORCH: '', Torch_DIR: '' });
    expect(lib.found).toBe(true);
    const dir = join(scratch, 'cmake-sticky');
    const run = (sys: string) =>
      spawnSync('cmake', ['-S', root, '-B', dir, `-DTIM_TORCH_SYSTEM_DIRS=${sys}`], {
        encoding: 'utf8',
        env: { ...process.env, LIBTORCH: '', Torch_DIR: '', PYTHON: '/nonexistent/python3' },
        timeout: 300_000,
      });
    const first = run(lib.cmakeDir);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`tim-torch: libtorch from system: ${lib.cmakeDir}`);
    const again = run('/nonexistent/sys');
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toContain(`tim-torch: libtorch from previous configure of this build folder: ${lib.cmakeDir}`);
  });

  it('treats LIBTORCH as an explicit choice: a wrong one fails instead of falling back', () => {
    const r = cmake({ LIBTORCH: '/nonexistent/libtorch' }, ['-DTIM_TORCH_SYSTEM_DIRS=/usr/lib/x86_64-linux-gnu/cmake/Torch']);
    expect(r.status).not.toBe(0);
    const out = flat(r);
    expect(out).toContain('LIBTORCH=/nonexistent/libtorch: no TorchConfig.cmake in /nonexistent/libtorch/share/cmake/Torch');
    expect(out).not.toContain('system:');
    expect(out).toContain('Fix: point LIBTORCH at the root of an unpacked libtorch');
  });
});

describe('scripts/install.cjs', () => {
  const install = (cwd: string, env: NodeJS.ProcessEnv) => {
    // CI may export these for its own `npm ci`; each case here sets what it needs.
    const base = { ...process.env };
    for (const k of ['TIM_TORCH_SKIP_INSTALL', 'TIM_TORCH_BUILD_FROM_SOURCE', 'LIBTORCH', 'Torch_DIR']) delete base[k];
    return spawnSync(process.execPath, [join(cwd, 'scripts', 'install.cjs')], { encoding: 'utf8', env: { ...base, ...env }, timeout: 120_000 });
  };

  /** A package folder with scripts/, native/ and package.json, plus the prebuild; no build/. */
  function packageCopy(name: string): string {
    const dir = join(scratch, name);
    mkdirSync(join(dir, 'prebuilds', tuple), { recursive: true });
    cpSync(join(root, 'scripts'), join(dir, 'scripts'), { recursive: true });
    cpSync(join(root, 'native'), join(dir, 'native'), { recursive: true });
    copyFileSync(join(root, 'package.json'), join(dir, 'package.json'));
    const pre = prebuildFile();
    copyFileSync(pre, join(dir, 'prebuilds', tuple, pre.split('/').pop()!));
    return dir;
  }

  /** PATH with node only, so that cmake, g++ and make are missing. */
  function nodeOnlyPath(): string {
    const bin = join(scratch, 'node-only-bin');
    if (!existsSync(bin)) {
      mkdirSync(bin);
      symlinkSync(process.execPath, join(bin, 'node'));
    }
    return bin;
  }

  it('TIM_TORCH_SKIP_INSTALL=1 skips the step', () => {
    const r = install(root, { TIM_TORCH_SKIP_INSTALL: '1' });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('TIM_TORCH_SKIP_INSTALL is set');
  });

  it('keeps a prebuild that loads and matches the sources and libtorch', () => {
    const dir = packageCopy('pkg-ok');
    const r = install(dir, { PATH: nodeOnlyPath() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/using the prebuilt addon prebuilds\/linux-x64\/\S+\.node \(libtorch 1\.13/);
  });

  it('rejects a stale prebuild and says what a source build lacks, in one message', () => {
    const dir = packageCopy('pkg-stale');
    appendFileSync(join(dir, 'native', 'addon.cpp'), '\n// edited after the prebuild\n');
    const r = install(dir, { PATH: nodeOnlyPath() });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('tim-torch: could not install the native addon.');
    expect(r.stderr).toMatch(/prebuild prebuilds\/linux-x64\/\S+ is not used: it was built from other native\/ sources/);
    expect(r.stderr).toContain('Building from source needs cmake, a C++17 compiler (g++), make or ninja: not found on PATH.');
    expect(r.stderr.match(/could not install/g)).toHaveLength(1);
  });

  it('TIM_TORCH_BUILD_FROM_SOURCE=1 ignores a fitting prebuild', () => {
    const dir = packageCopy('pkg-force');
    const r = install(dir, { TIM_TORCH_BUILD_FROM_SOURCE: '1', PATH: nodeOnlyPath() });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('TIM_TORCH_BUILD_FROM_SOURCE is set: not using an existing build or prebuild');
    expect(r.stderr).toContain('Building from source needs cmake');
  });

  it('does not use the (system-libtorch) prebuild when LIBTORCH selects another libtorch of the same version', () => {
    const dir = packageCopy('pkg-other-libtorch');
    const lt = join(scratch, 'other-libtorch');
    mkdirSync(join(lt, 'share', 'cmake', 'Torch'), { recursive: true });
    writeFileSync(join(lt, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'), '# stand-in\n');
    const sysVersion = (JSON.parse(spawnSync(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(require(process.argv[1]).buildInfo()))', prebuildFile()], { encoding: 'utf8' }).stdout) as { torchVersion: string }).torchVersion;
    writeFileSync(join(lt, 'share', 'cmake', 'Torch', 'TorchConfigVersion.cmake'), `set(PACKAGE_VERSION "${sysVersion}")\n`);
    // node-only PATH: the source build stops at its tool check instead of compiling.
    const r = install(dir, { LIBTORCH: lt, PATH: nodeOnlyPath() });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`is not used: it is linked against the system libtorch, but the libtorch to use is ${join(lt, 'share', 'cmake', 'Torch')} (LIBTORCH=${lt})`);
    expect(r.stderr).toContain('Building from source needs cmake');
  });

  // A pip torch 2.13 (CPU): CI makes it (.ci/run, scripts/setup-torch-venv.sh cpu .venv/torch2).
  const pipTorch = (() => {
    const lib = join(root, '.venv', 'torch2', 'lib');
    const py = existsSync(lib) ? readdirSync(lib).find((n) => n.startsWith('python3')) : undefined;
    const dir = py && join(lib, py, 'site-packages', 'torch');
    return dir && existsSync(join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake')) ? dir : null;
  })();

  it.skipIf(!pipTorch && !process.env.CI)('installs the flavour prebuild for a pip torch (LIBTORCH), RUNPATH set to its folder, and keeps it on a rerun', () => {
    expect(pipTorch, 'CI runs this with .venv/torch2 (scripts/setup-torch-venv.sh cpu .venv/torch2)').not.toBeNull();
    const lib = findLibtorch({ ...process.env, LIBTORCH: pipTorch!, Torch_DIR: '' });
    const flavour = flavourOf(lib)!;
    expect(flavour).toMatch(/^libtorch-2\.\d+-cpu$/);
    const dir = packageCopy('pkg-flavour');
    cpSync(join(root, 'prebuilds', tuple, flavour), join(dir, 'prebuilds', tuple, flavour), { recursive: true });
    const r = install(dir, { LIBTORCH: pipTorch!, PATH: nodeOnlyPath() });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`using the prebuilt addon prebuilds/${tuple}/${flavour}/`);
    expect(r.stdout).toContain(`installed as prebuilds/${tuple}/installed/tim_torch.node, RUNPATH ${lib.libDir}`);
    const installed = join(dir, 'prebuilds', tuple, 'installed', 'tim_torch.node');
    const elf = spawnSync('readelf', ['-d', installed], { encoding: 'utf8' }).stdout;
    expect(/\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(elf)![1]).toBe(lib.libDir);
    const out = parseLast(runModule(loadProbe, { TIM_TORCH_ADDON: installed }));
    expect(out.values).toEqual([2, 4, 6]);
    expect((out.info as { torchVersion: string }).torchVersion).toBe(lib.version);
    // a rerun keeps it; the system prebuild is not taken for a pip torch
    const again = install(dir, { LIBTORCH: pipTorch!, PATH: nodeOnlyPath() });
    expect(again.status).toBe(0);
    expect(again.stdout).toContain(`using the installed prebuild prebuilds/${tuple}/installed/tim_torch.node`);
    // back to the system libtorch: the installed flavour no longer fits and is removed
    const sys = install(dir, { PATH: nodeOnlyPath(), PYTHON: '/nonexistent/python3' });
    expect(sys.status, sys.stderr).toBe(0);
    expect(sys.stdout).toMatch(/using the prebuilt addon prebuilds\/linux-x64\/tim-torch\S*\.node \(libtorch 1\.13/);
    expect(existsSync(installed)).toBe(false);
  });

  it('a RUNPATH placeholder that cannot hold the folder is refused with the reason', () => {
    const src = join(scratch, 'placeholder.bin');
    const { PLACEHOLDER } = require(join(root, 'scripts', 'runpath.cjs')) as { PLACEHOLDER: string };
    writeFileSync(src, Buffer.concat([Buffer.from('ELF?'), Buffer.from(PLACEHOLDER, 'latin1'), Buffer.from([0])]));
    expect(() => writeWithRunpath(src, join(scratch, 'p1'), '/a'.repeat(300))).toThrow(/longer than the 400/);
    expect(() => writeWithRunpath(src, join(scratch, 'p2'), '/a:/b')).toThrow(/':' or NUL/);
    expect(() => writeWithRunpath(join(scratch, 'garbage-src'), join(scratch, 'p3'), '/a')).toThrow();
    writeWithRunpath(src, join(scratch, 'p4'), '/opt/torch/lib');
    const out = readFileSync(join(scratch, 'p4'));
    expect(out.length).toBe(4 + PLACEHOLDER.length + 1);
    expect(out.toString('latin1', 4, 4 + 15)).toBe('/opt/torch/lib\x00');
    writeFileSync(join(scratch, 'garbage-src'), 'no placeholder here');
    expect(() => writeWithRunpath(join(scratch, 'garbage-src'), join(scratch, 'p5'), '/a')).toThrow(/no RUNPATH placeholder/);
  });

  it('reports a prebuild that does not load, and a LIBTORCH that holds no libtorch', () => {
    const dir = packageCopy('pkg-corrupt');
    const pre = readdirSync(join(dir, 'prebuilds', tuple))[0]!;
    writeFileSync(join(dir, 'prebuilds', tuple, pre), 'not an ELF file');
    const r = install(dir, { LIBTORCH: '/nonexistent/libtorch' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`prebuild prebuilds/${tuple}/\\S+ does not load: .*(file too short|invalid ELF header)`));
    expect(r.stderr).toContain('LIBTORCH=/nonexistent/libtorch: no TorchConfig.cmake in /nonexistent/libtorch/share/cmake/Torch');
    expect(r.stderr).toContain('Fix: point LIBTORCH at an unpacked libtorch');
  });
});

describe('loader messages (lib/torch/native.ts)', () => {
  /** A copy of the working addon with `from` replaced by `to` (same length) in its bytes. */
  function patchedAddon(name: string, from: RegExp, to: string): string {
    const bytes = readFileSync(torch.addonPath());
    const text = bytes.toString('latin1');
    const m = from.exec(text);
    expect(m, `${from} occurs in the addon`).not.toBeNull();
    expect(m![0].length).toBe(to.length);
    const out = Buffer.from(text.split(m![0]).join(to), 'latin1');
    const file = join(scratch, name);
    writeFileSync(file, out);
    return file;
  }

  function loadError(env: NodeJS.ProcessEnv): { code: string; message: string } {
    const out = parseLast(runModule(loadProbe, env));
    expect(out.loaded, 'the load should have failed').toBeUndefined();
    return out as { code: string; message: string };
  }

  it('TIM_TORCH_ADDON naming a missing file', () => {
    const e = loadError({ TIM_TORCH_ADDON: join(scratch, 'missing.node') });
    expect(e.code).toBe('E_LOAD');
    expect(e.message).toContain(`addon: ${join(scratch, 'missing.node')} (from TIM_TORCH_ADDON)`);
    expect(e.message).toContain('TIM_TORCH_ADDON names a file that does not exist');
  });

  it('a file that is not a shared library', () => {
    const file = join(scratch, 'garbage.node');
    writeFileSync(file, 'not an ELF file');
    const e = loadError({ TIM_TORCH_ADDON: file });
    expect(e.code).toBe('E_LOAD');
    expect(e.message).toContain('is not a shared library for this platform');
  });

  it('libtorch shared libraries missing (addon asks for a libtorch_cpu that is not installed)', () => {
    // Debian's sonames carry the version (libtorch_cpu.so.1.13), a pip torch's do not
    const versioned = /libtorch_cpu\.so\.\d+\.\d+/.test(readFileSync(torch.addonPath()).toString('latin1'));
    const [from, to] = versioned ? [/libtorch_cpu\.so\.\d+\.\d+/, 'libtorch_cpu.so.9.99'] : [/libtorch_cpu\.so\x00/, 'libtorch_zzz.so\x00'];
    const file = patchedAddon('nolibtorch.node', from, to);
    const e = loadError({ TIM_TORCH_ADDON: file });
    expect(e.message).toContain(`${to.replace('\x00', '')}: cannot open shared object file`);
    expect(e.message).toContain("libtorch's shared libraries are not installed");
    expect(e.message).toContain('scripts/setup.sh');
  });

  it('an addon that needs a newer libstdc++ than the system has', () => {
    const file = patchedAddon('newlibstdcxx.node', /GLIBCXX_3\.4\.\d\d/, 'GLIBCXX_9.9.99');
    const e = loadError({ TIM_TORCH_ADDON: file });
    expect(e.message).toContain("version `GLIBCXX_9.9.99' not found");
    expect(e.message).toContain('newer C/C++ runtime');
    expect(e.message).toContain('npm rebuild tim-torch');
  });

  it('LD_LIBRARY_PATH putting a foreign libc10 ahead of the RUNPATH', () => {
    const dir = join(scratch, 'fake-libs');
    mkdirSync(dir, { recursive: true });
    const soname = readdirSync(libDir()).find((n) => /^libc10\.so\.\d+\.\d+$/.test(n)) ?? 'libc10.so';
    writeFileSync(join(dir, 'fake.cpp'), 'int tim_fake_c10 = 1;\n');
    const cc = spawnSync('g++', ['-shared', '-fPIC', '-o', join(dir, soname), `-Wl,-soname,${soname}`, join(dir, 'fake.cpp')], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    const e = loadError({ LD_LIBRARY_PATH: dir, TIM_TORCH_ADDON: torch.addonPath() });
    expect(e.message).toContain('undefined symbol');
    expect(e.message).toContain('do not belong together');
    expect(e.message).toContain(`LD_LIBRARY_PATH (${dir})`);
  });

  function libDir(): string {
    const r = spawnSync('ldd', [torch.addonPath()], { encoding: 'utf8' });
    return dirname(/libc10\.so\S*\s+=>\s+(\S+)/.exec(r.stdout)![1]!);
  }
});

describe('package.json', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
    files: string[];
  };

  it('scripts run files that exist', () => {
    for (const [name, cmd] of Object.entries(pkg.scripts)) {
      for (const m of cmd.matchAll(/(?:^|\s)((?:scripts|bench|test)\/\S+\.(?:cjs|mjs|js|ts|sh))/g)) {
        expect(existsSync(join(root, m[1]!)), `script "${name}" runs ${m[1]}`).toBe(true);
      }
    }
  });

  it('has no "build" script, which would run "prebuild" (a full prebuildify build) as its pre-hook', () => {
    expect(pkg.scripts.prebuild).toBe('node scripts/prebuild.cjs');
    expect(pkg.scripts.build).toBeUndefined();
  });

  it('"files" ships every script install.cjs requires', () => {
    const src = readFileSync(join(root, 'scripts', 'install.cjs'), 'utf8');
    for (const m of src.matchAll(/require\('\.\/([^']+)'\)/g)) expect(pkg.files).toContain(`scripts/${m[1]}`);
    expect(pkg.scripts.install).toBe('node scripts/install.cjs');
    expect(pkg.files).toContain('scripts/install.cjs');
  });
});

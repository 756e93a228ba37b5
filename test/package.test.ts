/**
 * SLOW (~30-60 s): the published package works. `npm pack` (runs prepack: tsc -> dist/), then
 * `npm install` of the tarball into an empty folder (from the npm cache when it can), then a
 * consumer script doing `import { torch } from 'tim-torch'`. The installed package has no build/,
 * so this is the path users take: the install script accepts the prebuild and the loader uses it.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tuple = `${process.platform}-${process.arch}`;
const work = mkdtempSync(join(tmpdir(), 'tim-package-test-'));
const app = join(work, 'app');

// The parent `npm test` exports npm_package_* / npm_lifecycle_* for *this* package; a child npm
// running in another folder must not see them.
const env: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.startsWith('npm_package_') && !k.startsWith('npm_lifecycle_')),
);
delete env.TIM_TORCH_ADDON;
delete env.TIM_TORCH_SKIP_INSTALL;

function sh(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

function nativeSourceHash(): string {
  const files = readdirSync(join(root, 'native')).filter((f) => /\.(cpp|h)$/.test(f)).sort();
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(join(root, 'native', f)));
  return h.digest('hex');
}

let packed: { filename: string; files: { path: string }[] };
let installOutput = '';

beforeAll(() => {
  // A stale prebuild would make the install build from source (minutes) and test nothing useful.
  const pre = readdirSync(join(root, 'prebuilds', tuple)).find((f) => f.endsWith('.node'));
  expect(pre, `a prebuild in prebuilds/${tuple}`).toBeDefined();
  const probe = spawnSync(process.execPath, ['-p', 'require(process.argv[1]).buildInfo().sourceHash', join(root, 'prebuilds', tuple, pre!)], {
    encoding: 'utf8',
  });
  expect(probe.stdout.trim(), 'prebuild is stale: run `npm run prebuild`').toBe(nativeSourceHash());

  const r = sh('npm', ['pack', '--json', '--pack-destination', work], root);
  packed = (JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as (typeof packed)[])[0]!;

  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  const i = sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', join(work, packed.filename)], app);
  installOutput = i.stdout + i.stderr;
}, 600_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('package (slow: npm pack + npm install)', () => {
  it('the tarball holds what install and runtime need, and nothing from the workspace', () => {
    const paths = packed.files.map((f) => f.path);
    for (const p of ['dist/index.js', 'dist/index.d.ts', 'dist/torch/native.js', 'CMakeLists.txt', 'native/addon.cpp', 'native/common.h',
      'scripts/install.cjs', 'scripts/find-libtorch.cjs', 'scripts/source-hash.cjs', 'scripts/setup.sh', 'package.json']) {
      expect(paths).toContain(p);
    }
    expect(paths.some((p) => new RegExp(`^prebuilds/${tuple}/[^/]+\\.node$`).test(p))).toBe(true);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin?: Record<string, string> };
    for (const [name, file] of Object.entries(pkg.bin ?? {})) {
      expect(paths, `bin "${name}" -> ${file} is in the tarball`).toContain(file.replace(/^\.\//, ''));
    }
    expect(paths.filter((p) => /^(build|test|scratch|lib|node_modules)\//.test(p))).toEqual([]);
  });

  it('the install script accepted the prebuild (no build from source)', () => {
    expect(installOutput).toMatch(/tim-torch: using the prebuilt addon prebuilds\/\S+\.node/);
    expect(existsSync(join(app, 'node_modules', 'tim-torch', 'build'))).toBe(false);
  });

  it("`import { torch } from 'tim-torch'` computes with the prebuilt addon", () => {
    writeFileSync(
      join(app, 'main.mjs'),
      `import { torch } from 'tim-torch';
const a = torch.tensor([[1, 2], [3, 4]], { dtype: 'float32' });
const b = a.matmul(a).add(1);
console.log(JSON.stringify({ values: b.toArray(), addon: torch.addonPath(), info: torch.buildInfo() }));
`,
    );
    const r = sh(process.execPath, ['main.mjs'], app);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { values: number[][]; addon: string; info: { sourceHash: string } };
    expect(out.values).toEqual([[8, 11], [16, 23]]);
    expect(out.addon.startsWith(join(app, 'node_modules', 'tim-torch', 'prebuilds', tuple))).toBe(true);
    expect(out.info.sourceHash).toBe(nativeSourceHash());
  });

  it('without the prebuild (and no build/), import fails with one E_LOAD message that says what to do', () => {
    const pkgDir = join(app, 'node_modules', 'tim-torch');
    renameSync(join(pkgDir, 'prebuilds'), join(pkgDir, 'prebuilds.off'));
    try {
      writeFileSync(
        join(app, 'noaddon.mjs'),
        `try { await import('tim-torch'); console.log('{"loaded":true}'); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }\n`,
      );
      const r = sh(process.execPath, ['noaddon.mjs'], app);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { code: string; message: string };
      expect(out.code).toBe('E_LOAD');
      expect(out.message).toContain('No native build was found');
      expect(out.message).toContain(`No prebuilt addon matches ${tuple} and no build from source exists`);
      expect(out.message).toContain('npm rebuild tim-torch');
    } finally {
      renameSync(join(pkgDir, 'prebuilds.off'), join(pkgDir, 'prebuilds'));
    }
  });
});

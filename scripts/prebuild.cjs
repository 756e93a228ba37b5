'use strict';
/**
 * `npm run prebuild`: builds the Node-API addon with prebuildify (cmake-js backend) against the
 * libtorch CMake finds and puts it in the package:
 *  - the system libtorch (Debian's 1.13): prebuilds/<platform>-<arch>/tim-torch.glibc.node, where
 *    node-gyp-build looks (prebuildify's naming; napi builds carry no abi tag, any Node >= 20 loads it);
 *  - any other libtorch (LIBTORCH=<pip torch folder>): a flavour,
 *    prebuilds/<platform>-<arch>/libtorch-<major>.<minor>-<cpu|cuNNN>/tim-torch.glibc.node with a
 *    prebuild.json, linked with a RUNPATH placeholder that scripts/install.cjs fills in with the
 *    user's libtorch folder (scripts/runpath.cjs).
 *
 * It builds in a temp copy of package.json, CMakeLists.txt and native/ (node_modules symlinked),
 * so the shared build/ folder that other work relies on is never touched. The result must load in a
 * fresh process and report the hash of the sources it was built from, or nothing is replaced; if
 * native/ changed meanwhile, the (stale) file is kept but the script fails.
 *
 * Env: TIM_TORCH_BUILD_JOBS=N limits parallel compile jobs; LIBTORCH etc. as for CMakeLists.txt.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { sourceHash } = require('./source-hash.cjs');
const { findLibtorch, flavourOf, SYSTEM_DIRS } = require('./find-libtorch.cjs');
const { PLACEHOLDER, writeWithRunpath } = require('./runpath.cjs');

const root = path.join(__dirname, '..');
const tuple = `${process.platform}-${process.arch}`;

// Throws rather than exiting, so the finally below still removes the temp folder.
function die(msg) {
  throw Object.assign(new Error(msg), { prebuild: true });
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tim-prebuild-'));
try {
  const lib = findLibtorch(process.env);
  if (!lib.found) die(`no libtorch found (${lib.tried.join('; ')})`);
  const system = SYSTEM_DIRS.some((d) => path.resolve(d) === path.resolve(lib.cmakeDir));
  const flavour = system ? null : flavourOf(lib);
  if (!system && !flavour) die(`cannot name a prebuild flavour for ${lib.cmakeDir} (version ${lib.version}, CUDA ${lib.cuda})`);
  if (!system && !lib.libDir) die(`no libtorch_cpu.so beside ${lib.cmakeDir}`);
  process.stdout.write(`prebuild: libtorch ${lib.version} from ${lib.label}${flavour ? ` -> flavour ${flavour}` : ' (system)'}\n`);
  for (const f of ['package.json', 'CMakeLists.txt']) fs.copyFileSync(path.join(root, f), path.join(tmp, f));
  fs.cpSync(path.join(root, 'native'), path.join(tmp, 'native'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(tmp, 'node_modules'), 'dir');
  // prebuildify spawns its "node-gyp" without a shell: give it an executable that runs the shim with
  // this very node, independent of the shim's file mode or PATH.
  const gyp = path.join(tmp, 'node-gyp-cmake-js');
  fs.writeFileSync(gyp, `#!/bin/sh\nexec "${process.execPath}" "${path.join(__dirname, 'prebuild-cmake-js.cjs')}" "$@"\n`, { mode: 0o755 });

  const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
  const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '--node-gyp', gyp], {
    cwd: tmp,
    stdio: 'inherit',
    env: flavour ? { ...process.env, TIM_TORCH_PREBUILD_RUNPATH: PLACEHOLDER } : process.env,
  });
  if (r.status !== 0) die(`prebuildify failed (exit ${r.status}); nothing was replaced.`);

  const outDir = path.join(tmp, 'prebuilds', tuple);
  const built = fs.readdirSync(outDir).filter((n) => n.endsWith('.node'));
  if (built.length !== 1) die(`expected one .node in ${outDir}, found: ${built.join(', ') || 'none'}`);
  const name = built[0];
  const file = path.join(outDir, name);

  // Check it in a fresh process: it loads, and it is what the current sources produce. A flavour is
  // checked as install.cjs will use it: with this libtorch's folder written over the placeholder.
  let probeFile = file;
  if (flavour) {
    probeFile = path.join(tmp, 'probe', 'tim_torch.node');
    writeWithRunpath(file, probeFile, lib.libDir);
  }
  const code = 'process.stdout.write(JSON.stringify(require(process.argv[1]).buildInfo()))';
  const p = spawnSync(process.execPath, ['-e', code, probeFile], { encoding: 'utf8' });
  if (p.status !== 0) die(`the new prebuild does not load:\n${p.stderr}`);
  const info = JSON.parse(p.stdout);
  const snapshot = sourceHash(tmp);
  if (info.sourceHash !== snapshot) die(`the prebuild reports sourceHash ${info.sourceHash}, but its sources hash to ${snapshot}`);

  // Replace atomically, and drop other .node files there: node-gyp-build would prefer a stale one
  // with more tags over ours.
  const dest = path.join(root, 'prebuilds', tuple, ...(flavour ? [flavour] : []));
  fs.mkdirSync(dest, { recursive: true });
  if (flavour) {
    const manifest = { flavour, torchVersion: info.torchVersion, cuda: lib.cuda, cudaBuild: info.cudaBuild, sourceHash: info.sourceHash, runpath: 'placeholder' };
    const mpart = path.join(dest, `.prebuild.json.${process.pid}.part`);
    fs.writeFileSync(mpart, JSON.stringify(manifest, null, 2) + '\n');
    fs.renameSync(mpart, path.join(dest, 'prebuild.json'));
  }
  const part = path.join(dest, `.${name}.${process.pid}.part`);
  fs.copyFileSync(file, part);
  fs.renameSync(part, path.join(dest, name));
  for (const n of fs.readdirSync(dest)) {
    if (n.endsWith('.node') && n !== name) fs.rmSync(path.join(dest, n));
  }
  const size = fs.statSync(path.join(dest, name)).size;
  // Others may edit native/ while this builds: the file is still a correct build of the copy taken
  // at the start, but it is stale, so say so and fail (a `prebuild && git add` chain stops here).
  const hashNow = sourceHash(root);
  if (hashNow !== snapshot) {
    die(`native/ changed during the build: prebuilds/${tuple}/${name} matches the sources as of the start (${snapshot}), not the current ones (${hashNow}); run it again.`);
  }
  process.stdout.write(
    `prebuild: ${path.relative(root, path.join(dest, name))} (${(size / 1024).toFixed(0)} KiB, libtorch ${info.torchVersion}, sourceHash ${info.sourceHash})\n`,
  );
} catch (err) {
  process.stderr.write(`prebuild: ${err.prebuild ? err.message : err.stack}\n`);
  process.exitCode = 1;
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}

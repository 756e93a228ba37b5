'use strict';
/**
 * `npm run prebuild`: builds the Node-API addon with prebuildify (cmake-js backend) against the
 * libtorch CMake finds (Debian's 1.13 here) and puts it in prebuilds/<platform>-<arch>/ under the
 * name node-gyp-build looks for (prebuildify's naming: <package>.glibc.node; napi builds carry no
 * abi tag, so any Node >= 20 loads it).
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

const root = path.join(__dirname, '..');
const tuple = `${process.platform}-${process.arch}`;

// Throws rather than exiting, so the finally below still removes the temp folder.
function die(msg) {
  throw Object.assign(new Error(msg), { prebuild: true });
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tim-prebuild-'));
try {
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
  });
  if (r.status !== 0) die(`prebuildify failed (exit ${r.status}); nothing was replaced.`);

  const outDir = path.join(tmp, 'prebuilds', tuple);
  const built = fs.readdirSync(outDir).filter((n) => n.endsWith('.node'));
  if (built.length !== 1) die(`expected one .node in ${outDir}, found: ${built.join(', ') || 'none'}`);
  const name = built[0];
  const file = path.join(outDir, name);

  // Check it in a fresh process: it loads, and it is what the current sources produce.
  const code = 'process.stdout.write(JSON.stringify(require(process.argv[1]).buildInfo()))';
  const p = spawnSync(process.execPath, ['-e', code, file], { encoding: 'utf8' });
  if (p.status !== 0) die(`the new prebuild does not load:\n${p.stderr}`);
  const info = JSON.parse(p.stdout);
  const snapshot = sourceHash(tmp);
  if (info.sourceHash !== snapshot) die(`the prebuild reports sourceHash ${info.sourceHash}, but its sources hash to ${snapshot}`);

  // Replace atomically, and drop other .node files there: node-gyp-build would prefer a stale one
  // with more tags over ours.
  const dest = path.join(root, 'prebuilds', tuple);
  fs.mkdirSync(dest, { recursive: true });
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
    `prebuild: prebuilds/${tuple}/${name} (${(size / 1024).toFixed(0)} KiB, libtorch ${info.torchVersion}, sourceHash ${info.sourceHash})\n`,
  );
} catch (err) {
  process.stderr.write(`prebuild: ${err.prebuild ? err.message : err.stack}\n`);
  process.exitCode = 1;
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}

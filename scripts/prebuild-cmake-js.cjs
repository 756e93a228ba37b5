#!/usr/bin/env node
'use strict';
/**
 * A stand-in for node-gyp that prebuildify calls (`--node-gyp`): prebuildify 6 only knows node-gyp,
 * this addon builds with cmake-js. Translates `rebuild --target=X --arch=A --release|--debug
 * [--devdir=D]` into `cmake-js rebuild`, run in prebuildify's cwd (a temp copy, see prebuild.cjs).
 * The Node version in --target is not passed on: a Node-API build only needs the node-api-headers
 * package (package.json "binary.napi_versions"), the same for every Node version.
 */
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const args = process.argv.slice(2);
if (args[0] !== 'rebuild') {
  process.stderr.write(`prebuild-cmake-js: only 'rebuild' is supported, got: ${args.join(' ')}\n`);
  process.exit(2);
}
const opt = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const cmakeArgs = ['rebuild', '--config', args.includes('--debug') ? 'Debug' : 'Release'];
cmakeArgs.push(`--CDCMAKE_BUILD_TYPE=${args.includes('--debug') ? 'Debug' : 'Release'}`);
const arch = opt('arch');
if (arch) cmakeArgs.push('--arch', arch);
if (process.env.TIM_TORCH_BUILD_JOBS) cmakeArgs.push('--parallel', process.env.TIM_TORCH_BUILD_JOBS);
// flavour prebuilds (scripts/prebuild.cjs): RUNPATH placeholder, filled in at install time
if (process.env.TIM_TORCH_PREBUILD_RUNPATH) cmakeArgs.push(`--CDTIM_TORCH_RUNPATH=${process.env.TIM_TORCH_PREBUILD_RUNPATH}`);

const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [process.cwd(), path.join(__dirname, '..')] });
const r = spawnSync(process.execPath, [cmakeJs, ...cmakeArgs], { stdio: 'inherit', cwd: process.cwd() });
process.exit(r.status ?? 1);

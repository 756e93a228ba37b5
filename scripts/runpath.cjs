'use strict';
/**
 * Prebuilds for a pip torch ("flavours", prebuilds/<platform>-<arch>/libtorch-<major>.<minor>-<cpu|cuNNN>/)
 * cannot know where the user's torch lives: its libraries sit in some site-packages/torch/lib. Such a
 * prebuild is linked with a RUNPATH placeholder of fixed length (CMake's TIM_TORCH_RUNPATH), and
 * the install script writes the user's folder over it, padded with NUL bytes: the dynamic string
 * table keeps its size and offsets, and the loader reads the string up to its first NUL. This is how
 * conda relocates binaries ("binary prefix replacement"). No libtorch ships in the package.
 */
const fs = require('node:fs');
const path = require('node:path');

/** 400 bytes: longer than any site-packages path we expect, short enough for any ELF tool. */
const PLACEHOLDER = '/tim-torch-runpath-placeholder/'.padEnd(400, 'x');

/**
 * Copies `src` (a prebuild linked with the placeholder) to `dest` with RUNPATH = `libDir`, atomically
 * (temp file + rename). Throws an Error that says why when the file has no placeholder or the folder
 * does not fit.
 */
function writeWithRunpath(src, dest, libDir) {
  const bytes = fs.readFileSync(src);
  const needle = Buffer.from(PLACEHOLDER, 'latin1');
  const value = Buffer.from(libDir, 'utf8');
  if (value.length > needle.length) throw new Error(`the libtorch folder path is ${value.length} bytes, longer than the ${needle.length} the prebuild can hold: ${libDir}`);
  if (value.includes(0) || libDir.includes(':')) throw new Error(`the libtorch folder path contains ':' or NUL, which a RUNPATH cannot hold: ${libDir}`);
  let at = bytes.indexOf(needle);
  if (at < 0) throw new Error(`${src} has no RUNPATH placeholder (not a flavour prebuild)`);
  const patch = Buffer.alloc(needle.length, 0);
  value.copy(patch);
  while (at >= 0) {
    patch.copy(bytes, at);
    at = bytes.indexOf(needle, at + needle.length);
  }
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const part = `${dest}.${process.pid}.part`;
  const fd = fs.openSync(part, 'w', 0o755);
  try {
    fs.writeSync(fd, bytes);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(part, dest);
}

module.exports = { PLACEHOLDER, writeWithRunpath };

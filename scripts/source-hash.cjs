'use strict';
/**
 * The hash CMakeLists.txt compiles into the addon (buildInfo().sourceHash): sha256 of the contents
 * of native/*.cpp and native/*.h concatenated in sorted path order. install.cjs uses it to tell a
 * prebuild made from these sources from a stale one.
 *
 *   node scripts/source-hash.cjs [packageRoot]     prints the hash
 */
const fs = require('node:fs');
const path = require('node:path');
const crypto = require('node:crypto');

function sourceHash(root) {
  const dir = path.join(root, 'native');
  // CMake's list(SORT) compares bytes; plain < on these ASCII names does the same.
  const files = fs
    .readdirSync(dir)
    .filter((f) => /\.(cpp|h)$/.test(f))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const h = crypto.createHash('sha256');
  for (const f of files) h.update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

module.exports = { sourceHash };

if (require.main === module) {
  process.stdout.write(sourceHash(process.argv[2] || path.join(__dirname, '..')) + '\n');
}

// Networks as plain data (spec.ts), built into TorchScript modules (build.ts) from sources that follow
// one set of rules (sources.ts). Internal: the public names are re-exported by lib/tim/network.
export * from './spec.js';
export * from './sources.js';
export * from './build.js';

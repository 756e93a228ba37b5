/** The TiM network: configuration, presets, and the module spec (TorchScript sources + parameters). */
export * from './config.js';
export * from './presets.js';
export * from './spec.js';
export type { AttentionImpl } from './sources.js';

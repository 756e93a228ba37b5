/** The TiM network: configuration, presets, and the module spec (TorchScript sources + parameters). */
export * from './config.js';
export * from './presets.js';
export * from './spec.js';
export type { AttentionImpl } from './sources.js';
export { buildModule, initTensor, defaultAttention, type InitMode, type BuildModuleOptions } from '../../torch/modules/build.js';
export {
  TiM, OFFICIAL_TARGETS, resolveConfig, resolvePreset, configFromValue, readConfigFile, parameterCounts, checkpointKind, checkpointConfig, torchScriptRefused,
  type TiMConfigInput, type TiMConfigSource, type TiMCreateOptions, type TiMLoadOptions, type TiMForwardOptions,
  type TiMParameterCounts,
} from './model.js';

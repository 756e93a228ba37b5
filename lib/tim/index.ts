/** TiM: the Transition Model network (spec, builder, model wrapper with checkpoint I/O). */
export * from './network/index.js';
export { buildModule, initTensor, defaultAttention, type InitMode, type BuildModuleOptions } from './build.js';
export {
  TiM, OFFICIAL_TARGETS, resolveConfig, resolvePreset, configFromValue, readConfigFile, parameterCounts, checkpointKind, checkpointConfig, torchScriptRefused,
  type TiMConfigInput, type TiMConfigSource, type TiMCreateOptions, type TiMLoadOptions, type TiMForwardOptions,
  type TiMParameterCounts,
} from './model.js';
export { sample, decodeLatents, resolveSample, guided, type SampleOptions, type SampleOutput, type SamplerModel, type Decoder, type ResolvedSample } from './sampler.js';
export * as schedule from './schedule.js';
export * as data from './data/index.js';
export { encodePng, decodePng, savePng, makeGrid, type GridOptions } from './image.js';
export { Trainer, type TrainerOptions, type TrainResult } from './trainer.js';
export { DataParallel, planBuckets, BUCKET_BYTES, type DataParallelOptions } from './data_parallel.js';
export { readTrainConfig, parseTrainConfig, effectiveLearningRate, transportFromOfficialConfig, type TrainConfig, type TrainingSection, type DataSection, type MixedPrecision } from './train_config.js';

/** tim-torch: Transition Models (TiM) for TypeScript on libtorch. */
export * as torch from './torch/index.js';
export {
  TiM, PRESETS, fromOfficialConfig, type TiMConfig, type TiMConfigInput, type TiMPresetName, type TiMVariant,
  type NewCondition, type RopeGrid, type OfficialNetworkParams, type TiMCreateOptions, type TiMLoadOptions,
  type TiMForwardOptions, type TiMParameterCounts,
} from './tim/network/index.js';
/** Noising paths of TiM training and sampling: transports.OTFM, TrigFlow, EDM, VPSDE, VESDE. */
export * as transports from './tim/transports/index.js';
export { EMA, cloneScriptModule, type EMAOptions, type EMASource, type EMAUpdateOptions } from './tim/train/ema.js';
/** The TiM training objective (official TransitionSchedule): `new TransitionLoss(transport, options).compute({...})`. */
export {
  TransitionLoss, type TransitionLossOptions, type LossInputs, type LossOutput, type LossDict, type LossModel,
  type TransitionNetwork, type SampleTimesOptions, type SampledTimes, type DerivativeType,
} from './tim/objective/loss.js';
export { type WeightTimeType } from './tim/objective/time_weights.js';
export { type DerivativePrecision } from './tim/objective/derivative.js';
/** The any-step sampler (official TransitionSchedule.sample): `sample(model, transport, { z, y, numSteps, cfgScale, ... })`. */
export {
  sample, decodeLatents, resolveSample, type SampleOptions, type SamplerStep, type SamplerModel, type Decoder, type ResolvedSample,
} from './tim/sampling/sampler.js';
export { type SampleType, type SampleTypeInput, type PlannedStep } from './tim/sampling/schedule.js';
/** Training data: `new data.DataLoader(new data.MnistDataset(), { batchSize, seed })`, LatentFolderDataset, ImageFolderDataset; T2IDataset + T2IBatchLoader (captioned images in packed aspect buckets). */
export * as data from './tim/data/index.js';
/** Images: PNG encode/decode, atomic savePng, torchvision-style makeGrid. */
export { encodePng, decodePng, savePng, makeGrid, decodeImageHost, type GridOptions, type HostImage } from './torch/io/image.js';
/** Training (official trainer_c2i.py over an official-layout YAML): `Trainer.create({ config, outDir }).train()`; docs/training.md. */
export { Trainer, type TrainerOptions, type TrainResult } from './tim/train/trainer.js';
export { readTrainConfig, parseTrainConfig, effectiveLearningRate, transportFromOfficialConfig, type TrainConfig, type MixedPrecision } from './tim/train/config.js';
export { listCheckpoints, latestCheckpoint, type CheckpointState } from './tim/train/checkpoints.js';
export { type StepMetrics, type StepLosses } from './tim/train/progress.js';
/** Evaluation (docs/eval.md): `evaluation.evaluateSamples('samples.safetensors')` → FD, real-vs-real floor, class accuracy. */
export * as evaluation from './tim/eval/index.js';
/** VAEs of the released checkpoints (diffusers folders: SD-VAE AutoencoderKL, DC-AE): `VAE.load(dir).decodeLatents(latents)`; docs/vae.md. */
export { VAE, type VaeFamily, type VaeDType, type VaeLoadOptions, type VaeEncodeLatentsOptions, type VaeDecodeOptions } from './vae/index.js';
/** Text-to-image captions (docs/caption-encoder.md): `CaptionEncoder.load(gemmaDir).encode(prompts)`, the Gemma-3 decoder in TorchScript. */
export { CaptionEncoder, unicodeEscapeCaption, type CaptionEncoderLoadOptions, type CaptionTokens, type CaptionFeatures, type PaddedRows } from './text/index.js';
/** Text to image (official sample_t2i_geneval_ddp.py): `textToImage({ model, encoder, vae, prompts, height, width, steps, cfg, seed })` → images. */
export { textToImage, captionConditions, T2I_DEFAULTS, type TextToImageOptions, type TextToImageResult, type TextToImageProgress } from './tim/sampling/text_to_image.js';

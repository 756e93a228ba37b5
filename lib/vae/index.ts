/** VAEs of TiM's released checkpoints (diffusers folders), run in-process as TorchScript: docs/vae.md. */
export { VAE, VAE_FAMILIES, BN_KEYS, type VaeFamily, type VaeDType, type VaeLoadOptions, type VaeEncodeLatentsOptions, type VaeDecodeOptions } from './vae.js';
export { parseKlConfig, klModuleSpec, klDownsampleFactor, KL_ACTIVATIONS, type KlConfig, type KlActivation } from './kl.js';
export { readDiffusersFolder, openFolderWeights, loadStrict, CONFIG_FILE, WEIGHTS_FILES, type DiffusersFolder, type FolderWeights } from './config.js';
export { parseDcConfig, dcModuleSpec, dcFacts, type DcConfig } from './dc.js';

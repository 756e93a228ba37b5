/** tim-torch: Transition Models (TiM) for TypeScript on libtorch. */
export * as torch from './torch/index.js';

/**
 * `torch`: typed tensors over libtorch. Import as `import { torch } from 'tim-torch'`.
 */
export { Tensor, type IndexSpec, type NestedArray, type Scalar, type TensorOrScalar } from './tensor.js';
export { TorchError, type TorchErrorCode } from './errors.js';
export { type DType, type Device, DTYPE_SIZE } from './dtype.js';
export { scope, scopeAsync, keep, memory, type MemoryStats } from './scope.js';
export {
  tensor, zeros, ones, full, empty, arange, linspace, randn, rand, randint, randperm, eye, scalarTensor,
  zerosLike, onesLike, fullLike, emptyLike, randnLike, randLike, randintLike, fromBuffer, type TensorOptions,
} from './creation.js';
export {
  cat, stack, where, broadcastTensors, einsum, linear, conv2d, layerNorm, groupNorm, cosineSimilarity, softmax,
  logSoftmax, silu, gelu, relu, sigmoid, dropout, embedding, mseLoss, crossEntropy, avgPool2d, maxPool2d, pad,
  interpolateNearest, interpolateBilinear, pixelShuffle, trace, eigh, type Conv2dOptions,
} from './functional.js';
export { noGrad, enableGrad, isGradEnabled, setGradEnabled } from './autograd.js';
export * as autograd from './autograd.js';
export {
  manualSeed, getRngState, setRngState, setNumThreads, getNumThreads, setNumInteropThreads, parallelInfo, cuda,
  autocast, isAutocastEnabled, buildInfo, libtorchAtLeast, sdpaKernel, type SdpaBackend, type AutocastOptions,
} from './state.js';
export { matmulAsync, linearAsync, conv2dAsync, cloneAsync, callOpAsync } from './async.js';
export { hasOp, schemaOf } from './ops.js';
export { addonPath, packageVersion } from './native.js';
export * as optim from './optim/index.js';
/** torch.jit: TorchScript modules (load, call, build, save). */
export * as jit from './jit.js';
/** The CPU block cache: stats(), emptyCache(), resetPeakStats() (docs/memory.md). */
export * as cpuCache from './cpu_cache.js';
/** torch.distributed: c10d process groups (TCPStore + Gloo/NCCL), see docs/distributed.md. */
export * as distributed from './distributed/index.js';
import * as nnUtils from './nn_utils.js';
/** torch.nn.utils (clipGradNorm_). If a fuller torch.nn namespace lands, it should re-export nn_utils as `utils`. */
export const nn = { utils: nnUtils } as const;
export {
  load, loadAsync, save, saveAsync, loadSafetensors, openSafetensors, safetensorsHeader, SafetensorsFile,
  type TensorRecord, type LoadOptions, type GetOptions, type SafetensorsTensorInfo,
} from './io/index.js';

/** Training data for TiM: datasets (official latents, MNIST, image folders) and the resumable, sharded, prefetching DataLoader. */
export { DataLoader, type Dataset, type LoaderOptions, type LoaderState, type Batch, type LoaderStats } from './loader.js';
export { LatentFolderDataset, type LatentFolderOptions } from './latents.js';
export { MnistDataset, type MnistOptions } from './mnist.js';
export { ImageFolderDataset, type ImageFolderOptions } from './image_folder.js';
export { randpermSeeded, sampleUniform, ShardedOrder } from './sampler.js';
export { centerCropArr, resize, convertChannels, toUnitRange } from './transforms.js';
export { listFiles } from './files.js';
export { T2IDataset, T2IBatchLoader, bucketSize, parseT2IJsonl, parsePackedBuckets, type T2IRecord, type T2IBatch, type T2IDatasetPaths, type T2IBatchLoaderOptions } from './t2i_data.js';

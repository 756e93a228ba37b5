/**
 * torch.distributed: c10d process groups (TCPStore + Gloo/NCCL) and DataParallel, the data-parallel
 * training helper built on them (docs/distributed.md).
 */
export * from './process_group.js';
export { DataParallel, planBuckets, BUCKET_BYTES, type DataParallelOptions } from './data_parallel.js';

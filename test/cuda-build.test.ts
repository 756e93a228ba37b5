/**
 * What a CUDA build of the addon promises on a machine without a GPU (CI builds one from the pip
 * torch 2.14 CUDA 13 wheels and runs the whole suite with it, TIM_TORCH_EXPECT_CUDA_BUILD=1): it
 * loads, says it is a CUDA build linked with NCCL, tells the truth about CUDA (not available), and
 * answers every request for a CUDA device with a typed error instead of a crash. Without a GPU any
 * build must do the latter; the GPU side is scripts/gpu-check.sh's.
 */
import { describe, expect, it } from 'vitest';
import { torch } from '../lib/index.js';
import { TorchError } from '../lib/torch/errors.js';
import * as dist from '../lib/torch/distributed.js';

const expectCudaBuild = process.env.TIM_TORCH_EXPECT_CUDA_BUILD === '1';
const gpu = torch.cuda.isAvailable();

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(TorchError);
    return (e as TorchError).code;
  }
  return 'no error';
}

describe('CUDA build without a GPU', () => {
  it('buildInfo and the c10d backends say what was linked', () => {
    const info = torch.buildInfo();
    if (expectCudaBuild) {
      expect(info.cudaBuild).toBe(true);
      expect(info.torchMajor).toBeGreaterThanOrEqual(2);
      // NCCL is compiled in with a CUDA libtorch whose NCCL header was found (pip: nvidia/nccl)
      expect(dist.isAvailable('nccl')).toBe(true);
    }
    if (!info.cudaBuild) {
      expect(torch.cuda.isAvailable()).toBe(false);
      expect(dist.isAvailable('nccl')).toBe(false);
    }
    expect(dist.isAvailable('gloo')).toBe(true);
  });

  it('reports its CUDA devices truthfully; without one, answers CUDA requests with E_DEVICE', () => {
    if (gpu) {
      // (the GPU machine's checks are scripts/gpu-check.sh's; here only that the count agrees)
      expect(torch.cuda.deviceCount()).toBeGreaterThan(0);
      return;
    }
    expect(torch.cuda.deviceCount()).toBe(0);
    const before = torch.memory().liveTensors;
    torch.scope(() => {
      const x = torch.ones([2, 3]);
      expect(codeOf(() => x.to('cuda'))).toBe('E_DEVICE');
      expect(codeOf(() => x.to('cuda:1'))).toBe('E_DEVICE');
      expect(codeOf(() => torch.zeros([2], { device: 'cuda' }))).toBe('E_DEVICE');
      expect(codeOf(() => torch.randn([2], { device: 'cuda' }))).toBe('E_DEVICE');
      expect(codeOf(() => torch.cuda.synchronize())).toBe('E_DEVICE');
      expect(codeOf(() => torch.getRngState('cuda'))).toBe('E_DEVICE');
      // the CPU keeps working after the refusals
      expect(x.mul(2).sum().item()).toBe(12);
    });
    expect(torch.memory().liveTensors).toBe(before);
  });
});

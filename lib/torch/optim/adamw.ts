/**
 * AdamW (torch.optim.AdamW, torch 1.13 math: decoupled weight decay p *= 1 - lr*wd before the Adam
 * update). The update itself is adamUpdate in adam.ts. Defaults as torch: lr 1e-3, betas
 * (0.9, 0.999), eps 1e-8, weight decay 1e-2. The TiM configs use betas (0.9, 0.95), eps 1e-6.
 */
import type { Tensor } from '../tensor.js';
import { AdamBase, adamDefaults, type AdamHyper, type AdamOptions } from './adam.js';
import type { ParamGroupInput } from './optimizer.js';

export class AdamW extends AdamBase {
  protected readonly kind = 'AdamW';
  protected readonly decoupled = true;
  constructor(params: Tensor[] | ParamGroupInput<AdamHyper>[], opts: AdamOptions = {}) {
    super(params, adamDefaults(opts, 1e-2, 'AdamW'));
  }
}

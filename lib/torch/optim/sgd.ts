/**
 * SGD with momentum, dampening, Nesterov and L2 weight decay (torch.optim.SGD, torch 1.13 math,
 * single-tensor semantics: `.grad` is never modified):
 *   d = g + wd*p                              (wd != 0; a new tensor)
 *   momentum != 0:  buf = d (a copy) on the first step, else buf = buf*momentum + (1-dampening)*d
 *                   d = nesterov ? d + momentum*buf : buf
 *   p += -lr * d
 */
import { Tensor } from '../tensor.js';
import { keep } from '../scope.js';
import { Optimizer, type BaseHyper, type ParamGroup, type ParamGroupInput, checkRange, checkOptionKeys } from './optimizer.js';
import * as F from './foreach.js';

export interface SGDHyper extends BaseHyper {
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}
export type SGDOptions = { lr: number } & Partial<SGDHyper>;

export class SGD extends Optimizer<SGDHyper> {
  protected readonly kind = 'SGD';

  /** lr is required, as in torch. */
  constructor(params: Tensor[] | ParamGroupInput<SGDHyper>[], opts: SGDOptions) {
    checkOptionKeys(opts, ['lr', 'momentum', 'dampening', 'weightDecay', 'nesterov'], 'SGD');
    super(params, {
      lr: opts?.lr,
      momentum: opts?.momentum ?? 0,
      dampening: opts?.dampening ?? 0,
      weightDecay: opts?.weightDecay ?? 0,
      nesterov: opts?.nesterov ?? false,
    } as SGDHyper);
  }

  protected validate(group: ParamGroup<SGDHyper>, where: string): void {
    const { lr, momentum, dampening, weightDecay, nesterov } = group;
    checkRange(typeof lr === 'number' && lr >= 0, `${where}: invalid learning rate ${lr} (SGD needs lr)`);
    checkRange(typeof momentum === 'number' && momentum >= 0, `${where}: invalid momentum value ${momentum}`);
    checkRange(typeof dampening === 'number', `${where}: invalid dampening value ${dampening}`);
    checkRange(typeof weightDecay === 'number' && weightDecay >= 0, `${where}: invalid weight_decay value ${weightDecay}`);
    checkRange(!nesterov || (momentum > 0 && dampening === 0), `${where}: Nesterov momentum requires a momentum and zero dampening`);
  }

  protected update(group: ParamGroup<SGDHyper>, params: Tensor[], grads: Tensor[]): void {
    const { lr, momentum, dampening, weightDecay: wd, nesterov } = group;
    const temps: Tensor[] = [];
    try {
      // d[i] is grads[i] (read only) or a temporary this step owns (written in place)
      let d: Tensor[] = grads;
      let dOwned = false;
      if (wd !== 0) {
        d = F.addList(grads, params, wd);
        temps.push(...d);
        dOwned = true;
      }
      if (momentum !== 0) {
        const bufs: Tensor[] = [];
        const oldBufs: Tensor[] = [];
        const oldD: Tensor[] = [];
        params.forEach((p, i) => {
          const s = this.state.get(p);
          if (s?.tensors.momentum_buffer) {
            bufs.push(s.tensors.momentum_buffer);
            oldBufs.push(s.tensors.momentum_buffer);
            oldD.push(d[i]!);
          } else {
            // first step: buf = clone(d), without the momentum update (as torch)
            const buf = keep(F.cloneAll([d[i]!])[0]!);
            if (s) s.tensors.momentum_buffer = buf;
            else this.state.set(p, { step: 0, tensors: { momentum_buffer: buf } });
            bufs.push(buf);
          }
        });
        if (oldBufs.length) {
          F.mulScalar_(oldBufs, momentum);
          F.addList_(oldBufs, oldD, 1 - dampening);
        }
        if (nesterov) {
          if (dOwned) F.addList_(d, bufs, momentum);
          else {
            d = F.addList(d, bufs, momentum);
            temps.push(...d);
          }
        } else {
          d = bufs;
        }
      }
      F.addList_(params, d, -lr);
    } finally {
      for (const t of temps) t.dispose();
    }
  }
}

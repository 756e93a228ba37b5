/** torch.optim: optimizers over parameter lists and learning-rate schedules. */
export { Optimizer, type OptimizerStateDict, type OptimizerMeta, type ParamGroup, type ParamGroupInput, type ParamState, type ZeroGradOptions, type BaseHyper } from './optimizer.js';
export { Adam, type AdamHyper, type AdamOptions } from './adam.js';
export { AdamW } from './adamw.js';
export { SGD, type SGDHyper, type SGDOptions } from './sgd.js';
export * as lrScheduler from './lr_scheduler.js';
export { LambdaLR, getScheduler, type SchedulerName, type GetSchedulerOptions, type LrLambda } from './lr_scheduler.js';

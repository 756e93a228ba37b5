/**
 * TiM transports: the noising paths a Transition Model is trained and sampled on (official
 * tim/schedulers/transports.py). See docs/transports.md for the math of each.
 */
export {
  BaseTransport, LogNormalTransport, type LogNormalOptions, type Transport, type Interpolant, type TargetInputs, type StepOptions, type SampleTOptions,
  type ModelTimes, type TransportOptions, type TimeDraw, unchecked, type TransportMath, type TargetParts,
} from './transport.js';
export { OTFM, otfmTimeFromSigma, type OTFMOptions } from './ot_fm.js';
export { TrigFlow, type TrigFlowOptions } from './trigflow.js';
export { EDM, type EDMOptions } from './edm.js';
export { VPSDE, type VPSDEOptions } from './vp_sde.js';
export { VESDE, type VESDEOptions } from './ve_sde.js';

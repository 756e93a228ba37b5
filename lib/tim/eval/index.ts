/** Evaluation of MNIST samples: Fréchet distance, precision/recall, the project's MNIST classifier, the `tim eval` driver (docs/eval.md). */
export {
  frechetDistance, featureStats, FeatureMoments, sqrtmPsd, traceSqrtProduct, eighSymmetric, trace, saveStats, loadStats, disposeStats,
  type FeatureStats,
} from './frechet.js';
export {
  ensureClassifier, ensureClassifierAsync, trainClassifier, trainClassifierAsync, loadClassifier, buildClassifier, classifierAccuracy, defaultCacheDir, mnistTensors,
  FEATURE_DIM, NUM_CLASSES, CLASSIFIER_FILE, CLASSIFIER_VERSION,
  type ClassifierInfo, type TrainedClassifier, type ClassifierTrainOptions, type EnsureClassifierOptions,
} from './classifier.js';
export {
  evaluateSamples, evaluateSamplesAsync, PR_MAX_ROWS, readSamples, prepareSamples, preprocess, formatEval, accuracyFromCounts,
  type EvaluateOptions, type EvalResult, type Samples, type Preprocess, type InputRange, type ClassAccuracy,
} from './evaluate.js';
export { precisionRecall, manifoldRadii, type PrecisionRecall, type PrecisionRecallOptions } from './precision_recall.js';

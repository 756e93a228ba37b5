/**
 * The training dataset named by a config's `data` block:
 *   latent  data.dataset.latent_dir: the official preprocessed latents (LatentFolderDataset). The
 *           official image_dir/image_size feed the REPA encoder, which this package does not run:
 *           they are accepted and unused.
 *   image   data.dataset.image_dir (or root) and image_size: class subfolders of images (ImageFolderDataset)
 *   mnist   data.dataset.split (train/test/all): the embedded MNIST digits, 1x32x32 (ours: a demo)
 *   image_ms  data.dataset.{root_dir, packed_json, jsonl_dir}: text-to-image captioned images in
 *           packed aspect buckets (the official T2I layout, data/t2i_data.ts; t2iDatasetFromConfig)
 * Relative paths are taken from the working directory, as the official trainer does.
 */
import * as v from 'valibot';
import type { Dataset } from '../data/loader.js';
import { LatentFolderDataset } from '../data/latents.js';
import { ImageFolderDataset } from '../data/image_folder.js';
import { MnistDataset } from '../data/mnist.js';
import { T2IDataset } from '../data/t2i_data.js';
import { cfgError, type TrainConfig } from './config.js';
import { checkDocument, finiteNumber, mustBe, oneOf, strict, text } from '../config_file.js';

const path = v.pipe(text, v.nonEmpty(mustBe('a path')));

/** data.dataset of each data_type. */
const DATASETS = {
  latent: strict({ latent_dir: path, image_dir: v.optional(v.unknown()), image_size: v.optional(v.unknown()) }),
  image: strict({ image_dir: v.optional(path), root: v.optional(path), image_size: v.optional(finiteNumber) }),
  mnist: strict({ split: v.optional(oneOf(['train', 'test', 'all']), 'train') }),
  image_ms: strict({ root_dir: path, packed_json: path, jsonl_dir: path }),
};

function dataset<T extends keyof typeof DATASETS>(c: TrainConfig, type: T): v.InferOutput<(typeof DATASETS)[T]> {
  return checkDocument(DATASETS[type], c.data.dataset, (m) => cfgError(`data.dataset (data_type ${type}): ${m}`));
}

/** Opens the dataset and checks that its samples fit the network (channels, size, classes). */
export function datasetFromConfig(c: TrainConfig): Dataset {
  const net = c.network;
  let ds: Dataset;
  switch (c.data.dataType) {
    case 'latent':
      ds = new LatentFolderDataset(dataset(c, 'latent').latent_dir, net.variant === 'c2i' ? { numClasses: net.numClasses } : {});
      break;
    case 'image': {
      const d = dataset(c, 'image');
      const root = d.image_dir ?? d.root;
      if (root === undefined) throw cfgError('data.dataset.image_dir (or root) is required for data_type image');
      if (net.inChannels !== 1 && net.inChannels !== 3) throw cfgError(`data_type image needs a pixel-space network (in_channels 1 or 3), this one has ${net.inChannels}`);
      ds = new ImageFolderDataset(root, { size: d.image_size ?? net.inputSize, channels: net.inChannels });
      break;
    }
    case 'mnist':
      ds = new MnistDataset({ split: dataset(c, 'mnist').split });
      break;
    case 'image_ms':
      throw cfgError('data.data_type image_ms is text-to-image data: it needs a T2I network (model.network.target tim.models.t2i.tim_model.TiM)');
    default:
      throw cfgError(`data.data_type '${c.data.dataType}' is not supported (${Object.keys(DATASETS).join(', ')})`);
  }
  const [ch, h, w] = ds.sampleShape;
  if (ch !== net.inChannels || h % net.patchSize !== 0 || w % net.patchSize !== 0) {
    throw cfgError(`${ds.name} has samples of shape [${ch}, ${h}, ${w}]; the network takes ${net.inChannels} channels in multiples of ${net.patchSize}`);
  }
  if (net.variant !== 'c2i') throw cfgError(`a text-to-image network trains on data_type image_ms (captioned images), not ${c.data.dataType}`);
  if (ds.numClasses !== null && ds.numClasses > net.numClasses) {
    throw cfgError(`${ds.name} has ${ds.numClasses} classes; the network has num_classes ${net.numClasses}`);
  }
  return ds;
}

/**
 * The T2I dataset of a config (data_type image_ms, the official T2IDatasetMS): opened and checked
 * now (E_DATA / E_IO for bad files). Relative paths are taken from the working directory.
 */
export function t2iDatasetFromConfig(c: TrainConfig): T2IDataset {
  if (c.network.variant !== 't2i') throw cfgError('data_type image_ms needs a text-to-image network');
  if (c.data.dataType !== 'image_ms') throw cfgError(`a text-to-image network trains on data.data_type image_ms (the official T2I layout), got '${c.data.dataType}'`);
  const d = dataset(c, 'image_ms');
  return new T2IDataset({ rootDir: d.root_dir, packedJson: d.packed_json, jsonlDir: d.jsonl_dir });
}

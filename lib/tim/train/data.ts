/**
 * The training dataset named by a config's `data` block:
 *   latent  data.dataset.latent_dir: the official preprocessed latents (LatentFolderDataset). The
 *           official image_dir/image_size feed the REPA encoder, which this package does not run:
 *           they are accepted and unused.
 *   image   data.dataset.image_dir (or root) and image_size: class subfolders of images (ImageFolderDataset)
 *   mnist   data.dataset.split (train/test/all): the embedded MNIST digits, 1x32x32 (ours: a demo)
 * Relative paths are taken from the working directory, as the official trainer does.
 */
import { TorchError } from '../../torch/errors.js';
import type { Dataset } from '../data/loader.js';
import { LatentFolderDataset } from '../data/latents.js';
import { ImageFolderDataset } from '../data/image_folder.js';
import { MnistDataset } from '../data/mnist.js';
import type { TrainConfig } from './config.js';

function cfgError(msg: string): TorchError {
  return new TorchError(`training config: ${msg}`, 'E_CONFIG');
}

function keys(o: Record<string, unknown>, known: string[], what: string): void {
  for (const k of Object.keys(o)) if (!known.includes(k)) throw cfgError(`unknown key 'data.dataset.${k}' for data_type ${what} (known: ${known.join(', ')})`);
}

function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== 'string' || v === '') throw cfgError(`data.dataset.${k} must be a path`);
  return v;
}

/** Opens the dataset and checks that its samples fit the network (channels, size, classes). */
export function datasetFromConfig(c: TrainConfig): Dataset {
  const d = c.data.dataset;
  const net = c.network;
  let ds: Dataset;
  switch (c.data.dataType) {
    case 'latent':
      keys(d, ['latent_dir', 'image_dir', 'image_size'], 'latent');
      ds = new LatentFolderDataset(str(d, 'latent_dir'), net.variant === 'c2i' ? { numClasses: net.numClasses } : {});
      break;
    case 'image': {
      keys(d, ['image_dir', 'root', 'image_size'], 'image');
      const root = d.image_dir !== undefined ? str(d, 'image_dir') : str(d, 'root');
      const size = d.image_size ?? net.inputSize;
      if (typeof size !== 'number') throw cfgError('data.dataset.image_size must be a number');
      if (net.inChannels !== 1 && net.inChannels !== 3) throw cfgError(`data_type image needs a pixel-space network (in_channels 1 or 3), this one has ${net.inChannels}`);
      ds = new ImageFolderDataset(root, { size, channels: net.inChannels });
      break;
    }
    case 'mnist': {
      keys(d, ['split'], 'mnist');
      const split = d.split ?? 'train';
      if (split !== 'train' && split !== 'test' && split !== 'all') throw cfgError(`data.dataset.split must be train, test or all, got ${JSON.stringify(split)}`);
      ds = new MnistDataset({ split });
      break;
    }
    default:
      throw cfgError(`data.data_type '${c.data.dataType}' is not supported (latent, image, mnist)`);
  }
  const [ch, h, w] = ds.sampleShape;
  if (ch !== net.inChannels || h % net.patchSize !== 0 || w % net.patchSize !== 0) {
    throw cfgError(`${ds.name} has samples of shape [${ch}, ${h}, ${w}]; the network takes ${net.inChannels} channels in multiples of ${net.patchSize}`);
  }
  if (net.variant !== 'c2i') throw cfgError('training supports the class-conditional (c2i) TiM; text-to-image training needs caption features');
  if (ds.numClasses !== null && ds.numClasses > net.numClasses) {
    throw cfgError(`${ds.name} has ${ds.numClasses} classes; the network has num_classes ${net.numClasses}`);
  }
  return ds;
}

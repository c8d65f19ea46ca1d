"""The input pipeline: tfds ArrayRecord (or the synthetic quickstart) -> grain -> NumPy batches.

    from bcos_jax import data
    cfg = data.default_config()      # v2 ImageNet; or default_config('long'), ('quickstart'), ...
    info = data.dataset_info(cfg)    # DatasetInfo(num_classes, num_train, num_eval, ...)
    ds = data.make_dataset(cfg, cfg.train_split, train=True, global_batch_size=256, seed=0)
    it = iter(ds)                    # it.get_state() / it.set_state(state): exact resume
    batch = next(it)                 # this host's rows only (global_batch_size // process_count)

Batches are dicts of NumPy arrays: 'image' float32 [B, S, S, 6] (``[x, 1-x]`` of an image in
[0, 1]; [B, S, S, 3] normalised with the ImageNet mean/std when ``add_inverse`` is False),
'label' int32 [B], 'targets' float32 [B, num_classes] (one-hot, or mixed by mixup/cutmix),
'mask' bool [B, S, S] (quickstart only: the object mask, transformed with the image), and
for evaluation 'valid' bool [B]. Training batches repeat forever, reshuffled every epoch
from the seed, the last partial batch of each epoch dropped; evaluation batches cover the
split once in order, the last one padded (``valid`` False, zero targets). Sharding, seeding
and resuming: see ``bcos_jax.data.pipeline``.

Config fields (``default_config()``; a field left out of a config takes this default)
-------------------------------------------------------------------------------------
  name            'quickstart' / 'quickstart2' (synthetic, no download), 'folder:PATH' (class
                  folders of images in PATH/train, PATH/val; ``bcos_jax.data.folder``),
                  'cifar10', 'imagenet2012', or any tfds image-classification dataset
                  prepared as ArrayRecord.                                           'imagenet2012'
  data_dir        tfds data directory; '' = tfds' default                            ''
                  ($TFDS_DATA_DIR, else ~/tensorflow_datasets).
  train_split     split read by training (tfds slicing allowed, 'train[:99%]').      'train'
  eval_split      split read by evaluation.                                          'validation'
  image_key       feature holding the image.                                         'image'
  label_key       ClassLabel feature holding the class.                              'label'
  image_size      side S of the training crop (and of the quickstart images).        224
  eval_resize     eval: resize the shorter side to this (0: no resize).              256
  eval_crop       eval: centre crop of this side (0: none; images must be square).   224
  augment         per-example training recipe: 'v2' | 'long' | 'v1' | 'cifar' | 'none'  'v2'
                  (table below; ``bcos_jax.data.recipes``).
  mixup_alpha     Beta(alpha, alpha) mixup of each batch; 0 = off.                   0.0
  cutmix_alpha    cutmix; 0 = off. With both > 0 one is picked per batch.            0.0
  random_erasing  RandomErasing probability (before add_inverse); 0 = off.          0.0
  repeated_aug    repeated augmentation: each image r times per epoch; 1 = off.     1
  randaugment_magnitude  augment='v2' only: add RandAugment(2, m); 0 = off.          0
  add_inverse     B-cos input [x, 1-x] (6 ch.); False: 3 ch., ImageNet mean/std.    True
  num_workers     grain worker processes (0: in-process threads only).              0
  num_threads     threads per process, each building whole batches.                 2
  prefetch        batches buffered per process (at least num_threads).              2
  num_train, num_eval, num_classes, synthetic_seed   synthetic tasks only: split sizes,
                  classes (2..6 / 2..5; 0 = all of the task), content seed (the dataset,
                  not the training seed).                                            5000/1000/0/0

Reference recipes (docs/recipes.md) as ``default_config(preset)``
---------------------------------------------------------------------
  v2 (default)  ImageNet bcos_final: RandomResizedCrop(224) + hflip; eval Resize(256) +
                CenterCrop(224).
  long          bcos_final_long: RRC(176) + hflip + TrivialAugmentWide + RandomErasing(0.1),
                mixup 0.2 / cutmix 1.0, repeated_aug 4; eval Resize(232) + CenterCrop(224).
  vit           vit_final: RRC(224) + hflip + RandAugment(magnitude 10), mixup 0.2.
  v1            v1 ImageNet: RandAugment_v1(2, 9) -> RRC(224) -> hflip -> ColorJitter(0.4, 0.4, 0.4)
                -> Lighting(0.1); eval Resize(256) + CenterCrop(224). v1_inception: 299/320.
  baseline      as v2 with add_inverse False (standard torchvision models).
  cifar         cifar10: hflip + RandomCrop(32, padding=4); eval unchanged 32x32.
  quickstart    the synthetic dataset at 32x32 with the cifar recipe.
  quickstart2   the second synthetic task (5 new classes, same generator), likewise.

Preparing real datasets (once; ``docs/data.md``)
------------------------------------------------
Reading needs no TensorFlow, preparing does. In an environment with the ``prepare`` extra
(``pip install -e '.[prepare]'``, tensorflow-cpu):

    tfds build cifar10 --data_dir=$DATA --file_format=array_record
    tfds build imagenet2012 --data_dir=$DATA --file_format=array_record \\
        --manual_dir=/path/with/ILSVRC2012_img_train.tar+ILSVRC2012_img_val.tar

ImageNet cannot be downloaded by tfds (licence): get the two tars from image-net.org. A
dataset that is missing or prepared as TFRecord raises ``DatasetNotPreparedError`` with
these instructions.
"""
from bcos_jax.data import augment, folder, mixing, recipes, synthetic
from bcos_jax.data.config import PRESETS, default_config
from bcos_jax.data.imagenet import imagenet_classes
from bcos_jax.data.pipeline import DatasetInfo, dataset_info, make_dataset
from bcos_jax.data.sources import DatasetNotPreparedError, open_source

__all__ = [
    "DatasetInfo",
    "DatasetNotPreparedError",
    "PRESETS",
    "augment",
    "dataset_info",
    "default_config",
    "folder",
    "imagenet_classes",
    "make_dataset",
    "mixing",
    "open_source",
    "recipes",
    "synthetic",
]

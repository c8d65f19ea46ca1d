"""``make_dataset``: sharded, deterministic, resumable grain pipelines; ``dataset_info``.

Every source of ``bcos_jax.data.sources`` (synthetic tasks, ``folder:PATH``, tfds) goes
through the same plans, transforms and batching below.

How a training batch is made (every step a pure function of indices, so it can be
recomputed anywhere and resumed from a counter):

1. **Global order.** Epoch ``e`` is ``permutation(n)`` drawn from ``(seed, e)``. With
   ``repeated_aug = r`` each image of the permutation appears ``r`` times in a row and the
   epoch still has ``n`` positions, so it shows ``n / r`` distinct images (the reference's
   ``RASampler``). The epoch is cut into ``n // global_batch_size`` batches (the remainder
   is dropped) and epochs follow each other forever.
2. **Sharding.** Global batch ``t`` covers positions ``[t G, (t + 1) G)``; host ``p`` of
   ``P`` takes the contiguous block ``[t G + p B, t G + (p + 1) B)``, ``B = G / P``, which
   is the row block ``jax.make_array_from_process_local_data`` expects of it for a batch
   sharded over a ('data',) mesh axis. Each host reads only its own examples.
3. **Per example** (in grain threads/worker processes): read, decode, augment with an rng
   seeded from ``(seed, epoch, position in epoch)``: independent of the host count, and
   different for the repeats of an image.
4. **Per host batch**: stack, one-hot ``targets``, mixup/cutmix with an rng from
   ``(seed, step, process index)``, then ``add_inverse`` (or ImageNet mean/std).

The iterator's state is grain's (for ``num_workers=0``, ``{'next_index': k}`` = the number
of batches served); ``set_state`` on a fresh iterator of the same pipeline continues with
exactly the batches that would have followed. A state only fits a pipeline with the same
config, global batch size, seed, process count and ``num_workers``.

Evaluation pipelines read positions ``0 .. n-1`` in order, padded to a whole number of
global batches: padded rows have all-zero images (after encoding) and targets, label 0 and
``valid = False``, so every example is counted exactly once whatever the batch size or
host count.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Dict, Optional

import grain
import numpy as np

from bcos_jax.data import mixing, sources
from bcos_jax.data.config import get, validate
from bcos_jax.data.recipes import ImageTransform

__all__ = ["DatasetInfo", "dataset_info", "make_dataset"]

# Stream tags: the example, epoch-permutation and mixing rngs never share a seed.
_TAG_EXAMPLE, _TAG_PERM, _TAG_MIX = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a trainer needs to know about the data before reading it.

    Attributes:
      num_classes: classes of the label.
      num_train, num_eval: examples in ``cfg.train_split`` / ``cfg.eval_split``.
      image_size: side of the (square) training images.
      eval_image_size: side of the evaluation images (the long recipe trains at 176 and
        evaluates at 224).
      channels: 6 for B-cos inputs ``[x, 1-x]`` (``add_inverse``), 3 otherwise.
    """

    num_classes: int
    num_train: int
    num_eval: int
    image_size: int
    eval_image_size: int = 0
    channels: int = 6

    def steps_per_epoch(self, global_batch_size: int) -> int:
        """Training batches per epoch (the remainder of each epoch is dropped)."""
        return self.num_train // global_batch_size

    def eval_steps(self, global_batch_size: int) -> int:
        """Evaluation batches (the last one padded)."""
        return -(-self.num_eval // global_batch_size)


def _eval_image_size(cfg) -> int:
    if sources.is_synthetic(cfg):
        return int(get(cfg, "image_size"))
    return int(get(cfg, "eval_crop") or get(cfg, "image_size"))


def dataset_info(cfg: Any) -> DatasetInfo:
    """Sizes of the dataset ``cfg`` describes (opens the tfds sources to count them)."""
    validate(cfg)
    if sources.is_synthetic(cfg):
        n_train, n_eval = int(get(cfg, "num_train")), int(get(cfg, "num_eval"))
    else:
        n_train = len(sources.open_source(cfg, get(cfg, "train_split")))
        n_eval = len(sources.open_source(cfg, get(cfg, "eval_split")))
    return DatasetInfo(
        num_classes=sources.num_classes(cfg),
        num_train=n_train,
        num_eval=n_eval,
        image_size=int(get(cfg, "image_size")),
        eval_image_size=_eval_image_size(cfg),
        channels=6 if get(cfg, "add_inverse") else 3,
    )


# ----------------------------------------------------------------------------------------
# Index plans: host-local element index -> which example, at which global position
# ----------------------------------------------------------------------------------------


class _TrainPlan:
    """Infinite host-local sequence of (epoch, position in epoch, source index, global position)."""

    def __init__(self, num_examples, global_batch_size, process_index, process_count,
                 repeated_aug, seed):
        self.n, self.global_batch = int(num_examples), int(global_batch_size)
        self.local_batch = self.global_batch // process_count
        self.offset = process_index * self.local_batch
        self.reps, self.seed = int(repeated_aug), int(seed)
        self.steps_per_epoch = self.n // self.global_batch
        self.epoch_len = self.steps_per_epoch * self.global_batch
        self._perm = (-1, None)  # (epoch, permutation); a tuple so replacing it is atomic

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_perm"] = (-1, None)
        return state

    def permutation(self, epoch: int) -> np.ndarray:
        cached_epoch, perm = self._perm
        if cached_epoch != epoch:
            perm = np.random.default_rng([self.seed, _TAG_PERM, epoch]).permutation(self.n)
            self._perm = (epoch, perm)
        return perm

    def __len__(self) -> int:
        return sys.maxsize  # repeats forever; grain needs a length

    def __getitem__(self, i: int):
        step, row = divmod(int(i), self.local_batch)
        k = step * self.global_batch + self.offset + row
        epoch, j = divmod(k, self.epoch_len)
        return epoch, j, int(self.permutation(epoch)[j // self.reps]), k


class _EvalPlan:
    """Host-local positions of one pass over ``n`` examples, padded to whole global batches."""

    def __init__(self, num_examples, global_batch_size, process_index, process_count):
        self.n, self.global_batch = int(num_examples), int(global_batch_size)
        self.local_batch = self.global_batch // process_count
        self.offset = process_index * self.local_batch
        self.num_batches = -(-self.n // self.global_batch)

    def __len__(self) -> int:
        return self.num_batches * self.local_batch

    def __getitem__(self, i: int):
        step, row = divmod(int(i), self.local_batch)
        k = step * self.global_batch + self.offset + row
        return k, k < self.n


# ----------------------------------------------------------------------------------------
# grain transforms (picklable: they run in worker processes)
# ----------------------------------------------------------------------------------------


class _LoadTrain(grain.transforms.Map):
    def __init__(self, source, transform: ImageTransform, seed: int, image_key: str,
                 label_key: str):
        self.source, self.transform, self.seed = source, transform, int(seed)
        self.image_key, self.label_key = image_key, label_key

    def map(self, element) -> Dict[str, np.ndarray]:
        epoch, j, index, k = element
        ex = self.source[index]
        rng = np.random.default_rng([self.seed, _TAG_EXAMPLE, epoch, j])
        image, mask = self.transform(ex[self.image_key], rng, ex.get("mask"))
        out = {"image": image, "label": np.int32(ex[self.label_key]), "_pos": np.int64(k)}
        if mask is not None:
            out["mask"] = mask
        return out


class _LoadEval(grain.transforms.Map):
    def __init__(self, source, transform: ImageTransform, image_key: str, label_key: str,
                 has_mask: bool):
        self.source, self.transform = source, transform
        self.image_key, self.label_key, self.has_mask = image_key, label_key, has_mask

    def map(self, element) -> Dict[str, np.ndarray]:
        k, valid = element
        s = self.transform.output_size
        if not valid:  # padding row: never read, never counted
            out = {"image": np.zeros((s, s, 3), np.float32), "label": np.int32(0)}
            if self.has_mask:
                out["mask"] = np.zeros((s, s), bool)
        else:
            ex = self.source[k]
            image, mask = self.transform(ex[self.image_key], None, ex.get("mask"))
            out = {"image": image, "label": np.int32(ex[self.label_key])}
            if mask is not None:
                out["mask"] = mask
        out["valid"] = np.bool_(valid)
        return out


class _FinishBatch(grain.transforms.Map):
    """Host batch: targets, mixing (training), input encoding."""

    def __init__(self, num_classes, add_inverse, mixup_alpha=0.0, cutmix_alpha=0.0, seed=0,
                 process_index=0, global_batch_size=1):
        self.num_classes, self.add_inverse = int(num_classes), bool(add_inverse)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.seed, self.process_index = int(seed), int(process_index)
        self.global_batch = int(global_batch_size)

    def map(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        label = batch["label"]
        if label.min() < 0 or label.max() >= self.num_classes:
            raise ValueError(
                f"labels {label.min()}..{label.max()} out of range for {self.num_classes} classes"
            )
        targets = np.eye(self.num_classes, dtype=np.float32)[label]
        image, mask = batch["image"], batch.get("mask")
        pos = batch.pop("_pos", None)
        if pos is not None and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            step = int(pos[0]) // self.global_batch
            rng = np.random.default_rng([self.seed, _TAG_MIX, step, self.process_index])
            image, targets, mask = mixing.mix_batch(
                rng, image, targets, self.mixup_alpha, self.cutmix_alpha, mask
            )
        if self.add_inverse:
            image = np.concatenate([image, 1.0 - image], axis=-1)
        if "valid" in batch:  # padding rows are all zero, encoded image and targets alike
            targets *= batch["valid"][:, None]
            image *= batch["valid"][:, None, None, None]
        out = dict(batch, image=image.astype(np.float32, copy=False), targets=targets)
        if mask is not None:
            out["mask"] = mask
        return out


# ----------------------------------------------------------------------------------------
# make_dataset
# ----------------------------------------------------------------------------------------


def _ensure_absl_flags_parsed() -> None:
    # grain's worker processes read absl flags; outside absl.app.run they are unparsed and
    # grain raises UnparsedFlagAccessError (docs/data.md, "Throughput"). Marking
    # them parsed keeps the defaults.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_dataset(
    cfg: Any,
    split: str = "train",
    *,
    train: bool = True,
    global_batch_size: int = 256,
    seed: int = 0,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
) -> grain.IterDataset:
    """This host's batches of ``split``: endless shuffled training batches, or one padded eval pass.

    Args:
      cfg: the data config (``default_config()`` fields; missing fields take the defaults).
      split: a split name of the dataset, tfds slicing allowed (``'train[:90%]'``).
      train: training pipeline (augmentation, shuffling, mixing, repeat, drop remainder) or
        evaluation pipeline (eval transform, in order, once, padded).
      global_batch_size: examples per step over all hosts; must divide by ``process_count``.
      seed: shuffling and augmentation seed.
      process_index, process_count: this host and the host count (None: from JAX).

    Returns:
      A ``grain.IterDataset``; ``iter(ds)`` gives an iterator with ``get_state`` /
      ``set_state`` whose batches are dicts of NumPy arrays with ``B = global_batch_size //
      process_count`` rows: 'image' float32 [B, S, S, 6] (or 3 channels when
      ``add_inverse`` is off), 'label' int32 [B], 'targets' float32 [B, num_classes],
      'mask' bool [B, S, S] (quickstart only) and, for evaluation, 'valid' bool [B].
    """
    validate(cfg)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} out of range for process_count={process_count}"
        )
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of the process "
            "count "
            f"{process_count} (each host serves global_batch_size // process_count rows)"
        )
    source = sources.open_source(cfg, split)
    n = len(source)
    num_classes = sources.num_classes(cfg)
    quickstart = sources.is_synthetic(cfg)  # synthetic tasks: square images with object masks
    image_key, label_key = get(cfg, "image_key"), get(cfg, "label_key")
    local_batch = global_batch_size // process_count

    if train:
        if n < global_batch_size:
            raise ValueError(
                f"split {split!r} has {n} examples, fewer than one global batch of "
                f"{global_batch_size}"
            )
        transform = ImageTransform(
            get(cfg, "augment"),
            int(get(cfg, "image_size")),
            randaugment_magnitude=int(get(cfg, "randaugment_magnitude")),
            random_erasing=float(get(cfg, "random_erasing")),
            normalize=not get(cfg, "add_inverse"),
        )
        plan = _TrainPlan(n, global_batch_size, process_index, process_count,
                          get(cfg, "repeated_aug"), seed)
        load = _LoadTrain(source, transform, seed, image_key, label_key)
        ds = grain.MapDataset.source(plan).map(load)
        finish = _FinishBatch(
            num_classes, get(cfg, "add_inverse"), get(cfg, "mixup_alpha"), get(cfg, "cutmix_alpha"),
            seed, process_index, global_batch_size,
        )
    else:
        transform = ImageTransform(
            "eval",
            int(get(cfg, "image_size")),
            eval_resize=0 if quickstart else int(get(cfg, "eval_resize")),
            eval_crop=0 if quickstart else int(get(cfg, "eval_crop")),
            output_size=_eval_image_size(cfg),
            normalize=not get(cfg, "add_inverse"),
        )
        plan = _EvalPlan(n, global_batch_size, process_index, process_count)
        load = _LoadEval(source, transform, image_key, label_key, quickstart)
        ds = grain.MapDataset.source(plan).map(load)
        finish = _FinishBatch(num_classes, get(cfg, "add_inverse"))
    # Batch inside the MapDataset, so that worker processes each build whole batches and
    # the batches do not depend on the number of workers.
    ds = ds.batch(local_batch, drop_remainder=True).map(finish)
    threads = int(get(cfg, "num_threads"))
    # grain warns (and will refuse) when fewer batches can be buffered than threads build.
    ids = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=threads,
                          prefetch_buffer_size=max(threads, int(get(cfg, "prefetch"))))
    )
    workers = int(get(cfg, "num_workers"))
    if workers > 0:
        _ensure_absl_flags_parsed()
        options = grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=int(get(cfg, "prefetch"))
        )
        ids = ids.mp_prefetch(options)
    return ids

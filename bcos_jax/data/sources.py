"""Random-access sources: a synthetic task, a folder of images, or a prepared tfds dataset.

``open_source(cfg, split)`` returns an object with ``len(src)`` and ``src[i]`` -> a dict with
the decoded uint8 image under ``cfg.image_key`` and the integer class under ``cfg.label_key``
(plus 'mask' for the synthetic tasks). ``cfg.name``: a key of ``synthetic.TASKS``
('quickstart', 'quickstart2'), ``'folder:PATH'`` (class folders of images, see
``bcos_jax.data.folder``; no TensorFlow), or a tfds name. tfds datasets are read with
``tfds.data_source`` from
ArrayRecord files, which needs Pillow but not TensorFlow; *preparing* them needs TensorFlow
once (``docs/data.md``). A dataset that is not prepared, or prepared as TFRecord, raises a
``DatasetNotPreparedError`` that says how to prepare it.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

from bcos_jax.data import folder, synthetic
from bcos_jax.data.config import get

__all__ = ["DatasetNotPreparedError", "class_names", "is_synthetic", "num_classes", "open_source"]


class DatasetNotPreparedError(FileNotFoundError):
    """The tfds dataset is not prepared (in ArrayRecord format) under the data directory."""


def _prepare_hint(name: str, data_dir: str) -> str:
    base = name.split(":")[0].split("/")[0]
    cmd = f"tfds build {base}" + (f" --data_dir={data_dir}" if data_dir else "")
    cmd += " --file_format=array_record"
    manual = ""
    if base == "imagenet2012":
        cmd += " --manual_dir=DIR"
        manual = (
            "ImageNet cannot be downloaded by tfds: DIR must hold ILSVRC2012_img_train.tar and "
            "ILSVRC2012_img_val.tar from image-net.org. "
        )
    return (
        "Prepare it once, in an environment with TensorFlow (pip install -e '.[prepare]'):\n"
        f"    {cmd}\n"
        f"{manual}Training then reads the ArrayRecord files without TensorFlow. See docs/data.md."
    )


def _tfds_source(name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds

    try:
        # download=False: preparing needs TensorFlow, which training does not have; we want
        # the explanation below rather than a failed attempt to build the dataset.
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # diagnose, then re-raise unchanged if it is something else
        try:
            builder = tfds.builder(name, data_dir=data_dir or None)
            prepared = builder.is_prepared()
            fmt = builder.info.file_format if prepared else None
        except Exception:  # noqa: BLE001 - the diagnosis failed: the original error stands
            raise e from None
        where = builder.data_path
        if not prepared:
            raise DatasetNotPreparedError(
                f"tfds dataset {name!r} is not prepared under {where}.\n"
                + _prepare_hint(name, data_dir)
            ) from e
        if fmt is not None and "array_record" not in str(fmt).lower():
            raise DatasetNotPreparedError(
                f"tfds dataset {name!r} at {where} is prepared as {fmt}, but random access (and "
                "so this pipeline) needs ArrayRecord files. Convert it (with TensorFlow "
                "installed):\n"
                f"    tfds convert_format --dataset_version_dir={where} "
                "--out_file_format=array_record\n"
                "or re-prepare it into another data_dir with file_format=array_record.\n"
                + _prepare_hint(name, data_dir)
            ) from e
        raise


@functools.lru_cache(maxsize=4)
def _quickstart(split: str, size: int, num_classes: int, image_size: int, seed: int,
                task: str = "quickstart"):
    # Rendering a split takes seconds; an evaluation pipeline is rebuilt at every eval.
    return synthetic.QuickstartSource(split, size, num_classes, image_size, seed, task=task)


@functools.lru_cache(maxsize=4)
def _folder(root: str, split: str, train_split: str):
    # Opening a split decodes every image once (the up-front check); evaluation pipelines
    # are rebuilt at every eval and must not pay for it again.
    return folder.FolderSource(root, split, train_split=train_split)


def is_synthetic(cfg: Any) -> bool:
    """A synthetic task (``synthetic.TASKS``): no download, examples carry object masks."""
    return get(cfg, "name") in synthetic.TASKS


def _synthetic_classes(cfg: Any) -> int:
    name = get(cfg, "name")
    n = int(get(cfg, "num_classes"))
    return n or len(synthetic.get_task(name).class_names)  # 0: all classes of the task


def open_source(cfg: Any, split: str):
    """The random-access source of ``split`` of the dataset ``cfg.name``."""
    name = get(cfg, "name")
    if is_synthetic(cfg):
        size = int(get(cfg, "num_train") if split == "train" else get(cfg, "num_eval"))
        classes, image_size = _synthetic_classes(cfg), int(get(cfg, "image_size"))
        return _quickstart(split, size, classes, image_size, int(get(cfg, "synthetic_seed")), name)
    if folder.is_folder(name):
        return _folder(folder.folder_root(name), split, get(cfg, "train_split"))
    return _tfds_source(name, split, get(cfg, "data_dir"))


def class_names(cfg: Any) -> Optional[Tuple[str, ...]]:
    """The class names, label order (None where a tfds dataset's label has no names)."""
    name = get(cfg, "name")
    if is_synthetic(cfg):
        return tuple(synthetic.get_task(name).class_names[: _synthetic_classes(cfg)])
    if folder.is_folder(name):
        return folder.class_names(folder.folder_root(name), get(cfg, "train_split"))
    feature = _tfds_label_feature(cfg)
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def num_classes(cfg: Any) -> int:
    """Number of classes: of the synthetic task or the folder dataset, else from tfds metadata."""
    name = get(cfg, "name")
    if is_synthetic(cfg):
        return _synthetic_classes(cfg)
    if folder.is_folder(name):
        return len(folder.class_names(folder.folder_root(name), get(cfg, "train_split")))
    return int(_tfds_label_feature(cfg).num_classes)


def _tfds_label_feature(cfg: Any):
    import tensorflow_datasets as tfds

    name = get(cfg, "name")

    builder = tfds.builder(name, data_dir=get(cfg, "data_dir") or None)
    key = get(cfg, "label_key")
    feature = builder.info.features[key] if key in builder.info.features else None
    if feature is None or not hasattr(feature, "num_classes"):
        raise ValueError(
            f"tfds dataset {name!r} has no ClassLabel feature {key!r} (features: "
            f"{list(builder.info.features)}); set data.label_key"
        )
    return feature

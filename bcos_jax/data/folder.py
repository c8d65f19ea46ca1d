"""Own data without a dataset builder: a directory of class folders of images (ImageFolder).

    PATH/
      train/  cat/001.jpg  cat/002.png ...  dog/...   <- data.train_split ('train')
      val/    cat/...      dog/...                    <- data.eval_split ('validation'/'test': val/)

``--config.data.name=folder:PATH`` reads it through the same grain pipeline and
augmentations as the tfds datasets, without TensorFlow. The classes are the sub-folders of
``train/``, sorted by name (label ``k`` = the k-th name, as torchvision's ``ImageFolder``);
an evaluation split may lack classes but may not add any. Files are images by extension
(``IMAGE_EXTENSIONS``, case-insensitive); hidden files and other extensions (``README``,
``.DS_Store``) are not examples, as in ``ImageFolder``.

Unreadable images: every image of a split is decoded once when the split is opened (in a
thread pool; a few ms per photo per core, measured in docs/finetuning.md), *before*
training starts. If any fails, ``UnreadableImagesError`` lists their
paths and the reason and nothing is trained: a bad file is never dropped silently, and a
run never dies halfway through an epoch on one. Remove or repair the files and rerun. (A
file that breaks *after* the check, during the run, stops the run with its path.) For
datasets too large to decode twice, prepare a tfds ArrayRecord dataset instead
(``docs/data.md``).

``FolderSource(root, split)``: ``len(src)``, ``src[i]`` -> ``{'image': uint8 [H, W, 3],
'label': int}`` (RGB; greyscale, palette and RGBA files are converted as PIL's
``convert('RGB')`` does), ``src.classes`` the class names.
"""
from __future__ import annotations

import concurrent.futures
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREFIX",
    "FolderSource",
    "UnreadableImagesError",
    "class_names",
    "folder_root",
    "is_folder",
]

PREFIX = "folder:"
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp",
)
# Split names configs written for tfds use, and the folder each may be stored as.
_SPLIT_ALIASES = {"validation": ("val", "valid"), "val": ("validation", "valid"), "test": ("val",)}
_MAX_LISTED = 50


class UnreadableImagesError(ValueError):
    """Images of a folder dataset that cannot be decoded; ``.bad`` is [(path, reason), ...]."""

    def __init__(self, split_dir: str, bad: Sequence[Tuple[str, str]], total: int):
        self.bad = list(bad)
        lines = [f"{len(self.bad)} of {total} images under {split_dir} cannot be read:"]
        lines += [f"  {p}: {why}" for p, why in self.bad[:_MAX_LISTED]]
        if len(self.bad) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.bad) - _MAX_LISTED} more")
        lines.append("Remove or repair them, then rerun; nothing was trained.")
        super().__init__("\n".join(lines))


def is_folder(name: str) -> bool:
    return str(name).startswith(PREFIX)


def folder_root(name: str) -> str:
    """``'folder:PATH'`` -> the absolute PATH (which must be a directory)."""
    if not is_folder(name):
        raise ValueError(f"data.name={name!r} is not a folder dataset ('{PREFIX}PATH')")
    root = os.path.abspath(os.path.expanduser(name[len(PREFIX):]))
    if not name[len(PREFIX):]:
        raise ValueError(f"data.name={name!r}: give the directory, '{PREFIX}/path/to/data'")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"data.name={name!r}: no directory {root} (expected {root}/train/<class>/<images> "
            f"and {root}/val/<class>/<images>)"
        )
    return root


def _visible_dirs(path: str) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def split_dir(root: str, split: str) -> str:
    """The folder holding ``split`` (``'validation'`` may be stored as ``val/``)."""
    if "[" in split:
        raise ValueError(
            f"split {split!r}: slicing is a tfds feature; a folder dataset's splits are its "
            f"sub-folders ({_visible_dirs(root)} in {root})"
        )
    for name in (split,) + _SPLIT_ALIASES.get(split, ()):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"folder dataset {root} has no split {split!r} (looked for "
        f"{[split, *_SPLIT_ALIASES.get(split, ())]}); its sub-folders: {_visible_dirs(root)}"
    )


def class_names(root: str, train_split: str = "train") -> Tuple[str, ...]:
    """The class names: the sub-folders of the training split, sorted."""
    path = split_dir(root, train_split)
    names = tuple(_visible_dirs(path))
    if len(names) < 2:
        raise ValueError(
            f"folder dataset {path} has {len(names)} class folder(s) {list(names)}; a classifier "
            "needs at least 2 (one sub-folder of images per class)"
        )
    return names


def _list_images(path: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [
            os.path.join(dirpath, f) for f in sorted(filenames)
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return out


def decode(path: str) -> np.ndarray:
    """The RGB image at ``path``: uint8 [H, W, 3]."""
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decodes every pixel: a truncated file fails here, not later
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, np.uint8)


def _check(path: str) -> str:
    """'' if ``path`` decodes to a non-empty image, else the reason."""
    try:
        a = decode(path)
    except Exception as e:  # noqa: BLE001 - any failure to decode is reported with its path
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        return f"empty image of shape {a.shape}"
    return ""


class FolderSource:
    """Random-access source of one split of a folder dataset (grain ``RandomAccessDataSource``).

    Args:
      root: the dataset directory (holding ``train/``, ``val/``, ...).
      split: the split's folder name (``'validation'`` also finds ``val/``).
      classes: the class names (default: ``class_names(root)``, those of ``train/``).
      verify: decode every image now and raise ``UnreadableImagesError`` listing the bad ones.
      num_threads: threads for the verification (0: up to 8, one per core).
      train_split: the split whose class folders name the classes (and must all hold images).
    """

    def __init__(self, root: str, split: str, classes: Sequence[str] = (), verify: bool = True,
                 num_threads: int = 0, train_split: str = "train"):
        self.root, self.split = os.path.abspath(root), split
        self.classes = tuple(classes) or class_names(self.root, train_split)
        self.directory = split_dir(self.root, split)
        present = _visible_dirs(self.directory)
        extra = sorted(set(present) - set(self.classes))
        if extra:
            raise ValueError(
                f"{self.directory} has class folders {extra} that the training split does not "
                f"have; classes (from train/): {list(self.classes)}"
            )
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            folder = os.path.join(self.directory, name)
            if not os.path.isdir(folder):
                continue  # an eval split may lack a class
            found = _list_images(folder)
            paths += found
            labels += [label] * len(found)
        if not paths:
            raise ValueError(
                f"{self.directory} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)}) "
                f"in its class folders {present}"
            )
        if self.directory == split_dir(self.root, train_split):
            counts = np.bincount(labels, minlength=len(self.classes))
            empty = [c for c, n in zip(self.classes, counts) if n == 0]
            if empty:
                raise ValueError(f"class folder(s) {empty} of {self.directory} hold no images")
        self.paths: Tuple[str, ...] = tuple(paths)
        self.labels = np.asarray(labels, np.int64)
        if verify:
            self.verify(num_threads)

    def verify(self, num_threads: int = 0) -> None:
        """Decode every image; raise ``UnreadableImagesError`` listing those that fail."""
        threads = num_threads or min(8, os.cpu_count() or 1)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            reasons = list(pool.map(_check, self.paths, chunksize=64))
        bad = [(p, why) for p, why in zip(self.paths, reasons) if why]
        if bad:
            raise UnreadableImagesError(self.directory, bad, len(self.paths))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        index = int(index)
        path = self.paths[index]
        try:
            image = decode(path)
        except Exception as e:  # changed since verify(): stop with the path, not a bare trace
            why = f"{type(e).__name__}: {e}"
            raise UnreadableImagesError(self.directory, [(path, why)], 1) from e
        return {"image": image, "label": self.labels[index]}

    def __repr__(self) -> str:
        return (f"FolderSource(root={self.root!r}, split={self.split!r}, {len(self)} images, "
                f"{len(self.classes)} classes)")

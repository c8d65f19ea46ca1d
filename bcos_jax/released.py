"""``pretrained(name)``: a zoo model with its released weights, downloaded and converted once.

``bcos_jax.pretrained`` is this module's ``pretrained``.

The first call downloads the released PyTorch file (``bcos_jax.download.fetch``: cache,
progress bar, atomic, SHA-256 prefix check), reads it without PyTorch
(``bcos_jax.torch_file``), converts it (``bcos_jax.convert.from_torch``) and saves the
result as a model directory (``bcos_jax.hub.save_model``: orbax arrays + ``model.json``,
no pickle) under ``<cache>/converted/<name>-<weights file stem>/``. Every later call reads
that directory: no network, no PyTorch, no conversion.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, List, Tuple

__all__ = ["CONVERTED_SUBDIR", "converted_dir", "pretrained", "pretrained_models"]

CONVERTED_SUBDIR = "converted"


def pretrained_models() -> List[str]:
    """The zoo models whose official weights ``pretrained`` can fetch (a ``weights_url``
    linking the file itself), sorted."""
    from bcos_jax import download, models

    return [n for n in models.list_models()
            if models.get_spec(n).weights_url
            and download.is_file_url(models.get_spec(n).weights_url)]


def _weights_url(name: str) -> str:
    from bcos_jax import download, models

    url = models.get_spec(name).weights_url  # unknown names: a ValueError with suggestions
    if not url:
        raise ValueError(
            f"model {name!r} has no released weights; the models with official weights are: "
            + ", ".join(pretrained_models()))
    if not download.is_file_url(url):
        raise ValueError(
            f"the weights of {name!r} are published on a page ({url}), not as a file this "
            "package can fetch: download the file from there and convert it with "
            f"`bcos-jax convert --model {name} --weights FILE --out DIR`")
    return url


def converted_dir(name: str) -> str:
    """The model directory the converted weights of ``name`` are cached in."""
    from bcos_jax import download

    stem = os.path.splitext(download.file_name(_weights_url(name)))[0]
    return os.path.join(download.cache_dir(), CONVERTED_SUBDIR, f"{name}-{stem}")


def _is_complete(directory: str) -> bool:
    from bcos_jax import hub

    return (os.path.isfile(os.path.join(directory, hub.MODEL_JSON))
            and os.path.isdir(os.path.join(directory, hub.VARIABLES_SUBDIR)))


def _convert(name: str, directory: str, progress: bool) -> None:
    """Download, read, convert and save into ``directory`` (atomically: tmp dir + rename)."""
    from bcos_jax import convert, download, hub

    path = download.fetch(_weights_url(name), progress=progress)
    state_dict = convert.load_torch_checkpoint(path)
    try:
        variables = convert.from_torch(name, state_dict)
    except convert.ConversionError as e:
        raise convert.ConversionError(
            f"{name} (from {path})", e.missing, e.unexpected, e.misshaped) from e
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(directory)}.", suffix=".part")
    try:
        hub.save_model(tmp, name, None, variables)
        if os.path.isdir(directory) and not _is_complete(directory):
            shutil.rmtree(directory)  # left by a process killed in an older version's write
        try:
            os.rename(tmp, directory)
        except OSError:
            if not _is_complete(directory):  # not another process finishing first: a real error
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def pretrained(name: str, *, progress: bool = True, **overrides: Any) -> Tuple[Any, Any]:
    """``(model, variables)`` of zoo model ``name`` with its official weights.

    The same pair ``bcos_jax.load_checkpoint`` returns: ``model.apply(variables, x)`` with x
    an NHWC batch ``[N, S, S, 6]`` (``bcos_jax.add_inverse`` of images in [0, 1]; S =
    ``models.get_spec(name).input_size``).

    Args:
      name: a zoo model with a ``weights_url`` (``pretrained_models()`` lists them).
      progress: show a progress bar while downloading.
      **overrides: for ``models.create`` (e.g. ``dtype=jnp.bfloat16``); one that changes a
        parameter's shape (``num_classes``) is a ValueError — the weights fix the shapes.

    The cache is ``$BCOS_JAX_HOME`` (default ``~/.cache/bcos_jax``); the download comes
    from ``$BCOS_JAX_WEIGHTS_URL/<file>`` when that is set (``bcos_jax.download``).
    """
    from bcos_jax import hub

    directory = converted_dir(name)
    if not _is_complete(directory):
        _convert(name, directory, progress)
    return hub.load_checkpoint(directory, **overrides)

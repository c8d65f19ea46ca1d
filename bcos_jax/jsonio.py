"""JSON files of the project: one conversion to plain JSON values, one atomic writer.

Every ``summary.json``, ``model.json`` and per-image record goes through ``write_json``, so
they all read the same way: NumPy and JAX scalars and arrays become numbers and lists,
mapping keys become strings, and a non-finite float (NaN, +-inf) becomes ``null`` — strict
JSON has no NaN, and ``null`` reads back as "no value" in every JSON reader.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["to_jsonable", "write_json"]


def to_jsonable(obj: Any, _where: str = "$") -> Any:
    """``obj`` as plain JSON values (dict, list, str, int, float, bool, None).

    Mappings (keys as ``str``), lists and tuples recurse; NumPy/JAX scalars and arrays become
    Python numbers / nested lists; NaN and +-inf become None. Anything else raises a
    TypeError naming where in ``obj`` it sits (e.g. ``$.methods.bcos``).
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic) or (hasattr(obj, "__array__") and hasattr(obj, "dtype")):
        a = np.asarray(obj)
        if a.dtype.kind in "biuf":  # bool, int, uint, float: tolist() gives Python values
            return to_jsonable(a.tolist(), _where)
    raise TypeError(f"{_where}: a {type(obj).__name__} is not JSON-serialisable ({obj!r:.80})")


def write_json(path: str, obj: Any, indent: int = 2) -> str:
    """Write ``to_jsonable(obj)`` to ``path`` atomically; returns ``path``.

    The text goes to a temporary file beside ``path``, is flushed to disk, and replaces
    ``path`` in one rename: a reader sees the old file or the new one, never half of one.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path

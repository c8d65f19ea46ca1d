"""Read PyTorch checkpoint files (``torch.save``) without PyTorch, refusing anything but weights.

``load(path)`` returns the saved object with every tensor as a NumPy array, bitwise what
``torch.load(path, weights_only=True)`` gives (``.numpy()`` of each tensor; bfloat16 and
float8 as ``ml_dtypes`` arrays). Two container formats are read:

* the zip format (``torch.save`` since PyTorch 1.6): ``<prefix>/data.pkl`` is the pickled
  object, each storage is the raw record ``<prefix>/data/<key>``, ``<prefix>/byteorder``
  says ``little`` or ``big`` (absent: little);
* the legacy format (PyTorch < 1.6, and ``_use_new_zipfile_serialization=False``): pickled
  magic number, protocol version and system info, the pickled object, the pickled list of
  storage keys, then per key an int64 element count and the raw bytes. The official v1 B-cos
  weights were saved by PyTorch 1.3 (moboehle/B-cos: requirements.txt), i.e. in this format.
  A zip holding one legacy file (torch.hub's old ``.zip`` downloads) is read too.

The unpickler is an allow-list: plain containers (dict, ``OrderedDict``, list, tuple, set),
str/bytes/numbers/bool/None, and tensors — ``torch._utils._rebuild_tensor{,_v2,_v3}``,
``_rebuild_parameter{,_with_state}``, ``torch._tensor._rebuild_from_type_v2`` for
``torch.Tensor``/``Parameter``, the storage classes (through ``persistent_load``), dtypes
(read as ``np.dtype``), ``torch.Size`` (a tuple) and ``torch.device`` (a string such as
'cuda:0') — what a Lightning checkpoint keeps beside the weights (optimiser and scheduler
states, plain hyper-parameters) reads too. Any other global (a class, a function, ``builtins.eval``,
TorchScript's ``__torch__`` ...) raises ``UnsafeCheckpointError`` naming it before anything
is called. The pre-2017 tar format is not read (``UnsupportedFormatError``).
"""
from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Dict, Tuple

import ml_dtypes
import numpy as np

__all__ = ["UnsafeCheckpointError", "UnsupportedFormatError", "load"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"

_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),  # bytes; the tensor (v3) carries its dtype
}

_DTYPES = {
    "float64": np.float64, "double": np.float64, "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "cfloat": np.complex64, "complex128": np.complex128,
    "cdouble": np.complex128, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2, "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
}


class UnsafeCheckpointError(ValueError):
    """The file's pickle asks for something other than tensors and plain containers."""


class UnsupportedFormatError(ValueError):
    """Not a format this reader knows (the caller may fall back to ``torch.load``)."""


class _Marker:
    """A value standing for a torch global; it cannot be called or have state set."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Any):
        self.kind, self.value = kind, value

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"state given to torch global {self.value!r}")


class _Storage:
    """One storage: dtype, byte size, byte order and (once read) its bytes."""

    __slots__ = ("key", "dtype", "nbytes", "big", "raw", "users")

    def __init__(self, key: str, dtype: np.dtype, nbytes: int, big: bool):
        self.key, self.dtype, self.nbytes, self.big, self.raw = key, dtype, nbytes, big, None
        self.users = 0  # tensors built on this storage

    def __setstate__(self, state):
        raise pickle.UnpicklingError("state given to a storage")


class _TensorRef:
    """A tensor whose storage bytes may arrive after the pickle (legacy format)."""

    __slots__ = ("storage", "offset", "shape", "strides", "dtype")

    def __init__(self, storage, offset, shape, strides, dtype):
        self.storage, self.offset, self.shape, self.strides, self.dtype = (
            storage, offset, shape, strides, dtype)

    def __setstate__(self, state):
        raise pickle.UnpicklingError("state given to a tensor")


def _int_tuple(v: Any, what: str) -> Tuple[int, ...]:
    if isinstance(v, _Marker) and v.kind == "size":  # torch.Size(...)
        v = v.value
    if not isinstance(v, (tuple, list)) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v
    ):
        raise pickle.UnpicklingError(f"tensor {what} must be non-negative ints, got {v!r}")
    return tuple(v)


def _rebuild_tensor(storage, offset, size, stride, *rest, dtype=None) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(f"a tensor needs a storage, got {type(storage).__name__}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset must be an int >= 0, got {offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(f"tensor size {shape} and stride {strides} differ in rank")
    storage.users += 1
    return _TensorRef(storage, offset, shape, strides, dtype or storage.dtype)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *meta):
    if not (isinstance(dtype, _Marker) and dtype.kind == "dtype"):
        raise pickle.UnpicklingError(f"_rebuild_tensor_v3 needs a dtype, got {dtype!r}")
    return _rebuild_tensor(storage, offset, size, stride, dtype=np.dtype(dtype.value))


def _rebuild_parameter(data, requires_grad, hooks, *state):
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"a Parameter needs a tensor, got {type(data).__name__}")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if not (isinstance(new_type, _Marker) and new_type.kind == "tensor_type"):
        raise pickle.UnpicklingError(f"tensor subclass {new_type!r} is not a plain tensor")
    if not callable(func) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("malformed _rebuild_from_type_v2")
    return func(*args)  # func came through find_class: one of the rebuild functions above


def _bytes_from_latin1(text, encoding="latin1"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only accepted for latin1 bytes")
    return text.encode("latin1")


def _bytearray(*args):
    # bytearray(n) would allocate n bytes on the pickle's say-so: only the forms pickle
    # writes are accepted, (bytes,) and, in protocol 2, (str, 'latin-1').
    if args == () or (len(args) == 1 and isinstance(args[0], bytes)):
        return bytearray(*args)
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin-1", "latin1"):
        return bytearray(args[0], "latin-1")
    raise pickle.UnpicklingError("bytearray is only accepted from bytes or a latin-1 str")


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    g: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): _bytearray,
        ("_codecs", "encode"): _bytes_from_latin1,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Size"): lambda *a: _Marker("size", tuple(*a)),
        ("torch", "device"): lambda *a: ":".join(str(x) for x in a),
        ("torch", "Tensor"): _Marker("tensor_type", "torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _Marker("tensor_type", "Parameter"),
    }
    for name, dt in _STORAGE_DTYPES.items():
        g[("torch", name)] = _Marker("storage", dt)
    g[("torch.storage", "UntypedStorage")] = _Marker("storage", np.dtype(np.uint8))
    for name, dt in _DTYPES.items():
        g[("torch", name)] = _Marker("dtype", np.dtype(dt))
    return g


_ALLOWED = _allowed_globals()


class _Unpickler(pickle.Unpickler):
    """pickle with an allow-list of globals and torch's persistent storage ids."""

    def __init__(self, file: BinaryIO, storage_reader: Callable[[str, np.dtype, int, Any], Any]):
        super().__init__(file, encoding="utf-8")
        self._storage_reader = storage_reader

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 (torch.save's) writes Python 2 names such as __builtin__.set.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            hint = ""
            if module.startswith("__torch__"):
                hint = " (a TorchScript archive: torch.jit.save, not a state_dict)"
            raise UnsafeCheckpointError(
                f"the pickle asks for the global {module}.{name}, which is not a tensor or a "
                f"plain container{hint}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise UnsafeCheckpointError(
                "the file pickles a whole nn.Module (torch.save(model)), not a state_dict")
        if kind != "storage" or len(pid) not in (5, 6):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not (isinstance(storage_type, _Marker) and storage_type.kind == "storage"):
            raise pickle.UnpicklingError(f"storage type {storage_type!r} is not a storage class")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"storage size {numel!r} is not an int >= 0")
        return self._storage_reader(str(key), storage_type.value, numel, view)


def _materialize(ref: _TensorRef) -> np.ndarray:
    st, dtype = ref.storage, ref.dtype
    if st.raw is None:
        raise ValueError(f"storage {st.key!r} has no data in the file (truncated?)")
    if len(st.raw) % dtype.itemsize:
        raise ValueError(f"storage {st.key!r}: {len(st.raw)} bytes are not {dtype} items")
    buf = np.frombuffer(st.raw, dtype.newbyteorder(">" if st.big else "<"))
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
    if last >= buf.size:
        raise ValueError(
            f"a tensor of shape {ref.shape}, stride {ref.strides} at offset {ref.offset} reaches "
            f"past the end of its storage {st.key!r} ({buf.size} items): corrupt file")
    if ref.strides == _contiguous_strides(ref.shape) and buf.dtype.isnative:
        # The common case (every tensor of a state_dict): a plain block of its own storage
        # is returned as a view of the bytes read (writeable, nothing else refers to them).
        n = int(np.prod(ref.shape))
        block = buf[ref.offset:ref.offset + n].reshape(ref.shape)
        return block if st.users == 1 and isinstance(st.raw, bytearray) else block.copy()
    view = np.lib.stride_tricks.as_strided(
        buf[ref.offset:], shape=ref.shape,
        strides=[s * buf.itemsize for s in ref.strides], writeable=False)
    # A copy: contiguous, native byte order, writeable, and not tied to the file's buffer.
    return np.array(view, dtype=dtype, order="C")


def _contiguous_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """torch's strides of a C-contiguous tensor of ``shape`` (in items)."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def _finish(obj: Any) -> Any:
    """Replace every tensor reference by its array (containers are rebuilt, cycles kept)."""
    memo: Dict[int, Any] = {}

    def walk(o: Any) -> Any:
        if isinstance(o, _TensorRef):
            return _materialize(o)
        if isinstance(o, _Marker) and o.kind == "dtype":  # e.g. a hyper-parameter
            return o.value
        if isinstance(o, _Marker) and o.kind == "size":
            return o.value
        if isinstance(o, (_Storage, _Marker)):
            raise ValueError(f"a bare torch object ({type(o).__name__}) outside a tensor")
        if id(o) in memo:
            return memo[id(o)]
        if isinstance(o, dict):
            memo[id(o)] = o
            for k in list(o):
                o[k] = walk(o[k])
            return o
        if isinstance(o, list):
            memo[id(o)] = o
            o[:] = [walk(v) for v in o]
            return o
        if isinstance(o, (tuple, set, frozenset)):
            new = type(o)(walk(v) for v in o)
            memo[id(o)] = new
            return new
        return o

    try:
        return walk(obj)
    except RecursionError:
        raise ValueError("the pickled object is nested too deeply") from None


def _load_zip(zf: zipfile.ZipFile, path: str) -> Any:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        if len(names) == 1 and not names[0].endswith("/"):  # torch.hub's zip of one legacy file
            return _load_legacy(io.BytesIO(zf.read(names[0])), path)
        raise ValueError(
            f"{path}: a zip archive without exactly one '<prefix>/data.pkl' (found {pkls[:3]}); "
            "not a torch.save file")
    prefix = pkls[0][: -len("data.pkl")]
    big = False
    if prefix + "byteorder" in names:
        order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise ValueError(f"{path}: unknown byteorder record {order!r}")
        big = order == "big"
    storages: Dict[str, _Storage] = {}

    def read_storage(key: str, dtype: np.dtype, numel: int, view: Any) -> _Storage:
        if view is not None:
            raise pickle.UnpicklingError("storage views do not exist in the zip format")
        if key not in storages:
            record = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(record)
            except KeyError:
                raise ValueError(f"{path}: storage record {record!r} is missing") from None
            st = _Storage(key, dtype, numel * dtype.itemsize, big)
            if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1100 * max(
                    info.compress_size, 1):  # beyond deflate's ratio: a zip bomb
                raise ValueError(f"{path}: record {record!r} claims {info.file_size} bytes "
                                 f"from {info.compress_size}")
            if info.file_size != st.nbytes:
                raise ValueError(f"{path}: storage {record!r} holds {info.file_size} bytes, "
                                 f"the pickle expects {st.nbytes}")
            st.raw = bytearray(zf.read(record))  # CRC-checked by zipfile
            storages[key] = st
        elif storages[key].dtype != dtype:
            raise pickle.UnpicklingError(f"storage {key!r} read as two dtypes")
        return storages[key]

    with zf.open(pkls[0]) as f:
        obj = _Unpickler(io.BytesIO(f.read()), read_storage).load()
    return _finish(obj)


def _legacy_header(f: BinaryIO, path: str) -> bool:
    """Read magic number, protocol and system info; True if the data is big-endian."""
    def plain(what):
        try:
            return _Unpickler(f, _no_storages).load()
        except ValueError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: not a PyTorch file ({what}: {e})") from e

    magic = plain("magic number")
    if magic != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a PyTorch file (no torch.save magic number)")
    protocol = plain("protocol version")
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"{path}: legacy torch.save protocol version {protocol!r} unknown")
    info = plain("system info")
    return isinstance(info, dict) and info.get("little_endian") is False


def _no_storages(*_):
    raise pickle.UnpicklingError("a storage in a header record")


def _load_legacy(f: BinaryIO, path: str) -> Any:
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    big = _legacy_header(f, path)
    roots: Dict[str, _Storage] = {}
    views: Dict[str, Tuple[str, int, int]] = {}
    view_storages: Dict[str, _Storage] = {}

    def read_storage(key: str, dtype: np.dtype, numel: int, view: Any) -> _Storage:
        if key not in roots:
            roots[key] = _Storage(key, dtype, numel * dtype.itemsize, big)
        root = roots[key]
        if view is None:
            return root
        view_key, offset, size = view
        vkey = str(view_key)
        if vkey not in view_storages:
            if not (isinstance(offset, int) and isinstance(size, int) and offset >= 0 <= size):
                raise pickle.UnpicklingError(f"storage view {view!r}")
            view_storages[vkey] = _Storage(vkey, dtype, size * dtype.itemsize, big)
            views[vkey] = (key, offset, size)
        return view_storages[vkey]

    obj = _Unpickler(f, read_storage).load()
    keys = _Unpickler(f, _no_storages).load()
    if not isinstance(keys, list):
        raise ValueError(f"{path}: the storage key list is a {type(keys).__name__}")
    for key in keys:
        st = roots.get(str(key))
        if st is None:
            raise ValueError(f"{path}: storage {key!r} is listed but never used")
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: truncated before storage {key!r}")
        (numel,) = struct.unpack(">q" if big else "<q", head)
        if numel * st.dtype.itemsize != st.nbytes:
            raise ValueError(f"{path}: storage {key!r} holds {numel} items, the pickle expects "
                             f"{st.nbytes // max(st.dtype.itemsize, 1)}")
        if st.nbytes > size - f.tell():  # checked before allocating what the pickle claims
            raise ValueError(f"{path}: truncated in storage {key!r} ({st.nbytes} bytes claimed, "
                             f"{size - f.tell()} left in the file)")
        raw = bytearray(st.nbytes)
        if f.readinto(raw) != st.nbytes:
            raise ValueError(f"{path}: truncated in storage {key!r}")
        st.raw = raw
    for vkey, (root_key, offset, size) in views.items():
        root, isz = roots[root_key], roots[root_key].dtype.itemsize
        if root.raw is not None:
            if (offset + size) * isz > len(root.raw):
                raise ValueError(f"{path}: storage view {vkey!r} reaches past its root's end")
            view_storages[vkey].raw = memoryview(root.raw)[offset * isz:(offset + size) * isz]
    return _finish(obj)


def load(path: str) -> Any:
    """The object ``torch.save`` wrote to ``path``, tensors as NumPy arrays.

    Raises:
      FileNotFoundError: no file at ``path``.
      UnsafeCheckpointError: the pickle needs a global beyond tensors and plain containers
        (named in the message); nothing was called.
      UnsupportedFormatError: not a zip or legacy ``torch.save`` file (e.g. the pre-2017
        tar format).
      ValueError: a corrupt or truncated file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        try:
            if head == _ZIP_MAGIC:
                try:
                    zf = zipfile.ZipFile(f)
                except zipfile.BadZipFile as e:
                    raise ValueError(f"{path}: a damaged zip archive ({e})") from e
                with zf:
                    return _load_zip(zf, path)
            import tarfile

            if tarfile.is_tarfile(path):
                raise UnsupportedFormatError(f"{path}: the pre-2017 tar format of torch.save")
            return _load_legacy(f, path)
        except (UnsafeCheckpointError, UnsupportedFormatError):
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
                TypeError, AttributeError) as e:
            raise ValueError(f"{path}: a corrupt or truncated PyTorch file ({e})") from e

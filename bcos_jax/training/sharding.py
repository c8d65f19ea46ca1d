"""Device mesh, parameter sharding rules and global batches (jit + NamedSharding; no pmap).

The mesh has two axes, ``data`` (pure data parallelism: parameters replicated) and ``fsdp``
(data parallelism with parameters, gradients and optimiser state sharded). The batch is
sharded over both. ``config.mesh`` gives the in-slice (ICI) size of each axis (-1: all the
remaining devices) and ``config.dcn_mesh`` the cross-slice (DCN) sizes for multi-slice
pods; both use ``AxisType.Auto`` so GSPMD propagates shardings through convolutions.

Parameters are sharded by regex rules on their '/'-joined path (``config.sharding_rules``,
a list of ``(regex, 'fsdp' | 'replicate')``, first match wins, default replicate): 'fsdp'
shards the largest axis divisible by the ``fsdp`` size (leaves smaller than
``fsdp_min_size`` elements stay replicated). The same rules apply to the optimiser state
and the EMA, whose paths end in the parameter's path.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "BATCH_AXES",
    "check_batch_size",
    "initialize_distributed",
    "make_global_batch",
    "make_mesh",
    "path_name",
    "state_shardings",
]

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch is split over every device


def initialize_distributed(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None, force: bool = False) -> None:
    """``jax.distributed.initialize`` when this is a multi-process run.

    Explicit arguments (flags) win; ``BCOS_COORDINATOR``, ``BCOS_NUM_PROCESSES``,
    ``BCOS_PROCESS_ID`` (env) configure a manual cluster (e.g. several processes on one
    machine, with gloo collectives on CPUs). ``force`` (``--distributed``) initialises with
    JAX's auto-detection (TPU pods, SLURM, ...); so does a multi-host ``TPU_WORKER_HOSTNAMES``
    or a ``MEGASCALE_COORDINATOR_ADDRESS`` (multi-slice) in the environment.
    """
    coordinator = coordinator or os.environ.get("BCOS_COORDINATOR")
    if num_processes is None and "BCOS_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["BCOS_NUM_PROCESSES"])
    if process_id is None and "BCOS_PROCESS_ID" in os.environ:
        process_id = int(os.environ["BCOS_PROCESS_ID"])
    if coordinator or (num_processes or 1) > 1:
        # Collectives between processes on CPU devices (harmless for accelerator runs).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes, process_id)
    elif (force or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
          or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")):
        jax.distributed.initialize()  # multi-host TPU / cluster: everything auto-detected


def _resolve(sizes: Dict[str, int], n: int, what: str) -> Tuple[int, ...]:
    shape = [int(sizes.get(a, 1)) for a in AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"{what}: at most one axis may be -1, got {dict(zip(AXES, shape))}")
    if -1 in shape:
        rest = int(np.prod([s for s in shape if s != -1]))
        if n % rest:
            raise ValueError(f"{what}: {n} devices are not divisible by {rest}")
        shape[shape.index(-1)] = n // rest
    if int(np.prod(shape)) != n:
        raise ValueError(f"{what}: mesh {dict(zip(AXES, shape))} needs {int(np.prod(shape))} "
                         f"devices, have {n}")
    return tuple(shape)


def make_mesh(mesh_cfg: Any, dcn_cfg: Any = None, devices: Optional[Sequence[Any]] = None) -> Mesh:
    """Mesh with axes ('data', 'fsdp') and ``AxisType.Auto``.

    ``mesh_cfg`` ({'data': -1, 'fsdp': 1}) sizes the axes within a slice, ``dcn_cfg`` across
    slices (its product must equal the number of slices; omit for one slice).
    """
    devices = list(jax.devices() if devices is None else devices)
    dcn = dict(dcn_cfg or {})
    dcn_shape = tuple(int(dcn.get(a, 1)) for a in AXES)
    if min(dcn_shape) < 1:
        raise ValueError(f"dcn_mesh sizes must be explicit positive ints, got {dcn}")
    num_slices = int(np.prod(dcn_shape))
    if len(devices) % num_slices:
        raise ValueError(f"{len(devices)} devices cannot form {num_slices} slices")
    ici_shape = _resolve(dict(mesh_cfg), len(devices) // num_slices, "mesh")
    if num_slices > 1:
        arr = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    else:
        try:
            arr = mesh_utils.create_device_mesh(ici_shape, devices)
        except (AssertionError, NotImplementedError, ValueError):
            arr = np.asarray(devices).reshape(ici_shape)
    return Mesh(arr, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def path_name(path: Tuple[Any, ...]) -> str:
    """'/'-joined names of a pytree key path (dict keys, attribute names, indices)."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _fsdp_spec(shape: Tuple[int, ...], size: int, min_size: int) -> P:
    if size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
        if shape[i] % size == 0:
            return P(*[("fsdp" if j == i else None) for j in range(len(shape))])
    return P()


def state_shardings(abstract: Any, mesh: Mesh, rules: Sequence[Tuple[str, str]] = (),
                    fsdp_min_size: int = 2**14) -> Any:
    """A NamedSharding for every leaf of ``abstract`` (a pytree of arrays/ShapeDtypeStructs)."""
    compiled = [(re.compile(r), kind) for r, kind in rules]
    for _, kind in compiled:
        if kind not in ("fsdp", "replicate"):
            raise ValueError(f"sharding rule kind must be 'fsdp' or 'replicate', got {kind!r}")
    size = mesh.shape["fsdp"]

    def one(path, leaf):
        name = path_name(path)
        kind = next((k for r, k in compiled if r.search(name)), "replicate")
        spec = _fsdp_spec(tuple(leaf.shape), size, fsdp_min_size) if kind == "fsdp" else P()
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, abstract)


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """The per-process batch; a clear error when the global batch does not split evenly."""
    n_dev, n_proc = mesh.size, jax.process_count()
    if global_batch % n_dev:
        raise ValueError(
            f"{what}={global_batch} is not divisible by the number of devices ({n_dev}); "
            f"the global batch is split evenly over all devices: use a multiple of {n_dev}"
        )
    if global_batch % n_proc:
        raise ValueError(
            f"{what}={global_batch} is not divisible by the number of processes ({n_proc})")
    return global_batch // n_proc


def make_global_batch(local: Dict[str, np.ndarray], mesh: Mesh) -> Dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the batch axes (dim 0)."""
    def one(x):
        x = np.asarray(x)
        spec = P(BATCH_AXES, *([None] * (x.ndim - 1)))
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

    return {k: one(v) for k, v in local.items()}

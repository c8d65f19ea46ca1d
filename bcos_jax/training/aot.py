"""Ahead-of-time compilation of the sharded train step for a TPU topology, on any machine.

``python train.py --config ... --aot_topology v5e:4x4`` builds the mesh from the devices of
a *described* TPU slice (``jax.experimental.topologies.get_topology_desc``; needs
``pip install 'jax[tpu]'`` for libtpu, no TPU), lowers and compiles the real train step
with the real shardings, and prints the per-chip memory from ``compiled.memory_analysis()``
(arguments, outputs, temporaries). It fails when the total exceeds the chip's HBM, so a
recipe's global batch and sharding can be checked before a pod is booked.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Sequence, Tuple

__all__ = ["HBM_GIB", "OutOfMemoryError", "check_fits", "compile_and_report", "topology_devices"]

# HBM per TPU device (a v2/v3 chip has two devices of 8/16 GiB; v4 (megacore), v5e, v5p and
# v6e one device per chip).
HBM_GIB = {"v2": 8, "v3": 16, "v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}
GiB = 1024**3


class OutOfMemoryError(RuntimeError):
    """The compiled step needs more memory per chip than the chip has."""


def topology_devices(topology: str, num_slices: int = 1) -> Tuple[Sequence[Any], str]:
    """(devices of the described slice(s), chip name) for e.g. 'v5e:4x4' or 'v4:2x2x2'."""
    try:
        from jax.experimental import topologies
    except ImportError as e:  # pragma: no cover - jax always has it
        raise RuntimeError("jax.experimental.topologies is missing") from e
    import os

    # No TPU here: skip libtpu's metadata-server queries (they time out off GCP) and its
    # one-process-per-host lock (other JAX processes may have loaded libtpu too).
    # Set only while libtpu initialises, so that child processes do not inherit them.
    env = {"TPU_SKIP_MDS_QUERY": "1", "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
           "TPU_WORKER_HOSTNAMES": "localhost"}
    saved = {k: os.environ.get(k) for k in env}
    chip = topology.split(":")[0].lower()
    if chip not in HBM_GIB:
        raise ValueError(
            f"unknown TPU generation {chip!r} in {topology!r}; known: {sorted(HBM_GIB)}")
    try:
        for k, v in env.items():
            os.environ.setdefault(k, v)
        topo = topologies.get_topology_desc(
            platform="tpu", topology_name=topology,
            # v4 VMs run both TensorCores of a chip as one device (megacore), as here.
            chip_config_name="megacore" if chip == "v4" else "default",
            chips_per_host_bounds=(2, 2, 1), num_slices=num_slices)
    except Exception as e:
        raise RuntimeError(
            f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}); AOT compilation "
            "needs libtpu: pip install 'jax[tpu]==0.10.2'") from e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return list(topo.devices), chip


def compile_and_report(jitted: Any, args: Tuple[Any, ...], *, chip: str, topology: str,
                       mesh_shape: Dict[str, int], config_name: str, global_batch: int,
                       hbm_gib: float = None, verbose: bool = True) -> Dict[str, Any]:
    """Lower + compile ``jitted(*args)`` (abstract, sharded args); report per-chip memory."""
    t0 = time.time()
    compiled = jitted.lower(*args).compile()
    seconds = time.time() - t0
    ma = compiled.memory_analysis()
    arg_b = int(ma.argument_size_in_bytes)
    out_b = int(ma.output_size_in_bytes)
    tmp_b = int(ma.temp_size_in_bytes)
    alias_b = int(getattr(ma, "alias_size_in_bytes", 0))  # donated state: counted once
    code_b = int(getattr(ma, "generated_code_size_in_bytes", 0))
    total = arg_b + out_b - alias_b + tmp_b + code_b
    hbm = (hbm_gib or HBM_GIB[chip]) * GiB
    report = {
        "topology": topology, "chips": _prod(mesh_shape.values()),
        "mesh": dict(mesh_shape), "model": config_name, "global_batch": global_batch,
        "arguments_gib": arg_b / GiB, "outputs_gib": out_b / GiB, "aliased_gib": alias_b / GiB,
        "temporaries_gib": tmp_b / GiB, "code_gib": code_b / GiB, "total_gib": total / GiB,
        "hbm_gib": hbm / GiB, "fits": total <= hbm, "compile_seconds": seconds,
    }
    if verbose:
        print(f"AOT {config_name} on {topology} (mesh {dict(mesh_shape)}), global batch "
              f"{global_batch}: compiled in {seconds:.1f} s")
        print(f"  per chip: arguments {report['arguments_gib']:.2f} GiB, outputs "
              f"{report['outputs_gib']:.2f} GiB (aliased with arguments "
              f"{report['aliased_gib']:.2f} GiB), temporaries {report['temporaries_gib']:.2f} "
              f"GiB, code {report['code_gib']:.3f} GiB")
        print(f"  total {report['total_gib']:.2f} GiB of {report['hbm_gib']:.0f} GiB HBM: "
              + ("fits" if report["fits"] else "DOES NOT FIT"), flush=True)
    check_fits(report)
    return report


def check_fits(report: Dict[str, Any]) -> None:
    """Raise ``OutOfMemoryError`` when the report's total exceeds the chip's HBM."""
    if not report["fits"]:
        raise OutOfMemoryError(
            f"{report['model']} at global batch {report['global_batch']} needs "
            f"{report['total_gib']:.2f} GiB per chip on {report['topology']}, more than its "
            f"{report['hbm_gib']:.0f} GiB HBM: use a larger slice, FSDP "
            "(--config.mesh.fsdp=N --config.sharding_rules='((\".*\", \"fsdp\"),)'), bf16 compute, "
            "or gradient accumulation")


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out

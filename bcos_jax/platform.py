"""Backend choice on machines that have libtpu installed but no TPU attached.

The ``tpu`` extra installs libtpu so that training steps can be compiled ahead of time for
TPU topologies on any machine (``bcos_jax.training.aot``). On a machine without a TPU,
JAX still tries to start the TPU runtime on first use, which fails (JAX then falls back to
the CPU) after printing initialisation errors ("could not determine TPU worker
hostnames"). ``skip_absent_tpu`` makes that case quiet by choosing the CPU up front.
"""
from __future__ import annotations

import importlib.util
import os

__all__ = ["skip_absent_tpu"]


def _accelerators_visible() -> bool | None:
    """Whether a TPU chip or a GPU is attached, from the same PCI/device-file probes JAX
    uses for its own backend hints; None if those probes are unavailable."""
    try:
        from jax._src import hardware_utils  # not public API: treated as optional
    except ImportError:
        return None
    try:
        if hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0:
            return True
        if hardware_utils.has_visible_nvidia_gpu():
            return True
        return hardware_utils.num_available_amd_gpus(stop_at=1) > 0
    except Exception:  # noqa: BLE001 - another JAX version's probe: make no decision
        return None


def skip_absent_tpu() -> bool:
    """Restrict JAX to the CPU when libtpu is installed but no TPU (and no GPU) is attached.

    Called by ``import bcos_jax``, before any backend starts. It changes nothing when the
    user chose platforms (``JAX_PLATFORMS`` or ``jax.config.jax_platforms``), when libtpu is
    not installed, when a TPU or GPU is visible, or when the probes are unavailable; where
    it acts, JAX would have ended on the CPU anyway. Returns True if it set the platform.
    """
    if os.environ.get("JAX_PLATFORMS"):
        return False
    if importlib.util.find_spec("libtpu") is None:
        return False
    if _accelerators_visible() is not False:
        return False
    import jax

    if jax.config.jax_platforms:
        return False
    jax.config.update("jax_platforms", "cpu")
    return True

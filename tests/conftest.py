"""Test set-up: 8 fake CPU devices (for sharding tests) before JAX initialises its backend."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402 - XLA_FLAGS must be set before JAX is imported

jax.config.update("jax_threefry_partitionable", True)

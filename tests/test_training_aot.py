"""Ahead-of-time compilation of the sharded train step for a TPU topology (needs libtpu)."""
import pytest
from training_helpers import info, tiny_config, train_module

from bcos_jax.training import aot

NO_LIBTPU = "libtpu is not importable: pip install 'jax[tpu]==0.10.2' (extra 'tpu')"


def _libtpu():
    try:
        import libtpu  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _libtpu(), reason=NO_LIBTPU)
def test_small_model_compiles_for_v5e_2x2():
    cfg = tiny_config(batch_size=32, mesh={"data": 2, "fsdp": 2},
                      sharding_rules=[("kernel", "fsdp")])
    report = train_module().aot_compile(cfg, "v5e:2x2", info=info())
    assert report["chips"] == 4 and report["mesh"] == {"data": 2, "fsdp": 2}
    assert report["fits"] and 0 < report["total_gib"] < 1
    assert report["arguments_gib"] > 0 and report["temporaries_gib"] > 0
    with pytest.raises(aot.OutOfMemoryError, match="more than its"):
        aot.check_fits(dict(report, fits=False))


def test_unknown_generation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown TPU generation"):
        aot.topology_devices("v9z:2x2")


@pytest.mark.skipif(not _libtpu(), reason=NO_LIBTPU)
def test_multislice_mesh_from_topology():
    from bcos_jax.training import sharding

    devices, chip = aot.topology_devices("v5e:2x2", num_slices=2)
    assert chip == "v5e" and len(devices) == 8
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2}, {"data": 2, "fsdp": 1}, devices)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    # Each slice's devices form one half of the data axis (cross-slice traffic only on 'data').
    slices = [[d.slice_index for d in row] for row in mesh.devices]
    assert all(len(set(r)) == 1 for r in slices[:2]) and slices[0][0] != slices[-1][0]

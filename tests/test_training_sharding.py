"""Data-parallel and FSDP training on 8 fake CPU devices equals one device."""
import jax
import numpy as np
import pytest
from training_helpers import build, tiny_config

from bcos_jax.training import sharding


def _batches(n, cfg, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    s = cfg.data.image_size
    out = []
    for _ in range(n):
        x = rng.uniform(size=(cfg.batch_size, s, s, 3)).astype(np.float32)
        labels = rng.integers(0, num_classes, cfg.batch_size)
        out.append({"image": np.concatenate([x, 1 - x], -1),
                    "targets": np.eye(num_classes, dtype=np.float32)[labels]})
    return out


_REF = {}


def _reference(accum):
    if accum not in _REF:
        _REF[accum] = _run(tiny_config(grad_accum_steps=accum), jax.devices()[:1])[:2]
    return _REF[accum]


def _run(cfg, devices, steps=3):
    mesh = sharding.make_mesh(cfg.mesh, cfg.dcn_mesh, devices)
    _, steps_fn = build(cfg, mesh)
    rng = jax.random.key(0)
    state = steps_fn.init(rng)
    losses = []
    for batch in _batches(steps, cfg):
        state, m = steps_fn.train_step(state, sharding.make_global_batch(batch, mesh), rng)
        losses.append(float(m["loss"]))
    return jax.device_get(state), losses, state


@pytest.mark.parametrize("mesh,rules,accum", [
    ({"data": 8, "fsdp": 1}, [(".*", "replicate")], 1),
    ({"data": 1, "fsdp": 8}, [(".*", "fsdp")], 1),
    ({"data": 2, "fsdp": 4}, [("kernel", "fsdp")], 2),
])
def test_sharded_training_equals_one_device(mesh, rules, accum):
    ref, ref_losses = _reference(accum)
    cfg = tiny_config(grad_accum_steps=accum, mesh=mesh, sharding_rules=rules)
    got, losses, live = _run(cfg, jax.devices())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, ref)
    if mesh["fsdp"] > 1:
        specs = [leaf.sharding.spec for leaf in jax.tree.leaves(live.params)]
        assert any("fsdp" in tuple(s) for s in specs), specs  # really sharded
        opt_specs = [leaf.sharding.spec for leaf in jax.tree.leaves(live.opt_state) if leaf.ndim]
        assert any("fsdp" in tuple(s) for s in opt_specs)


def test_batch_not_divisible_is_a_clear_error():
    mesh = sharding.make_mesh({"data": -1}, None, jax.devices())
    with pytest.raises(ValueError, match="not divisible by the number of devices"):
        sharding.check_batch_size(12, mesh)


def test_mesh_sizes():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2}, None, jax.devices())
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.make_mesh({"data": 3, "fsdp": 2}, None, jax.devices())


def test_mixed_precision_keeps_float32_params_and_statistics():
    import jax.numpy as jnp

    ref_losses = _reference(1)[1]
    cfg = tiny_config(compute_dtype="bfloat16")
    got, losses, _ = _run(cfg, jax.devices()[:1])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got.batch_stats))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got.opt_state) if x.ndim)
    np.testing.assert_allclose(losses, ref_losses, rtol=5e-2)  # bf16 compute, same trajectory

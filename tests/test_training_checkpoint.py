"""Checkpoints: restore on another mesh, skip corrupted ones, save_model / load_checkpoint."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from training_helpers import build, tiny_config

import bcos_jax
from bcos_jax import hub
from bcos_jax.training import checkpoint as ckpt_lib
from bcos_jax.training import sharding
from bcos_jax.training.state import TrainState


def _setup(cfg, devices):
    mesh = sharding.make_mesh(cfg.mesh, cfg.dcn_mesh, devices)
    setup, steps = build(cfg, mesh)
    return mesh, setup, steps


def _step(steps, mesh, state, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(16, 16, 16, 3)).astype(np.float32)
    batch = {"image": np.concatenate([x, 1 - x], -1),
             "targets": np.eye(4, dtype=np.float32)[rng.integers(0, 4, 16)]}
    return steps.train_step(state, sharding.make_global_batch(batch, mesh), jax.random.key(0))[0]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A workdir with checkpoints at steps 1 and 2 of an FSDP run on 8 devices."""
    workdir = str(tmp_path_factory.mktemp("run"))
    cfg = tiny_config(mesh={"data": 2, "fsdp": 4}, sharding_rules=[(".*", "fsdp")])
    mesh, setup, steps = _setup(cfg, jax.devices())
    hub.write_model_json(workdir, cfg.model_name, setup.model_overrides)
    ck = ckpt_lib.Checkpointer(workdir, keep=5)
    state = steps.init(jax.random.key(0))
    states = {}
    for step in (1, 2):
        state = _step(steps, mesh, state, step)
        states[step] = jax.device_get(state)
        ck.save(step, state, {"pos": step}, metrics={"val_top1": 50.0 + 10 * (step == 1)})
    ck.close()
    return workdir, states


def test_restore_on_a_different_mesh(saved):
    workdir, states = saved
    cfg = tiny_config(mesh={"data": 2, "fsdp": 1})  # 2 devices, replicated
    _, _, steps = _setup(cfg, jax.devices()[:2])
    ck = ckpt_lib.Checkpointer(workdir)
    step, state, data_state = ck.restore(steps.abstract_state)
    ck.close()
    assert step == 2 and data_state == {"pos": 2}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state, states[2])
    assert isinstance(state, TrainState)
    leaf = jax.tree.leaves(state.params)[0]
    assert leaf.sharding.mesh.size == 2 and leaf.sharding.spec == jax.sharding.PartitionSpec()


def test_corrupted_and_partial_checkpoints_are_skipped(saved, tmp_path):
    import shutil

    workdir, states = saved
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    # Step 2 committed but corrupted: its array data files are truncated to nothing.
    for f in glob.glob(os.path.join(copy, "checkpoints", "2", "state", "**", "*"), recursive=True):
        if os.path.isfile(f) and not f.endswith("_METADATA"):
            open(f, "wb").close()
    # A partial save of step 3 (killed before its commit): a temporary folder.
    os.makedirs(os.path.join(copy, "checkpoints", "3.orbax-checkpoint-tmp-1234", "state"))
    cfg = tiny_config(mesh={"data": 2, "fsdp": 4}, sharding_rules=[(".*", "fsdp")])
    _, _, steps = _setup(cfg, jax.devices())
    ck = ckpt_lib.Checkpointer(copy)
    step, state, data_state = ck.restore(steps.abstract_state)
    ck.close()
    assert step == 1 and data_state == {"pos": 1}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state, states[1])


def test_load_checkpoint_from_workdir(saved):
    workdir, states = saved
    model, v = bcos_jax.load_checkpoint(workdir)  # latest, EMA weights (the run kept an EMA)
    np.testing.assert_array_equal(v["params"]["conv0"]["kernel"],
                                  states[2].ema["params"]["conv0"]["kernel"])
    _, v = bcos_jax.load_checkpoint(workdir, step="best", ema=False)  # step 1 had the higher top-1
    np.testing.assert_array_equal(v["params"]["conv0"]["kernel"],
                                  states[1].params["conv0"]["kernel"])
    assert set(v) == {"params", "batch_stats"}
    x = jnp.ones((2, 16, 16, 6)) * 0.5
    assert model.apply(v, x).shape == (2, 4)


def test_save_model_round_trip(saved, tmp_path):
    workdir, _ = saved
    model, v = bcos_jax.load_checkpoint(workdir, ema=False)
    out = bcos_jax.save_model(str(tmp_path / "m"), "bcos_small_cnn",
                              {"num_classes": 4, "widths": (8, 16)}, v)
    model2, v2 = bcos_jax.load_checkpoint(out)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), v, v2)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 6))
    np.testing.assert_array_equal(model.apply(v, x), model2.apply(v2, x))
    with pytest.raises(FileNotFoundError, match="neither a training workdir"):
        bcos_jax.load_checkpoint(str(tmp_path))

"""Optimiser pieces against the PyTorch reference: lr schedules, AGC, losses, EMA."""
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bcos_jax.training import defaults, losses, optim
from bcos_jax.training import ema as ema_lib

torch = pytest.importorskip("torch")


def _reference_agc():
    # bcos/training/__init__ imports pytorch_lightning; load agc.py on its own.
    import importlib.util
    import os

    import bcos

    path = os.path.join(os.path.dirname(bcos.__file__), "training", "agc.py")
    spec = importlib.util.spec_from_file_location("bcos_agc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.adaptive_clip_grad_


def _cfg(**kw):
    """``config.schedule`` (or ``config.optimizer`` when ``kw`` has ``lr``) of the defaults
    with ``kw`` changed: optim reads every field without fallbacks."""
    c = defaults.default_config()
    cfg = c.optimizer if "lr" in kw else c.schedule
    cfg.update(kw)
    return cfg


def _torch_lrs(make_sched, n, lr=1e-3):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def test_warmup_cosine_per_epoch_matches_bcos_factory():
    from bcos.optim import LRSchedulerFactory

    epochs, spe = 20, 3
    fac = LRSchedulerFactory(name="cosineannealinglr", epochs=epochs, warmup_method="linear",
                             warmup_epochs=5, warmup_decay=0.01)
    ref = _torch_lrs(lambda o: fac.create(o), epochs)
    cfg = _cfg(name="warmup_cosine", interval="epoch", warmup_epochs=5, warmup_factor=0.01,
               min_lr=0.0)
    np.testing.assert_allclose(optim.epoch_table(cfg, 1e-3, epochs), ref, rtol=1e-6, atol=1e-12)
    sched = optim.make_schedule(cfg, 1e-3, spe, epochs * spe)
    per_step = np.array([float(sched(jnp.int32(s))) for s in range(epochs * spe)])
    np.testing.assert_allclose(per_step, np.repeat(ref, spe), rtol=1e-5)  # constant within an epoch


def test_warmup_cosine_per_step_matches_bcos_factory():
    from bcos.optim import LRSchedulerFactory

    epochs, spe = 4, 25
    total = epochs * spe
    fac = LRSchedulerFactory(name="cosineannealinglr", epochs=epochs, warmup_method="linear",
                             warmup_steps=10, interval="step", warmup_decay=0.01)
    ref = _torch_lrs(lambda o: fac.create(o, total_steps=total)["scheduler"], total)
    cfg = _cfg(name="warmup_cosine", interval="step", warmup_steps=10, warmup_factor=0.01,
               min_lr=0.0)
    sched = optim.make_schedule(cfg, 1e-3, spe, total)
    got = np.array([float(sched(jnp.int32(s))) for s in range(total)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-10)


def test_cosine_without_warmup_cifar_v2():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100), 100)
    cfg = _cfg(name="warmup_cosine", interval="epoch", warmup_epochs=0, warmup_factor=0.01,
               min_lr=0.0)
    np.testing.assert_allclose(optim.epoch_table(cfg, 1e-3, 100), ref, rtol=1e-6, atol=1e-12)


def test_v1_schedules():
    step = optim.epoch_table(_cfg(name="step", step_epochs=60, gamma=0.1, epoch0_lr=2.5e-4),
                             2.5e-4, 100)
    assert step[0] == step[59] == 2.5e-4
    assert math.isclose(step[60], 2.5e-5) and math.isclose(step[99], 2.5e-5)
    cifar = optim.epoch_table(_cfg(name="v1_cifar", epoch0_lr=5e-4), 5e-4, 100)
    assert cifar[0] == 5e-4  # epoch 0 runs at the optimiser's construction lr
    np.testing.assert_allclose(cifar[1:],
                               [1e-3 * np.cos(np.pi * i / 200) + 1e-5 for i in range(1, 100)])
    cos = optim.epoch_table(_cfg(name="v1_cosine", warmup_epochs=10, start_warmup_lr=1e-5,
                                 final_lr=1e-4,
                                 epoch0_lr=2.5e-4), 1e-3, 200)
    assert cos[0] == 2.5e-4 and math.isclose(cos[1], 1e-5 + (1e-3 - 1e-5) / 9)  # the v1 quirk
    assert math.isclose(cos[10], 1e-3) and cos[-1] > 1e-4


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (1, 1, 16, 8), (7, 7, 1, 6), (12, 5), (8,),
                                   (1, 1, 1, 5), (2, 3, 4)])
def test_agc_matches_reference(shape):
    adaptive_clip_grad_ = _reference_agc()

    rng = np.random.default_rng(0)
    p = rng.normal(size=shape).astype(np.float32)
    g = (rng.normal(size=shape) * rng.choice([1e-4, 1e-1], size=shape)).astype(np.float32)
    # Flax layout -> torch layout: HWIO -> OIHW, [in, out] -> [out, in],
    # [k, in, out] -> [out, in, k].
    to_t = {4: (3, 2, 0, 1), 2: (1, 0), 3: (2, 1, 0), 1: (0,)}[len(shape)]
    tp = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(p.transpose(to_t))))
    tp.grad = torch.from_numpy(np.ascontiguousarray(g.transpose(to_t)))
    adaptive_clip_grad_([tp])
    want = tp.grad.numpy().transpose(np.argsort(to_t))
    tx = optim.adaptive_grad_clip()
    got, _ = tx.update({"w": jnp.asarray(g)}, tx.init({"w": p}), {"w": jnp.asarray(p)})
    np.testing.assert_allclose(np.asarray(got["w"]), want, rtol=1e-5, atol=1e-9)


def test_losses_match_reference():
    from bcos.modules.losses import BinaryCrossEntropyLoss, UniformOffLabelsBCEWithLogitsLoss

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 10)).astype(np.float32) * 3
    t = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 6)]
    mixed = 0.7 * t + 0.3 * t[::-1]
    for tgt in (t, mixed):
        tx, tt = torch.from_numpy(x), torch.from_numpy(tgt)
        np.testing.assert_allclose(losses.bce(jnp.asarray(x), jnp.asarray(tgt)),
                                   BinaryCrossEntropyLoss()(tx, tt).item(), rtol=1e-5)
        np.testing.assert_allclose(losses.uniform_off_labels_bce(jnp.asarray(x), jnp.asarray(tgt)),
                                   UniformOffLabelsBCEWithLogitsLoss()(tx, tt).item(), rtol=1e-5)
        np.testing.assert_allclose(losses.ce(jnp.asarray(x), jnp.asarray(tgt)),
                                   torch.nn.CrossEntropyLoss()(tx, tt).item(), rtol=1e-5)
    out = {"logits": jnp.asarray(x), "aux_logits": jnp.asarray(x[::-1])}
    np.testing.assert_allclose(losses.compute("bce", out, jnp.asarray(t), 1.0),
                               losses.bce(out["logits"], t) + losses.bce(out["aux_logits"], t),
                               rtol=1e-6)


def test_adam_matches_torch():
    rng = np.random.default_rng(2)
    p0 = rng.normal(size=(5,)).astype(np.float32)
    grads = rng.normal(size=(4, 5)).astype(np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch.optim.Adam([tp], lr=1e-3)
    cfg = _cfg(name="adam", lr=1e-3, agc=False)
    tx, _ = optim.make_optimizer(cfg, _cfg(name="constant", interval="step"), 1, 4)
    p, st = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        u, st = tx.update(jnp.asarray(g), st, p)
        p = optax.apply_updates(p, u)
    np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_ema_follows_torchvision_recipe():
    decay = ema_lib.adjusted_decay(0.99998, 32, 1024, 600)
    assert math.isclose(decay, 1 - 2e-5 * 1024 * 32 / 600)
    ema, count = {"w": jnp.zeros(2)}, jnp.int32(0)
    spe, seen = 64, []
    for step in range(3 * spe):
        model = {"w": jnp.full(2, float(step))}
        ema, count = ema_lib.update(ema, count, model, step=jnp.int32(step), steps_per_epoch=spe,
                                    every=32,
                                    accum=1, decay=0.5, warmup_epochs=1)
        seen.append((float(ema["w"][0]), int(count)))
    # Warm-up: copies.
    assert seen[0] == (0.0, 0) and seen[32] == (32.0, 0) and seen[63] == (32.0, 0)
    assert seen[64] == (64.0, 1)  # first update after warm-up: still a copy (count was reset)
    assert seen[96] == (0.5 * 64 + 0.5 * 96, 2) and seen[97] == seen[96]  # only every 32 steps

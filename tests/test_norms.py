"""Every norm against the reference: train/eval forward, running stats, explanation gradients."""

from tests.torch_ref import bcos, nchw, nhwc, rel_err, torch

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax import norms

TN = bcos.modules.norms
C = 8

# (name, flax constructor, torch constructor, has batch stats, centred batch stats)
CASES = [
    ("bnu", norms.BatchNormUncentered, lambda: TN.BatchNormUncentered2d(C), True),
    ("allnu", norms.AllNormUncentered, lambda: TN.AllNormUncentered2d(C), True),
    ("bn", norms.BatchNorm, lambda: TN.BatchNorm2d(C), True),
    ("alln", norms.AllNorm, lambda: TN.AllNorm2d(C), True),
    (
        "gnu",
        lambda **kw: norms.GroupNormUncentered(num_groups=4, **kw),
        lambda: TN.GroupNormUncentered2d(4, C),
        False,
    ),
    ("inu", norms.InstanceNormUncentered, lambda: TN.GNInstanceNormUncentered2d(C), False),
    ("lnu", norms.LayerNorm2dUncentered, lambda: TN.GNLayerNormUncentered2d(C), False),
    ("pnu", norms.PositionNormUncentered, lambda: TN.PositionNormUncentered2d(C), False),
    (
        "gn",
        lambda **kw: norms.GroupNorm(num_groups=4, **kw),
        lambda: TN.DetachableGroupNorm2d(4, C),
        False,
    ),
    ("in", norms.InstanceNorm, lambda: TN.DetachableGNInstanceNorm2d(C), False),
    ("ln2d", norms.LayerNorm2d, lambda: TN.DetachableGNLayerNorm2d(C), False),
    ("pn", norms.PositionNorm, lambda: TN.DetachablePositionNorm2d(C), False),
]
AFFINE = ["affine", "nobias", "unaffine"]


def _make(case, affine, seed=0):
    name, flax_ctor, torch_ctor, has_stats = case
    g = torch.Generator().manual_seed(seed)
    ref = torch_ctor()
    if affine == "nobias":
        ref = TN.NoBias(lambda: ref)()
    elif affine == "unaffine":
        ref = TN.Unaffine(lambda: ref)()
    kw = {"nobias": dict(use_bias=False), "unaffine": dict(use_bias=False, use_scale=False)}.get(
        affine, {}
    )
    mod = flax_ctor(**kw)
    # jnp.array copies; jnp.asarray may alias the torch buffer (JAX 0.10.0 does on CPU), and
    # the reference's in-place running-statistics update would then change our variables too.
    variables = {"params": {}}
    with torch.no_grad():
        if ref.weight is not None:
            ref.weight.copy_(0.5 + torch.rand(ref.weight.shape, generator=g))
            variables["params"]["scale"] = jnp.array(ref.weight.numpy())
        if ref.bias is not None:
            ref.bias.copy_(torch.randn(ref.bias.shape, generator=g))
            variables["params"]["bias"] = jnp.array(ref.bias.numpy())
        if has_stats:
            ref.running_var.copy_(0.5 + torch.rand(ref.running_var.shape, generator=g))
            ref.running_mean.copy_(torch.randn(ref.running_mean.shape, generator=g))
            variables["batch_stats"] = {"var": jnp.array(ref.running_var.numpy())}
            if name in ("bn", "alln"):
                variables["batch_stats"]["mean"] = jnp.array(ref.running_mean.numpy())
    return ref, mod, variables


def _x(seed=1):
    # Non-zero mean so that centring matters.
    return (np.random.default_rng(seed).normal(size=(3, 5, 6, C)) * 2 + 0.7).astype(np.float32)


@pytest.mark.parametrize("affine", AFFINE)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_norm_eval_forward_and_explanation_gradient(case, affine):
    ref, mod, variables = _make(case, affine)
    x = _x()
    cot = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    ref.eval()
    ref_out = nhwc(ref(nchw(x)))
    out = mod.apply(variables, jnp.asarray(x), train=False)
    assert rel_err(out, ref_out) <= 1e-5
    xt = nchw(x).requires_grad_(True)
    if hasattr(ref, "set_explanation_mode"):
        ref.set_explanation_mode(True)
    (ref_g,) = torch.autograd.grad((ref(xt) * nchw(cot)).sum(), xt)
    _, vjp = jax.vjp(lambda v: mod.apply(variables, v, train=False, explain=True), jnp.asarray(x))
    assert rel_err(vjp(jnp.asarray(cot))[0], nhwc(ref_g)) <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_norm_train_forward_running_stats_and_gradient(case):
    name, _, _, has_stats = case
    ref, mod, variables = _make(case, "affine")
    x = _x(3)
    ref.train()
    ref_out = nhwc(ref(nchw(x)))
    out, state = mod.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    assert rel_err(out, ref_out) <= 1e-5
    if has_stats:
        # One update with momentum 0.1: biased batch variance for the uncentred norms,
        # unbiased (torch BatchNorm) for the centred ones.
        assert rel_err(state["batch_stats"]["var"], ref.running_var.numpy()) <= 1e-5
        if name in ("bn", "alln"):
            assert rel_err(state["batch_stats"]["mean"], ref.running_mean.numpy()) <= 1e-5
    cot = np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    centred_bn = name in ("bn", "alln")
    for explain in ([False] if centred_bn else [False, True]):
        ref.train()
        if hasattr(ref, "set_explanation_mode") and not centred_bn:
            ref.set_explanation_mode(explain)
        xt = nchw(x).requires_grad_(True)
        (ref_g,) = torch.autograd.grad((ref(xt) * nchw(cot)).sum(), xt)
        _, vjp = jax.vjp(
            lambda v: mod.apply(variables, v, train=True, explain=explain, mutable=["batch_stats"])[
                0
            ],
            jnp.asarray(x),
        )
        assert rel_err(vjp(jnp.asarray(cot))[0], nhwc(ref_g)) <= 1e-5, f"explain={explain}"


def test_centred_batch_norm_refuses_explanation_in_training():
    mod = norms.BatchNorm()
    x = jnp.ones((2, 3, 3, 4))
    v = mod.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="eval mode"):
        mod.apply(v, x, train=True, explain=True, mutable=["batch_stats"])


def test_layer_norm_on_tokens_matches_detachable_layer_norm():
    ref = TN.DetachableLayerNorm(16)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(16) + 0.5)
        ref.bias.copy_(torch.randn(16))
    x = (np.random.default_rng(5).normal(size=(2, 7, 16)) + 1).astype(np.float32)
    v = {
        "params": {
            "scale": jnp.asarray(ref.weight.detach().numpy()),
            "bias": jnp.asarray(ref.bias.detach().numpy()),
        }
    }
    mod = norms.LayerNorm()
    assert rel_err(mod.apply(v, x), ref(torch.from_numpy(x)).detach().numpy()) <= 1e-5
    ref.set_explanation_mode(True)
    xt = torch.from_numpy(x).requires_grad_(True)
    cot = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
    (ref_g,) = torch.autograd.grad((ref(xt) * torch.from_numpy(cot)).sum(), xt)
    _, vjp = jax.vjp(lambda a: mod.apply(v, a, explain=True), jnp.asarray(x))
    assert rel_err(vjp(jnp.asarray(cot))[0], ref_g.numpy()) <= 1e-5


def test_sharded_batch_norm_uses_global_statistics():
    # Under jit with the batch sharded over 8 devices, the statistics must be those of the
    # whole batch, i.e. equal to the single-device result.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    mod = norms.BatchNormUncentered()
    x = jnp.asarray(
        _x(7).repeat(8, axis=0)[:16] * np.arange(1, 17, dtype=np.float32)[:, None, None, None]
    )
    v = mod.init(jax.random.key(0), x)
    f = jax.jit(lambda v, x: mod.apply(v, x, train=True, mutable=["batch_stats"]))
    ref_out, ref_state = f(v, x)
    xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    out, state = f(v, xs)
    assert len(xs.sharding.device_set) == 8
    np.testing.assert_allclose(out, ref_out, rtol=1e-5)
    np.testing.assert_allclose(
        state["batch_stats"]["var"], ref_state["batch_stats"]["var"], rtol=1e-5
    )

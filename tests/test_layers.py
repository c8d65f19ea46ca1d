"""B-cos layers against the PyTorch reference (``bcos`` 0.1.3): forward, explanation gradients."""

import math

from tests.torch_ref import bcos, float64_model, nchw, nhwc, rel_err, torch

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax import layers
from tests.precision import run_float64

TOL = 1e-5


def _conv_case(
    k,
    stride,
    padding,
    dilation,
    groups,
    max_out,
    b,
    cin=8,
    cout=8,
    size=11,
    scale_fact=None,
    seed=0,
):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, size, size, cin)).astype(np.float32)
    kw = dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, b=b, max_out=max_out
    )
    if scale_fact is None:
        ref = bcos.modules.BcosConv2d(cin, cout, k, **kw)
    else:
        ref = bcos.modules.BcosConv2dWithScale(cin, cout, k, scale_factor=scale_fact, **kw)
    with torch.no_grad():
        ref.linear.weight.copy_(torch.from_numpy(rng.normal(size=ref.linear.weight.shape).astype(np.float32)))
    mod = layers.BcosConv(
        cout,
        k,
        strides=stride,
        padding=padding,
        kernel_dilation=dilation,
        feature_group_count=groups,
        b=b,
        max_out=max_out,
        scale_fact=scale_fact,
    )
    params = {
        "params": {"kernel": jnp.asarray(ref.linear.weight.detach().numpy().transpose(2, 3, 1, 0))}
    }
    return x, ref, mod, params


def _torch_fwd_and_expl_grad(ref, x, cot, float64=False):
    ref = float64_model(ref) if float64 else ref
    dt = np.float64 if float64 else np.float32
    ref.eval()
    out = ref(nchw(x, dt)).detach().numpy()
    xt = nchw(x, dt).requires_grad_(True)
    ref.set_explanation_mode(True)
    y = ref(xt)
    (g,) = torch.autograd.grad((y * nchw(cot, dt)).sum(), xt)
    ref.set_explanation_mode(False)
    return nhwc(torch.from_numpy(out)), nhwc(g)


def _jax_fwd_and_expl_grad(mod, params, x, cot, float64=False):
    def f(params, x, cot):
        out = mod.apply(params, jnp.asarray(x))
        _, vjp = jax.vjp(lambda v: mod.apply(params, v, explain=True), jnp.asarray(x))
        (g,) = vjp(jnp.asarray(cot))
        return np.asarray(out), np.asarray(g)

    return run_float64(f, params, x, cot) if float64 else f(params, x, cot)


def _tol(max_out):
    # MaxOut's choice can flip in float32 between frameworks and CPUs on near-ties, which
    # changes the gradient by O(1) there: such cases are compared in float64
    # (tests/precision.py).
    return (True, 1e-10) if max_out > 1 else (False, TOL)


CONV_CASES = [
    # k, stride, padding, dilation, groups, max_out, b
    (1, 1, 0, 1, 1, 1, 2.0),
    (3, 1, 1, 1, 1, 1, 2.0),
    (3, 2, 1, 1, 1, 1, 2.0),
    (7, 2, 3, 1, 1, 1, 2.0),
    (3, 1, 2, 2, 1, 1, 2.0),  # dilation 2 (reference uses its slow ones-kernel path)
    (3, 1, 1, 1, 2, 1, 2.0),  # grouped
    (3, 2, 1, 1, 8, 1, 2.0),  # depthwise
    (7, 1, 3, 1, 8, 1, 2.0),  # depthwise 7x7 (ConvNeXt)
    (3, 1, 1, 1, 1, 2, 2.0),  # MaxOut 2
    (3, 1, 1, 1, 2, 2, 2.0),  # grouped + MaxOut
    (3, 1, 1, 1, 1, 1, 1.0),
    (3, 1, 1, 1, 1, 1, 1.25),
    (3, 2, 1, 1, 1, 2, 2.5),
    (1, 1, 0, 1, 1, 2, 1.25),
    (3, 1, 1, 2, 4, 1, 2.5),  # grouped + dilation + general B
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(c) for c in CONV_CASES])
def test_bcos_conv_matches_reference(case):
    x, ref, mod, params = _conv_case(*case)
    rng = np.random.default_rng(1)
    out_shape = mod.apply(params, jnp.asarray(x)).shape
    cot = rng.normal(size=out_shape).astype(np.float32)
    float64, tol = _tol(case[5])
    ref_out, ref_g = _torch_fwd_and_expl_grad(ref, x, cot, float64)
    out, g = _jax_fwd_and_expl_grad(mod, params, x, cot, float64)
    assert out.shape == ref_out.shape
    assert rel_err(out, ref_out) <= tol
    assert rel_err(g, ref_g) <= tol


@pytest.mark.parametrize(
    "b,max_out,sf", [(2.0, 2, 100.0), (1.0, 2, 100.0), (1.5, 2, 1000.0), (2.5, 1, 200.0)]
)
def test_v1_scaled_conv_matches_reference(b, max_out, sf):
    x, ref, mod, params = _conv_case(3, 1, 1, 1, 1, max_out, b, cin=6, cout=8, scale_fact=sf)
    cot = (
        np.random.default_rng(2)
        .normal(size=mod.apply(params, jnp.asarray(x)).shape)
        .astype(np.float32)
    )
    float64, tol = _tol(max_out)
    ref_out, ref_g = _torch_fwd_and_expl_grad(ref, x, cot, float64)
    out, g = _jax_fwd_and_expl_grad(mod, params, x, cot, float64)
    assert rel_err(out, ref_out) <= tol
    assert rel_err(g, ref_g) <= tol
    # The scale really is the v1 divisor k·sqrt(Cin)/scale_fact.
    assert math.isclose(ref.scale, layers.v1_scale(3, 6, sf), rel_tol=1e-12)


def test_explicit_scale_equals_scale_fact():
    x, _, mod, params = _conv_case(3, 1, 1, 1, 1, 2, 2.0, cin=6, scale_fact=100.0)
    fixed = layers.BcosConv(8, 3, padding=1, max_out=2, scale=layers.v1_scale(3, 6, 100.0))
    np.testing.assert_allclose(mod.apply(params, x), fixed.apply(params, x), rtol=1e-6)


@pytest.mark.parametrize("b,max_out", [(2.0, 1), (2.0, 2), (1.0, 1), (1.25, 2), (2.5, 1)])
def test_bcos_dense_matches_reference(b, max_out):
    rng = np.random.default_rng(3)
    ref = bcos.modules.BcosLinear(12, 5, b=b, max_out=max_out)
    x = rng.normal(size=(4, 3, 12)).astype(np.float32)  # extra token axis like the ViT
    mod = layers.BcosDense(5, b=b, max_out=max_out)
    params = {"params": {"kernel": jnp.asarray(ref.linear.weight.detach().numpy().T)}}
    cot = rng.normal(size=(4, 3, 5)).astype(np.float32)
    float64, tol = _tol(max_out)
    dt = np.float64 if float64 else np.float32
    ref = float64_model(ref) if float64 else ref
    ref_out = ref(torch.from_numpy(x.astype(dt))).detach().numpy()
    xt = torch.from_numpy(x.astype(dt)).requires_grad_(True)
    ref.set_explanation_mode(True)
    (ref_g,) = torch.autograd.grad((ref(xt) * torch.from_numpy(cot.astype(dt))).sum(), xt)
    out, g = _jax_fwd_and_expl_grad(mod, params, x, cot, float64)
    assert rel_err(out, ref_out) <= tol
    assert rel_err(g, ref_g.numpy()) <= tol


def test_explanation_gradient_differs_from_plain_gradient():
    # Explanation mode must change the backward pass; otherwise the parity above is vacuous.
    x, _, mod, params = _conv_case(3, 1, 1, 1, 1, 1, 2.0)
    cot = jnp.ones(mod.apply(params, x).shape)
    g_plain = jax.vjp(lambda v: mod.apply(params, v), jnp.asarray(x))[1](cot)[0]
    g_expl = jax.vjp(lambda v: mod.apply(params, v, explain=True), jnp.asarray(x))[1](cot)[0]
    assert rel_err(g_plain, g_expl) > 0.1


def test_patch_norm_equals_ones_kernel_conv():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 13, 12, 8)).astype(np.float32))
    for ks, st, pad, dil, g in [
        ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
        ((3, 5), (1, 2), ((2, 2), (0, 1)), (2, 1), 4),
    ]:
        fast = layers.patch_norm(x, ks, st, pad, dil, g)
        ones = jnp.ones((*ks, 8 // g, g), jnp.float32)
        slow = jax.lax.conv_general_dilated(
            x**2,
            ones,
            st,
            pad,
            rhs_dilation=dil,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=g,
        )
        np.testing.assert_allclose(fast, jnp.sqrt(slow + 1e-6), rtol=1e-5)


def test_add_inverse_and_logit_layer():
    x = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 4, 4, 3)).astype(np.float32))
    enc = layers.add_inverse(x)
    assert enc.shape == (2, 4, 4, 6)
    np.testing.assert_allclose(enc[..., :3] + enc[..., 3:], 1.0)
    ref = bcos.data.transforms.AddInverse()(nchw(x))
    np.testing.assert_allclose(nhwc(ref), enc, atol=0)
    with pytest.raises(ValueError, match="3 colour channels"):
        layers.add_inverse(enc)
    ll = layers.LogitLayer(temperature=0.5, bias=-math.log(9))
    ref_ll = bcos.modules.LogitLayer(logit_temperature=0.5, logit_bias=-math.log(9))
    z = np.random.default_rng(6).normal(size=(3, 10)).astype(np.float32)
    np.testing.assert_allclose(ll.apply({}, z), ref_ll(torch.from_numpy(z)).numpy(), rtol=1e-6)


def test_bad_padding_and_groups_are_refused():
    x = jnp.zeros((1, 8, 8, 6))
    with pytest.raises(ValueError, match="SAME"):
        layers.BcosConv(4, 3, padding="SAME").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="divisible"):
        layers.BcosConv(4, 3, feature_group_count=4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="NHWC"):
        layers.BcosConv(4, 3).init(jax.random.key(0), jnp.zeros((8, 8, 6)))

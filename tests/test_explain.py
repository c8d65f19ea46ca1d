"""``bcos_jax.explain``: exactness, purity, batching, multiple targets, hidden units, sharding."""
import functools
import math

from tests.torch_ref import bcos, randomize_norm_stats, rel_err, torch, torch_explain

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import bcos_jax
from bcos_jax import convert, layers, norms
from tests.precision import bcos_maxout_margin, logit_margin, run_float64

NUM_CLASSES = 5
LOGIT_BIAS = -math.log(NUM_CLASSES - 1)


class TinyNet(nn.Module):
    """A small B-cos CNN with every kind of layer: BNU, grouped MaxOut, centred norm, dense."""

    @nn.compact
    def __call__(self, x, train=False, explain=False):
        x = layers.BcosConv(8, 3, padding=1, name="conv1")(x, explain)
        x = norms.BatchNormUncentered(use_bias=False, name="bn1")(x, train=train, explain=explain)
        x = layers.BcosConv(
            8, 3, strides=2, padding=1, feature_group_count=2, max_out=2, name="conv2"
        )(x, explain)
        x = norms.PositionNorm(use_bias=False, name="pn")(x, train=train, explain=explain)
        x = layers.BcosConv(NUM_CLASSES, 1, name="fc")(x, explain)
        return layers.LogitLayer(bias=LOGIT_BIAS)(jnp.mean(x, axis=(1, 2)))


class TorchTinyNet(bcos.common.BcosUtilMixin, torch.nn.Module):
    def __init__(self):
        super().__init__()
        TN = bcos.modules.norms
        self.conv1 = bcos.modules.BcosConv2d(6, 8, 3, padding=1)
        self.bn1 = TN.NoBias(TN.BatchNormUncentered2d)(8)
        self.conv2 = bcos.modules.BcosConv2d(8, 8, 3, stride=2, padding=1, groups=2, max_out=2)
        self.pn = TN.NoBias(TN.DetachablePositionNorm2d)(8)
        self.fc = bcos.modules.BcosConv2d(8, NUM_CLASSES, 1)
        self.logit = bcos.modules.LogitLayer(logit_bias=LOGIT_BIAS)

    def forward(self, x):
        x = self.pn(self.conv2(self.bn1(self.conv1(x))))
        return self.logit(self.fc(x).mean((2, 3)))


@functools.cache
def _setup():
    torch.manual_seed(0)
    ref = TorchTinyNet()
    randomize_norm_stats(ref, seed=0)
    ref.eval()
    model = TinyNet()
    variables = convert.from_torch_module(model, ref.state_dict(), (1, 12, 12, 6))
    rng = np.random.default_rng(0)
    x = np.asarray(layers.add_inverse(rng.uniform(size=(4, 12, 12, 3)).astype(np.float32)))
    # The tests below compare float32 explanations computed in different ways (jit, eager,
    # batched, vmapped, sharded). conv2's MaxOut and the argmax target are discrete choices:
    # they agree on every CPU only if this input keeps them far from a tie, which is
    # verified in float64 here (the margins are machine-independent).
    assert bcos_maxout_margin(model, variables, x) > 1e-4
    assert logit_margin(lambda z: model.apply(variables, z), x) > 1e-4
    return ref, model, variables, x


def test_matches_reference_explanation_and_completeness():
    ref, model, variables, x = _setup()
    e = bcos_jax.explain(model, variables, x)
    # conv2's MaxOut (and the argmax target) are discrete choices that float32 rounding can
    # flip differently in the two frameworks on some CPUs: W(x) and the targets are
    # compared in float64 (tests/precision.py).
    ref_logits, ref_w, ref_t = torch_explain(ref, x, float64=True)
    e64 = run_float64(bcos_jax.explain, model, variables, x)
    assert e64.weights.dtype == np.float64
    assert rel_err(e64.logits, ref_logits) <= 1e-10
    np.testing.assert_array_equal(e64.targets, ref_t)
    assert rel_err(e64.weights, ref_w) <= 1e-10
    # float32: the logits are continuous in those choices.
    assert rel_err(e.logits, ref_logits) <= 1e-5
    chex_shapes = (
        e.logits.shape,
        e.targets.shape,
        e.weights.shape,
        e.contributions.shape,
        e.bias.shape,
    )
    assert chex_shapes == ((4, NUM_CLASSES), (4,), (4, 12, 12, 6), (4, 12, 12), (4,))
    selected = np.take_along_axis(np.asarray(e.logits), np.asarray(e.targets)[:, None], 1)[:, 0]
    assert rel_err(e.contributions.sum((1, 2)) + e.bias, selected) <= 1e-4
    # The constant part is exactly the logit bias: nothing else in this net is input-independent.
    np.testing.assert_allclose(e.bias, LOGIT_BIAS, atol=1e-4 * np.abs(selected).max())


def test_explanation_gradient_is_not_the_plain_gradient():
    # For bias-free, norm-free B-cos nets completeness also holds for the plain gradient
    # (Euler, 1-homogeneity), so the sum alone proves nothing: the gradients must differ.
    _, model, variables, x = _setup()
    e = bcos_jax.explain(model, variables, x)
    plain = jax.grad(lambda v: jnp.sum(model.apply(variables, v)[jnp.arange(4), e.targets]))(
        jnp.asarray(x)
    )
    assert rel_err(plain, e.weights) > 0.1


def test_jit_vmap_batch_and_repeat_consistency():
    _, model, variables, x = _setup()
    eager = bcos_jax.explain(model, variables, x)
    jitted = bcos_jax.explain_fn(model)(variables, x)
    chex_close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(chex_close, jitted, eager)
    singles = [bcos_jax.explain(model, variables, x[i : i + 1]) for i in range(len(x))]
    jax.tree.map(lambda b, *s: chex_close(b, np.concatenate(s)), eager, *singles)
    vmapped = jax.vmap(lambda xi: bcos_jax.explain(model, variables, xi[None]))(jnp.asarray(x))
    jax.tree.map(lambda v, b: chex_close(v[:, 0], b), vmapped, eager)
    again = bcos_jax.explain_fn(model)(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), again, jitted)


def test_k_targets_in_one_call_equal_k_calls():
    _, model, variables, x = _setup()
    targets = np.array([[0, 3, 4], [1, 1, 2], [4, 0, 3], [2, 2, 2]])
    multi = bcos_jax.explain(model, variables, x, targets)
    assert multi.weights.shape == (3, 4, 12, 12, 6) and multi.targets.shape == (3, 4)
    for k in range(3):
        single = bcos_jax.explain(model, variables, x, targets[:, k])
        np.testing.assert_array_equal(multi.targets[k], single.targets)
        np.testing.assert_allclose(multi.weights[k], single.weights, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(multi.bias[k], single.bias, rtol=1e-5, atol=1e-6)


def test_one_forward_for_k_targets():
    # The forward pass is traced once whatever K is: count calls of the model's __call__.
    _, model, variables, x = _setup()
    calls = []

    def counting(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name is None:
            calls.append(1)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(counting):
        bcos_jax.explain(model, variables, x, np.zeros((4, 7), np.int32))
    assert len(calls) == 1


def test_hidden_unit_explanation():
    _, model, variables, x = _setup()
    pooled = bcos_jax.explain(model, variables, x, np.array([0, 1, 2, 3]), layer="conv2")
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    act = state["intermediates"]["conv2"]["__call__"][0]
    np.testing.assert_allclose(pooled.logits, act.mean((1, 2)), rtol=1e-5)
    units = np.asarray(act.mean((1, 2)))[np.arange(4), [0, 1, 2, 3]]
    np.testing.assert_allclose(pooled.contributions.sum((1, 2)) + pooled.bias, units, rtol=1e-4)
    np.testing.assert_allclose(
        pooled.bias, 0.0, atol=1e-4 * np.abs(units).max()
    )  # no constant before conv2
    at = bcos_jax.explain(
        model, variables, x, np.array([5, 5, 5, 5]), layer="conv2", position=(2, 3)
    )
    np.testing.assert_allclose(at.logits, act[:, 2, 3], rtol=1e-5)
    # A unit at one position only sees its receptive field: 2 convs of 3x3, stride 2 -> rows 1..9.
    outside = np.abs(np.asarray(at.weights)).sum(-1)
    assert (
        outside[:, :1].max() == 0 and outside[:, 10:].max() == 0 and outside[:, 3:8, 3:8].max() > 0
    )
    with pytest.raises(ValueError, match="not called"):
        bcos_jax.explain(model, variables, x, layer="nope")


def test_sharded_batch():
    _, model, variables, x = _setup()
    mesh = jax.make_mesh(
        (4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:4]
    )
    xs = jax.device_put(jnp.asarray(x), NamedSharding(mesh, P("data")))
    e = bcos_jax.explain_fn(model)(variables, xs)
    ref = bcos_jax.explain(model, variables, x)
    assert len(e.weights.sharding.device_set) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), e, ref)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_images_are_finite(value):
    _, model, variables, _ = _setup()
    x = layers.add_inverse(jnp.full((2, 12, 12, 3), value))
    e = bcos_jax.explain(model, variables, x)
    for leaf in jax.tree.leaves(e):
        assert np.all(np.isfinite(leaf))
    zeros = bcos_jax.explain(model, variables, jnp.zeros((2, 12, 12, 6)))
    for leaf in jax.tree.leaves(zeros):
        assert np.all(np.isfinite(leaf))


def test_bad_inputs():
    _, model, variables, x = _setup()
    with pytest.raises(ValueError, match="NHWC"):
        bcos_jax.explain(model, variables, x[0])
    with pytest.raises(ValueError, match="floating"):
        bcos_jax.explain(model, variables, x.astype(np.int32))
    with pytest.raises(ValueError, match="targets"):
        bcos_jax.explain(model, variables, x, np.zeros((3,), np.int32))


def test_out_of_range_targets_and_positions_are_errors():
    _, model, variables, x = _setup()
    for bad in ([0, 1, 2, NUM_CLASSES], [-1, 0, 0, 0]):
        with pytest.raises(ValueError, match=rf"class indices in \[0, {NUM_CLASSES}\)"):
            bcos_jax.explain(model, variables, x, np.array(bad))
    with pytest.raises(ValueError, match="in \\[0, 5\\)"):  # [N, K] targets too
        bcos_jax.explain(model, variables, x, np.full((4, 2), 7))
    with pytest.raises(ValueError, match="integer"):
        bcos_jax.explain(model, variables, x, np.array([0.0, 1.0, 2.0, 3.0]))
    # Hidden units: conv2 has 8 channels and a 6x6 output.
    with pytest.raises(ValueError, match=r"channel \(of layer 'conv2'\) indices in \[0, 8\)"):
        bcos_jax.explain(model, variables, x, np.array([0, 1, 2, 8]), layer="conv2")
    for pos in ((6, 0), (0, -1)):
        with pytest.raises(ValueError, match="outside layer 'conv2'"):
            bcos_jax.explain(
                model, variables, x, np.zeros(4, np.int32), layer="conv2", position=pos
            )
    # Traced targets cannot be checked: an out-of-range one gives NaN, not a plausible zero map.
    e = bcos_jax.explain_fn(model)(variables, x, jnp.array([0, NUM_CLASSES, -1, 2]))
    w = np.asarray(e.weights)
    assert np.isnan(w[1]).all() and np.isnan(w[2]).all() and np.isnan(np.asarray(e.bias)[1:3]).all()
    assert np.isfinite(w[[0, 3]]).all() and np.isfinite(np.asarray(e.bias)[[0, 3]]).all()

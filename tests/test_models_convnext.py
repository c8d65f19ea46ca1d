"""ConvNeXt family: parity with ``bcos`` (B-cos) and torchvision (standard), completeness,
stochastic depth wiring, parameter counts of every registered name.

Parity models are the real reference entry points with all but the first block of every
stage deleted (on both sides), at 64×96 inputs, so that compiling stays cheap.
"""
from __future__ import annotations

import math
import re

from tests.torch_ref import nchw, randomize_norm_stats, rel_err, torch, torch_explain

import bcos.models.convnext as bcos_convnext
import bcos.models.pretrained as bcos_pretrained
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchvision

from bcos_jax import convert, models
from bcos_jax.explain import explain
from bcos_jax.layers import add_inverse
from bcos_jax.models.common import StochasticDepth
from bcos_jax.models.convnext import ATTO

NUM_CLASSES = 5
BCOS_NAMES = [
    "convnext_atto", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
    "convnext_tiny_bnu", "convnext_base_bnu",
]
STANDARD_NAMES = [f"standard_convnext_{s}" for s in ("atto", "tiny", "small", "base", "large")]


def torch_reference(name: str, **kwargs):
    """The reference module of a registered name (bcos entry point or torchvision)."""
    if name.startswith("standard_"):
        tv_name = name[len("standard_"):]
        if tv_name == "convnext_atto":  # torchvision has the class but no atto entry point
            from torchvision.models.convnext import CNBlockConfig, ConvNeXt

            return ConvNeXt([CNBlockConfig(*s) for s in ATTO], stochastic_depth_prob=0.1, **kwargs)
        return getattr(torchvision.models, tv_name)(**kwargs)
    fn = getattr(bcos_pretrained, name, None) or getattr(bcos_convnext, name)
    return fn(**kwargs)


def _first_block_only(tm):
    """Delete all but the first block of every stage; returns the reduced block setting."""
    setting = []
    stages = [
        m
        for m in tm.features
        if isinstance(m, torch.nn.Sequential) and len(m) and hasattr(m[0], "layer_scale")
    ]
    for stage in stages:
        del stage[1:]
        dim = stage[0].layer_scale.shape[0]
        setting.append([dim, None, 1])
    for i in range(len(setting) - 1):
        setting[i][1] = setting[i + 1][0]
    return tuple(tuple(s) for s in setting)


def _randomize(tm, seed=0):
    # layer_scale starts at 1e-6 and biases at 0: left so, the residual branches and
    # biases would be invisible to a parity test.
    g = torch.Generator().manual_seed(seed)
    randomize_norm_stats(tm, seed)
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(0.3 + 0.7 * torch.rand(p.shape, generator=g))
            elif name.endswith("bias") and p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _calibrate_and_scale(tm, x, bias):
    """Make every layer's signal O(1), so that float32 resolves all of it.

    Uncentred BN with made-up running variances would shrink the signal layer by layer (to
    ~1e-6 at the logits, below the resolution of ``logit + bias``): calibrate them on ``x``
    (train-mode pass, momentum 1), then perturb them. Then rescale the head norm so the
    outputs are O(1): the head is 1-homogeneous in its norm's weight, so this is exact.
    """
    g = torch.Generator().manual_seed(2)
    bns = [m for m in tm.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        if bns:
            for m in bns:
                m.momentum = 1.0
            tm.train()(nchw(x))
            for m in bns:
                m.momentum = 0.1
                m.running_var.mul_(0.5 + torch.rand(m.running_var.shape, generator=g))
        out = tm.eval()(nchw(x)).numpy()
        tm.classifier[0].weight.mul_(1.0 / float(np.abs(out - bias).max()))


def _reduced_pair(name, x, seed=0):
    torch.manual_seed(seed)
    kwargs = dict(num_classes=NUM_CLASSES)
    bcos_model = not name.startswith("standard_")
    if bcos_model:
        kwargs["logit_bias"] = -math.log(
            NUM_CLASSES - 1
        )  # the entry point's config fixes -log(999)
    tm = torch_reference(name, **kwargs)
    setting = _first_block_only(tm)
    for m in tm.modules():  # rates come from the full depth; no drops in train-mode checks
        if hasattr(m, "stochastic_depth"):
            m.stochastic_depth.p = 0.0
    _randomize(tm, seed)
    if bcos_model:
        _calibrate_and_scale(tm, x, kwargs["logit_bias"])
    tm.eval()
    overrides = dict(num_classes=NUM_CLASSES, block_setting=setting)
    variables = convert.from_torch(name, tm.state_dict(), **overrides)
    return tm, models.create(name, **overrides), variables, overrides


def _image(channels, seed=0, shape=(2, 64, 96)):
    x = np.random.RandomState(seed).rand(*shape, 3).astype(np.float32)
    return np.asarray(add_inverse(x)) if channels == 6 else x


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_tiny_bnu"])
def test_bcos_parity_and_completeness(name):
    x = _image(6)
    tm, model, variables, _ = _reduced_pair(name, x)
    bias = -math.log(NUM_CLASSES - 1)
    with torch.no_grad():
        out = tm(nchw(x)).numpy()
    targets = np.abs(out - bias).argmax(1)  # the largest output, not one close to the bias
    logits_t, w_t, _ = torch_explain(tm, x, targets)
    ex = jax.jit(lambda v, x, t: explain(model, v, x, t))(variables, x, jnp.asarray(targets))

    # Compare without the constant logit bias, which would hide errors in the network.
    assert rel_err(np.asarray(ex.logits) - bias, logits_t - bias) <= 1e-4
    assert rel_err(ex.weights, w_t) <= 1e-3
    # The plain gradient is far from W(x) here, so a missing stop_gradient would be caught.
    xt = nchw(x).requires_grad_(True)
    (plain,) = torch.autograd.grad(tm(xt)[torch.arange(2), torch.as_tensor(targets)].sum(), xt)
    assert rel_err(plain.numpy().transpose(0, 2, 3, 1), w_t) > 1e-2

    selected = np.asarray(ex.logits)[np.arange(2), targets]
    scale = np.abs(np.asarray(ex.logits) - bias).max()  # ~1 (see _calibrate_and_scale)
    np.testing.assert_allclose(
        np.asarray(ex.contributions.sum((1, 2)) + ex.bias), selected, atol=1e-5 * scale
    )
    np.testing.assert_allclose(np.asarray(ex.bias), bias, atol=1e-4 * scale)
    # the reference satisfies the same identity
    torch_sum = (x * w_t).sum((1, 2, 3))
    np.testing.assert_allclose(torch_sum + bias, logits_t[np.arange(2), targets], atol=1e-4 * scale)


def test_bnu_train_mode_matches_reference():
    tm, _, variables, overrides = _reduced_pair("convnext_tiny_bnu", _image(6), seed=1)
    model = models.create("convnext_tiny_bnu", stochastic_depth_prob=0.0, **overrides)
    x = _image(6, seed=1)
    tm.train()
    with torch.no_grad():
        logits_t = tm(nchw(x)).numpy()
    logits, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    bias = -math.log(NUM_CLASSES - 1)
    assert rel_err(np.asarray(logits) - bias, logits_t - bias) <= 1e-4
    expected = convert.from_torch("convnext_tiny_bnu", tm.state_dict(), **overrides)["batch_stats"]
    got, want = jax.tree_util.tree_flatten_with_path(updates["batch_stats"])[0], dict(
        jax.tree_util.tree_flatten_with_path(expected)[0]
    )
    assert len(got) == len(want) == 1 + 4 + 3 + 1  # stem, one per block, downsamples, head
    for path, value in got:
        assert rel_err(value, want[path]) <= 1e-4, path


def test_standard_parity():
    x = _image(3)
    tm, model, variables, _ = _reduced_pair("standard_convnext_tiny", x)
    xt = nchw(x).requires_grad_(True)
    out = tm(xt)
    (g_t,) = torch.autograd.grad(out[:, 0].sum(), xt)

    @jax.jit
    def logits_and_grad(x):
        logits, vjp = jax.vjp(lambda x: model.apply(variables, x), x)
        return logits, vjp(jnp.zeros_like(logits).at[:, 0].set(1.0))[0]

    logits, g = logits_and_grad(x)
    assert rel_err(logits, out.detach().numpy()) <= 1e-4
    assert rel_err(g, g_t.numpy().transpose(0, 2, 3, 1)) <= 1e-3  # GELU / LayerNorm backward too


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_tiny_bnu", "standard_convnext_tiny"])
def test_full_size_state_dict_converts(name):
    tm = torch_reference(name)
    sd = tm.state_dict()
    variables = convert.from_torch(name, sd)  # raises on any missing / unexpected / mis-shaped key
    last = (
        "features.7.2.layer_scale" if name.startswith("standard_") else "features.8.2.layer_scale"
    )
    path = last.split(".")
    leaf = variables["params"]
    for p in path:
        leaf = leaf[p]
    np.testing.assert_array_equal(leaf, sd[last].numpy().reshape(-1))


def test_stochastic_depth_rates_and_train_flag():
    with torch.device("meta"):
        tm = torch_reference("convnext_tiny")
    want = [m.stochastic_depth.p for m in tm.modules() if hasattr(m, "stochastic_depth")]
    model = models.create("convnext_tiny")
    seen = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, StochasticDepth):
            seen.append((context.module.p, args[1]))
        return next_fun(*args, **kwargs)

    x = jnp.zeros((1, 32, 32, 6))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    with nn.intercept_methods(record):
        jax.eval_shape(
            lambda v: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)}), variables
        )
    assert [p for p, _ in seen] == pytest.approx(want)
    assert want[-1] == pytest.approx(0.1) and all(train is True for _, train in seen)


def _num_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def test_registry_names():
    assert set(models.list_models(family="convnext")) == set(BCOS_NAMES + STANDARD_NAMES)


@pytest.mark.parametrize("name", BCOS_NAMES + STANDARD_NAMES)
def test_param_count(name):
    spec = models.get_spec(name)
    model = models.create(name)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, spec.in_channels)))
    )
    with torch.device("meta"):
        reference = sum(p.numel() for p in torch_reference(name).parameters())
    assert _num_params(shapes["params"]) == spec.params == reference


@pytest.mark.parametrize("name", BCOS_NAMES + STANDARD_NAMES)
def test_spec_metadata_matches_reference(name):
    spec = models.get_spec(name)
    if name.startswith("standard_"):
        tv_name = name[len("standard_"):]
        if tv_name == "convnext_atto":
            assert spec.weights_url is None and spec.top1 is None
            return
        weights = torchvision.models.get_model_weights(tv_name).IMAGENET1K_V1
        assert spec.weights_url == weights.url
        assert spec.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
        assert spec.params == weights.meta["num_params"]
        assert spec.in_channels == 3 and spec.version == "standard"
        return
    entry = getattr(bcos_pretrained, name, None)
    if entry is None:  # constructor only (bcos.models.convnext), no released weights
        assert spec.weights_url is None and spec.top1 is None
        return
    config = name if name.endswith("_bnu") else f"{name}_pn"
    assert spec.weights_url == bcos_pretrained.URLS["bcos_final_long"][config]
    assert spec.top1 == float(re.search(r"Acc@1\s*\|\s*([\d.]+)%", entry.__doc__).group(1))
    assert spec.in_channels == 6 and spec.version == "v2" and spec.torch_prefix == ""

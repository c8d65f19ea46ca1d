"""v1 (CVPR 2022) models: the v1 B-cos transform, Inception v3 and the CIFAR-10 9L network.

References: ``bcos`` 0.1.3's ``BcosConv2dWithScale`` (the v1 transform), assembled as in
moboehle/B-cos ``models/bcos/inception.py`` (torchvision's Inception3 with max pools ->
AvgPool(3, 2), BasicConv2d -> BcosConv2d(max_out=2, scale_fact=200), classifier before the
pooling) and ``experiments/CIFAR10/bcos/{model,experiment_parameters}.py``; torchvision
for the standard Inception v3. The v1 reference listing (tests/data) pins every key/shape.
"""
from __future__ import annotations

import math
import os

from tests.torch_ref import (
    float64_model,
    nchw,
    nhwc,
    randomize_norm_stats,
    rel_err,
    torch,
    torch_explain,
)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch.nn.functional as F
import torchvision
import torchvision.models.inception as tv_inception
from bcos.common import BcosUtilMixin
from bcos.modules import BcosConv2dWithScale

from bcos_jax import convert, models
from bcos_jax.explain import explain
from bcos_jax.layers import BcosConv
from bcos_jax.models import cifar9l, inception
from tests.precision import run_float64

LISTING = os.path.join(os.path.dirname(__file__), "data", "v1_inception_v3_state_dict.txt")
IMAGENET_BIAS = math.log(0.01 / 0.99)
CIFAR_BIAS = math.log(0.1 / 0.9)
tnn = torch.nn


def _compiled(fn, *args):
    """Run ``fn`` jitted with LLVM optimisation off: each graph here runs once, so the
    compile time of the full Inception (~3x faster to compile this way) dominates."""
    return jax.jit(fn).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


def _image(n: int, size: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)
    return np.concatenate([x, 1 - x], -1)


def _torch_vjp(module, x_nhwc, cot_nhwc, explain_mode: bool):
    """(output NHWC, input gradient of <output, cot> NHWC) of a torch B-cos module, in
    float64: every v1 layer has MaxOut 2, whose choice float32 rounding can flip
    (tests/precision.py)."""
    module = float64_model(module)
    x = nchw(x_nhwc, np.float64).requires_grad_(True)
    for m in module.modules():
        if hasattr(m, "set_explanation_mode"):
            m.set_explanation_mode(explain_mode)
    out = module(x)
    (g,) = torch.autograd.grad((out * nchw(cot_nhwc, np.float64)).sum(), x)
    return nhwc(out), nhwc(g)


def _jax_vjp(module, variables, x, cot, explain_mode: bool):
    """The JAX counterpart of ``_torch_vjp``, in float64 as well."""

    def f(v, inp, c):
        out, vjp = jax.vjp(lambda i: module.apply(v, i, explain=explain_mode), inp)
        return out, vjp(c)[0]

    return run_float64(lambda *a: _compiled(f, *a), variables, x, cot)


def _n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------- v1 transform


@pytest.mark.parametrize("b", [1.0, 1.5, 2.0, 2.5])
@pytest.mark.parametrize(
    "cfg",
    [
        dict(k=3, s=1, p=1, scale_fact=200.0),  # Inception BasicConv2d
        dict(k=(1, 7), s=1, p=(0, 3), scale_fact=200.0),  # factorised 7x7: scale uses sqrt(1*7)
        dict(k=3, s=2, p=0, scale_fact=100.0),
        dict(k=3, s=1, p=1, scale=10 ** (-2 + 1.5 * 0.5)),  # the 9L's fixed scale (B=2)
    ],
    ids=["k3-sf200", "k1x7-sf200", "k3s2-sf100", "k3-scale"],
)
def test_v1_transform_matches_bcos_conv2d_with_scale(b, cfg):
    torch.manual_seed(0)
    cin, cout = 5, 4
    ref = BcosConv2dWithScale(
        cin, cout, kernel_size=cfg["k"], stride=cfg["s"], padding=cfg["p"], b=b, max_out=2,
        scale=cfg.get("scale"), scale_factor=cfg.get("scale_fact", 100.0),
    )
    layer = BcosConv(
        cout, cfg["k"], strides=cfg["s"], padding=cfg["p"], b=b, max_out=2,
        scale=cfg.get("scale"), scale_fact=cfg.get("scale_fact"),
    )
    variables = {
        "params": {"kernel": jnp.asarray(ref.linear.weight.detach().numpy().transpose(2, 3, 1, 0))}
    }
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 9, cin)).astype(np.float32)
    with torch.no_grad():
        out_shape = nhwc(ref(nchw(x))).shape
    cot = rng.standard_normal(out_shape).astype(np.float32)

    for mode in (False, True):
        out_t, g_t = _torch_vjp(ref, x, cot, mode)
        out_j, g_j = _jax_vjp(layer, variables, x, cot, mode)
        assert out_j.shape == out_t.shape and g_j.dtype == np.float64
        assert rel_err(out_j, out_t) <= 1e-10, ("forward", mode)
        assert rel_err(g_j, g_t) <= 1e-10, ("input gradient", mode)
        if mode:
            g_expl = g_j
        else:
            g_plain = g_j
    if b != 1:  # the dynamic scale is detached in explanation mode, so the gradients must differ
        assert rel_err(g_plain, g_expl) > 1e-2


# --------------------------------------------------------------- v1 Inception, torch reference


class TorchBasicConv2d(tnn.Module):
    """v1 BasicConv2d: a B-cos conv (MaxOut 2, scale_fact 200) named ``conv``, no BN/ReLU."""

    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = BcosConv2dWithScale(cin, cout, b=2, max_out=2, scale_factor=200, **kwargs)

    def forward(self, x):
        return self.conv(x)


def _v1_fc(cin, classes):
    return BcosConv2dWithScale(cin, classes, kernel_size=1, b=2, max_out=2, scale_factor=200)


class TorchInceptionB(tv_inception.InceptionB):
    def _forward(self, x):
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch3x3(x), bd, F.avg_pool2d(x, 3, 2)]  # v1: max -> avg pool


class TorchInceptionD(tv_inception.InceptionD):
    def _forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return [b3, b7, F.avg_pool2d(x, 3, 2)]  # v1: max -> avg pool


class TorchInceptionAux(BcosUtilMixin, tnn.Module):
    """v1 aux head: AvgPool(5, 3) -> conv0 -> conv1 -> B-cos fc -> adaptive avg pool."""

    def __init__(self, cin, classes):
        super().__init__()
        self.conv0 = TorchBasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = TorchBasicConv2d(128, 768, kernel_size=5)
        self.fc = _v1_fc(768, classes)

    def forward(self, x):
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, 3)))
        return F.adaptive_avg_pool2d(self.fc(x), 1)


class TorchV1Inception(BcosUtilMixin, tnn.Module):
    """v1 Inception3 followed by the v1 wrapper's pooling and FinalLayer(norm=1, bias)."""

    def __init__(self, classes=1000):
        super().__init__()
        c = TorchBasicConv2d
        self.Conv2d_1a_3x3 = c(6, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = c(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = c(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = c(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = c(80, 192, kernel_size=3)
        self.Mixed_5b = tv_inception.InceptionA(192, pool_features=32, conv_block=c)
        self.Mixed_5c = tv_inception.InceptionA(256, pool_features=64, conv_block=c)
        self.Mixed_5d = tv_inception.InceptionA(288, pool_features=64, conv_block=c)
        self.Mixed_6a = TorchInceptionB(288, conv_block=c)
        self.Mixed_6b = tv_inception.InceptionC(768, channels_7x7=128, conv_block=c)
        self.Mixed_6c = tv_inception.InceptionC(768, channels_7x7=160, conv_block=c)
        self.Mixed_6d = tv_inception.InceptionC(768, channels_7x7=160, conv_block=c)
        self.Mixed_6e = tv_inception.InceptionC(768, channels_7x7=192, conv_block=c)
        self.AuxLogits = TorchInceptionAux(768, classes)
        self.Mixed_7a = TorchInceptionD(768, conv_block=c)
        self.Mixed_7b = tv_inception.InceptionE(1280, conv_block=c)
        self.Mixed_7c = tv_inception.InceptionE(2048, conv_block=c)
        self.fc = _v1_fc(2048, classes)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.avg_pool2d(x, 3, 2)))
        x = F.avg_pool2d(x, 3, 2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        x = F.adaptive_avg_pool2d(self.fc(x), 1).flatten(1)
        return x / 1.0 + IMAGENET_BIAS


def _read_listing(path):
    header, entries = None, {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                header = line
                continue
            key, shape, _ = line.rstrip("\n").split("\t")
            entries[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return header, entries


@pytest.fixture(scope="module")
def v1_inception():
    """(torch reference in eval mode, converted Flax variables) with the same weights."""
    torch.manual_seed(0)
    ref = TorchV1Inception().eval()
    sd = {"0." + k: v for k, v in ref.state_dict().items()}  # the v1 nn.Sequential wrapper
    return ref, convert.from_torch("v1_inception_v3", sd)


def test_v1_inception_tree_matches_reference_listing():
    header, entries = _read_listing(LISTING)
    assert len(entries) == 98 and "54247808 parameters" in header
    spec = models.get_spec("v1_inception_v3")
    assert sum(math.prod(s) for s in entries.values()) == spec.params == 54_247_808
    # A fake state_dict in the reference layout: conversion raises on any missing,
    # unexpected or mis-shaped key, so this pins the tree key by key and shape by shape.
    fake = {k: np.broadcast_to(np.float32(0), s) for k, s in entries.items()}
    variables = convert.from_torch("v1_inception_v3", fake)
    assert set(variables) == {"params"}
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    assert len(leaves) == 98 and _n_params(variables) == spec.params
    p = variables["params"]
    assert p["Mixed_7c"]["branch3x3dbl_3a"]["conv"]["kernel"].shape == (1, 3, 384, 768)
    assert p["AuxLogits"]["fc"]["kernel"].shape == (1, 1, 768, 2000)


def test_torch_reference_matches_listing(v1_inception):
    # Guards the test's own torch assembly against the original v1 code's state_dict.
    ref, _ = v1_inception
    _, entries = _read_listing(LISTING)
    assert {"0." + k: tuple(v.shape) for k, v in ref.state_dict().items()} == entries


def test_v1_inception_param_counts():
    for name in ("v1_inception_v3", "standard_inception_v3"):
        spec = models.get_spec(name)
        model = models.create(name)
        shapes = jax.eval_shape(
            lambda m=model, c=spec.in_channels: m.init(
                jax.random.key(0), jnp.zeros((1, 299, 299, c))
            )
        )
        assert _n_params(shapes["params"]) == spec.params, name
    no_aux = inception.v1_inception_v3(aux_logits=False)
    shapes = jax.eval_shape(lambda: no_aux.init(jax.random.key(0), jnp.zeros((1, 299, 299, 6))))
    assert _n_params(shapes) == 54_247_808 - (256 * 768 + 1536 * 128 * 25 + 2000 * 768)


def test_v1_inception_parity_and_completeness(v1_inception):
    # 75x75 is the smallest input the architecture takes (the aux head only runs in training).
    # With random weights every layer shrinks its input (|cos| is small), leaving logits
    # within ~1e-5 of the bias, where float32 cannot tell right from wrong. The net is
    # positively homogeneous (B=2, no biases), so a scaled input brings logit - bias to O(1).
    ref, variables = v1_inception
    model = models.create("v1_inception_v3")
    x = 1e5 * _image(2, 75, seed=3)
    targets = np.array([3, 871])
    # Every conv has MaxOut 2 and the stem max-pools: W(x) is compared in float64
    # (tests/precision.py); the logits are continuous in those choices.
    logits_t, w_t, _ = torch_explain(ref, x, targets, float64=True)
    assert np.abs(logits_t - IMAGENET_BIAS).max() > 1.0
    e = run_float64(
        lambda *a: _compiled(lambda v, inp, t: explain(model, v, inp, t), *a), variables, x, targets
    )
    assert rel_err(e.logits, logits_t) <= 1e-10
    assert rel_err(e.weights, w_t) <= 1e-10
    # Completeness: logit = sum of contributions + the FinalLayer bias, nothing else.
    selected = e.logits[np.arange(2), targets]
    np.testing.assert_allclose(e.contributions.sum((1, 2)) + e.bias, selected, rtol=1e-12)
    np.testing.assert_allclose(e.bias, IMAGENET_BIAS, atol=1e-12 * max(1.0, np.abs(selected).max()))


def test_v1_inception_aux_head_parity():
    torch.manual_seed(1)
    ref = TorchInceptionAux(32, 10).eval()
    v1 = inception.v1_inception_v3(num_classes=10)
    head = inception.InceptionAux(10, conv_block=v1.conv_block, classifier=v1.classifier)
    variables = convert.from_torch_module(head, ref.state_dict(), (1, 17, 17, 32))
    x = np.random.default_rng(2).standard_normal((2, 17, 17, 32)).astype(np.float32)
    cot = np.random.default_rng(3).standard_normal((2, 10)).astype(np.float32)
    out_t, g_t = _torch_vjp(ref, x, cot[:, None, None, :], True)
    out_j, g_j = _jax_vjp(head, variables, x, cot, True)
    assert rel_err(out_j, out_t[:, 0, 0]) <= 1e-10
    assert rel_err(g_j, g_t) <= 1e-10


def test_v1_inception_training_outputs():
    model = models.create("v1_inception_v3", num_classes=10)
    x = jnp.zeros((2, 299, 299, 6))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    train = jax.eval_shape(lambda v: model.apply(v, x, train=True), shapes)
    assert set(train) == {"logits", "aux_logits"}
    assert train["logits"].shape == train["aux_logits"].shape == (2, 10)
    assert jax.eval_shape(lambda v: model.apply(v, x), shapes).shape == (2, 10)
    # Small inputs still initialise the aux head's parameters (they depend on channels only).
    small = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 75, 75, 6))))
    assert jax.tree_util.tree_map(lambda a: a.shape, small) == jax.tree_util.tree_map(
        lambda a: a.shape, shapes
    )


def test_standard_inception_matches_torchvision():
    torch.manual_seed(0)
    ref = torchvision.models.inception_v3(
        weights=None, aux_logits=True, init_weights=False, transform_input=True
    )
    randomize_norm_stats(ref)
    ref.eval()
    assert (
        sum(p.numel() for p in ref.parameters()) == models.get_spec("standard_inception_v3").params
    )
    variables = convert.from_torch("standard_inception_v3", ref.state_dict())
    model = models.create("standard_inception_v3")
    x = np.random.default_rng(4).standard_normal((2, 75, 75, 3)).astype(np.float32)
    with torch.no_grad():
        out_t = ref(nchw(x)).numpy()
    out_j = _compiled(lambda v, inp: model.apply(v, inp), variables, jnp.asarray(x))
    assert rel_err(out_j, out_t) <= 1e-4


# ------------------------------------------------------------------------------ CIFAR-10 9L

# From moboehle/B-cos: experiments/CIFAR10/bcos/experiment_parameters.py (9L-M2-B{B}).
CONFIG_T = {1: -3, 1.25: -3, 1.5: -2, 1.75: 1, 2: 2, 2.25: 2, 2.5: 3}
# 10 ** (-2 + 1.5 * (2.5 - B)) of the same configs (docs/recipes.md §2), rounded.
SCALES = {1: 1.778, 1.25: 0.750, 1.5: 0.316, 1.75: 0.133, 2: 0.0562, 2.25: 0.0237, 2.5: 0.01}


class _Pool(tnn.Module):
    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 1)


class _Final(tnn.Module):
    def __init__(self, norm, bias):
        super().__init__()
        self.norm, self.bias = norm, bias

    def forward(self, x):
        return x.view(*x.shape[:2]) / self.norm + self.bias


class TorchNineL(BcosUtilMixin, tnn.Sequential):
    """v1 ``get_model``: 9 B-cos convs, MyAdaptiveAvgPool2d(1), FinalLayer(bias, norm=10**T)."""

    def __init__(self, b):
        scale = 10 ** (-2 + 1.5 * (2.5 - b))
        out_c, ks = [64] * 2 + [128] * 3 + [256] * 3 + [10], [3] * 8 + [1]
        stride, padding = [1, 1, 2, 1, 1, 2, 1, 1, 1], [1] * 8 + [0]
        layers, emb = [], 6
        for c, k, s, p in zip(out_c, ks, stride, padding):
            layers.append(BcosConv2dWithScale(emb, c, k, s, p, b=b, max_out=2, scale=scale))
            emb = c
        super().__init__(*layers, _Pool(), _Final(10 ** CONFIG_T[b], CIFAR_BIAS))


@pytest.mark.parametrize("b", [1, 1.5, 2, 2.5])
def test_cifar9l_parity_and_completeness(b):
    torch.manual_seed(0)
    ref = TorchNineL(b).eval()
    variables = convert.from_torch("v1_cifar10_9l", ref.state_dict(), b=b)
    model = models.create("v1_cifar10_9l", b=b)
    # Scaled input (the net is positively homogeneous), so that logit - bias is not tiny
    # next to the bias for the large temperatures (T = 100, 1000 for B >= 2).
    x = 100 * _image(2, 32, seed=5)
    targets = np.array([1, 8])
    # Logits are continuous in the MaxOut choices: float32 agrees on any CPU.
    logits_t, _, _ = torch_explain(ref, x, targets)
    assert np.abs(logits_t - CIFAR_BIAS).max() > 1.0
    e32 = _compiled(
        lambda v, inp, t: explain(model, v, inp, t), variables, jnp.asarray(x), jnp.asarray(targets)
    )
    assert rel_err(e32.logits, logits_t) <= 2e-5
    # W(x) is not: for B=1.5 two MaxOut candidates of the 8th conv differ by 1.6e-6 of their
    # value (in float64), within the float32 rounding of its 1152-term dot products, and a
    # flip changes W(x) by ~1% over half the image (seen on an AMD EPYC): compare in float64.
    logits_t, w_t, _ = torch_explain(ref, x, targets, float64=True)
    e = run_float64(
        lambda *a: _compiled(lambda v, inp, t: explain(model, v, inp, t), *a), variables, x, targets
    )
    assert e.weights.dtype == np.float64
    assert rel_err(e.logits, logits_t) <= 1e-10
    assert rel_err(e.weights, w_t) <= 1e-10
    selected = e.logits[np.arange(2), targets]
    np.testing.assert_allclose(e.contributions.sum((1, 2)) + e.bias, selected, rtol=1e-12)
    np.testing.assert_allclose(e.bias, CIFAR_BIAS, atol=1e-12 * max(1.0, np.abs(selected).max()))


def test_cifar9l_constants_and_presets():
    for b, t in CONFIG_T.items():
        scale, temperature = cifar9l.v1_cifar10_constants(b)
        assert scale == pytest.approx(SCALES[b], rel=5e-3) and temperature == pytest.approx(10.0**t)
        model = models.create(f"v1_cifar10_9l_b{round(b * 100)}")
        assert model.b == b and models.get_spec(f"v1_cifar10_9l_b{round(b * 100)}").top1 is not None
    assert models.list_models(family="cifar9l") == sorted(
        ["v1_cifar10_9l"] + [f"v1_cifar10_9l_b{n}" for n in (100, 125, 150, 175, 200, 225, 250)]
    )
    with pytest.raises(ValueError, match="no published 9L config"):
        models.create("v1_cifar10_9l", b=1.1)
    with pytest.raises(ValueError, match="no published 9L config"):
        models.create("v1_cifar10_9l", b=1.1, scale=0.5)
    with pytest.raises(ValueError, match="preset"):
        models.create("v1_cifar10_9l_b150", b=2)
    custom = models.create("v1_cifar10_9l", b=1.1, scale=0.5, logit_temperature=3.0)
    out = jax.eval_shape(
        lambda: custom.init_with_output(jax.random.key(0), jnp.zeros((1, 32, 32, 6)))[0]
    )
    assert out.shape == (1, 10)


def test_cifar9l_param_counts():
    ref_count = sum(p.numel() for p in TorchNineL(2).parameters())
    assert ref_count == 3_772_160
    for name in models.list_models(family="cifar9l"):
        spec = models.get_spec(name)
        shapes = jax.eval_shape(
            lambda n=name: models.create(n).init(jax.random.key(0), jnp.zeros((1, 32, 32, 6)))
        )
        assert _n_params(shapes) == spec.params == ref_count, name
        assert (spec.version, spec.in_channels, spec.input_size, spec.torch_prefix) == (
            "v1",
            6,
            32,
            "",
        )

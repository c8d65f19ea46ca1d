"""VGGs (v2 plain/BNU, v1, standard) against the PyTorch reference.

The full models carry a 4096×512×7×7 classifier (0.1–0.3 G parameters), so numerical
parity runs on narrow members assembled from the reference's own pieces
(``bcos.models.vgg.make_layers``/``BcosVGG``, ``torchvision.models.vgg``) with a narrow
classifier, and our model gets the same ``cfg``/``classifier_width`` overrides. The full
models are checked by parameter count and key-by-key shape (``jax.eval_shape`` and torch's
meta device: nothing is allocated).
"""
from __future__ import annotations

import functools
import math
import pathlib
import warnings

from tests.torch_ref import randomize_norm_stats, rel_err

import bcos.models.pretrained as bcos_pretrained
import bcos.models.vgg as bcos_vgg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from bcos.modules import BcosConv2d, BcosConv2dWithScale
from bcos.modules import norms as tnorms

from bcos_jax import convert, models
from bcos_jax.models import vgg
from tests.zoo_helpers import (
    encoded_image,
    explain_parity,
    param_count,
    read_listing,
    structure_mismatch,
    torch_state_dict,
)

DATA = pathlib.Path(__file__).parent / "data"
CFG = (8, "M", 16, "M", 16, 16, "M")
WIDTH = 32
NARROW = dict(cfg=CFG, classifier_width=WIDTH, num_classes=10)
V1_BIAS = math.log(0.01 / 0.99)
V1_CONV = functools.partial(BcosConv2dWithScale, max_out=2, scale_factor=1000)
BNU = tnorms.NoBias(tnorms.BatchNormUncentered2d)
_DEPTH_KEY = {11: "A", 13: "B", 16: "D", 19: "E"}


def _depth(name: str) -> int:
    return int(name.split("vgg")[1].split("_")[0])


# ----------------------------------------------------------------------------- references


def _bcos_kwargs(name: str) -> dict:
    """(norm_layer, conv_layer, logit kwargs) of the reference for a B-cos zoo name."""
    if name.startswith("v1_"):
        # v1: no norm slot at all (an nn.Identity *instance* makes bcos' make_layers skip it),
        # MaxOut 2 and output / scale: test_v1_emulation_matches_v1_state_dict checks keys.
        return dict(
            norm_layer=torch.nn.Identity(),
            conv_layer=V1_CONV,
            logit_temperature=0.1,
            logit_bias=V1_BIAS,
        )
    norm = BNU if name.endswith("_bnu") else torch.nn.Identity
    return dict(norm_layer=norm, conv_layer=functools.partial(BcosConv2d, b=2, max_out=1))


def _torch_reference(name: str) -> torch.nn.Module:
    """The full reference module of zoo model ``name`` (build it on the meta device)."""
    if name.startswith("standard_"):
        return getattr(torchvision.models, name[len("standard_"):])()
    if name == "vgg11_bnu":
        return bcos_pretrained.vgg11_bnu()
    kw = _bcos_kwargs(name)
    if name.startswith("v1_"):
        conv, norm = kw.pop("conv_layer"), kw.pop("norm_layer")
        cfg = bcos_vgg.cfgs[_DEPTH_KEY[_depth(name)]]
        features = bcos_vgg.make_layers(cfg, norm_layer=norm, conv_layer=conv, in_channels=6)
        return bcos_vgg.BcosVGG(features, conv_layer=conv, **kw)
    if not name.endswith("_bnu"):
        del kw["norm_layer"]  # the plain entry points set their own (nn.Identity)
    return getattr(bcos_vgg, name)(**kw)


def _narrow_bcos_reference(name: str, cfg=CFG, width=WIDTH, num_classes=10) -> torch.nn.Module:
    """bcos' BcosVGG (its forward and logit layer) with narrow features and classifier."""
    kw = _bcos_kwargs(name)
    conv, norm = kw.pop("conv_layer"), kw.pop("norm_layer")
    with torch.device("meta"):  # the 4096-wide default classifier is replaced below
        ref = bcos_vgg.BcosVGG(torch.nn.Identity(), num_classes=num_classes, conv_layer=conv, **kw)
    ref.features = bcos_vgg.make_layers(list(cfg), norm_layer=norm, conv_layer=conv, in_channels=6)
    c = [v for v in cfg if v != "M"][-1]
    ref.classifier = torch.nn.Sequential(
        conv(c, width, kernel_size=7, padding=3, scale_fact=1000),
        conv(width, width, scale_fact=1000),
        conv(width, num_classes, scale_fact=1000),
    )
    return ref


def _narrow_torchvision(batch_norm: bool, cfg=CFG, width=WIDTH, num_classes=10, dropout=0.5):
    with torch.device("meta"):
        ref = torchvision.models.vgg.VGG(torch.nn.Identity(), num_classes=num_classes)
    ref.features = torchvision.models.vgg.make_layers(list(cfg), batch_norm=batch_norm)
    c = [v for v in cfg if v != "M"][-1]
    ref.classifier = torch.nn.Sequential(
        torch.nn.Linear(c * 49, width), torch.nn.ReLU(True), torch.nn.Dropout(dropout),
        torch.nn.Linear(width, width), torch.nn.ReLU(True), torch.nn.Dropout(dropout),
        torch.nn.Linear(width, num_classes),
    )  # fmt: skip
    return ref


@pytest.mark.parametrize("name", models.list_models(family="vgg"))
def test_registered_model_matches_reference(name):
    """Every registered VGG: parameter count and key-by-key shapes of the reference."""
    spec = models.get_spec(name)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        ref = _torch_reference(name)
    ref_count = sum(p.numel() for p in ref.parameters())
    assert spec.params == ref_count
    assert param_count(name) == ref_count
    shapes = {k: tuple(v.shape) for k, v in torch_state_dict(name, ref).items()}
    assert structure_mismatch(name, shapes) == []
    assert spec.family == "vgg" and spec.in_channels == (3 if spec.version == "standard" else 6)


def test_v1_emulation_matches_v1_state_dict():
    """The original v1 VGG-11's keys/shapes equal our v1 reference and our variables."""
    listing = read_listing(DATA / "v1_vgg11_state_dict.txt")
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        ref = _torch_reference("v1_vgg11")
    assert {k: tuple(v.shape) for k, v in torch_state_dict("v1_vgg11", ref).items()} == listing
    assert structure_mismatch("v1_vgg11", listing) == []
    # The v2 layout (a norm slot after every conv) must not fit v1 weights.
    assert structure_mismatch("vgg11", {k[2:]: v for k, v in listing.items()}) != []


def test_registry_fields():
    s = models.get_spec("vgg11_bnu")
    assert s.weights_url.endswith("vgg_11_bnu-34036029f0.pth") and s.top1 == 69.310
    assert models.get_spec("vgg13_bnu").weights_url is None
    assert models.get_spec("v1_vgg11").torch_prefix == "0."
    for name in ("vgg11", "v1_vgg16", "standard_vgg19_bn"):
        assert type(models.create(name)) is vgg.VGG  # one definition, injected parts


# ------------------------------------------------------------------------ numerical parity


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bnu"])
def test_v2_parity(name):
    _, _, e = explain_parity(
        name, _narrow_bcos_reference(name), encoded_image(2, 32), np.array([2, 8]), **NARROW
    )
    np.testing.assert_allclose(e.bias, -math.log(9), atol=1e-5)


def test_v1_parity():
    # 48 px: a 6×6 map reaches the 7×7 classifier conv, so its padding is exercised.
    ref = _narrow_bcos_reference("v1_vgg11")
    # MaxOut 2 in every conv: compared in float64 (tests/precision.py).
    x = encoded_image(2, 48, seed=1)
    _, _, e = explain_parity("v1_vgg11", ref, x, np.array([4, 0]), float64=True, **NARROW)
    tol = 1e-12 * float(np.max(np.abs(e.logits)))
    np.testing.assert_allclose(e.bias, V1_BIAS, atol=max(tol, 1e-12))


@pytest.mark.parametrize("name,size", [("standard_vgg11", 32), ("standard_vgg11_bn", 80)])
def test_standard_parity(name, size):
    """Logits of torchvision's VGG (4×4 and 10×10 maps into its adaptive 7×7 pooling)."""
    ref = _narrow_torchvision(batch_norm=name.endswith("_bn")).eval()
    randomize_norm_stats(ref)
    variables = convert.from_torch(name, ref.state_dict(), **NARROW)
    model = models.create(name, **NARROW)
    x = np.random.RandomState(2).randn(2, size, size, 3).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert rel_err(jax.jit(model.apply)(variables, jnp.asarray(x)), expected) <= 1e-4


@pytest.mark.parametrize("size,out", [
    ((5, 9), (7, 7)), ((14, 3), (7, 7)), ((7, 7), (7, 7)), ((10, 6), (3, 4)),
])
def test_adaptive_avg_pool(size, out):
    x = np.random.RandomState(0).randn(2, *size, 3).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), out
    )
    ours = vgg.adaptive_avg_pool(jnp.asarray(x), out)
    np.testing.assert_allclose(ours, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_standard_train_mode_matches_reference():
    """Train mode of the BN VGG (dropout off): outputs and running statistics."""
    ref = _narrow_torchvision(batch_norm=True, dropout=0.0)
    randomize_norm_stats(ref)
    overrides = dict(NARROW, dropout=0.0)
    variables = convert.from_torch("standard_vgg11_bn", ref.state_dict(), **overrides)
    model = models.create("standard_vgg11_bn", **overrides)
    x = np.random.RandomState(3).randn(4, 32, 32, 3).astype(np.float32)
    expected = ref.train()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    train_step = jax.jit(lambda v, inp: model.apply(v, inp, train=True, mutable=["batch_stats"]))
    out, state = train_step(variables, x)
    assert rel_err(out, expected) <= 1e-4
    updated = convert.from_torch("standard_vgg11_bn", ref.state_dict(), **overrides)["batch_stats"]
    flat_new, flat_ref = convert._flatten(state["batch_stats"]), convert._flatten(updated)
    assert flat_new.keys() == flat_ref.keys()
    for k in flat_ref:
        assert rel_err(flat_new[k], flat_ref[k]) <= 1e-5, k
    assert rel_err(convert._flatten(variables["batch_stats"])[k], flat_ref[k]) > 1e-3  # it did move


def test_standard_dropout_uses_rng():
    model = models.create("standard_vgg11", **NARROW)
    x = jnp.asarray(np.random.RandomState(4).randn(2, 32, 32, 3).astype(np.float32))
    # Weights from torch: compiling flax's initialisers costs more than this whole test.
    ref = _narrow_torchvision(batch_norm=False)
    variables = convert.from_torch("standard_vgg11", ref.state_dict(), **NARROW)
    run = jax.jit(
        lambda v, inp, key, train: model.apply(v, inp, train=train, rngs={"dropout": key}),
        static_argnums=3,
    )
    a, b = run(variables, x, jax.random.key(1), True), run(variables, x, jax.random.key(2), True)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, run(variables, x, jax.random.key(1), True))
    evaluated = run(variables, x, jax.random.key(1), False)
    assert not np.allclose(a, evaluated)
    np.testing.assert_array_equal(evaluated, run(variables, x, jax.random.key(2), False))

"""DenseNets (v2 ImageNet/CIFAR, v1, standard) against the PyTorch reference.

Numerical parity runs on depth-reduced members built by the reference's own classes
(``bcos.models.densenet.BcosDenseNet``, ``torchvision.models.densenet.DenseNet``) with the
same overrides on our side: every code path of the full models is exercised, while the
full-size models are checked structurally (every state_dict key and shape maps onto our
variables) and by parameter count, without compiling them.
"""
from __future__ import annotations

import functools
import math
import pathlib
import warnings

from tests.torch_ref import randomize_norm_stats, rel_err

import bcos.models.densenet as bcos_densenet
import bcos.models.pretrained as bcos_pretrained
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from bcos.modules import BcosConv2d, BcosConv2dWithScale
from bcos.modules import norms as tnorms

from bcos_jax import convert, models
from bcos_jax.models import densenet
from tests.zoo_helpers import (
    encoded_image,
    explain_parity,
    param_count,
    read_listing,
    structure_mismatch,
    torch_state_dict,
)

DATA = pathlib.Path(__file__).parent / "data"
SMALL = dict(growth_rate=8, block_config=(2, 1, 1), num_init_features=16, num_classes=10)
SMALL_CIFAR = dict(growth_rate=4, block_config=(2, 1, 1), num_init_features=8, num_classes=10)
V1_BIAS = math.log(0.01 / 0.99)
V1_CONV = functools.partial(BcosConv2dWithScale, max_out=2, scale_factor=100)


def _no_norm(num_features):
    return torch.nn.Identity()


# ----------------------------------------------------------------------------- references


def _torch_reference(name: str, **arch) -> torch.nn.Module:
    """The reference module of zoo model ``name`` (``arch`` overrides its shape)."""
    depth = int("".join(c for c in name.split("densenet")[1] if c.isdigit()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("standard_"):
            if arch:
                return torchvision.models.densenet.DenseNet(**arch)
            return getattr(torchvision.models, f"densenet{depth}")()
        if name.startswith("cifar10_"):
            if arch:
                return bcos_densenet.BcosDenseNet(**arch, small_inputs=True)
            return getattr(bcos_densenet, f"cifar10_densenet{depth}")()
        if name.startswith("v1_"):
            # v1 is bcos' DenseNet with the v1 conv (MaxOut 2, output / scale) and no norms:
            # test_v1_emulation_matches_v1_state_dict checks it against the original's keys.
            kw = dict(
                conv_layer=V1_CONV, norm_layer=_no_norm, logit_temperature=1e-3, logit_bias=V1_BIAS
            )
            if arch:
                return bcos_densenet.BcosDenseNet(**arch, **kw)
            return getattr(bcos_densenet, f"densenet{depth}")(**kw)
        if arch:
            return bcos_densenet.BcosDenseNet(
                **arch,
                norm_layer=tnorms.NoBias(tnorms.BatchNormUncentered2d),
                conv_layer=functools.partial(BcosConv2d, b=2, max_out=1),
            )
        return getattr(bcos_pretrained, name)()


# The B-cosified DenseNets (same family, another reference) are checked by tests/test_bcosify.py.
@pytest.mark.parametrize("name", [n for n in models.list_models(family="densenet")
                                  if not n.startswith("bcosified_")])
def test_registered_model_matches_reference(name):
    """Every registered DenseNet: parameter count and key-by-key shapes of the reference."""
    spec = models.get_spec(name)
    with torch.device("meta"):
        ref = _torch_reference(name)
    ref_count = sum(p.numel() for p in ref.parameters())
    assert spec.params == ref_count
    assert param_count(name) == ref_count
    shapes = {k: tuple(v.shape) for k, v in torch_state_dict(name, ref).items()}
    assert structure_mismatch(name, shapes) == []
    assert spec.family == "densenet" and spec.in_channels == (
        3 if spec.version == "standard" else 6
    )


def test_v1_emulation_matches_v1_state_dict():
    """The original v1 DenseNet-121's keys/shapes equal our v1 reference and our variables."""
    listing = read_listing(DATA / "v1_densenet121_state_dict.txt")
    with torch.device("meta"):
        ref = _torch_reference("v1_densenet121", **{})
    ours = {k: tuple(v.shape) for k, v in torch_state_dict("v1_densenet121", ref).items()}
    assert ours == listing
    assert structure_mismatch("v1_densenet121", listing) == []


def test_structure_check_can_fail():
    shapes = read_listing(DATA / "v1_densenet121_state_dict.txt")
    shapes["0.classifier.linear.weight"] = (1000, 1024, 1, 1)  # MaxOut 2 would need 2000
    assert any("classifier" in b for b in structure_mismatch("v1_densenet121", shapes))


def test_registry_fields():
    assert models.get_spec("densenet121").weights_url.endswith("densenet_121-b8daf96afb.pth")
    assert models.get_spec("densenet121_long").weights_url.endswith(
        "densenet_121_long-5175461597.pth"
    )
    assert models.get_spec("densenet121_long").resize == 232
    assert models.get_spec("v1_densenet121").torch_prefix == "0."
    assert models.get_spec("cifar10_densenet100").input_size == 32
    assert models.get_spec("cifar10_densenet100").num_classes == 10


# ------------------------------------------------------------------------ numerical parity


def test_v2_imagenet_parity():
    tm = _torch_reference("densenet121", **SMALL)
    _, _, e = explain_parity("densenet121", tm, encoded_image(2, 32), np.array([3, 7]), **SMALL)
    np.testing.assert_allclose(e.bias, -math.log(9), atol=1e-5)


def test_v2_cifar_parity():
    tm = _torch_reference("cifar10_densenet52", **SMALL_CIFAR)
    x = encoded_image(2, 16, seed=1)
    _, _, e = explain_parity("cifar10_densenet52", tm, x, np.array([0, 9]), **SMALL_CIFAR)
    np.testing.assert_allclose(e.bias, -math.log(9), atol=1e-5)


def test_v1_parity():
    tm = _torch_reference("v1_densenet121", **SMALL)
    # MaxOut 2 in every conv: compared in float64 (tests/precision.py).
    x = encoded_image(2, 32, seed=2)
    _, _, e = explain_parity("v1_densenet121", tm, x, np.array([5, 1]), float64=True, **SMALL)
    # Logits are pooled / 1e-3: the bias is recovered up to the rounding of the logits.
    tol = 1e-12 * float(np.max(np.abs(e.logits)))
    np.testing.assert_allclose(e.bias, V1_BIAS, atol=max(tol, 1e-12))


def test_standard_parity():
    arch = dict(SMALL)
    tm = _torch_reference("standard_densenet121", **arch).eval()
    randomize_norm_stats(tm)
    x = np.random.RandomState(3).randn(2, 32, 32, 3).astype(np.float32)
    variables = convert.from_torch("standard_densenet121", tm.state_dict(), **arch)
    model = models.create("standard_densenet121", **arch)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    out = jax.jit(model.apply)(variables, jnp.asarray(x))
    assert rel_err(out, ref) <= 1e-4


def test_v2_train_mode_matches_reference():
    """Train-mode outputs and running-variance updates of the uncentred BN (batch stats)."""
    tm = _torch_reference("densenet121", **SMALL)
    randomize_norm_stats(tm)
    variables = convert.from_torch("densenet121", tm.state_dict(), **SMALL)
    model = models.create("densenet121", **SMALL)
    x = encoded_image(4, 32, seed=4)
    tm.train()
    ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    out, state = jax.jit(lambda v, inp: model.apply(v, inp, train=True, mutable=["batch_stats"]))(
        variables, jnp.asarray(x)
    )
    assert rel_err(out, ref) <= 1e-4
    updated = convert.from_torch("densenet121", tm.state_dict(), **SMALL)["batch_stats"]
    for a, b in zip(
        jax.tree_util.tree_leaves(state["batch_stats"]), jax.tree_util.tree_leaves(updated)
    ):
        assert rel_err(a, b) <= 1e-4
    # The update must have happened (else this check could not fail).
    before = jax.tree_util.tree_leaves(variables["batch_stats"])[0]
    assert rel_err(before, jax.tree_util.tree_leaves(updated)[0]) > 1e-3


def test_module_is_one_definition():
    """v1, v2 and standard are the same class with injected parts."""
    for name in ("densenet121", "v1_densenet121", "standard_densenet121", "cifar10_densenet52"):
        assert type(models.create(name)) is densenet.DenseNet

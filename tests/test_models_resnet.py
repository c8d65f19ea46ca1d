"""ResNet family: parity with the PyTorch references, parameter counts, state_dict layouts.

References: ``bcos`` 0.1.3 (v2 entry points and the CIFAR constructors), the v1 ResNet
assembled from bcos' own modules (checked once, outside CI, to give outputs identical to
moboehle/B-cos ``models/bcos/resnet.py`` wrapped as in its ``get_model``), torchvision.
"""
from __future__ import annotations

import math
import os
from functools import partial

from tests.torch_ref import nchw, randomize_norm_stats, rel_err, torch, torch_explain

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchvision
from bcos.models import pretrained as bcos_pretrained
from bcos.models import resnet as bcos_resnet
from bcos.modules import BcosConv2dWithScale
from bcos.modules import norms as bcos_norms

from bcos_jax import convert, models
from bcos_jax.explain import explain
from bcos_jax.models import resnet

# Skips this module when torch or bcos is missing (importorskip inside).
from tests.precision import run_float64

DATA = os.path.join(os.path.dirname(__file__), "data")
C = 10
LOG_BIAS = -math.log(C - 1)
BNU = bcos_norms.NoBias(bcos_norms.BatchNormUncentered2d)


@pytest.fixture(autouse=True)
def _torch_seed():
    # Deterministic reference weights: with MaxOut, a random init can (rarely, ~1 in 40 here)
    # put two units within float32 rounding of each other, and the two frameworks may then
    # select different ones, a legitimate discrete difference in W(x).
    torch.manual_seed(0)


def _image(n: int, size: int, seed: int = 0, channels: int = 6) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)
    return np.concatenate([x, 1 - x], -1) if channels == 6 else x


def _convert(name, tmodel, prefix="", **overrides):
    sd = {prefix + k: v for k, v in tmodel.state_dict().items()}
    return models.create(name, **overrides), convert.from_torch(name, sd, **overrides)


_explain = jax.jit(explain, static_argnums=0)  # one compile per model: logits and W(x) together


def _prepare(name, tmodel, prefix, bias, overrides):
    randomize_norm_stats(tmodel)
    tmodel.eval()
    if bias is None:
        tmodel.logit_layer.logit_bias = 0.0
        overrides["logit_bias"] = 0.0
    return _convert(name, tmodel, prefix, num_classes=C, **overrides)


def _check_forward(name, tmodel, x, prefix="", bias=None, **overrides):
    """Logits only (one forward compile): deep models whose blocks are explained elsewhere."""
    model, variables = _prepare(name, tmodel, prefix, bias, overrides)
    with torch.no_grad():
        t_logits = tmodel(nchw(x)).numpy()
    assert rel_err(jax.jit(model.apply)(variables, jnp.asarray(x)), t_logits) <= 1e-4


def _check_bcos(name, tmodel, x, prefix="", bias=None, float64=False, **overrides):
    """Logits and W(x) of the converted model against the reference; returns the Explanation.

    With ``bias=None`` the constant logit bias is set to 0 in both models: random-init B-cos
    logits are ~1e-5, which a bias of -log(9) would swamp in float32. Otherwise the model
    keeps ``bias`` and the test checks that the explanation recovers exactly that constant.
    ``float64=True`` compares in double precision, for MaxOut models (tests/precision.py).
    """
    model, variables = _prepare(name, tmodel, prefix, bias, overrides)
    t_logits, t_w, t_tgt = torch_explain(tmodel, x, float64=float64)
    if float64:
        e = run_float64(_explain, model, variables, x, t_tgt)
    else:
        e = _explain(model, variables, jnp.asarray(x), jnp.asarray(t_tgt))
    tol_logits, tol_w, tol_sum = (1e-10, 1e-10, 1e-12) if float64 else (1e-4, 1e-3, 1e-5)
    logits = np.asarray(e.logits)
    assert rel_err(logits, t_logits) <= tol_logits
    assert rel_err(e.weights, t_w) <= tol_w
    # Completeness: logit = Σ x·W(x) + the constant logit bias (0 here unless ``bias``), up to
    # the rounding of a sum over all input entries.
    expected = 0.0 if bias is None else bias
    sel = logits[np.arange(len(x)), t_tgt]
    mag = np.abs(x * np.asarray(e.weights)).sum((1, 2, 3)) + abs(expected)
    total = np.asarray(e.contributions).sum((1, 2)) + np.asarray(e.bias)
    np.testing.assert_array_less(np.abs(total - sel), tol_sum * mag)
    np.testing.assert_array_less(np.abs(np.asarray(e.bias) - expected), tol_sum * mag)
    return e


# ------------------------------------------------------------------------------ v2 ImageNet
def test_resnet18_bnu_parity():
    tm = bcos_pretrained.resnet18(num_classes=C, logit_bias=LOG_BIAS)
    assert isinstance(tm.bn1, bcos_norms.BatchNormUncentered2d) and tm.bn1.bias is None
    _check_bcos("resnet18", tm, _image(2, 64))


def test_resnet50_bnu_parity():
    # Forward only: the Bottleneck's explanation is checked on the ResNeXt below.
    tm = bcos_pretrained.resnet50(num_classes=C, logit_bias=LOG_BIAS)
    _check_forward("resnet50", tm, _image(1, 32, seed=1))


def test_resnext50_grouped_parity():
    # Full width and cardinality (32 groups of 4), one block per stage to keep it cheap.
    tm = bcos_resnet.BcosResNet(
        bcos_resnet.Bottleneck,
        [1, 1, 1, 1],
        num_classes=C,
        groups=32,
        width_per_group=4,
        norm_layer=BNU,
    )
    _check_bcos("resnext50_32x4d", tm, _image(2, 32, seed=2), layers=(1, 1, 1, 1))


# ------------------------------------------------------------------------------ v2 CIFAR
def test_cifar10_resnet20_default_parity():
    tm = (
        bcos_resnet.cifar10_resnet20()
    )  # bare constructor: NoBias(DetachablePositionNorm2d), max_out 1
    _check_bcos("cifar10_resnet20", tm, _image(2, 32, seed=3))


def test_cifar10_ablation_config_with_logit_bias():
    """The paper's CIFAR config 'resnet_20_gn-linear' (centred GroupNorm(2) without bias,
    MaxOut 2, logit bias -log 9) through the reference's own config system; the network is
    rebuilt with that config's conv/norm factories and one block per stage to keep it cheap."""
    from bcos.experiments.utils import Experiment

    ref = Experiment("CIFAR10", "norm_ablations_final", "resnet_20_gn-linear").get_model()
    assert ref.conv1.max_out == 2 and ref.logit_layer.logit_bias == pytest.approx(LOG_BIAS)
    tm = bcos_resnet.BcosResNet(
        bcos_resnet.BasicBlock, [1, 1, 1], num_classes=C, inplanes=16, small_inputs=True,
        norm_layer=ref._norm_layer, conv_layer=ref._conv_layer, logit_bias=LOG_BIAS,
    )
    _check_bcos(
        "cifar10_resnet20", tm, _image(2, 32, seed=4), bias=LOG_BIAS, norm="gn-linear", max_out=2,
        layers=(1, 1, 1), float64=True,
    )


def test_cifar_train_mode_matches_reference():
    """Batch statistics in training: logits and the updated running variance (BNU, biased var)."""
    tm = bcos_resnet.BcosResNet(
        bcos_resnet.BasicBlock,
        [1, 1, 1],
        num_classes=C,
        inplanes=16,
        small_inputs=True,
        norm_layer=BNU,
    )
    tm.logit_layer.logit_bias = 0.0  # see _check_bcos
    randomize_norm_stats(tm)
    model, variables = _convert(
        "cifar10_resnet20", tm, norm="bnu-linear", layers=(1, 1, 1), logit_bias=0.0
    )
    x = _image(4, 32, seed=5)
    tm.train()
    t_logits = tm(nchw(x)).detach().numpy()
    apply = jax.jit(partial(model.apply, train=True, mutable=["batch_stats"]))
    logits, state = apply(variables, jnp.asarray(x))
    assert rel_err(logits, t_logits) <= 1e-4
    for path in (("bn1",), ("layer3", "0", "bn2"), ("layer3", "0", "downsample", "1")):
        t_mod = tm.get_submodule(".".join(path))
        ours = state["batch_stats"]
        for p in path:
            ours = ours[p]
        assert rel_err(ours["var"], t_mod.running_var.numpy()) <= 1e-5


def test_stochastic_depth():
    """Row-wise stochastic depth with the reference's linear schedule p_i = p · i / (n - 1).

    With p = 1 on 4 blocks (p_i = 0, 1/3, 2/3, 1): the last block's branch always drops (its
    output is its input), the first block never drops, eval mode is the plain network, and
    training needs the 'dropout' rng stream.
    """
    tm = bcos_resnet.BcosResNet(
        bcos_resnet.BasicBlock, [1, 1, 2], num_classes=C, inplanes=16, small_inputs=True
    )
    overrides = dict(layers=(1, 1, 2), stochastic_depth_prob=1.0)
    model, variables = _convert("cifar10_resnet20", tm, **overrides)
    plain = models.create("cifar10_resnet20", layers=(1, 1, 2))
    x = jnp.asarray(_image(2, 16, seed=6))
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda: model.apply(variables, x, train=True))

    def run(mdl, train, key):
        kw = dict(rngs={"dropout": key}) if train else {}
        out, st = mdl.apply(
            variables, x, train=train, capture_intermediates=True, mutable=["intermediates"], **kw
        )
        inter = st["intermediates"]
        blocks = [inter["layer1"]["0"], inter["layer3"]["0"], inter["layer3"]["1"]]
        return out, [b["__call__"][0] for b in blocks]

    @jax.jit
    def all_runs(keys):
        return (
            jax.vmap(lambda k: run(model, True, k))(keys),
            run(model, False, keys[0]),
            run(plain, False, keys[0]),
        )

    (t_out, t_blocks), (e_out, e_blocks), (p_out, p_blocks) = all_runs(
        jax.random.split(jax.random.key(1), 4)
    )
    np.testing.assert_array_equal(e_out, p_out)
    np.testing.assert_array_equal(t_blocks[2], t_blocks[1])  # p = 1: branch dropped
    assert float(jnp.max(jnp.abs(e_blocks[2] - e_blocks[1]))) > 0
    np.testing.assert_allclose(
        t_blocks[0], jnp.broadcast_to(e_blocks[0], t_blocks[0].shape), rtol=1e-6
    )  # p = 0
    assert float(jnp.max(jnp.abs(t_out - e_out))) > 0  # the middle blocks drop for some keys


def test_resnet50_long_is_stochastic_depth_entry_point():
    spec = models.get_spec("resnet50_long")
    m = spec.build()
    assert (
        m.stochastic_depth_prob == 0.1
        and spec.resize == 232
        and spec.weights_url.endswith("ef38a88533.pth")
    )
    with torch.device("meta"):
        tm = bcos_pretrained.resnet50_long()
    assert (
        tm.layer4[2].stochastic_depth.p == pytest.approx(0.1)
        and tm.layer1[0].stochastic_depth is None
    )


# ------------------------------------------------------------------------------ standard
def test_standard_resnet18_matches_torchvision():
    tm = torchvision.models.resnet18(weights=None, num_classes=C)
    randomize_norm_stats(tm)
    with torch.no_grad():
        tm.fc.bias.normal_(0, 0.1)
    tm.eval()
    model, variables = _convert("standard_resnet18", tm, num_classes=C)
    x = (_image(2, 64, seed=7, channels=3) - 0.45) / 0.225
    with torch.no_grad():
        t_logits = tm(nchw(x)).numpy()
    logits = jax.jit(model.apply)(variables, jnp.asarray(x))
    assert rel_err(logits, t_logits) <= 1e-4
    assert float(np.std(t_logits)) > 1e-2  # ReLUs and centred BN at work, not a degenerate output


# ------------------------------------------------------------------------------ v1
def _v1_reference(block, layers, num_classes=C):
    """The v1 (CVPR 2022) ResNet from bcos' modules: no norms, MaxOut 2, scale k·sqrt(Cin)/100,
    logits = pool(fc) / 10 + log(0.01/0.99) (identical outputs to the original code)."""
    return bcos_resnet.BcosResNet(
        block,
        layers,
        num_classes=num_classes,
        norm_layer=torch.nn.Identity,
        conv_layer=partial(BcosConv2dWithScale, max_out=2, scale_factor=100),
        logit_bias=math.log(0.01 / 0.99),
        logit_temperature=10.0,
    )


def test_v1_resnet18_parity():
    tm = _v1_reference(bcos_resnet.BasicBlock, [2, 2, 2, 2])
    # v1 has no norms, so the network is 1-homogeneous in x: a scaled input makes the
    # contributions large against the constant log(0.01/0.99) (fixed temperature 10 kept).
    _check_bcos(
        "v1_resnet18",
        tm,
        1e3 * _image(2, 32, seed=8),
        prefix="0.",
        bias=math.log(0.01 / 0.99),
        float64=True,
    )


def _listing(fname):
    rows = {}
    with open(os.path.join(DATA, fname)) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            key, shape, dtype = line.rstrip("\n").split("\t")
            rows[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return rows


@pytest.mark.parametrize(
    "name,fname",
    [
        ("v1_resnet34", "v1_resnet34_state_dict.txt"),
        ("v1_resnet50", "v1_resnet50_state_dict.txt"),
        ("resnet18", "v2_resnet18_state_dict.txt"),
        ("resnet50_long", "v2_resnet50_long_state_dict.txt"),
    ],
)
def test_reference_state_dict_layout_converts(name, fname):
    """The key/shape listing of the reference checkpoint fills exactly our variables."""
    rows = _listing(fname)
    sd = {k: np.zeros(s, np.int64 if "int" in d else np.float32) for k, (s, d) in rows.items()}
    stem = models.get_spec(name).torch_prefix + "conv1.linear.weight"
    sd[stem] = np.random.default_rng(0).normal(size=rows[stem][0]).astype(np.float32)
    variables = convert.from_torch(name, sd)  # raises ConversionError on any mismatch
    n = sum(int(np.prod(s)) for k, (s, _) in rows.items() if k.endswith("weight"))
    assert sum(a.size for a in jax.tree_util.tree_leaves(variables["params"])) == n
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["conv1"]["kernel"]), sd[stem].transpose(2, 3, 1, 0)
    )


# ------------------------------------------------------------------------------ registry
def _torch_reference(name):
    """The reference module of a registered name (construct under torch.device('meta'))."""
    spec = models.get_spec(name)
    base = name.split("_", 1)[1] if spec.version in ("standard", "v1") else name
    if spec.version == "standard":
        return getattr(torchvision.models, base)()
    if spec.version == "v1":
        blk = bcos_resnet.BasicBlock if base in ("resnet18", "resnet34") else bcos_resnet.Bottleneck
        layers = {"resnet18": [2] * 4, "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3],
                  "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}[base]
        return _v1_reference(blk, layers, num_classes=1000)
    if name in bcos_pretrained.list_available():
        return getattr(bcos_pretrained, name)()
    return getattr(bcos_resnet, name)()


EXPECTED_NAMES = (
    {f"{p}{n}" for p in ("", "standard_") for n in resnet._IMAGENET}
    | {f"v1_resnet{d}" for d in (18, 34, 50, 101, 152)}
    | {"resnet50_long", "resnet152_long"}
    | {n for n in bcos_resnet.__all__ if n.startswith("cifar10_")}
)


def test_registry_names():
    bcosified = {f"bcosified_{n}" for n in resnet._IMAGENET} | {"bcosified_resnet50_v1"}
    assert set(models.list_models(family="resnet")) == EXPECTED_NAMES | bcosified
    ours = {n for n in EXPECTED_NAMES if models.get_spec(n).version == "v2"}
    assert ours >= {
        n for n in bcos_pretrained.list_available() if n.startswith(("resnet", "resnext"))
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_param_count(name):
    spec = models.get_spec(name)
    model = models.create(name)
    shape = (1, 32, 32, spec.in_channels)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
    ours = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(variables["params"]))
    with torch.device("meta"):
        ref = sum(p.numel() for p in _torch_reference(name).parameters())
    assert ours == spec.params == ref
    assert spec.family == "resnet" and spec.in_channels == (3 if spec.version == "standard" else 6)
    if spec.version == "v2" and name.startswith("cifar10_"):
        assert spec.input_size == 32 and spec.num_classes == 10


def test_v1_logit_constants():
    m = models.create("v1_resnet34")
    assert m.logit_temperature == 10.0 and m.logit_bias == pytest.approx(math.log(0.01 / 0.99))
    assert models.get_spec("v1_resnet34").torch_prefix == "0."


def test_unknown_norm_name():
    with pytest.raises(ValueError, match="unknown norm"):
        models.create("cifar10_resnet20", norm="bogus")

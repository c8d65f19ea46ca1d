"""B-cosification (``bcos_jax.bcosify``, zoo entries ``bcosified_*``) against the reference.

The reference (shrebox/B-cosification) is transcribed in tests/bcosify_ref.py. For each
family a small standard torch model with random weights and randomised norm statistics
is B-cosified twice: by the reference (giving the state_dict layout of its released
checkpoints) and by ``bcosify`` from the converted standard variables. Checked:

* the reference's B-cosified state_dict, stripped or as a Lightning checkpoint, loads
  with ``convert.from_torch('bcosified_*')`` and gives the reference's logits (<= 1e-4)
  and explanation-mode input gradients W(x) (<= 1e-3), in float64 for the CNNs (ReLU and
  max-pool choices could flip on float32 rounding);
* ``bcosify`` produces exactly those variables;
* the folded (linear) input normalisation leaves no constant in the explanation;
* function preservation: with B = 1 and the biases kept, the B-cosified network computes
  the standard network's logits.
"""

from __future__ import annotations

import copy
import functools
import math

from tests.torch_ref import nchw, nhwc, randomize_norm_stats, rel_err, torch

import bcos.models.pretrained as bcos_pretrained
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torchvision.models as tvm

from bcos_jax import convert, layers, models
from bcos_jax.bcosify import bcosify
from bcos_jax.explain import explain
from bcos_jax.models.bcosified import IMAGENET_MEAN6, IMAGENET_STD6, VIT_LOGIT_BIAS
from tests import bcosify_ref as ref

NUM_CLASSES = 5
CNN_LOGIT_BIAS = -math.log(999)


def _randomize_biases(tm, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in tm.named_parameters():
            if n.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def _image(h, w, seed=0):
    x = np.random.RandomState(seed).rand(2, h, w, 3).astype(np.float32)
    return np.concatenate([x, 1.0 - x], axis=-1)


# ------------------------------------------------------------------------------ cases
def _resnet():
    torch.manual_seed(0)
    tm = ref.ResNetBcos(tvm.resnet.BasicBlock, [1, 1, 1, 1], num_classes=NUM_CLASSES)
    return tm, "standard_resnet18", dict(layers=(1, 1, 1, 1), num_classes=NUM_CLASSES), (32, 32)


def _densenet():
    torch.manual_seed(0)
    shape = dict(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2)
    tm = ref.DenseNetBcos(**shape, num_classes=NUM_CLASSES)
    return tm, "standard_densenet121", dict(shape, num_classes=NUM_CLASSES), (32, 32)


def _vit(name):
    torch.manual_seed(0)
    tm = getattr(bcos_pretrained, f"standard_{name}")(num_classes=NUM_CLASSES)
    for i in range(2, len(tm.transformer)):
        delattr(tm.transformer, f"encoder_{i}")
    return tm, f"standard_{name}", dict(depth=2, num_classes=NUM_CLASSES), (32, 48)


CASES = {
    "resnet": _resnet,
    "densenet": _densenet,
    "simple_vit": functools.partial(_vit, "simple_vit_ti_patch16_224"),
    "vitc": functools.partial(_vit, "vitc_ti_patch1_14"),
}


def _reference_bcosified(kind, tm):
    tm = copy.deepcopy(tm)
    if kind == "resnet":
        return ref.bcosify_cnn(tm, "fc", "maxpool")
    if kind == "densenet":
        return ref.bcosify_cnn(tm, "classifier", "features[3]")
    return ref.bcosify_vit(tm)


@functools.cache
def _case(kind):
    tm, std_name, arch, (h, w) = CASES[kind]()
    randomize_norm_stats(tm)
    _randomize_biases(tm)
    tm.eval()
    rm = _reference_bcosified(kind, tm).eval()
    x = _image(h, w)
    cnn = kind in ("resnet", "densenet")
    if cnn:
        # Random B = 2 layers with raw filters shrink the outputs (ResNet: ~1e-9 around the
        # logit bias, unresolved in float32): scale the classifier's filters (the 1x1 B-cos
        # head is 2-homogeneous in them, exactly) so that the logits are O(1), in the
        # standard model too (bcosify copies its weights).
        with torch.no_grad():
            out = copy.deepcopy(rm).double()(nchw(x, np.float64)).numpy()
            head = "fc" if kind == "resnet" else "classifier"
            scale = 1.0 / math.sqrt(float(np.abs(out - CNN_LOGIT_BIAS).max()))
            getattr(rm.model, head).linear.weight.mul_(scale)
            getattr(tm, head).weight.mul_(scale)
    else:
        # A random B-cos ViT's outputs sit ~1e-3 around the logit bias: scale the head norm
        # (the head is 1-homogeneous in it, exactly) so that the logits are O(1).
        with torch.no_grad():
            out = rm(nchw(x)).numpy()
            scale = 1.0 / float(np.abs(out - VIT_LOGIT_BIAS).max())
            # (in the standard model too, whose weights bcosify copies)
            for m in (rm.model, tm):
                m.linear_head.norm.weight.mul_(scale)
    return dict(
        kind=kind,
        tm=tm,
        rm=rm,
        std_name=std_name,
        arch=arch,
        x=x,
        cnn=cnn,
        name=std_name.replace("standard_", "bcosified_"),
    )


def _torch_outputs(rm, x, float64):
    """Logits and explanation-mode W(x) of the reference, targets = largest |logit - bias|."""
    m = copy.deepcopy(rm).double() if float64 else rm
    xt = nchw(x, np.float64 if float64 else np.float32).requires_grad_(True)
    with m.explanation_mode():
        out = m(xt)
        bias = m.logit_layer.logit_bias
        t = (out - bias).abs().argmax(1)
        (g,) = torch.autograd.grad(out[torch.arange(out.shape[0]), t].sum(), xt)
    return out.detach().numpy(), nhwc(g), t.numpy()


def _jax_outputs(model, variables, x, targets, float64):
    if not float64:
        e = jax.jit(lambda v, a, t: explain(model, v, a, t))(
            variables, jnp.asarray(x), jnp.asarray(targets)
        )
        return jax.tree.map(np.asarray, (e.logits, e.weights, e.contributions, e.bias))
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), variables)
        e = explain(model, v64, jnp.asarray(np.asarray(x, np.float64)), jnp.asarray(targets))
        return jax.tree.map(np.asarray, (e.logits, e.weights, e.contributions, e.bias))


@pytest.fixture(params=sorted(CASES))
def case(request):
    return _case(request.param)


# ------------------------------------------------------------------------------ parity
def test_released_layout_loads_with_parity(case):
    c = case
    sd = {k: v for k, v in c["rm"].state_dict().items()}
    lightning = {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 89}
    variables = convert.from_torch(c["name"], lightning, **c["arch"])
    stripped = convert.from_torch(c["name"], sd, **c["arch"])
    inner = convert.from_torch(
        c["name"], lightning["state_dict"], **c["arch"]
    )  # load_torch_checkpoint's output
    for other in (stripped, inner):
        jax.tree.map(np.testing.assert_array_equal, variables, other)
    logits_t, w_t, targets = _torch_outputs(c["rm"], c["x"], c["cnn"])
    lb = CNN_LOGIT_BIAS if c["cnn"] else VIT_LOGIT_BIAS
    # The reference's own input normalisation: the same logits and W(x).
    affine = models.create(c["name"], input_norm="affine", **c["arch"])
    logits_a, w_a, _, _ = _jax_outputs(affine, variables, c["x"], targets, c["cnn"])
    # Without the constant logit bias, which would hide errors in the network.
    assert rel_err(logits_a - lb, logits_t - lb) <= 1e-4
    assert rel_err(w_a, w_t) <= 1e-3
    # The default, folded normalisation: the same logits; W(x) is the reference's plus, for
    # each colour c, the pixel's constant -(μ_c W_c + μ_c' W_c') on both of its channels c,
    # c' = c + 3 (the chain rule through the linear map instead of the affine one).
    model = models.create(c["name"], **c["arch"])
    logits, w, contrib, bias = _jax_outputs(model, variables, c["x"], targets, c["cnn"])
    assert rel_err(logits - lb, logits_t - lb) <= 1e-4
    mu = np.asarray(IMAGENET_MEAN6)
    shift = -(mu[:3] * w_t[..., :3] + mu[3:] * w_t[..., 3:])
    assert rel_err(w, w_t + np.concatenate([shift, shift], axis=-1)) <= 1e-3
    # The explanation is not the plain gradient (the detached gates and norms matter).
    xt = nchw(c["x"]).requires_grad_(True)
    (plain,) = torch.autograd.grad(c["rm"](xt)[torch.arange(2), torch.as_tensor(targets)].sum(), xt)
    assert rel_err(nhwc(plain), w_t) > 1e-2
    selected = logits[np.arange(2), targets]
    total = contrib.reshape(2, -1).sum(1) + bias
    np.testing.assert_allclose(total, selected, rtol=1e-5, atol=1e-5 * np.abs(selected - lb).max())
    if c["cnn"]:
        # Folded input normalisation: nothing but the logit bias outside W(x)·x.
        np.testing.assert_allclose(bias, lb, atol=1e-6 * np.abs(selected - lb).max())


def test_bcosify_gives_the_reference_weights(case):
    c = case
    std_vars = convert.from_torch(c["std_name"], c["tm"].state_dict(), **c["arch"])
    model, variables = bcosify(c["std_name"], std_vars, **c["arch"])
    expected = convert.from_torch(c["name"], c["rm"].state_dict(), **c["arch"])
    assert jax.tree.structure(variables) == jax.tree.structure(expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), variables, expected
    )
    assert type(model) is type(models.create(c["name"], **c["arch"]))


def test_affine_input_norm_matches_and_leaves_the_offset():
    c = _case("resnet")
    variables = convert.from_torch(c["name"], c["rm"].state_dict(), **c["arch"])
    folded = models.create(c["name"], **c["arch"])
    affine = models.create(c["name"], input_norm="affine", **c["arch"])
    x = c["x"]
    lin, aff = (
        jax.tree.map(np.asarray, _jax_outputs(m, variables, x, np.array([0, 1]), True))
        for m in (folded, affine)
    )
    # The same function on [x, 1-x] inputs (here x + (1 - x) = 1 up to float32 rounding).
    assert rel_err(lin[0], aff[0]) <= 1e-6
    scale = np.abs(lin[0] - CNN_LOGIT_BIAS).max()
    assert np.abs(aff[3] - CNN_LOGIT_BIAS).max() > 1e-3 * scale  # the reference's constant offset
    np.testing.assert_allclose(lin[3], CNN_LOGIT_BIAS, atol=1e-9 * scale)


def test_raw_filters_are_needed_for_the_checkpoints():
    """The released layers do not normalise their filters; normalising them (as the B-cos
    paper models do) changes every output channel's scale by 1/‖w‖², which the classifier
    (no norm after it) and the residual sums do not absorb."""
    c = _case("resnet")
    variables = convert.from_torch(c["name"], c["rm"].state_dict(), **c["arch"])
    model = models.create(c["name"], **c["arch"])
    normed = model.clone(
        arch=functools.partial(model.arch, conv=functools.partial(layers.BcosConv, b=2.0))
    )
    x = jnp.asarray(c["x"])
    raw, unit = model.apply(variables, x), normed.apply(variables, x)
    logits_t, _, _ = _torch_outputs(c["rm"], c["x"], False)
    assert rel_err(raw - CNN_LOGIT_BIAS, logits_t - CNN_LOGIT_BIAS) <= 1e-4
    assert rel_err(unit - CNN_LOGIT_BIAS, logits_t - CNN_LOGIT_BIAS) > 1e-1
    # prenormalize leaves raw-filter layers alone.
    pre = layers.prenormalize(model, variables, x)
    assert rel_err(model.apply(pre, x), raw) <= 1e-6


# ------------------------------------------------------------------ function preservation
FP_OPTIONS = {
    "resnet": dict(b=1, use_bias=True, stem_pool="max", logit_bias=None),
    "densenet": dict(b=1, use_bias=True, stem_pool="max", logit_bias=None),
    "simple_vit": dict(b=1, use_bias=True, pool_after_head=False, logit_bias=None),
    "vitc": dict(b=1, use_bias=True, pool_after_head=False, logit_bias=None),
}


@pytest.mark.parametrize("kind", sorted(FP_OPTIONS) + ["small_cnn"])
def test_function_preservation(kind):
    """B = 1, biases kept (BN's absorbing its mean), max-pool kept, ViT head after the
    mean, no logit bias: the B-cosified network on [x, 1-x] is the standard one on
    (x - μ) / σ (docs/bcosification.md, "the function-preservation stage")."""
    if kind == "small_cnn":
        std_name, arch, (h, w) = "standard_small_cnn", dict(num_classes=6), (32, 32)
        opts = dict(b=1, use_bias=True, logit_bias=None)
    else:
        _, std_name, arch, (h, w) = CASES[kind]()
        opts = FP_OPTIONS[kind]
    std = models.create(std_name, **arch)
    x6 = _image(h, w, seed=3)
    xn = (x6[..., :3] - np.array(IMAGENET_MEAN6[:3], np.float32)) / np.array(
        IMAGENET_STD6[:3], np.float32
    )
    rng = np.random.RandomState(2)

    def rand(path, a):  # non-trivial norm statistics and biases
        key = jax.tree_util.keystr(path)
        if key.endswith("['var']"):
            return jnp.asarray(0.5 + 1.5 * rng.rand(*a.shape), a.dtype)
        if key.endswith("['mean']") or key.endswith("['bias']"):
            return jnp.asarray(0.2 * rng.randn(*a.shape), a.dtype)
        if key.endswith("['scale']"):
            return jnp.asarray(0.5 + rng.rand(*a.shape), a.dtype)
        return a

    variables = jax.tree_util.tree_map_with_path(
        rand, std.init(jax.random.key(0), jnp.asarray(xn), train=False)
    )
    model, bvars = bcosify(std_name, variables, **opts, **arch)
    expected = jax.jit(std.apply)(variables, jnp.asarray(xn))
    got = jax.jit(model.apply)(bvars, jnp.asarray(x6))
    assert rel_err(got, expected) <= 1e-5
    # The B-cosified defaults (B = 2, no biases, ...) are a different function.
    model2, bvars2 = bcosify(std_name, variables, **arch)
    assert rel_err(jax.jit(model2.apply)(bvars2, jnp.asarray(x6)), expected) > 1e-2


# ------------------------------------------------------------------------------ errors, zoo
def test_errors_name_the_problem():
    v = {"params": {}}
    with pytest.raises(ValueError, match="standard_vgg11.*supported standard models"):
        bcosify("standard_vgg11", v)
    with pytest.raises(ValueError, match="use 'standard_resnet50'"):
        bcosify("resnet50", v)
    with pytest.raises(ValueError, match="unknown model"):
        bcosify("standard_resnet5O", v)
    std = models.create("standard_small_cnn", num_classes=6)
    variables = std.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    bad = jax.tree.map(lambda a: a, variables)
    bad["params"]["extra_layer"] = {"weird": jnp.zeros(3)}
    with pytest.raises(ValueError, match="unexpected.*params/extra_layer/weird"):
        bcosify("standard_small_cnn", bad, num_classes=6)
    with pytest.raises(ValueError, match="use_bias=True is supported with b=1 only"):
        bcosify("standard_small_cnn", variables, num_classes=6, use_bias=True)


def test_unknown_layer_kind_names_the_module_path():
    from bcos_jax.bcosify import bcosify_variables

    src = {"params": {"block": {"odd": np.zeros(3, np.float32)}}}
    abstract = {("params", "block", "odd"): jax.ShapeDtypeStruct((3,), jnp.float32)}
    with pytest.raises(ValueError, match="module 'block'.*does not know"):
        bcosify_variables(src, abstract, {}, lambda p, o: p, where="m")


def test_zoo_entries_and_reference_parameter_counts():
    names = models.list_models()
    for arch in (
        "resnet18",
        "resnet50",
        "resnet50_v1",
        "densenet121",
        "simple_vit_s_patch16_224",
        "vitc_b_patch1_14",
    ):
        spec = models.get_spec(f"bcosified_{arch}")
        assert spec.weights_url.startswith("https://github.com/shrebox/B-cosification/releases/")
        assert spec.in_channels == 6
    assert (
        "bcosified_resnet152" in names
        and models.get_spec("bcosified_resnet152").weights_url is None
    )
    for arch, tv in (
        ("resnet50", functools.partial(ref.ResNetBcos, tvm.resnet.Bottleneck, [3, 4, 6, 3])),
        ("densenet121", functools.partial(ref.DenseNetBcos, 32, (6, 12, 24, 16), 64)),
    ):
        rm = ref.bcosify_cnn(
            tv(),
            "fc" if "resnet" in arch else "classifier",
            "maxpool" if "resnet" in arch else "features[3]",
        )
        count = sum(p.numel() for p in rm.parameters())
        assert models.get_spec(f"bcosified_{arch}").params == count


def test_cli_writes_a_loadable_bcosified_model(tmp_path):
    """``bcos-jax bcosify`` from a weights file: the save_model directory that
    configs/bcosify.py's ``init_from`` reads gives back bcosify's model and variables."""
    from safetensors.numpy import save_file

    import bcos_jax
    from bcos_jax.commands import main

    std = models.create("standard_small_cnn", num_classes=6)
    variables = std.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    sd = {}  # the torch layout of the standard model (OIHW kernels, [out, in] dense)
    for (_coll, *path), a in convert._flatten(variables).items():
        a = np.asarray(a)
        mod, leaf = ".".join(path[:-1]), path[-1]
        if leaf == "kernel":
            sd[f"{mod}.weight"] = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
        else:
            name = {"scale": "weight", "var": "running_var", "mean": "running_mean"}.get(leaf, leaf)
            sd[f"{mod}.{name}"] = a
    save_file(
        {k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / "std.safetensors")
    )
    out = tmp_path / "bcosified"
    weights = str(tmp_path / "std.safetensors")
    args = ["bcosify", "--model", "standard_small_cnn", "--weights", weights]
    assert main([*args, "--out", str(out), "--num-classes", "6"]) == 0
    model, loaded = bcos_jax.load_checkpoint(str(out))
    ref_model, expected = bcosify("standard_small_cnn", variables, num_classes=6)
    jax.tree.map(np.testing.assert_array_equal, dict(loaded), expected)
    x = jnp.asarray(_image(32, 32))
    np.testing.assert_array_equal(model.apply(loaded, x), ref_model.apply(expected, x))


def test_checkpoint_of_another_architecture_lists_the_keys():
    c = _case("resnet")
    lightning = {"state_dict": {"model." + k: v for k, v in c["rm"].state_dict().items()}}
    arch = dict(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=5)
    listing = r"(?s)missing.*unexpected.*model\.conv1\.linear\.weight"
    with pytest.raises(convert.ConversionError, match=listing):
        convert.from_torch("bcosified_densenet121", lightning, **arch)
    with pytest.raises(convert.ConversionError, match="unexpected.*optimizer"):
        convert.from_torch("bcosified_resnet18", {"state_dict": {"optimizer.x": np.zeros(1)}})


def test_recipes_are_the_references():
    from bcos_jax.training.defaults import check_model, load_config

    path = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs" / "bcosify.py")
    for arg in (
        "resnet18",
        "resnet50",
        "resnet50_v1",
        "densenet121",
        "simple_vit_s_patch16_224",
        "simple_vit_b_patch16_224",
        "vitc_b_patch1_14",
        "vitc_l_patch1_14",
        "small_cnn",
    ):
        c = load_config(f"{path}:{arg}")
        check_model(c)
        assert c.model_name == f"bcosified_{arg}" and c.init_from == f"runs/bcosified_{arg}_init"
        assert (c.optimizer.name, c.optimizer.weight_decay, c.schedule.name) == (
            "adam",
            0.0,
            "warmup_cosine",
        )
    cnn = load_config(f"{path}:resnet50")
    assert (cnn.optimizer.lr, cnn.batch_size, cnn.num_epochs, cnn.loss) == (
        1e-4,
        256,
        90.0,
        "uniform_off_labels_bce",
    )
    assert (cnn.optimizer.agc, cnn.schedule.interval, cnn.schedule.warmup_epochs) == (
        True,
        "epoch",
        0,
    )
    vit = {
        a: load_config(f"{path}:{a}")
        for a in ("simple_vit_s_patch16_224", "simple_vit_b_patch16_224", "vitc_b_patch1_14")
    }
    assert [(v.optimizer.lr, v.batch_size, v.schedule.warmup_steps) for v in vit.values()] == [
        (1e-3, 1024, 0),
        (1e-3, 512, 50_000),
        (1e-3, 1024, 10_000),
    ]
    assert all(
        v.data.mixup_alpha == 0.2 and v.data.randaugment_magnitude == 10 for v in vit.values()
    )
    with pytest.raises(ValueError, match="recipes: resnet18"):
        load_config(f"{path}:vgg11")


def test_bcosified_models_are_ordinary_zoo_models():
    """Attribution baselines (Grad-CAM finds its feature site), remat and prenormalize work
    on a B-cosified model as on any zoo model."""
    from bcos_jax import attribution

    std = models.create("standard_small_cnn", num_classes=6)
    variables = std.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    model, bvars = bcosify("standard_small_cnn", variables, num_classes=6)
    x = jnp.asarray(_image(32, 32))
    fns = attribution.from_zoo("bcosified_small_cnn", bvars, model=model)
    e = explain(model, bvars, x)
    np.testing.assert_allclose(
        attribution.attribute("bcos", fns, x, e.targets), e.weights * x, rtol=1e-5
    )
    cam = attribution.attribute("gradcam", fns, x)
    assert cam.shape == (2, 32, 32, 1) and bool(jnp.all(jnp.isfinite(cam)))
    remat = models.create("bcosified_small_cnn", num_classes=6, remat=True)
    grad = jax.grad(lambda v, m: m.apply(v, x).sum())
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        grad(bvars, model)["params"],
        grad(bvars, remat)["params"],
    )

"""Simple ViT / ViT-C: parity with ``bcos.models.pretrained`` (B-cos and standard), the exact
decomposition of ``Explanation.bias`` into logit bias + positional-embedding share, the
sin-cos formula, parameter counts of every registered name.

Parity models are the real reference entry points with the transformer cut to two
encoders (on both sides), on 32×48 inputs: a 2×3 token grid, so that a swap of the
embedding's x and y axes would show.
"""
from __future__ import annotations

import functools
import math
import re

from tests.torch_ref import nchw, randomize_norm_stats, rel_err, torch, torch_explain

import bcos.models.pretrained as bcos_pretrained
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bcos.models.vit import PosEmbSinCos2d as TorchPosEmb

from bcos_jax import convert, models
from bcos_jax.explain import explain
from bcos_jax.layers import add_inverse
from bcos_jax.models.vit import PosEmbSinCos2d, posemb_sincos_2d

NUM_CLASSES = 5
DEPTH = 2
LOGIT_BIAS = math.log(1 / 999)  # fixed by the reference's vit_final config
GRID = (2, 3)  # tokens of a 32x48 image: patch 16, or the ti conv stem's 4 stride-2 convs
SIZES = ("ti", "s", "b", "l")
BCOS_NAMES = [f"simple_vit_{s}_patch16_224" for s in SIZES] + [f"vitc_{s}_patch1_14" for s in SIZES]
STANDARD_NAMES = [f"standard_{n}" for n in BCOS_NAMES]


def _reduced_pair(name, x):
    torch.manual_seed(0)
    tm = getattr(bcos_pretrained, name)(num_classes=NUM_CLASSES)
    bcos_model = name in BCOS_NAMES
    vit = tm[0] if bcos_model else tm  # B-cos: BcosSequential(vit, LogitLayer)
    for i in range(DEPTH, len(vit.transformer)):  # (slicing would renumber the encoders)
        delattr(vit.transformer, f"encoder_{i}")
    randomize_norm_stats(tm)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in tm.named_parameters():  # (standard models) LayerNorm biases start at 0
            if n.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        if bcos_model:
            # A random B-cos ViT outputs ~1e-3 around log(1/999), barely resolved in float32:
            # scale the head norm (the head is 1-homogeneous in it, so exactly) to O(1).
            out = tm.eval()(nchw(x)).numpy()
            vit.linear_head.norm.weight.mul_(1.0 / float(np.abs(out - LOGIT_BIAS).max()))
    tm.eval()
    overrides = dict(num_classes=NUM_CLASSES, depth=DEPTH)
    variables = convert.from_torch(name, tm.state_dict(), **overrides)
    return tm, models.create(name, **overrides), variables


def _image(channels, seed=0):
    x = np.random.RandomState(seed).rand(2, 32, 48, 3).astype(np.float32)
    return np.asarray(add_inverse(x)) if channels == 6 else x


def _with_positional_embedding(pe):
    """Replace the model's positional embedding by ``pe`` (e.g. batched [N, T, D], or zeros)."""

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, PosEmbSinCos2d):
            return pe
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


@functools.cache
def _bcos_case(name):
    x = _image(6)
    tm, model, variables = _reduced_pair(name, x)
    with torch.no_grad():
        out = tm(nchw(x)).numpy()
    # The class with the largest output (not the argmax, which may sit close to the bias).
    targets = np.abs(out - LOGIT_BIAS).argmax(1)
    logits_t, w_t, _ = torch_explain(tm, x, targets)
    ex = jax.jit(lambda v, x, t: explain(model, v, x, t))(variables, x, jnp.asarray(targets))
    return dict(
        tm=tm,
        model=model,
        variables=variables,
        x=x,
        logits_t=logits_t,
        w_t=w_t,
        targets=targets,
        ex=ex,
    )


@pytest.fixture(params=["simple_vit_ti_patch16_224", "vitc_ti_patch1_14"])
def bcos_case(request):
    return _bcos_case(request.param)


@pytest.fixture
def vitc_case():
    """The embedding is added the same way in both models; ViT-C also has the stem's norms."""
    return _bcos_case("vitc_ti_patch1_14")


def test_bcos_parity(bcos_case):
    c = bcos_case
    # Compare without the constant logit bias, which would hide errors in the network.
    assert rel_err(np.asarray(c["ex"].logits) - LOGIT_BIAS, c["logits_t"] - LOGIT_BIAS) <= 1e-4
    assert rel_err(c["ex"].weights, c["w_t"]) <= 1e-3
    # The plain gradient is far from W(x) here, so a missing stop_gradient would be caught.
    xt = nchw(c["x"]).requires_grad_(True)
    (plain,) = torch.autograd.grad(
        c["tm"](xt)[torch.arange(2), torch.as_tensor(c["targets"])].sum(), xt
    )
    assert rel_err(plain.numpy().transpose(0, 2, 3, 1), c["w_t"]) > 1e-2


def _pe_share(model, variables, x, targets):
    """Σ pe · ∂logit/∂pe in explanation mode, per image (the embedding's part of the logit)."""
    h, w = GRID
    # One embedding per image, so that the vjp keeps the images apart.
    pe = jnp.broadcast_to(posemb_sincos_2d(h, w, model.dim), (x.shape[0], h * w, model.dim))

    def logits(pe_batched):
        with _with_positional_embedding(pe_batched):
            return model.apply(variables, x, explain=True)

    out, vjp = jax.vjp(logits, pe)
    (g,) = vjp(jax.nn.one_hot(targets, out.shape[-1]))
    return out, jnp.sum(pe * g, axis=(1, 2))


def test_bias_is_logit_bias_plus_positional_embedding_share(vitc_case):
    c = vitc_case
    model, variables, x, targets, ex = c["model"], c["variables"], c["x"], c["targets"], c["ex"]
    out, share = jax.jit(lambda v, x, t: _pe_share(model, v, x, t))(
        variables, x, jnp.asarray(targets)
    )
    np.testing.assert_allclose(out, ex.logits, rtol=1e-6, atol=1e-6)

    selected = np.asarray(ex.logits)[np.arange(2), targets]
    scale = np.abs(np.asarray(ex.logits) - LOGIT_BIAS).max()  # ~1 (see _reduced_pair)
    # Not a negligible term (nor zero, as it would be if the interceptor missed the PE).
    assert np.abs(share).min() > 1e-3 * scale
    np.testing.assert_allclose(
        np.asarray(ex.bias), LOGIT_BIAS + np.asarray(share), atol=1e-5 * scale
    )
    np.testing.assert_allclose(
        np.asarray(ex.contributions.sum((1, 2)) + ex.bias), selected, atol=1e-5 * scale
    )
    # The reference's Σ x·W(x) + logit bias misses exactly this share.
    torch_gap = c["logits_t"][np.arange(2), targets] - (x * c["w_t"]).sum((1, 2, 3)) - LOGIT_BIAS
    np.testing.assert_allclose(torch_gap, share, atol=1e-4 * scale)


def test_completeness_without_positional_embedding(vitc_case):
    c = vitc_case
    model, variables, x = c["model"], c["variables"], c["x"]
    h, w = GRID

    @jax.jit
    def explain_without_pe(v, x, t):
        with _with_positional_embedding(jnp.zeros((h * w, model.dim))):
            return explain(model, v, x, t)

    ex = explain_without_pe(variables, x, jnp.asarray(c["targets"]))
    selected = np.asarray(ex.logits)[np.arange(2), c["targets"]]
    scale = np.abs(np.asarray(ex.logits) - LOGIT_BIAS).max()
    np.testing.assert_allclose(np.asarray(ex.bias), LOGIT_BIAS, atol=1e-5 * scale)
    assert (
        np.abs(selected - np.asarray(c["ex"].logits)[np.arange(2), c["targets"]]).max()
        > 1e-3 * scale
    )


@pytest.mark.parametrize(
    "name", ["standard_simple_vit_ti_patch16_224", "standard_vitc_ti_patch1_14"]
)
def test_standard_parity(name):
    x = _image(3)
    tm, model, variables = _reduced_pair(name, x)
    xt = nchw(x).requires_grad_(True)
    out = tm(xt)
    (g_t,) = torch.autograd.grad(out[:, 0].sum(), xt)

    @jax.jit
    def logits_and_grad(x):
        logits, vjp = jax.vjp(lambda x: model.apply(variables, x), x)
        return logits, vjp(jnp.zeros_like(logits).at[:, 0].set(1.0))[0]

    logits, g = logits_and_grad(x)
    assert rel_err(logits, out.detach().numpy()) <= 1e-4
    assert rel_err(g, g_t.numpy().transpose(0, 2, 3, 1)) <= 1e-3


@pytest.mark.parametrize("h,w,dim", [(2, 3, 192), (14, 14, 384)])
def test_positional_embedding_formula(h, w, dim):
    want = TorchPosEmb()(torch.zeros(1, h, w, dim)).numpy()
    got = posemb_sincos_2d(h, w, dim)
    assert got.shape == (h * w, dim)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["vitc_ti_patch1_14", "standard_vitc_ti_patch1_14", "simple_vit_ti_patch16_224"]
)
def test_full_size_state_dict_converts(name):
    sd = getattr(bcos_pretrained, name)().state_dict()
    variables = convert.from_torch(name, sd)  # raises on any missing / unexpected / mis-shaped key
    prefix = models.get_spec(name).torch_prefix
    key = f"{prefix}transformer.encoder_10.attn.to_qkv.weight"
    got = variables["params"]["transformer"]["encoder_10"]["attn"]["to_qkv"]["kernel"]
    np.testing.assert_array_equal(got, sd[key].numpy().T)


def test_registry_names():
    bcosified = {f"bcosified_{n}" for n in BCOS_NAMES}
    assert set(models.list_models(family="vit")) == set(BCOS_NAMES + STANDARD_NAMES) | bcosified


@pytest.mark.parametrize("name", BCOS_NAMES + STANDARD_NAMES)
def test_param_count(name):
    spec = models.get_spec(name)
    model = models.create(name)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, spec.in_channels)))
    )
    with torch.device("meta"):
        reference = sum(p.numel() for p in getattr(bcos_pretrained, name)().parameters())
    n = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes["params"]))
    assert n == spec.params == reference


@pytest.mark.parametrize("name", BCOS_NAMES + STANDARD_NAMES)
def test_spec_metadata_matches_reference(name):
    spec = models.get_spec(name)
    bcos = name in BCOS_NAMES
    config = f"bcos_{name}" if bcos else name[len("standard_"):]
    assert spec.weights_url == bcos_pretrained.URLS["vit_final"][config]
    doc = getattr(bcos_pretrained, name).__doc__
    assert spec.top1 == float(re.search(r"Acc@1\s*\|\s*([\d.]+)%", doc).group(1))
    assert (spec.in_channels, spec.version, spec.torch_prefix) == (
        (6, "v2", "0.") if bcos else (3, "standard", "")
    )

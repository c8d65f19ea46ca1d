"""Reliability: property-based layer checks, numerical edge cases, bf16 completeness,
a SIGKILL during an asynchronous checkpoint write, and run-to-run determinism.

1. ``BcosConv`` / ``BcosDense`` against a slow direct implementation written here from the
   formula (explicit patches, docs/bcos.md §1): forward, input gradient with and without
   explanation mode, kernel gradient, on configurations drawn by hypothesis (derandomized,
   so CI sees the same examples every run) plus explicit examples for every fast path of
   ``layers.py`` (1x1 matmul, strided space-to-depth input gradient, B=2 custom vjp).
2. Zero, constant, tiny and huge inputs give finite logits and explanations (f32 and bf16)
   in four small zoo models, and the same explanation call twice is bitwise equal.
3. Completeness ``Σ x·W(x) + logit bias = logit`` in bfloat16, with a measured tolerance.
4. SIGKILL while an asynchronous orbax save is in flight: the previous checkpoint is
   restored and the resumed run ends bit-for-bit where an uninterrupted run ends.
5. Same config and seed, two separate runs (this process and a fresh train.py process):
   bitwise identical train state.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bcos_jax import layers, models
from bcos_jax.explain import explain
from tests.precision import run_float64


def quick_compile(fn, *args):
    """``jax.jit(fn)`` compiled for ``args`` with LLVM optimisation off.

    Compiling dominates these small tests (op-by-op dispatch is slower still); this makes
    it ~3x cheaper. The HLO, i.e. what bcos_jax asks XLA to compute, is unchanged."""
    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})


def rel_err(a, b) -> float:
    """‖a - b‖ / ‖b‖ (‖b‖ floored at 1e-3·√size, for outputs that are all ~0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-3 * math.sqrt(b.size)))


# ---------------------------------------------------------------------------------------
# 1. Layers against a direct implementation.
# ---------------------------------------------------------------------------------------
def _direct_scale(lin, norm, b, explain):
    """The reference's dynamic scale (v2 ``BcosConv2d.forward``): |lin|/norm for B=2,
    (|lin/norm| + 1e-6)^(B-1) otherwise; a constant for autodiff in explanation mode."""
    if explain:
        lin, norm = jax.lax.stop_gradient(lin), jax.lax.stop_gradient(norm)
    if b == 2:
        return jnp.abs(lin) / norm
    return (jnp.abs(lin / norm) + 1e-6) ** (b - 1)


def direct_conv(x, kernel, *, strides, padding, dilation, groups, b, max_out, divisor, explain):
    """B-cos conv from explicit patches: x [N, H, W, C], kernel HWIO [kh, kw, C/G, units]."""
    (kh, kw, cg, units), (sh, sw), (dh, dw) = kernel.shape, strides, dilation
    (pt, pb), (pl, pr) = padding
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    rows = np.arange(ho)[:, None] * sh + np.arange(kh)[None, :] * dh  # [ho, kh]
    cols = np.arange(wo)[:, None] * sw + np.arange(kw)[None, :] * dw  # [wo, kw]
    patches = xp[:, rows[:, None, :, None], cols[None, :, None, :], :]  # [N, ho, wo, kh, kw, C]
    patches = patches.reshape(n, ho, wo, kh, kw, groups, cg).transpose(0, 1, 2, 5, 3, 4, 6)
    patches = patches.reshape(n, ho, wo, groups, kh * kw * cg)  # one vector per group
    wflat = kernel.reshape(kh * kw * cg, units)
    w_hat = wflat / jnp.sqrt(jnp.sum(wflat**2, axis=0, keepdims=True))
    w_hat = w_hat.reshape(-1, groups, units // groups)  # unit u of group g = column g*U/G + u
    lin = jnp.einsum("nhwgk,kgu->nhwgu", patches, w_hat).reshape(n, ho, wo, units)
    norm = jnp.sqrt(jnp.sum(patches**2, axis=-1) + 1e-6)  # [N, ho, wo, G]
    features = units // max_out
    lin = jnp.max(lin.reshape(n, ho, wo, features, max_out), axis=-1)  # j = max over j*M + m
    norm = jnp.repeat(norm, features // groups, axis=-1)  # output j is in group j // (F/G)
    out = lin if b == 1 else _direct_scale(lin, norm, b, explain) * lin
    return out / divisor


def direct_dense(x, kernel, *, b, max_out, explain):
    w_hat = kernel / jnp.sqrt(jnp.sum(kernel**2, axis=0, keepdims=True))
    lin = x @ w_hat
    lin = jnp.max(lin.reshape(*lin.shape[:-1], -1, max_out), axis=-1)
    if b == 1:
        return lin
    norm = jnp.sqrt(jnp.sum(x**2, axis=-1, keepdims=True)) + 1e-12  # BcosLinear: eps outside
    return _direct_scale(lin, norm, b, explain) * lin


def _compare(layer_fn, ref_fn, x, kernel, seed, float64=False):
    """Forward, input gradients (explain / plain) and the kernel gradient (plain) of
    ``layer_fn(x, kernel, explain)`` against ``ref_fn``: relative errors.

    ``float64=True`` (for MaxOut) computes both in double precision: the two implementations
    round differently, and in float32 a near-tie of two MaxOut candidates can go either way
    on some CPU, changing the gradients there by O(1) (tests/precision.py)."""
    if float64:
        return run_float64(lambda a, k: _compare(layer_fn, ref_fn, a, k, seed), x, kernel)
    out_shape = jax.eval_shape(lambda a, k: layer_fn(a, k, False), x, kernel).shape
    cot = jnp.asarray(np.random.default_rng(seed).normal(size=out_shape).astype(x.dtype))

    def both(a, k, cot):
        res = {}
        for name, fn in (("layer", layer_fn), ("direct", ref_fn)):
            out, vjp = jax.vjp(lambda a_, k_: fn(a_, k_, False), a, k)
            dx, dk = vjp(cot)
            dx_explain = jax.vjp(lambda a_: fn(a_, k, True), a)[1](cot)[0]
            res[name] = dict(forward=out, dx_explain=dx_explain, dx=dx, dkernel=dk)
        return res

    res = quick_compile(both, x, kernel, cot)(x, kernel, cot)
    assert res["layer"]["forward"].shape == res["direct"]["forward"].shape
    assert np.all(np.isfinite(np.asarray(res["layer"]["forward"])))
    if math.prod(kernel.shape[:-1]) == 1:
        # A one-tap filter normalises to ±1 whatever w is: its gradient is 0 in exact
        # arithmetic and rounding noise (of either sign and size) in both implementations.
        del res["layer"]["dkernel"]
    return {key: rel_err(res["layer"][key], res["direct"][key]) for key in res["layer"]}


# Explicit padding as the layer accepts it (int, (ph, pw), ((t, b), (l, r))); strings are refused.
PADDINGS = st.one_of(
    st.integers(0, 2),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
    ),
    st.sampled_from(["SAME", "VALID"]),
)


@st.composite
def conv_configs(draw):
    kh = draw(st.integers(1, 5))
    kw = draw(st.one_of(st.just(kh), st.integers(1, 5)))  # square more often than not
    groups_kind = draw(st.sampled_from(["1", "2", "depthwise"]))
    if groups_kind == "depthwise":
        cin = draw(st.integers(2, 4))
        groups, features = cin, cin * draw(st.integers(1, 2))
    else:
        groups = int(groups_kind)
        cin = groups * draw(st.integers(1, 3))
        features = groups * draw(st.integers(1, 3))
    return dict(
        kernel_size=(kh, kw) if kh != kw or draw(st.booleans()) else kh,
        strides=draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))),
        padding=draw(PADDINGS),
        dilation=draw(st.integers(1, 2)),
        groups=groups,
        cin=cin,
        features=features,
        b=draw(st.sampled_from([1.0, 1.25, 2.0, 2.5])),
        max_out=draw(st.integers(1, 2)),
        scale=draw(st.sampled_from([None, ("scale", 0.7), ("scale_fact", 100.0)])),
        batch=draw(st.integers(1, 2)),
        extra=(draw(st.integers(0, 4)), draw(st.integers(0, 4))),  # input size beyond the minimum
        seed=draw(st.integers(0, 2**16)),
    )


def _cfg(**kw):
    base = dict(kernel_size=3, strides=1, padding=1, dilation=1, groups=1, cin=3, features=4, b=2.0,
                max_out=1, scale=None, batch=1, extra=(2, 3), seed=0)
    return {**base, **kw}


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(cfg=conv_configs())
# The fast paths of layers.py, always run whatever hypothesis draws:
@example(cfg=_cfg(kernel_size=1, padding=0, cin=6, features=5))  # 1x1 -> matmul (_pointwise)
@example(
    cfg=_cfg(kernel_size=1, strides=2, padding=0, cin=4, features=3, b=1.25, max_out=2)
)  # strided 1x1
@example(
    cfg=_cfg(kernel_size=7, strides=2, padding=3, cin=6, features=4)
)  # 7x7/2 stem: space-to-depth dx
@example(
    cfg=_cfg(kernel_size=4, strides=4, padding=0, cin=6, features=4, extra=(5, 8))
)  # 4x4/4 patchify
@example(
    cfg=_cfg(kernel_size=2, strides=2, padding=0, cin=4, features=4, b=2.5, max_out=2)
)  # 2x2/2 downsample
@example(
    cfg=_cfg(kernel_size=(3, 5), strides=(2, 3), padding=((0, 2), (1, 0)), b=1.25)
)  # odd shapes, s2d off
@example(
    cfg=_cfg(kernel_size=3, groups=3, cin=3, features=6, strides=2, max_out=2)
)  # depthwise strided MaxOut
@example(cfg=_cfg(kernel_size=3, dilation=2, padding=2, groups=2, cin=4, features=4, b=1.0,
                  scale=("scale_fact", 100.0)))  # dilation + groups + B=1 + v1 scale
def test_bcos_conv_matches_direct_implementation(cfg):
    ks = cfg["kernel_size"]
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    mod_kw = dict(
        features=cfg["features"],
        kernel_size=ks,
        strides=cfg["strides"],
        padding=cfg["padding"],
        kernel_dilation=cfg["dilation"],
        feature_group_count=cfg["groups"],
        b=cfg["b"],
        max_out=cfg["max_out"],
    )
    scale_divisor = 1.0
    if cfg["scale"] is not None:
        key, value = cfg["scale"]
        mod_kw[key] = value
        scale_divisor = value if key == "scale" else layers.v1_scale(ks, cfg["cin"], value)
    mod = layers.BcosConv(**mod_kw)
    if isinstance(cfg["padding"], str):
        with pytest.raises(ValueError, match="explicit PyTorch-style padding"):
            mod.init(jax.random.key(0), jnp.zeros((1, 8, 8, cfg["cin"])))
        return
    padding = layers.conv_padding(cfg["padding"])
    strides = (cfg["strides"],) * 2 if isinstance(cfg["strides"], int) else cfg["strides"]
    dil = (cfg["dilation"],) * 2
    # Smallest input giving at least one output position, plus a few rows/columns.
    h = max(1, dil[0] * (kh - 1) + 1 - sum(padding[0])) + cfg["extra"][0]
    w = max(1, dil[1] * (kw - 1) + 1 - sum(padding[1])) + cfg["extra"][1]
    rng = np.random.default_rng(cfg["seed"])
    x = jnp.asarray(rng.normal(size=(cfg["batch"], h, w, cfg["cin"])).astype(np.float32))
    kernel = jnp.asarray(
        rng.normal(
            size=(kh, kw, cfg["cin"] // cfg["groups"], cfg["features"] * cfg["max_out"])
        ).astype(np.float32)
    )

    def layer_fn(a, k, explain):
        return mod.apply({"params": {"kernel": k}}, a, explain)

    ref_fn = functools.partial(
        direct_conv,
        strides=strides,
        padding=padding,
        dilation=dil,
        groups=cfg["groups"],
        b=cfg["b"],
        max_out=cfg["max_out"],
        divisor=scale_divisor,
    )
    errs = _compare(
        layer_fn,
        lambda a, k, e: ref_fn(a, k, explain=e),
        x,
        kernel,
        cfg["seed"],
        cfg["max_out"] > 1,
    )
    assert max(errs.values()) <= 1e-5, errs


@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(
    b=st.sampled_from([1.0, 1.25, 2.0, 2.5]),
    max_out=st.integers(1, 2),
    cin=st.integers(1, 9),
    features=st.integers(1, 5),
    lead=st.sampled_from([(3,), (2, 4), (1, 1, 2)]),
    seed=st.integers(0, 2**16),
)
def test_bcos_dense_matches_direct_implementation(b, max_out, cin, features, lead, seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(*lead, cin)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(cin, features * max_out)).astype(np.float32))
    mod = layers.BcosDense(features, b=b, max_out=max_out)

    def layer_fn(a, k, explain):
        return mod.apply({"params": {"kernel": k}}, a, explain)

    direct = functools.partial(direct_dense, b=b, max_out=max_out)
    errs = _compare(layer_fn, lambda a, k, e: direct(a, k, explain=e), x, kernel, seed, max_out > 1)
    assert max(errs.values()) <= 1e-5, errs


# ---------------------------------------------------------------------------------------
# 2./3. Zoo models: edge-case inputs in float32 / bfloat16, completeness in bfloat16.
# ---------------------------------------------------------------------------------------
# Small configurations of four families: BNU ResNet (B=2), ViT (attention, LayerNorm,
# BcosDense, positional embedding), DenseNet (7x7/2 stem, concatenation, avg pools) and the
# v1 9L net (B=1.25, MaxOut 2, per-layer scale, no norms).
ZOO = {
    "cifar10_resnet20": dict(num_classes=10, layers=(1, 1, 1)),
    "simple_vit_ti_patch16_224": dict(
        num_classes=10, patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64
    ),
    "densenet121": dict(growth_rate=8, block_config=(1, 1), num_init_features=8, num_classes=10),
    "v1_cifar10_9l_b125": dict(widths=(8, 8, 16, 16, 16, 32, 32, 32)),
}
SIZE = 16
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _images(n, seed):
    return np.random.default_rng(seed).uniform(size=(n, SIZE, SIZE, 3)).astype(np.float32)


def _edge_inputs():
    """name -> one 6-channel input; images are in [0, 1] unless said otherwise."""
    full = lambda v: np.full((SIZE, SIZE, 3), v, np.float32)
    enc = lambda img: np.asarray(layers.add_inverse(img))
    img = _images(1, 7)[0]
    cases = {"zeros (6 channels)": np.zeros((SIZE, SIZE, 6), np.float32)}
    cases.update({f"constant {v}": enc(full(v)) for v in (0.0, 0.5, 1.0)})
    # 1e-38 is below float32's smallest normal number, 1e-45 its smallest subnormal.
    cases.update({f"rgb {v:g}": enc(full(v)) for v in (1e-30, 1e-38, 1e-45)})
    cases.update({f"image x {m:g}": m * enc(img) for m in (1e-4, 1e4, 1e15, 1e30)})
    return cases


@functools.cache
def _zoo_variables(name):
    """Variables without compiling ``init``: random kernels (direction is all that matters),
    unit norm scales, and running variances of uncentred BNs set to the batch variances of
    ``x`` (one train-mode pass from zero running statistics, momentum 0.1), so that every
    layer carries an O(1) signal and float rounding of the logit is no larger than it is
    in a trained model."""
    model, x = models.create(name, **ZOO[name]), np.asarray(layers.add_inverse(_images(8, 1)))
    rng = np.random.default_rng(0)
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1]))

    def fill(path, leaf):
        key = path[-1].key
        if key == "kernel":
            return rng.normal(size=leaf.shape).astype(np.float32) / math.sqrt(
                math.prod(leaf.shape[:-1])
            )
        if key == "var":
            return np.zeros(leaf.shape, np.float32)
        if key in ("scale", "layer_scale"):
            return np.ones(leaf.shape, np.float32)
        raise AssertionError(f"unexpected variable {jax.tree_util.keystr(path)} in {name}")

    variables = jax.tree_util.tree_map_with_path(fill, abstract)
    if "batch_stats" in variables:
        calibrate = quick_compile(
            lambda v, a: model.apply(v, a, train=True, mutable=["batch_stats"]), variables, x
        )
        _, upd = calibrate(variables, x)
        variables = {
            **variables,
            "batch_stats": jax.tree.map(lambda r: r / 0.1, upd["batch_stats"]),
        }
    return variables


@functools.cache
def _zoo_explanations(name, dtype):
    """(edge-case names, images, explanation, same call again) of every edge case and 4
    random images."""
    variables = _zoo_variables(name)
    model = models.create(name, dtype=DTYPES[dtype], **ZOO[name])
    cases = _edge_inputs()
    x = np.concatenate(
        [np.stack(list(cases.values())), np.asarray(layers.add_inverse(_images(4, 2)))]
    )
    fn = quick_compile(lambda v, a: explain(model, v, a), variables, x)
    return list(cases), x, jax.device_get(fn(variables, x)), jax.device_get(fn(variables, x))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", list(ZOO))
def test_edge_case_inputs_give_finite_logits_and_explanations(name, dtype):
    names, x, e, again = _zoo_explanations(name, dtype)
    for field in ("logits", "weights", "contributions", "bias"):
        value = np.asarray(getattr(e, field), np.float32)
        bad = [names[i] if i < len(names) else f"image {i}" for i in range(len(x))
               if not np.all(np.isfinite(value[i]))]
        assert not bad, f"{name} {dtype}: non-finite {field} for {bad}"
    # Determinism: the same explanation call twice is bitwise equal (cf. test_explain.py
    # for TinyNet; here with attention, concatenations and bfloat16).
    jax.tree.map(np.testing.assert_array_equal, e, again)


@pytest.mark.parametrize("scale", [
    1e4, 1e18,
    pytest.param(1e20, marks=pytest.mark.xfail(strict=True, reason=(
        "float32 overflow: Σ x² of a patch exceeds 3.4e38 for ‖patch‖ > 1.8e19, the patch norm "
        "(layers.patch_norm; BcosDense's ‖x‖ likewise) is inf, |cos| = 0, and output and W(x) "
        "collapse to exactly 0 (finite, so no NaN reaches the logits; the 1e30 edge case above "
        "gives logits = logit bias). The reference computes the same Σ x² in float32 and "
        "overflows identically; images in [0, 1] are 19 orders of magnitude away"))),
])
def test_huge_inputs_keep_bcos_layers_homogeneous(scale):
    """A B=2 B-cos layer is positively 1-homogeneous: out(c·x) = c·out(x), W(c·x) = W(x)."""
    outputs, x = _conv_and_dense_outputs()
    for got, want, power in zip(outputs(scale * x), outputs(x), (1, 1, 0)):
        assert rel_err(got, want * scale**power) <= 1e-5


@functools.cache
def _conv_and_dense_outputs():
    """(jitted x -> (BcosConv 3x3 output, BcosDense output, W(x) of the conv), an input)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(layers.add_inverse(rng.uniform(size=(1, 5, 5, 3)).astype(np.float32)))
    conv, dense = layers.BcosConv(4, 3, padding=1), layers.BcosDense(4)
    vc = {"params": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 6, 4)).astype(np.float32))}}
    vd = {"params": {"kernel": jnp.asarray(rng.normal(size=(6, 4)).astype(np.float32))}}

    @jax.jit
    def outputs(a):
        w = jax.grad(lambda a_: conv.apply(vc, a_, True).sum())(a)
        return conv.apply(vc, a), dense.apply(vd, a), w

    return outputs, x


@pytest.mark.parametrize("name", [n for n in ZOO if "vit" not in n])  # ViT: + positional embedding
def test_bfloat16_completeness(name):
    """``Σ x·W(x) + logit bias = logit`` for models whose only constant is the logit bias.

    Error measure: |Σ contributions + b - logit| / (|b| + Σ_pixels |contribution|), the
    error bound of a floating-point sum relative to its terms' magnitudes. Measured
    (8 parameter/image seeds, all edge cases and 4 random images per model): bfloat16
    at most 6.7e-3 (DenseNet on the constant-0 image; 2.7e-3 of it everywhere is the
    logit bias -log 9 rounded to bfloat16, -2.203125), float32 at most 2.7e-7.
    """
    bias = -math.log(9)  # v2 -log(C - 1) and v1 log(0.1 / 0.9) with 10 classes
    for dtype, tol in (("float32", 1e-5), ("bfloat16", 2e-2)):
        names, _, e, _ = _zoo_explanations(name, dtype)
        logit = np.take_along_axis(e.logits, e.targets[:, None], 1)[:, 0]
        err = np.abs(e.contributions.sum((1, 2)) + bias - logit) / (
            abs(bias) + np.abs(e.contributions).sum((1, 2))
        )
        assert err.max() <= tol, (dtype, dict(zip(names + ["image"] * 4, err)))
        if dtype == "float32":
            np.testing.assert_allclose(e.bias, bias, atol=1e-5 * np.abs(logit).max())


# ---------------------------------------------------------------------------------------
# 4./5. Crash safety and determinism of training.
# ---------------------------------------------------------------------------------------
TRAIN_STEPS = 16
TRAIN_OVERRIDES = {  # configs/quickstart.py:ci, shrunk; checkpoints at 4, 8, 12, 16, all kept
    "num_steps": TRAIN_STEPS, "checkpoint_every_steps": 4, "checkpoint_every_epochs": 0,
    "eval_every_steps": 0, "eval_every_epochs": 0, "explain_every_epochs": 0, "log_every_steps": 4,
    "batch_size": 16, "eval_batch_size": 32, "data.num_train": 128, "data.num_eval": 32,
    "data.image_size": 16, "model.widths": (8, 16), "keep_checkpoints": 5, "ema_decay": 0.5,
    "ema_every": 2, "ema_warmup_epochs": 1, "localisation": False,
}

# Runs train.py with orbax's commit of one step stalled: AtomicRenameTemporaryPath.finalize
# (write the commit marker, rename '<step>.orbax-checkpoint-tmp' to '<step>') of step
# STALL_STEP touches STALL_SENTINEL and sleeps. Everything else, including the arrays and
# the data-iterator state written into the temporary folder, is the real asynchronous save.
LAUNCHER = r"""
import asyncio, os, runpy, sys
from orbax.checkpoint._src.path import atomicity

_finalize = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self):
    if self.get_final().name == os.environ["STALL_STEP"]:
        open(os.environ["STALL_SENTINEL"], "w").close()
        await asyncio.sleep(3600)
    await _finalize(self)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
# tensorboardX would import PyTorch (2-3 s) only to recognise its tensors
sys.modules["torch"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _train_config():
    from training_helpers import get_config

    cfg = get_config("quickstart", "ci")
    for key, value in TRAIN_OVERRIDES.items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _train_flags():
    return [f"--config.{k}={v}" for k, v in TRAIN_OVERRIDES.items()]


def _train_state(workdir, step=None):
    """(step, full train state, data-iterator state) of a checkpoint (None: the newest one),
    read onto one device without building the model."""
    import orbax.checkpoint as ocp

    from bcos_jax import hub
    from bcos_jax.training import checkpoint as ckpt_lib

    ck = ckpt_lib.Checkpointer(workdir, async_save=False)
    try:
        step = ck.all_steps()[-1] if step is None else step
        target = hub._host_target(ck.manager.item_metadata(step)["state"])
        out = ck.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    finally:
        ck.close()
    return step, jax.device_get(out["state"]), out["data"]


def _assert_same_state(a_dir, a_step, b_dir, b_step=None):
    """Two checkpoints hold bitwise equal train states (parameters, optimiser state, BN
    statistics, EMA, counters) and the same data-iterator position."""
    _, a, a_data = _train_state(a_dir, a_step)
    step, b, b_data = _train_state(b_dir, b_step)
    assert step == a_step and a_data == b_data
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(reference, killed): an uninterrupted run in this process, and train.py in a fresh
    process SIGKILLed while its asynchronous save of step 8 is in flight (arrays and data
    state written into '8.orbax-checkpoint-tmp', not committed). They run concurrently."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from training_helpers import ROOT, train_module

    tmp = tmp_path_factory.mktemp("runs")
    reference, killed, sentinel = str(tmp / "reference"), str(tmp / "killed"), str(tmp / "stalled")
    env = dict(os.environ, JAX_PLATFORMS="cpu", STALL_STEP="8", STALL_SENTINEL=sentinel,
               # this process's device layout, so that the runs are comparable bit for bit
               XLA_FLAGS=f"--xla_force_host_platform_device_count={jax.device_count()}")
    cmd = [sys.executable, "-c", LAUNCHER, os.path.join(ROOT, "train.py"), "--workdir", killed,
           "--config", os.path.join(ROOT, "configs", "quickstart.py") + ":ci", *_train_flags()]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        summary = train_module().train_and_evaluate(_train_config(), reference)
        assert summary["steps"] == TRAIN_STEPS
        deadline = time.time() + 300
        while not os.path.exists(sentinel) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        if not os.path.exists(sentinel):
            proc.kill()
            raise AssertionError("the save of step 8 never reached its commit: "
                                 + proc.communicate()[1].decode()[-3000:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return reference, killed


def test_same_config_and_seed_give_bitwise_identical_runs(runs):
    # Two separate runs, here and in a fresh train.py process: parameters, BN statistics
    # and EMA after 4 steps (the last committed checkpoint of the killed run) are equal.
    reference, killed = runs
    _assert_same_state(reference, 4, killed, 4)
    # Not vacuous: training moves the weights.
    k4, k16 = (_train_state(reference, s)[1]["params"]["conv0"]["kernel"] for s in (4, TRAIN_STEPS))
    assert np.abs(k4 - k16).max() > 1e-3


def test_sigkill_during_async_checkpoint_write_then_resume(runs, tmp_path):
    import os
    import shutil

    from training_helpers import train_module

    import bcos_jax
    from bcos_jax.training import checkpoint as ckpt_lib

    reference_run, killed = runs
    workdir = str(tmp_path / "run")
    shutil.copytree(killed, workdir)  # the fixture stays as the kill left it
    ckpt_dir = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(ckpt_dir)) == ["4", "8.orbax-checkpoint-tmp"]
    assert os.listdir(os.path.join(ckpt_dir, "8.orbax-checkpoint-tmp", "state")), (
        "killed before the arrays"
    )
    assert not os.path.exists(os.path.join(workdir, "summary.json"))

    # The partial save is not a checkpoint: the newest one is the previous, and it is
    # intact (the reference's step 4); bcos_jax.load_checkpoint reads it too.
    ck = ckpt_lib.Checkpointer(workdir)
    assert ck.all_steps() == [4]
    ck.close()
    _assert_same_state(reference_run, 4, workdir)
    _, variables = bcos_jax.load_checkpoint(workdir)
    np.testing.assert_array_equal(
        variables["params"]["conv0"]["kernel"],
        _train_state(reference_run, 4)[1]["ema"]["params"]["conv0"]["kernel"],
    )

    # Resuming (in this process) replaces the stale temporary folder and ends bit for bit
    # where the uninterrupted run ends.
    summary = train_module().train_and_evaluate(_train_config(), workdir)
    assert summary["steps"] == TRAIN_STEPS
    assert sorted(os.listdir(ckpt_dir), key=int) == ["4", "8", "12", "16"]
    for step in (8, TRAIN_STEPS):
        _assert_same_state(reference_run, step, workdir, step)

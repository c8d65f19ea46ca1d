"""Attribution methods: parity with PAIR saliency and the reference, exact properties, errors."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcos_jax
from bcos_jax import attribution as A
from bcos_jax import layers, norms
from bcos_jax.attribution import gradients as G
from bcos_jax.attribution import lime_image, occlusion_windows, rise_masks
from bcos_jax.attribution._common import nearest_resize
from bcos_jax.attribution.relu_rules import count_relus, guided_relu
from tests.precision import bcos_maxout_margin, logit_margin, run_float64

NUM_CLASSES = 4


class ConvAct(nn.Module):
    features: int
    strides: int = 1
    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
        return self.act(
            nn.Conv(self.features, (3, 3), strides=self.strides, padding=1, name="conv")(x)
        )


class TinyStd(nn.Module):
    """A standard CNN: two conv-act stages ('layer1', 'layer2'), global mean, dense 'fc'."""

    act: object = nn.relu

    def setup(self):
        self.layer1 = ConvAct(6, act=self.act)
        self.layer2 = ConvAct(8, strides=2, act=self.act)
        self.fc = nn.Dense(NUM_CLASSES)

    def features(self, x):
        return self.layer2(self.layer1(x))

    def head(self, f):
        return self.fc(jnp.mean(f, axis=(1, 2)))

    def __call__(self, x, train=False, explain=False):
        return self.head(self.features(x))


class TinyBcos(nn.Module):
    """A B-cos CNN whose 1x1 classifier comes before global pooling (the reference layout)."""

    @nn.compact
    def __call__(self, x, train=False, explain=False):
        x = layers.BcosConv(8, 3, padding=1, name="conv1")(x, explain)
        x = norms.BatchNormUncentered(use_bias=False, name="bn1")(x, train=train, explain=explain)
        x = layers.BcosConv(8, 3, strides=2, padding=1, max_out=2, name="conv2")(x, explain)
        x = layers.BcosConv(NUM_CLASSES, 1, name="classifier")(x, explain)
        return layers.LogitLayer(bias=-math.log(NUM_CLASSES - 1))(jnp.mean(x, axis=(1, 2)))


@functools.cache
def std_setup(act=nn.relu):
    model = TinyStd(act=act)
    x = jax.random.normal(jax.random.key(5), (2, 8, 8, 3))
    v = model.init(jax.random.key(0), x)
    # non-zero biases: with zero biases and a zero baseline DeepLIFT would equal IxG
    v = jax.tree_util.tree_map_with_path(
        lambda p, a: (
            0.3 * jax.random.normal(jax.random.key(len(str(p))), a.shape)
            if p[-1].key == "bias"
            else a
        ),
        v,
    )
    # The tests compare gradients through ReLU gates and argmax targets computed in several
    # ways (batched, vmapped, rewritten rules). They agree on any CPU only if no
    # pre-activation and no top-2 logit gap is within float32 rounding (~1e-6 of the
    # layer's scale): this input is checked for that in float64 (tests/precision.py).
    assert _min_preactivation(model, v, x) > 1e-4
    assert logit_margin(lambda z: model.apply(v, z), x) > 1e-4
    return model, v, x


def _min_preactivation(model, v, x) -> float:
    """min |conv output| / max |conv output| over the convs (the ReLU inputs), in float64."""

    def run(v, x):
        _, state = model.apply(v, x, capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
                               mutable=["intermediates"])
        zs = jax.tree.leaves(state["intermediates"])
        return jnp.min(jnp.stack([jnp.min(jnp.abs(z)) / jnp.max(jnp.abs(z)) for z in zs]))

    return float(run_float64(run, v, x))


@functools.cache
def bcos_setup():
    model = TinyBcos()
    x = layers.add_inverse(jax.random.uniform(jax.random.key(2), (2, 8, 8, 3)))
    v = model.init(jax.random.key(0), x)
    # non-trivial running statistics, so the norm is not the identity
    v["batch_stats"]["bn1"]["var"] = jnp.linspace(0.5, 2.0, 8)
    # conv2's MaxOut and the argmax target are far from ties (see std_setup).
    assert bcos_maxout_margin(model, v, x) > 1e-4
    assert logit_margin(lambda z: model.apply(v, z), x) > 1e-4
    return model, v, x


def smooth_fn():
    """A smooth nonlinear model function on [N, 4, 4, 2] inputs (cheap to compile)."""
    w = jax.random.normal(jax.random.key(3), (32, NUM_CLASSES))

    def f(x):
        h = x.reshape(x.shape[0], -1)
        return jnp.tanh(h @ w) + 0.1 * (h**2) @ w

    return f


# --------------------------------------------------------------------------- PAIR saliency parity
def _pair_call(f, target):
    from saliency.core.base import INPUT_OUTPUT_GRADIENTS

    grad = jax.jit(jax.grad(lambda xb: jnp.sum(f(xb)[:, target])))

    def call_model_function(x_batch, call_model_args=None, expected_keys=None):
        return {INPUT_OUTPUT_GRADIENTS: np.asarray(grad(jnp.asarray(x_batch, jnp.float32)))}

    return call_model_function


def test_integrated_gradients_matches_pair_saliency():
    saliency = pytest.importorskip("saliency.core")
    f = smooth_fn()
    x = jax.random.uniform(jax.random.key(4), (2, 4, 4, 2))
    t = jnp.array([1, 3])
    ours = A.integrated_gradients(f, x, t, n_steps=20, scheme="linspace", internal_batch_size=6)
    for i in range(2):
        ref = saliency.IntegratedGradients().GetMask(
            np.asarray(x[i]), _pair_call(f, int(t[i])), x_steps=20, batch_size=7
        )
        np.testing.assert_allclose(np.asarray(ours[i]), ref, rtol=1e-4, atol=1e-6)


def test_smoothgrad_matches_pair_saliency_with_the_same_noise(monkeypatch):
    saliency = pytest.importorskip("saliency.core")
    f = smooth_fn()
    x = jax.random.uniform(jax.random.key(5), (2, 4, 4, 2))
    t = jnp.array([0, 2])
    for magnitude in (False, True):
        ours = A.smoothgrad(f, x, t, n_samples=6, stdev_spread=0.2, magnitude=magnitude, seed=7,
                            internal_batch_size=4)
        for i in range(2):
            calls = iter(range(6))

            def normal(loc, scale, size):  # PAIR draws one N(0, σ) array per sample, in order
                return np.asarray(G.smoothgrad_noise(7, next(calls), size)) * scale

            monkeypatch.setattr(np.random, "normal", normal)
            ref = saliency.GradientSaliency().GetSmoothedMask(
                np.asarray(x[i]),
                _pair_call(f, int(t[i])),
                stdev_spread=0.2,
                nsamples=6,
                magnitude=magnitude,
            )
            monkeypatch.undo()
            np.testing.assert_allclose(np.asarray(ours[i]), ref, rtol=1e-4, atol=1e-6)


def test_integration_points_are_quadratures():
    for scheme in G.IG_SCHEMES:
        a, w = G.integration_points(8, scheme)
        assert a.shape == w.shape == (8,)
        assert abs(w.sum() - 1) < 1e-12, scheme
        assert 0 <= a.min() and a.max() <= 1
    a, w = G.integration_points(5, "gausslegendre")
    assert abs(np.sum(w * a**7) - 1 / 8) < 1e-12  # exact for polynomials up to degree 9
    with pytest.raises(ValueError, match="unknown scheme"):
        G.integration_points(5, "simpson")


def test_integrated_gradients_completeness_and_chunking():
    model, v, x = std_setup(nn.gelu)
    f = lambda z: model.apply(v, z)
    t = jnp.array([0, 3])
    ig = A.integrated_gradients(f, x, t, n_steps=50, internal_batch_size=8)
    fx = jnp.take_along_axis(f(x), t[:, None], 1)[:, 0]
    f0 = jnp.take_along_axis(f(jnp.zeros_like(x)), t[:, None], 1)[:, 0]
    np.testing.assert_allclose(ig.sum((1, 2, 3)), fx - f0, rtol=1e-3, atol=1e-4)
    ig_other_chunks = A.integrated_gradients(f, x, t, n_steps=50, internal_batch_size=50)
    np.testing.assert_allclose(ig, ig_other_chunks, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- B-cos and gradients
def test_bcos_method_equals_explain_contributions():
    model, v, x = bcos_setup()
    fns = A.from_model(model, v, bcos=True)
    t = jnp.array([2, 0])
    bcos_fn = A.make_attributor("bcos", fns)
    attr = bcos_fn(x, t)
    e = bcos_jax.explain_fn(model)(v, x, t)
    assert attr.shape == x.shape
    np.testing.assert_allclose(attr, x * e.weights, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attr.sum(-1), e.contributions, rtol=1e-5, atol=1e-7)
    # the contributions sum to the logit minus the logit bias (exact for B-cos)
    np.testing.assert_allclose(
        attr.sum((1, 2, 3)) - math.log(NUM_CLASSES - 1),
        jnp.take_along_axis(e.logits, t[:, None], 1)[:, 0],
        rtol=1e-4,
        atol=1e-5,
    )
    # K targets per image: a leading K axis, each slice the single-target result
    tk = jnp.array([[2, 1], [0, 3]])
    multi = bcos_fn(x, tk)
    assert multi.shape == (2,) + x.shape
    np.testing.assert_allclose(multi[0], attr, rtol=1e-5, atol=1e-7)
    # IxG in the ordinary mode differs: the dynamic scales are not detached there
    assert not np.allclose(A.make_attributor("input_x_gradient", fns)(x, t), attr, atol=1e-6)


def test_gradient_methods_and_default_targets():
    model, v, x = std_setup()
    f = lambda z: model.apply(v, z)
    pred = jnp.argmax(f(x), -1)
    g = A.gradient(f, x)
    ref = jax.vmap(lambda xi, ti: jax.grad(lambda z: f(z[None])[0, ti])(xi))(x, pred)
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(A.input_x_gradient(f, x, pred), x * ref, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- ReLU rules
def test_guided_backprop_rewrites_relus_like_an_injected_activation():
    model, v, x = std_setup()
    f = lambda z: model.apply(v, z)
    assert count_relus(f, x) == 2
    t = jnp.array([1, 2])
    ours = A.guided_backprop(f, x, t)
    guided_model = TinyStd(act=guided_relu)  # the same weights with the rule injected by hand
    ref = A.gradient(lambda z: guided_model.apply(v, z), x, t)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    assert not np.allclose(ours, A.gradient(f, x, t), atol=1e-6)
    # no ReLU in a B-cos network: Guided Backprop is the plain gradient
    bm, bv, bx = bcos_setup()
    bf = lambda z: bm.apply(bv, z)
    assert count_relus(bf, bx) == 0
    np.testing.assert_allclose(A.guided_backprop(bf, bx, t), A.gradient(bf, bx, t), rtol=1e-6)


def test_deeplift_rescale_rule_is_exact():
    # one hidden ReLU layer: the rescale multipliers give the attribution in closed form
    w1 = jax.random.normal(jax.random.key(6), (12, 5))
    b1 = jax.random.normal(jax.random.key(7), (5,))
    w2 = jax.random.normal(jax.random.key(8), (5, 3))

    def f(x):
        return jax.nn.relu(x.reshape(x.shape[0], -1) @ w1 + b1) @ w2

    x = jax.random.normal(jax.random.key(9), (2, 2, 2, 3))
    t = jnp.array([0, 2])
    z, z0 = x.reshape(2, -1) @ w1 + b1, jnp.broadcast_to(b1, (2, 5))
    m = jnp.where(jnp.abs(z - z0) < 1e-10, (z > 0), (jax.nn.relu(z) - jax.nn.relu(z0)) / (z - z0))
    expected = x.reshape(2, -1) * ((m * w2[:, t].T) @ w1.T)
    np.testing.assert_allclose(A.deeplift(f, x, t).reshape(2, -1), expected, rtol=1e-5, atol=1e-6)


def test_deeplift_sums_to_the_output_difference():
    model, v, x = std_setup()  # convs, ReLUs, mean pooling, dense: summation-to-delta holds
    f = lambda z: model.apply(v, z)
    t = jnp.array([3, 1])
    d = A.deeplift(f, x, t)
    diff = jnp.take_along_axis(f(x) - f(jnp.zeros_like(x)), t[:, None], 1)[:, 0]
    np.testing.assert_allclose(d.sum((1, 2, 3)), diff, rtol=1e-4, atol=1e-5)
    assert not np.allclose(d, A.input_x_gradient(f, x, t), atol=1e-5)


# --------------------------------------------------------------------------- Grad-CAM
def test_gradcam_standard_model_uses_the_last_feature_map():
    model, v, x = std_setup()
    fns = A.from_model(model, v, bcos=False)
    site = A.model_fns.find_feature_site(
        lambda z: model.apply(v, z), jax.ShapeDtypeStruct(x.shape, x.dtype), "tiny"
    )
    assert site.path == ("layer2",) and site.where == "output"
    t = jnp.array([0, 1])
    cam = A.gradcam(fns, x, t)
    feats = model.apply(v, x, method=TinyStd.features)
    out, vjp = jax.vjp(lambda fm: model.apply(v, fm, method=TinyStd.head), feats)
    (g,) = vjp(jax.nn.one_hot(t, NUM_CLASSES))
    ref = jax.nn.relu(jnp.sum(g.sum((1, 2), keepdims=True) * feats, -1))
    ref = np.repeat(np.repeat(np.asarray(ref), 2, axis=1), 2, axis=2)[..., None]
    assert cam.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(cam, ref, rtol=1e-5, atol=1e-6)


def test_gradcam_bcos_model_taps_the_classifier_input_and_layer_override():
    model, v, x = bcos_setup()
    fns = A.from_model(model, v, bcos=True)
    site = A.model_fns.find_feature_site(
        lambda z: model.apply(v, z), jax.ShapeDtypeStruct(x.shape, x.dtype), "b"
    )
    assert site.path == ("classifier",) and site.where == "input"
    explicit = A.from_model(model, v, bcos=True, feature_layer="conv2")  # the same tensor, named
    t = jnp.array([[1, 3], [0, 2]])
    np.testing.assert_allclose(A.gradcam(fns, x, t), A.gradcam(explicit, x, t), rtol=1e-6)
    with pytest.raises(ValueError, match="was not called"):
        A.gradcam(A.from_model(model, v, bcos=True, feature_layer="nope"), x, t)


def test_gradcam_site_of_zoo_models():
    from bcos_jax import models

    for name, expected in (
        ("standard_resnet18", (("layer1",), "output")),
        ("resnet18", (("fc",), "input")),
    ):
        m = models.create(name, layers=(1,), inplanes=4, num_classes=3)
        cin = models.get_spec(name).in_channels
        xs = jax.ShapeDtypeStruct((1, 16, 16, cin), jnp.float32)
        shapes = jax.eval_shape(m.init, jax.random.key(0), xs)  # only traced: no weights needed
        v = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        site = A.model_fns.find_feature_site(lambda z: m.apply(v, z), xs, name)
        assert (site.path, site.where) == expected, name


def test_nearest_resize_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).normal(size=(2, 3, 5, 1)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(a).permute(0, 3, 1, 2), size=(7, 11), mode="nearest"
    )
    np.testing.assert_array_equal(
        nearest_resize(jnp.asarray(a), (7, 11)), ref.permute(0, 2, 3, 1).numpy()
    )


# --------------------------------------------------------------------------- perturbation methods
REGION = (slice(0, 4), slice(4, 8))  # the only pixels the region model looks at (8x8 images)


def region_model(x):
    """Class 0 = 4·(mean square of the region) − 1; class 1 = a constant: only the region matters.

    (A mean square, not a mean: LIME paints removed superpixels with their mean colour.)
    """
    r = jnp.mean(jnp.square(x[:, REGION[0], REGION[1], :]), axis=(1, 2, 3))
    return jnp.stack([4.0 * r - 1.0, jnp.zeros_like(r)], axis=-1)


def _region_mask():
    m = np.zeros((8, 8), bool)
    m[REGION] = True
    return m


def test_occlusion_lights_up_the_region_and_matches_the_reference_windows():
    x = jax.random.uniform(jax.random.key(10), (2, 8, 8, 3), minval=0.5, maxval=1.0)
    occ = A.occlusion(region_model, x, jnp.array([0, 0]), ks=2, stride=2, internal_batch_size=5)[
        ..., 0
    ]
    m = _region_mask()
    assert np.all(np.asarray(occ)[:, m] > 0.05) and np.allclose(
        np.asarray(occ)[:, ~m], 0, atol=1e-6
    )
    # the windows are the reference's make_masks (odd ks: ks-1 wide, starting before the position)
    for ks, stride in ((2, 2), (4, 4), (5, 2), (3, 4)):
        rows = occlusion_windows.occlusion_windows(8, ks, stride)
        ref = _reference_occlusion_masks(8, ks, stride)
        ours = np.stack([1 - np.outer(r, c) for r in rows for c in rows])
        np.testing.assert_array_equal(
            np.sort(ours.reshape(len(ours), -1), 0), np.sort(ref.reshape(len(ref), -1), 0)
        )
    with pytest.raises(ValueError, match="multiple of the stride"):
        A.occlusion(region_model, x, jnp.array([0, 0]), ks=3, stride=3)


def _reference_occlusion_masks(size, ks, stride):
    # transcription of interpretability/explanation_methods/explainers/occlusion.py make_masks
    stride = (stride, stride)
    total = size // stride[-1] * size // stride[-2]
    strided_shape = (np.array((size, size)) / np.array(stride)).astype(int)
    ks2, off = ((ks - 1) // 2, 0) if ks % 2 == 1 else (ks, 1)
    masks = []
    for idx in range(total):
        mask = np.ones((size, size))
        wpos, hpos = np.unravel_index(idx, shape=strided_shape)
        mask[max(0, (hpos + off) * stride[0] - ks2): hpos * stride[0] + ks2,
             max(0, (wpos + off) * stride[1] - ks2): wpos * stride[1] + ks2] = 0
        masks.append(mask)
    return np.stack(masks)


def test_rise_lights_up_the_region_and_uses_the_reference_masks():
    x = jax.random.uniform(jax.random.key(11), (2, 8, 8, 3), minval=0.5, maxval=1.0)
    sal = np.asarray(
        A.rise(region_model, x, jnp.array([0, 0]), n_masks=200, s=4, internal_batch_size=64)
    )[..., 0]
    m = _region_mask()
    assert np.all(sal[:, m].mean(1) > sal[:, ~m].mean(1) + 0.05)
    # batch independence and determinism: image 1 alone gives the same map
    alone = np.asarray(
        A.rise(region_model, x[1:], jnp.array([0]), n_masks=200, s=4, internal_batch_size=64)
    )
    np.testing.assert_allclose(alone[0, ..., 0], sal[1], rtol=1e-5, atol=1e-6)
    # masks = the reference's generate_masks (np.random.seed(42) + skimage resize)
    np.testing.assert_allclose(
        rise_masks.rise_masks(20, 4, 0.3, (10, 10)),
        _reference_rise_masks(20, 4, 0.3, 10),
        atol=1e-6,
    )


def _reference_rise_masks(n, s, p1, size):
    from skimage.transform import resize

    state = np.random.get_state()
    np.random.seed(42)
    cell_size = np.ceil(np.array((size, size)) / s)
    up_size = (s + 1) * cell_size
    grid = (np.random.rand(n, s, s) < p1).astype("float32")
    masks = np.empty((n, size, size))
    for i in range(n):
        x = np.random.randint(0, cell_size[0])
        y = np.random.randint(0, cell_size[1])
        masks[i] = resize(grid[i], up_size, order=1, mode="reflect", anti_aliasing=False)[
            x : x + size, y : y + size
        ]
    np.random.set_state(state)
    return masks


def test_lime_selects_the_region_superpixel():
    x = jax.random.uniform(jax.random.key(12), (2, 8, 8, 3), minval=0.5, maxval=1.0)
    seg = np.repeat(
        np.repeat(np.arange(4).reshape(2, 2), 4, 0), 4, 1
    )  # quadrants; the region is #1
    seg = np.stack([seg, seg])
    # jittable once the superpixels are given
    core = jax.jit(
        functools.partial(
            lime_image.lime_from_segments, region_model, num_samples=64, num_features=1
        ),
        static_argnames="max_segments",
    )
    maps = core(x, jnp.array([0, 0]), seg, max_segments=64)[..., 0]
    np.testing.assert_array_equal(
        np.asarray(maps), np.stack([_region_mask()] * 2).astype(np.float32)
    )
    # the same result for an image alone, and with the wrapper that pads the superpixel ids
    np.testing.assert_array_equal(
        core(x[:1], jnp.array([0]), seg[:1], max_segments=64)[..., 0], maps[:1]
    )
    with pytest.raises(ValueError, match="segments must be"):
        A.lime(region_model, x, jnp.array([0, 0]), segments=seg[:, :4])


def test_weighted_ridge_matches_the_normal_equations_of_sklearn_ridge():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (40, 6)).astype(np.float64)
    y = rng.normal(size=(40, 2))
    w = rng.uniform(0.1, 1.0, 40)
    coef = np.asarray(
        lime_image._weighted_ridge(jnp.asarray(z), jnp.asarray(y), jnp.asarray(w), 1.0)
    )
    # sklearn Ridge(alpha=1, fit_intercept=True).fit(z, y, sample_weight=w): weighted centring, then
    # min Σ w (y − z β)² + |β|²
    zm, ym = np.average(z, 0, w), np.average(y, 0, w)
    zc, yc = z - zm, y - ym
    ref = np.linalg.solve(zc.T @ (w[:, None] * zc) + np.eye(6), zc.T @ (w[:, None] * yc))
    np.testing.assert_allclose(coef, ref, rtol=1e-4, atol=1e-6)


def test_quickshift_segments_are_contiguous_ids():
    rgb = np.zeros((1, 24, 24, 3))
    rgb[0, :, 12:] = [1.0, 0.2, 0.2]
    seg = lime_image.quickshift_segments(rgb, kernel_size=2, max_dist=6, ratio=0.5)
    assert seg.shape == (1, 24, 24) and seg.dtype == np.int32
    assert set(np.unique(seg)) == set(range(int(seg.max()) + 1)) and seg.max() >= 1
    assert len(np.intersect1d(np.unique(seg[0, :, :12]), np.unique(seg[0, :, 12:]))) == 0


# --------------------------------------------------------------------------- registry and errors
def test_registry_and_errors():
    assert A.get_method("IntGrad").name == "integrated_gradients"
    assert A.METHODS["rise"].settings["n_masks"] == 500 and A.METHODS["rise"].settings["p1"] == 0.1
    assert A.METHODS["occlusion"].settings == {"ks": 32, "stride": 32}
    assert A.METHODS["lime"].settings["num_features"] == 5
    with pytest.raises(ValueError, match="unknown attribution method 'gradcm'"):
        A.get_method("gradcm")
    model, v, x = std_setup()
    std = A.from_model(model, v, bcos=False)
    with pytest.raises(ValueError, match="needs a B-cos model"):
        A.attribute("bcos", std, x, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="NHWC"):
        A.gradient(std, x[0])
    with pytest.raises(ValueError, match=r"targets must be \[N\] or \[N, K\]"):
        A.gradient(std, x, jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        A.gradient(std, x, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="no feature tap"):
        A.gradcam(lambda z: model.apply(v, z), x)


def test_make_attributor_is_jitted_and_matches_attribute():
    f = smooth_fn()
    x = jax.random.uniform(jax.random.key(13), (2, 4, 4, 2))
    t = jnp.array([1, 0])
    run = A.make_attributor("smoothgrad", f, n_samples=4)
    np.testing.assert_allclose(
        run(x, t), A.attribute("smoothgrad", f, x, t, n_samples=4), rtol=1e-5, atol=1e-7
    )
    # one image alone gives the same SmoothGrad (noise is per sample, not per batch)
    np.testing.assert_allclose(run(x[1:], t[1:])[0], run(x, t)[1], rtol=1e-5, atol=1e-7)


def test_methods_run_on_a_batch_sharded_over_devices():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    n = len(jax.devices())
    mesh = jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    f = smooth_fn()
    x = jax.random.uniform(jax.random.key(14), (n, 4, 4, 2))
    t = jnp.arange(n) % NUM_CLASSES
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ts = jax.device_put(t, NamedSharding(mesh, P("data")))
    for name, kw in (
        ("integrated_gradients", {"n_steps": 8}),
        ("occlusion", {"ks": 2, "stride": 2}),
    ):
        run = A.make_attributor(name, f, **kw)
        np.testing.assert_allclose(run(xs, ts), run(x, t), rtol=1e-5, atol=1e-7)


def test_out_of_range_targets_are_errors():
    model, v, x = std_setup()
    f = lambda z: model.apply(v, z)
    fns = A.from_model(model, v, bcos=False)
    for method in ("gradient", "input_x_gradient", "guided_backprop"):
        match = rf"{method}: targets must be class indices in \[0, {NUM_CLASSES}\)"
        with pytest.raises(ValueError, match=match):
            A.attribute(method, fns, x, jnp.array([0, NUM_CLASSES]))
    with pytest.raises(ValueError, match=r"in \[0, "):
        A.gradient(f, x, jnp.array([-1, 0]))

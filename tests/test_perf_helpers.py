"""Performance paths of ``bcos_jax.layers``: they must compute exactly what the plain paths do.

* 1x1 convs as matmuls (``_linear_and_norm``) with a hand-written backward (``_pointwise``);
* ``prenormalize``: kernels normalised once for inference;
* ``remat=True`` on ``BcosConv`` / ``BcosDense``: same values and gradients.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bcos_jax
from bcos_jax import layers, models, norms
from tests.precision import run_float64

RTOL = 2e-5


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.max(np.abs(b))), 1e-30)
    assert float(np.max(np.abs(a - b))) <= rtol * scale, float(np.max(np.abs(a - b))) / scale


def _reference_conv(x, kernel, stride, b, explain):
    """The B-cos conv written with lax.conv and the windowed patch norm (no 1x1 shortcut)."""
    w = kernel / jnp.sqrt(jnp.sum(jnp.square(kernel), axis=(0, 1, 2), keepdims=True))
    pad = ((0, 0), (0, 0))
    lin = layers._lax_conv(x, w, (stride, stride), pad, (1, 1), 1)
    norm = layers.patch_norm(x, (1, 1), (stride, stride), pad)
    return layers.dynamic_scale(lin, norm, b, explain) * lin


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("b", [2.0, 1.5])
def test_pointwise_conv_matches_lax_conv(stride, b):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 16)), jnp.float32)
    mod = layers.BcosConv(12, 1, strides=stride, b=b)
    params = mod.init(jax.random.key(0), x)
    kernel = params["params"]["kernel"]
    cot = jnp.asarray(rng.normal(size=mod.apply(params, x).shape), jnp.float32)

    _close(mod.apply(params, x), _reference_conv(x, kernel, stride, b, False))
    for explain in (False, True):
        def ours(x, k):
            return jnp.sum(mod.apply({"params": {"kernel": k}}, x, explain) * cot)

        def ref(x, k):
            return jnp.sum(_reference_conv(x, k, stride, b, explain) * cot)

        gx, gk = jax.grad(ours, (0, 1))(x, kernel)
        rx, rk = jax.grad(ref, (0, 1))(x, kernel)
        _close(gx, rx)
        _close(gk, rk)


@pytest.mark.parametrize("shape", [(3, 5, 5, 8), (4, 7, 8), (6, 8)])
def test_pointwise_vjp_equals_autodiff(shape):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(shape[-1], 5)), jnp.float32)
    g = jnp.asarray(rng.normal(size=shape[:-1] + (5,)), jnp.float32)
    _close(layers._pointwise(x, w), layers._matmul(x, w), 1e-6)
    ours = jax.vjp(layers._pointwise, x, w)[1](g)
    ref = jax.vjp(layers._matmul, x, w)[1](g)
    for a, r in zip(ours, ref):
        _close(a, r, 1e-5)
    # Under jit, second order and vmap too (custom_vjp must not break transformations).
    jitted = jax.jit(jax.grad(lambda x, w: jnp.sum(layers._pointwise(x, w) ** 2), (0, 1)))(x, w)
    plain = jax.grad(lambda x, w: jnp.sum(layers._matmul(x, w) ** 2), (0, 1))(x, w)
    for a, r in zip(jitted, plain):
        _close(a, r, 1e-5)


class _Mixed(nn.Module):
    """B-cos layers of every kind next to a standard Dense layer (which must be left alone)."""

    @nn.compact
    def __call__(self, x, train=False, explain=False):
        x = layers.BcosConv(8, 3, padding=1, name="conv1")(x, explain)
        x = norms.BatchNormUncentered(use_bias=False, name="bn1")(x, train=train, explain=explain)
        x = layers.BcosConv(
            8, 3, strides=2, padding=1, feature_group_count=2, max_out=2, name="conv2"
        )(x, explain)
        x = layers.BcosConv(8, 1, strides=2, name="conv3")(x, explain)
        h = layers.BcosDense(6, name="dense")(jnp.mean(x, axis=(1, 2)), explain)
        side = nn.Dense(6, name="plain")(jax.lax.stop_gradient(h)) if not explain else 0.0
        return h + 0.0 * side


def test_prenormalize_equals_per_call_normalisation():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(size=(3, 12, 12, 6)), jnp.float32)
    model = _Mixed()
    variables = model.init(jax.random.key(0), x)
    pre = layers.prenormalize(model, variables, x)

    moved = pre[layers.PRENORMALIZED]
    assert set(moved) == {"conv1", "conv2", "conv3", "dense"}
    assert "kernel" in pre["params"]["plain"]  # a standard layer keeps its kernel
    for name in moved:
        assert "kernel" not in pre["params"][name]
        k = moved[name]["kernel"]
        norms_ = jnp.sqrt(jnp.sum(jnp.square(k), axis=tuple(range(k.ndim - 1))))
        _close(norms_, jnp.ones_like(norms_), 1e-6)
    assert "kernel" in variables["params"]["conv1"]  # the input tree is not modified

    _close(jax.jit(model.apply)(pre, x), model.apply(variables, x), 1e-6)

    # Explanations go through conv2's MaxOut and the argmax target, discrete choices that
    # float32 rounding (prenormalised vs per-call kernels) can flip on some CPU: compared in
    # float64 (tests/precision.py).
    def explain_both(variables, x):
        pre = layers.prenormalize(model, variables, x)
        return bcos_jax.explain(model, pre, x), bcos_jax.explain(model, variables, x)

    e_pre, e_ref = run_float64(explain_both, variables, x)
    assert e_pre.weights.dtype == np.float64
    _close(e_pre.weights, e_ref.weights, 1e-10)
    np.testing.assert_array_equal(e_pre.targets, e_ref.targets)

    again = layers.prenormalize(model, pre, jax.ShapeDtypeStruct(x.shape, x.dtype))
    jax.tree.map(np.testing.assert_array_equal, again, pre)


def test_prenormalize_zoo_model():
    model = models.create("cifar10_resnet20")
    x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 32, 32, 6)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)
    pre = layers.prenormalize(model, variables, x, train=False)
    assert not any(
        "kernel" in leaf_path
        for leaf_path in map(str, jax.tree_util.tree_leaves_with_path(pre["params"]))
    )
    _close(model.apply(pre, x, train=False), model.apply(variables, x, train=False), 1e-5)


def test_prenormalize_rejects_wrong_shape():
    x = jnp.ones((1, 5, 5, 4))
    mod = layers.BcosConv(3, 3, padding=1)
    bad = {"params": {}, layers.PRENORMALIZED: {"kernel": jnp.ones((3, 3, 4, 2))}}
    with pytest.raises(ValueError, match="expected"):
        mod.apply(bad, x)


@pytest.mark.parametrize(
    "make",
    [
        lambda remat: layers.BcosConv(8, 3, strides=2, padding=1, remat=remat),
        lambda remat: layers.BcosConv(8, 1, remat=remat),
        lambda remat: layers.BcosConv(
            8, 3, padding=1, feature_group_count=2, max_out=2, b=1.5, remat=remat
        ),
        lambda remat: layers.BcosDense(7, remat=remat),
    ],
)
def test_remat_same_values_and_gradients(make):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32)
    plain, remat = make(False), make(True)
    params = plain.init(jax.random.key(0), x)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a.shape, b.shape),
        params,
        remat.init(jax.random.key(0), x),
    )

    def grads(params, x):
        out = []
        for explain in (False, True):
            def loss(mod, p, x):
                return jnp.sum(jnp.sin(mod.apply(p, x, explain)))

            out.append((jax.jit(jax.grad(functools.partial(loss, remat), (0, 1)))(params, x),
                        jax.grad(functools.partial(loss, plain), (0, 1))(params, x)))
        return out

    # With MaxOut, jitted and eager rounding can pick different candidates on near-ties on
    # some CPU: that case is compared in float64 (tests/precision.py).
    maxout = getattr(plain, "max_out", 1) > 1
    results = run_float64(grads, params, x) if maxout else grads(params, x)
    for a, r in results:
        jax.tree.map(lambda u, v: _close(u, v, 1e-10 if maxout else 1e-5), a, r)


def test_remat_zoo_training_step_matches():
    import optax

    x = jnp.asarray(np.random.default_rng(5).uniform(size=(4, 32, 32, 6)), jnp.float32)
    y = jax.nn.one_hot(jnp.arange(4) % 10, 10)
    results = []
    for remat in (False, True):
        model = models.create("cifar10_resnet20", norm="bnu-linear", remat=remat)
        variables = model.init(jax.random.key(0), x, train=False)

        def loss_fn(p, extra):
            out, new = model.apply({"params": p, **extra}, x, train=True, mutable=list(extra))
            return optax.sigmoid_binary_cross_entropy(out, y).mean(), new

        extra = {k: v for k, v in variables.items() if k != "params"}
        (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
            variables["params"], extra
        )
        results.append((loss, grads))
    _close(results[1][0], results[0][0], 1e-6)
    jax.tree.map(lambda a, b: _close(a, b, 1e-4), results[1][1], results[0][1])


REMAT_MODELS = [
    ("cifar10_resnet20", 32),
    ("v1_resnet18", 64),
    ("cifar10_densenet52", 32),
    ("v1_densenet121", 64),
    ("vgg11_bnu", 64),
    ("v1_vgg11", 64),
    ("convnext_atto", 64),
    ("simple_vit_ti_patch16_224", 32),
    ("vitc_ti_patch1_14", 64),
    ("v1_inception_v3", 75),
    ("v1_cifar10_9l", 32),
    ("bcos_small_cnn", 32),
]


@pytest.mark.parametrize("name,size", REMAT_MODELS, ids=[m for m, _ in REMAT_MODELS])
def test_create_remat_reaches_every_bcos_layer(name, size):
    """``models.create(name, remat=True)``: every BcosConv/BcosDense the model calls remats."""
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(
            context.module, (layers.BcosConv, layers.BcosDense)
        ):
            seen.append(context.module.remat)
        return next_fun(*args, **kwargs)

    spec = models.get_spec(name)
    x = jax.ShapeDtypeStruct((1, size, size, spec.in_channels), jnp.float32)
    for remat in (False, True):
        seen.clear()
        model = models.create(name, remat=remat)
        with nn.intercept_methods(record):
            jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x, train=False), x)
        assert seen and set(seen) == {remat}, (name, remat, len(seen), set(seen))


def test_create_remat_refuses_a_model_without_bcos_layers():
    with pytest.raises(ValueError, match="no B-cos layers"):
        models.create("standard_resnet18", remat=True)


S2D_CASES = [
    # kernel, strides, padding, input size
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (16, 16)),  # ResNet / DenseNet stem
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (15, 13)),  # odd sizes
    ((4, 4), (4, 4), ((0, 0), (0, 0)), (16, 12)),  # ConvNeXt patchify stem
    ((2, 2), (2, 2), ((0, 0), (0, 0)), (9, 8)),  # downsampling conv, odd input (last row unused)
    ((5, 3), (2, 1), ((1, 2), (0, 1)), (11, 9)),  # asymmetric everything
]


@pytest.mark.parametrize("case", S2D_CASES, ids=[str(c) for c in S2D_CASES])
def test_space_to_depth_input_gradient_is_exact(case):
    ks, strides, padding, size = case
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(2, *size, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*ks, 5, 7)), jnp.float32)
    ref_out, ref_vjp = jax.vjp(
        lambda x, w: layers._lax_conv(x, w, strides, padding, (1, 1), 1), x, w
    )
    out, vjp = jax.vjp(lambda x, w: layers._conv_s2d(x, w, strides, padding), x, w)
    g = jnp.asarray(rng.normal(size=ref_out.shape), jnp.float32)
    np.testing.assert_array_equal(out, ref_out)
    for a, r in zip(vjp(g), ref_vjp(g)):
        _close(a, r, 1e-5)


def test_space_to_depth_only_where_it_pays():
    pays = layers._space_to_depth_transpose_pays
    w = lambda k: jnp.zeros((k, k, 3, 4))
    assert pays(w(7), (2, 2), (1, 1), 1)
    assert pays(w(4), (4, 4), (1, 1), 1)
    assert not pays(w(3), (2, 2), (1, 1), 1)  # 16/9 of the taps
    assert not pays(w(1), (2, 2), (1, 1), 1)
    assert not pays(w(7), (1, 1), (1, 1), 1)  # stride 1: the plain transpose is a dense conv
    assert not pays(w(7), (2, 2), (1, 1), 3)
    assert not pays(w(7), (2, 2), (2, 2), 1)

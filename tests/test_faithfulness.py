"""Deletion / insertion curves on toy cases, and the whole ``evaluate`` pipeline and CLI."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bcos_jax import attribution as A
from bcos_jax.evaluation import EvalConfig, EvalData, evaluate
from bcos_jax.evaluation import faithfulness as F

W = np.arange(1.0, 17.0, dtype=np.float32).reshape(4, 4)  # pixel weights of the linear toy model


def linear_model(x):
    """logit 0 = Σ W·x over pixels and channels; logit 1 = −logit 0."""
    s = jnp.einsum("nhwc,hw->n", x, jnp.asarray(W))
    return jnp.stack([s, -s], axis=-1)


LINEAR = A.ModelFns(logits=linear_model)


def test_deletion_and_insertion_curves_of_a_linear_model():
    x = jnp.ones((1, 4, 4, 1))
    attr = jnp.asarray(W)[None, ..., None]  # the exact contributions
    curves = F.faithfulness_curves(LINEAR, x, jnp.array([0]), attr, steps=4, score="logit",
                                   insertion_baseline="zero", internal_batch_size=2)
    total, srt = W.sum(), np.sort(W.ravel())
    # 4 pixels per step; MIF removes the largest weights first
    expected_del_mif = [total - srt[::-1][: 4 * k].sum() for k in range(5)]
    expected_del_lif = [total - srt[: 4 * k].sum() for k in range(5)]
    np.testing.assert_allclose(curves["deletion_mif"][0], expected_del_mif)
    np.testing.assert_allclose(curves["deletion_lif"][0], expected_del_lif)
    np.testing.assert_allclose(curves["insertion_mif"][0], total - np.asarray(expected_del_mif))
    np.testing.assert_allclose(curves["insertion_lif"][0], total - np.asarray(expected_del_lif))
    auc = F.area_under_curve(curves["deletion_mif"])
    np.testing.assert_allclose(auc, [np.trapezoid(expected_del_mif, dx=0.25)], rtol=1e-6)
    # the faithful order deletes evidence fastest: its deletion area is the smallest possible
    assert (
        F.area_under_curve(curves["deletion_mif"])[0]
        < F.area_under_curve(curves["deletion_lif"])[0]
    )
    assert (
        F.area_under_curve(curves["insertion_mif"])[0]
        > F.area_under_curve(curves["insertion_lif"])[0]
    )


def test_curves_do_not_depend_on_the_chunking_and_probabilities_are_used():
    x = jax.random.uniform(jax.random.key(0), (3, 4, 4, 2))
    attr = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    t = jnp.array([0, 1, 0])
    fns = A.ModelFns(logits=lambda z: 0.05 * linear_model(z))
    a = F.faithfulness_curves(fns, x, t, attr, steps=5, internal_batch_size=1)
    b = F.faithfulness_curves(fns, x, t, attr, steps=5, internal_batch_size=4)
    for k in F.CURVES:
        assert a[k].shape == (3, 6)
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-9)
    p = jax.nn.softmax(fns.logits(x))[jnp.arange(3), t]
    np.testing.assert_allclose(a["deletion_mif"][:, 0], p, rtol=1e-6)  # nothing deleted yet
    np.testing.assert_allclose(a["insertion_mif"][:, -1], p, rtol=1e-6)  # everything inserted


def test_pixel_ranks_break_ties_in_raster_order():
    imp = jnp.array([[[1.0, 3.0], [3.0, 0.0]]])
    np.testing.assert_array_equal(F.pixel_ranks(imp, True)[0], [[2, 0], [1, 3]])
    np.testing.assert_array_equal(F.pixel_ranks(imp, False)[0], [[1, 2], [3, 0]])


def test_baselines():
    x = jnp.full((1, 16, 16, 3), 0.3)
    np.testing.assert_allclose(F.baseline_image(x, "blur"), x, rtol=1e-6)  # blur keeps constants
    y = jnp.zeros((1, 16, 16, 1)).at[0, 8, 8, 0].set(1.0)
    b = F.gaussian_blur(y)
    np.testing.assert_allclose(b.sum(), 1.0, rtol=1e-5)
    assert b[0, 8, 8, 0] < 0.1 and b[0, 8, 12, 0] > 0
    with pytest.raises(ValueError, match="unknown baseline"):
        F.baseline_image(x, "noise")
    with pytest.raises(ValueError, match="one target per image"):
        F.faithfulness_curves(
            LINEAR, x[..., :1][:, :4, :4], jnp.array([[0]]), jnp.ones((1, 4, 4, 1))
        )


# --------------------------------------------------------------------------- evaluate() end to end
# classes 0..4 (the reference's image sequence needs more classes than cells per grid)
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 1, 0]], np.float32)


def colour_data(n=20, size=8, seed=0):
    """Dark noisy images with one square of the class colour in a random quadrant (= the mask)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 5
    images = rng.uniform(0.0, 0.2, (n, size, size, 3)).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    h = size // 2
    for i, c in enumerate(labels):
        r, q = rng.integers(0, 2, 2)
        sl = (i, slice(r * h, (r + 1) * h), slice(q * h, (q + 1) * h))
        images[sl] = 0.9 * COLOURS[c] + rng.uniform(0.0, 0.05, (h, h, 3))
        masks[sl] = True
    return EvalData.from_arrays(images, labels, masks, num_classes=5, name="colours")


_DIRS = jnp.array([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1], [1, 1, -1]], jnp.float32)
_BIAS = jnp.array([0.5, 0.5, 0.5, 2.2, 1.2])


def colour_logits(x):
    """Class c = the mass of pixels of colour c (a thresholded colour detector): local evidence."""
    act = jax.nn.relu(jnp.einsum("nhwc,kc->nhwk", x, _DIRS) - _BIAS)
    return 40.0 * jnp.mean(act, axis=(1, 2)) - 1.0


class ColourDetector(nn.Module):
    """``colour_logits`` as a module of the zoo contract, so that W(x) comes from ``explain``."""

    @nn.compact
    def __call__(self, x, train=False, explain=False):
        return colour_logits(x)


COLOUR = A.from_model(ColourDetector(), {}, bcos=True, probabilities=jax.nn.sigmoid,
                      encode=lambda rgb: rgb, decode=lambda x: x, name="colours")


def _small_config(**kw):
    base = dict(
        methods=("bcos", "gradient", "occlusion", "rise"),
        grid_sizes=(2,),
        sample_size=3,
        method_settings={"occlusion": {"ks": 4, "stride": 4}, "RISE": {"n_masks": 20, "s": 2}},
        num_images=5,
        faithfulness_steps=4,
        gallery_images=2,
    )
    base.update(kw)
    return EvalConfig(**base)


def test_evaluate_writes_the_summary_and_pictures_and_ignores_batch_sizes(tmp_path):
    data = colour_data()
    with pytest.warns(
        UserWarning, match="3x3 pointing game: 0 of 3 grids"
    ):  # 5 classes: no 3x3 grid
        s1 = evaluate(COLOUR, data, str(tmp_path / "a"),
                      _small_config(batch_size=2, grids_per_batch=1, grid_sizes=(2, 3)),
                      progress=False, model_name="colours")
    s2 = evaluate(COLOUR, data, str(tmp_path / "b"), _small_config(batch_size=3, grids_per_batch=2),
                  progress=False, model_name="colours")
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["methods"]["bcos"][
        "localisation"
    ]["3x3"] == {"mean": None, "median": None, "n": 0, "grids": 0}
    assert s1["accuracy"] == 1.0
    assert s1["methods"]["bcos"]["localisation"]["3x3"]["grids"] == 0
    on_disk = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert on_disk["methods"].keys() == {"bcos", "gradient", "occlusion", "rise"}
    for name in ("localisation.png", "faithfulness.png", "gallery.png", "localisation/bcos_2x2.np",
                 "curves/rise.npz"):
        assert (tmp_path / "a" / name).exists(), name
    for m, e in s1["methods"].items():
        e2 = s2["methods"][m]
        assert e["localisation"]["2x2"]["grids"] == e2["localisation"]["2x2"]["grids"] >= 2
        np.testing.assert_allclose(
            e["localisation"]["2x2"]["mean"], e2["localisation"]["2x2"]["mean"], rtol=1e-5
        )
        for k in F.CURVES:
            np.testing.assert_allclose(
                e["faithfulness"][k]["mean"], e2["faithfulness"][k]["mean"], rtol=1e-5
            )
        np.testing.assert_allclose(
            e["mask_localisation"]["mean"], e2["mask_localisation"]["mean"], rtol=1e-5
        )
        assert e["mask_localisation"]["uniform_baseline"] == pytest.approx(0.25)
    # a colour detector's input×gradient ('bcos' here) is positive exactly on the pixels of its
    # colour: in the grid, on the target's own image (so targets and placement agree), and in
    # a single image, on the object (the mask)
    assert s1["methods"]["bcos"]["localisation"]["2x2"]["mean"] == pytest.approx(1.0)
    assert s1["methods"]["bcos"]["mask_localisation"]["mean"] == pytest.approx(1.0)
    scores = np.loadtxt(tmp_path / "a" / "localisation" / "bcos_2x2.np")
    assert scores.shape == (4 * s1["methods"]["bcos"]["localisation"]["2x2"]["grids"],)


def test_evaluate_rejects_bad_configurations(tmp_path):
    data = colour_data(8)
    with pytest.raises(ValueError, match="needs a B-cos model"):
        evaluate(
            A.ModelFns(logits=colour_logits), data, str(tmp_path), _small_config(), progress=False
        )
    with pytest.raises(ValueError, match="not evaluated"):
        evaluate(
            COLOUR, data, str(tmp_path), _small_config(method_settings={"lime": {}}), progress=False
        )
    with pytest.raises(ValueError, match="unknown attribution method"):
        evaluate(COLOUR, data, str(tmp_path), _small_config(methods=("gradcm",)), progress=False)


def test_cli_evaluates_a_saved_checkpoint(tmp_path, capsys):
    import argparse

    from bcos_jax import hub, models
    from bcos_jax.commands import evaluate as cli

    overrides = {"num_classes": 3, "widths": [4, 8]}
    model = models.create("bcos_small_cnn", **overrides)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 6)))
    hub.save_model(str(tmp_path / "ckpt"), "bcos_small_cnn", overrides, variables)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "evaluate", "--checkpoint", str(tmp_path / "ckpt"),
        "--dataset", "quickstart:num_examples=12,image_size=16", "--methods", "bcos", "gradcam",
        "--grid-sizes", "2", "--sample-size", "2", "--conf-thresh", "0", "--num-images", "3",
        "--faithfulness-steps", "2", "--gallery", "2", "--batch-size", "4", "--no-progress",
        "--out", str(tmp_path / "out"),
    ])
    with pytest.warns(
        UserWarning, match="pointing game"
    ):  # an untrained model: too few confident classes
        assert args.fn(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "bcos_small_cnn" and summary["num_images"] == 12
    assert set(summary["methods"]) == {"bcos", "gradcam"}
    assert "accuracy" in capsys.readouterr().out
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        cli.parse_settings(["rise"])
    assert cli.parse_settings(["rise.n_masks=10", "lime.seed=3"]) == {
        "rise": {"n_masks": 10},
        "lime": {"seed": 3},
    }
    with pytest.raises(ValueError, match="unknown --dataset"):
        cli.parse_dataset("imagenet", None, 3)

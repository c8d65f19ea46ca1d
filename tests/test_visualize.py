"""Host-side visualisation against the reference's ``gradient_to_image``."""
from tests.torch_ref import bcos, torch

import numpy as np
import pytest
from PIL import Image

import bcos_jax
from bcos_jax import visualize


def _arrays(seed, h=23, w=19):
    rng = np.random.default_rng(seed)
    img = rng.uniform(size=(h, w, 3))
    image = np.concatenate([img, 1 - img], -1).astype(np.float32)
    weights = rng.normal(size=(h, w, 6)).astype(np.float32)
    return image, weights


@pytest.mark.parametrize("smooth,pct", [(15, 99.5), (0, 99.5), (3, 90.0), (5, 50.0)])
def test_gradient_to_image_matches_reference(smooth, pct):
    image, weights = _arrays(smooth)
    ref = bcos.common.gradient_to_image(
        torch.from_numpy(image.transpose(2, 0, 1)),
        torch.from_numpy(weights.transpose(2, 0, 1)),
        smooth,
        pct,
    )
    ours = visualize.gradient_to_image(image, weights, smooth, pct)
    assert ours.shape == ref.shape == (23, 19, 4)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_gradient_to_image_rejects_bad_shapes():
    image, weights = _arrays(0)
    with pytest.raises(ValueError, match=r"\[H, W, 6\]"):
        visualize.gradient_to_image(image[..., :3], weights[..., :3])
    with pytest.raises(ValueError, match="odd"):  # the reference crashes on even kernels
        visualize.gradient_to_image(image, weights, smooth=4)


def test_contribution_map_colours():
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = 2.0, -2.0
    rgb = visualize.contribution_map_image(m, percentile=100)
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0])  # positive: red
    np.testing.assert_allclose(rgb[1, 1], [0, 0, 1])  # negative: blue
    np.testing.assert_allclose(rgb[2, 2], [1, 1, 1])  # zero: white
    import matplotlib

    cmap = matplotlib.colormaps["bwr"]
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(visualize._bwr(t), cmap(t)[:, :3], atol=1e-2)


def test_save_grid_writes_png(tmp_path):
    image, weights = _arrays(1)
    rgba = visualize.gradient_to_image(image, weights)
    contrib = (image * weights).sum(-1)
    path = visualize.save_grid(
        str(tmp_path / "g.png"), [image, image], [rgba, rgba], [contrib, contrib]
    )
    with Image.open(path) as im:
        assert im.size == (19 * 3, 23 * 2)
    assert not (tmp_path / "g.png.tmp").exists()


def test_no_positive_contribution_gives_a_transparent_image():
    # W(x) pointing away from x everywhere: every contribution is negative.
    x = np.asarray(bcos_jax.add_inverse(np.full((8, 8, 3), 0.4, np.float32)))
    for w in (-x, np.zeros_like(x)):  # all negative; all zero (0/0 in the reference)
        rgba = visualize.gradient_to_image(x, w)
        assert np.isfinite(rgba).all() and (rgba[..., 3] == 0).all()

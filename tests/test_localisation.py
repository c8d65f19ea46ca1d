"""The grid pointing game against direct transcriptions of the reference, and mask localisation.

The ``_ref_*`` functions below are transcriptions of B-cos-v2
``interpretability/analyses/localisation.py`` (torch where the reference uses torch).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# Imported after the skip above (E402): without torch the module is skipped first.
import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bcos_jax.evaluation import localisation as L  # noqa: E402


# --------------------------------------------------------------------------- reference
# transcriptions
def _ref_compute_sorted_confs(outputs, labels, num_classes):
    confidences = {i: [] for i in range(num_classes)}
    img_idx = -1
    logits, classes = torch.from_numpy(outputs).max(1)
    for logit, pd_class, gt_class in zip(logits, classes, torch.from_numpy(labels)):
        img_idx += 1
        if pd_class != gt_class:
            continue
        confidences[int(gt_class.item())].append((img_idx, logit.item()))
    for k, vlist in confidences.items():
        confidences[k] = sorted(vlist, key=lambda x: x[1], reverse=True)
    return confidences


def _ref_get_sorted_indices(sorted_confs, n_imgs, conf_thresh):
    idcs = []
    classes = np.array([k for k in sorted_confs.keys()])
    class_indexer = {k: 0 for k in classes}

    def get_conf_mask_v(_c_idx):
        return (
            torch.tensor(sorted_confs[_c_idx][class_indexer[_c_idx]][1]).sigmoid().item()
            > conf_thresh
        )

    mask = np.array([False if len(sorted_confs[k]) == 0 else get_conf_mask_v(k) for k in classes])
    state = np.random.get_state()
    np.random.seed(42)
    while mask.sum() > n_imgs:
        sample = np.random.choice(classes[mask], size=n_imgs, replace=False)
        for c_idx in sample:
            img_idx, conf = sorted_confs[c_idx][class_indexer[c_idx]]
            class_indexer[c_idx] += 1
            mask[c_idx] = (
                get_conf_mask_v(c_idx) if class_indexer[c_idx] < len(sorted_confs[c_idx]) else False
            )
            idcs.append(img_idx)
    np.random.set_state(state)
    return idcs


def _ref_make_multi_image(n_imgs, dataset, offset=0, fixed_indices=None):
    tgts, imgs = [], []
    count = 0
    i = 0
    mapper = fixed_indices if fixed_indices is not None else list(range(len(dataset)))
    while count < n_imgs:
        img, tgt = dataset[mapper[i + offset]]
        i += 1
        if tgt in tgts:
            continue
        imgs.append(img[None])
        tgts.append(tgt)
        count += 1
    img = torch.cat(imgs, dim=0)
    s = int(np.sqrt(n_imgs))
    img = img.view(-1, s, s, *img.shape[-3:]).permute(0, 3, 2, 4, 1, 5).reshape(
        -1, img.shape[1], img.shape[2] * s, img.shape[3] * s)
    return img, tgts, i + offset + 1


def _ref_scores(attributions, single_shape, smooth):
    """attributions [n, C, H, W] for the n targets of one grid image -> [n] scores."""
    attributions = attributions.sum(1, keepdim=True)
    if smooth:
        attributions = F.avg_pool2d(attributions, smooth, stride=1, padding=(smooth - 1) // 2)
    attributions = attributions.clamp(min=0)
    contribs = (F.avg_pool2d(attributions, single_shape, stride=single_shape)
                .permute(0, 1, 3, 2).reshape(attributions.shape[0], -1))
    total = contribs.sum(1, keepdim=True)
    contribs = torch.where(
        total * contribs > 0, contribs / total, torch.zeros_like(contribs)
    ).numpy()
    return np.array([contrib[idx] for idx, contrib in enumerate(contribs)])


# --------------------------------------------------------------------------- confidence table and
# sequence
def _table(seed=0, m=400, num_classes=12):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, m)
    outputs = rng.normal(0, 2, (m, num_classes)).astype(np.float32)
    correct = rng.random(m) < 0.7
    outputs[correct, labels[correct]] += 3.0  # most images correct, with logits on both sides of 0
    outputs[labels == 5] -= 10.0  # class 5: never confident
    keep = labels != 7  # class 7: no image at all
    return outputs[keep], labels[keep], num_classes


def test_sorted_confidences_match_the_reference():
    outputs, labels, k = _table()
    ours = L.sorted_confidences(outputs.max(1), outputs.argmax(1), labels, k)
    ref = _ref_compute_sorted_confs(outputs, labels, k)
    assert ours.keys() == ref.keys()
    for c in ref:
        assert [i for i, _ in ours[c]] == [i for i, _ in ref[c]]
        np.testing.assert_allclose([v for _, v in ours[c]], [v for _, v in ref[c]], rtol=1e-6)
    assert ours[7] == []


@pytest.mark.parametrize("n_imgs,conf_thresh", [(4, 0.5), (9, 0.5), (4, 0.0), (9, 0.9)])
def test_grid_index_sequence_matches_get_sorted_indices(n_imgs, conf_thresh):
    outputs, labels, k = _table(seed=n_imgs)
    # The threshold is a discrete choice made on sigmoids that torch and NumPy may round
    # differently by an ulp on some CPU: no confidence lies that close to it here.
    conf = 1 / (1 + np.exp(-outputs.max(1).astype(np.float64)))
    assert np.min(np.abs(conf - conf_thresh)) > 1e-5
    confs = _ref_compute_sorted_confs(outputs, labels, k)
    ref = _ref_get_sorted_indices(confs, n_imgs, conf_thresh)
    ours = L.grid_index_sequence(confs, n_imgs, conf_thresh)
    assert len(ref) > 2 * n_imgs
    assert ours == ref
    # blocks of n_imgs distinct classes; never an unconfident image
    for b in range(0, len(ours), n_imgs):
        assert len({int(labels[i]) for i in ours[b: b + n_imgs]}) == n_imgs
    assert all(L.sigmoid32(outputs[i].max()) > conf_thresh for i in ours)


def test_sequence_needs_class_keys_in_order():
    with pytest.raises(ValueError, match="keys 0, 1"):
        L.grid_index_sequence({1: [], 0: []}, 4)


# --------------------------------------------------------------------------- grids
@pytest.mark.parametrize("s", [2, 3])
def test_grids_match_make_multi_image_with_the_offset_quirk(s):
    outputs, labels, k = _table(seed=s)
    confs = _ref_compute_sorted_confs(outputs, labels, k)
    seq = _ref_get_sorted_indices(confs, s * s, 0.5)
    rng = np.random.default_rng(1)
    images = rng.random((len(labels), 3, 4, 5)).astype(np.float32)  # [M, C, H, W], non-square
    dataset = [(torch.from_numpy(images[i]), int(labels[i])) for i in range(len(labels))]
    plan = L.plan_grids(seq, labels, s * s, sample_size=6)
    offset = 0
    for idx, tgts in plan:
        ref_img, ref_tgts, offset = _ref_make_multi_image(s * s, dataset, offset, seq)
        assert tgts == ref_tgts and [int(labels[i]) for i in idx] == tgts
        ours = L.make_grid(jnp.asarray(images[idx]).transpose(0, 2, 3, 1)[None], s)
        np.testing.assert_array_equal(np.asarray(ours[0]).transpose(2, 0, 1), ref_img[0].numpy())
    # without the quirk no index is skipped: the first grids take consecutive blocks
    plain = L.plan_grids(seq, labels, s * s, sample_size=2, offset_quirk=False)
    assert plain[0][0] == seq[: s * s] and plain[1][0] == seq[s * s: 2 * s * s]
    assert plan[1][0] != plain[1][0]


def test_column_major_placement():
    imgs = jnp.arange(4, dtype=jnp.float32).reshape(1, 4, 1, 1, 1) * jnp.ones((1, 4, 2, 2, 1))
    grid = np.asarray(L.make_grid(imgs, 2))[0, ..., 0]
    np.testing.assert_array_equal(
        grid[::2, ::2], [[0, 2], [1, 3]]
    )  # image k: row k % 2, column k // 2


def test_plan_stops_when_the_sequence_runs_out():
    labels = np.arange(8) % 4
    assert (
        len(L.plan_grids(list(range(8)), labels, 4, sample_size=10)) == 1
    )  # the quirk skips index 4


# --------------------------------------------------------------------------- scores
@pytest.mark.parametrize("s,smooth", [(2, 0), (2, 3), (3, 1), (3, 5), (2, 15)])
def test_scores_match_the_reference_formula(s, smooth):
    rng = np.random.default_rng(s * 10 + smooth)
    n, cell, c = s * s, 16, 3
    attr = rng.normal(size=(3, n, c, s * cell, s * cell)).astype(np.float32)  # 3 grid images
    attr[0, 1] = -np.abs(attr[0, 1])  # a target without positive attribution anywhere
    attr[1] += 2.0 * (rng.random((n, 1, s * cell, s * cell)) < 0.05)  # sparse positive spikes
    ours = L.grid_pointing_scores(
        jnp.asarray(attr.transpose(1, 0, 3, 4, 2)), s, smooth=smooth
    )  # [K, G, H, W, C]
    for g in range(3):
        ref = _ref_scores(torch.from_numpy(attr[g]), cell, smooth)
        np.testing.assert_allclose(np.asarray(ours[g]), ref, rtol=1e-5, atol=1e-6)
    assert float(ours[0, 1]) == 0.0  # no positive attribution (smoothing keeps it negative)
    assert np.all((np.asarray(ours) >= 0) & (np.asarray(ours) <= 1))


def test_scores_use_the_column_major_cell_of_each_target():
    s, cell = 3, 4
    attr = np.zeros((9, 1, s * cell, s * cell), np.float32)
    for k in range(9):  # target k's evidence where image k is placed: row k % 3, column k // 3
        r, c = k % s, k // s
        attr[k, 0, r * cell: (r + 1) * cell, c * cell: (c + 1) * cell] = 1.0 + k
    scores = np.asarray(L.grid_pointing_scores(jnp.asarray(attr), s))
    np.testing.assert_allclose(scores, np.ones((1, 9)))
    transposed = np.asarray(L.grid_pointing_scores(jnp.asarray(attr.transpose(0, 1, 3, 2)), s))
    assert transposed[0, 1] == 0.0 and transposed[0, 0] == 1.0  # row-major would be wrong


def test_score_errors():
    with pytest.raises(ValueError, match="must be odd"):
        L.grid_pointing_scores(jnp.zeros((4, 1, 8, 8)), 2, smooth=4)
    with pytest.raises(ValueError, match="4 targets per grid image, but a 3x3 grid"):
        L.grid_pointing_scores(jnp.zeros((4, 1, 9, 9)), 3)


def test_rescale_keeps_the_grid_size():
    imgs = jnp.ones((9, 30, 30, 3))
    small = L.rescale_images(imgs, 3)
    assert small.shape == (9, 10, 10, 3)
    np.testing.assert_allclose(small, 1.0, rtol=1e-6)
    assert L.make_grid(small.reshape(1, 9, 10, 10, 3), 3).shape == (1, 30, 30, 3)


# --------------------------------------------------------------------------- mask localisation
def test_mask_localisation():
    masks = np.zeros((3, 4, 4), bool)
    masks[:, :2, :2] = True
    attr = np.zeros((3, 4, 4, 2), np.float32)
    attr[0, :2, :2] = 1.0  # all inside
    attr[1, 0, 0, 0], attr[1, 3, 3, 0] = 3.0, 1.0  # 3/4 inside
    attr[1, 2, 2, 0] = -5.0  # negative evidence is ignored
    frac, area = L.mask_localisation(
        jnp.asarray(attr), jnp.asarray(masks)
    )  # attr[2]: nothing positive -> 0
    np.testing.assert_allclose(frac, [1.0, 0.75, 0.0])
    np.testing.assert_allclose(area, [0.25] * 3)
    with pytest.raises(ValueError, match="must both be"):
        L.mask_localisation(jnp.asarray(attr), jnp.asarray(masks[:, :3]))


def test_trainer_localisation_is_mask_localisation_of_the_explanation():
    """training.evaluate.localisation: mask_localisation of explain's contributions, with the
    padded (valid=0) images of the last batch left out."""
    import jax

    import bcos_jax
    from bcos_jax import models
    from bcos_jax.training import evaluate as training_eval
    from bcos_jax.training import sharding

    model = models.create("bcos_small_cnn", widths=(4, 8), num_classes=3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)
    images = np.asarray(bcos_jax.add_inverse(jnp.asarray(x)))
    variables = model.init(jax.random.key(1), jnp.asarray(images[:1]))
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    masks = np.zeros((6, 8, 8), bool)
    masks[:, 2:6, 1:5] = True
    valid = np.array([1, 1, 1, 1, 1, 0], bool)
    batches = [{"image": images[i:i + 3], "label": labels[i:i + 3], "mask": masks[i:i + 3],
                "valid": valid[i:i + 3]} for i in (0, 3)]
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1}, devices=jax.devices()[:1])
    out = training_eval.localisation(model, variables, iter(batches), mesh, in_channels=6)

    ex = bcos_jax.explain(model, variables, jnp.asarray(images), jnp.asarray(labels))
    frac, area = L.mask_localisation(ex.contributions, jnp.asarray(masks))
    assert out["count"] == 5
    np.testing.assert_allclose(out["localisation"], np.mean(np.asarray(frac)[:5]), rtol=1e-5)
    uniform = np.mean(np.asarray(area)[:5])
    np.testing.assert_allclose(out["localisation_uniform"], uniform, rtol=1e-6)
    assert 0.0 < out["localisation"] < 1.0

"""The input pipeline: synthetic data, augmentations (parity with torchvision), sharding,
resumption, evaluation padding, and the tfds path under ``tfds.testing.mock_data``."""
import json

import numpy as np
import pytest
from PIL import Image

from bcos_jax import data
from bcos_jax.data import augment as A
from bcos_jax.data import mixing, pipeline, synthetic
from bcos_jax.data.recipes import ImageTransform


def _qs_config(**overrides):
    cfg = data.default_config("quickstart")
    cfg.num_train, cfg.num_eval = 96, 50
    cfg.num_threads, cfg.prefetch = 1, 1
    cfg.update(overrides)
    return cfg


def _batches(cfg, n, **kw):
    kw = dict(dict(process_index=0, process_count=1, global_batch_size=16, seed=0), **kw)
    split = kw.pop("split", None) or cfg.train_split
    it = iter(data.make_dataset(cfg, split, **kw))
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _photo(h=45, w=61, seed=0):
    """A smooth, non-square test image with some structure (so every op changes something)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 100 * np.sin(xx / 7.0), 128 + 100 * np.cos(yy / 5.0), (xx * yy) % 256], -1)
    a = a + rng.normal(0, 10, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------
# synthetic quickstart
# ----------------------------------------------------------------------------------------


def test_quickstart_source_is_deterministic_and_well_formed(tmp_path):
    a = synthetic.QuickstartSource("train", 24, 6, 32, seed=3)
    b = synthetic.QuickstartSource("train", 24, 6, 32, seed=3, cache=False)
    for i in (0, 7, 23):
        _equal(a[i], b[i])
    ex = a[5]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert ex["mask"].shape == (32, 32) and ex["mask"].dtype == bool
    assert [int(a[i]["label"]) for i in range(12)] == [i % 6 for i in range(12)]
    masks = np.stack([a[i]["mask"] for i in range(24)])
    assert (masks.mean((1, 2)) > 0.05).all()  # every object is substantial
    for split, seed in (("test", 3), ("train", 4)):  # another split, another content seed
        other = synthetic.QuickstartSource(split, 24, 6, 32, seed=seed)
        assert not np.array_equal(a[0]["image"], other[0]["image"])
    # 'validation' and 'test' are the same held-out split
    _equal(synthetic.QuickstartSource("validation", 4)[1], synthetic.QuickstartSource("test", 4)[1])
    path = synthetic.save_preview(str(tmp_path / "p.png"), num_per_class=3, image_size=24, scale=2)
    assert Image.open(path).size == (2 * (2 + 6 * 26), 2 * (2 + 6 * 26))


def test_quickstart_clutter_uses_the_class_colours():
    """Outside the object mask there are bright pixels of every class hue, so a single pixel's
    colour does not give the class away."""
    src = synthetic.QuickstartSource("train", 60, 6, 32, seed=0)
    import matplotlib.colors as mc

    hsv = mc.rgb_to_hsv(np.stack([src[i]["image"] for i in range(60)]) / 255.0)
    outside = ~np.stack([src[i]["mask"] for i in range(60)])
    bright = (hsv[..., 1] > 0.5) & (hsv[..., 2] > 0.6) & outside
    hues = hsv[..., 0][bright]
    for h in synthetic._CLASS_HUES:
        d = np.abs((hues - h + 0.5) % 1.0 - 0.5)
        assert (d < 0.03).sum() > 100, f"class hue {h} missing from the clutter"


def test_quickstart_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        synthetic.QuickstartSource("trian", 4)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic.QuickstartSource("train", 4, num_classes=7)
    with pytest.raises(IndexError):
        synthetic.QuickstartSource("train", 4, cache=False)[4]


# ----------------------------------------------------------------------------------------
# augmentations: exact properties and parity with torchvision's PIL code paths
# ----------------------------------------------------------------------------------------


def test_geometry_properties():
    img = Image.fromarray(_photo(40, 40))
    assert np.array_equal(np.asarray(A.hflip(A.hflip(img))), np.asarray(img))
    rng = np.random.default_rng(0)
    # RandomResizedCrop with scale (1, 1) and ratio (1, 1) on a square image is a resize
    box = A.rrc_params(rng, 40, 40, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert box == (0, 0, 40, 40)
    out = A.resized_crop(img, box, 24)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.resize((24, 24), Image.BILINEAR)))
    for _ in range(200):  # boxes are always inside and within the scale/ratio bounds when drawn
        t, left, h, w = A.rrc_params(rng, 45, 61)
        assert 0 <= t and t + h <= 45 and 0 <= left and left + w <= 61 and h > 0 and w > 0
    assert A.shorter_side_size(375, 500, 256) == (256, 341)
    assert A.shorter_side_size(500, 375, 256) == (341, 256)


@pytest.fixture(scope="module")
def tv():
    pytest.importorskip("torch")
    return pytest.importorskip("torchvision")


def test_resize_crop_match_torchvision(tv):
    from torchvision.transforms import CenterCrop, Resize
    from torchvision.transforms import functional as F

    img = Image.fromarray(_photo(45, 61))
    for size, crop in ((32, 28), (50, 40), (20, 30)):  # the last crop pads
        ours = A.center_crop(A.resize_shorter(img, size), crop)
        ref = CenterCrop(crop)(Resize(size)(img))
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    box = (3, 7, 30, 41)
    np.testing.assert_array_equal(
        np.asarray(A.resized_crop(img, box, 24)), np.asarray(F.resized_crop(img, *box, [24, 24]))
    )
    np.testing.assert_array_equal(
        np.asarray(A.pad_crop(img, 2, 5, 40, 4)), np.asarray(F.crop(F.pad(img, 4), 2, 5, 40, 40))
    )


def test_autoaugment_ops_match_torchvision(tv):
    from torchvision.transforms import InterpolationMode, autoaugment

    img = Image.fromarray(_photo(45, 61))
    ta = autoaugment.TrivialAugmentWide()._augmentation_space(31)
    ra = autoaugment.RandAugment()._augmentation_space(31, (45, 61))
    for ours, ref in (
        (A.trivial_augment_wide_space(31), ta),
        (A.rand_augment_space(31, 45, 61), ra),
    ):
        assert list(ours) == list(ref)  # same ops in the same order (the draw indexes them)
        for name, (mags, signed) in ours.items():
            assert signed == ref[name][1]
            if mags is None:
                assert ref[name][0].ndim == 0
            else:
                np.testing.assert_allclose(mags, ref[name][0].numpy(), rtol=1e-6, err_msg=name)
    for name, (mags, _) in ta.items():
        for m in ([0.0] if mags.ndim == 0 else [float(mags[7]), -float(mags[23]), float(mags[30])]):
            if name == "Posterize":
                m = abs(m)
            ours = A.apply_op(img, name, m)
            ref = autoaugment._apply_op(
                img, name, m, interpolation=InterpolationMode.BILINEAR, fill=None
            )
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref), err_msg=f"{name} {m}")


def test_color_jitter_and_erasing_match_torchvision(tv):
    import torch
    from torchvision.transforms import functional as F

    img = Image.fromarray(_photo(45, 61))
    params = A.color_jitter_params(np.random.default_rng(1))
    assert sorted(n for n, _ in params) == ["Brightness", "Color", "Contrast"]
    ref = img
    fns = {
        "Brightness": F.adjust_brightness,
        "Contrast": F.adjust_contrast,
        "Color": F.adjust_saturation,
    }
    for name, f in params:
        assert 0.6 <= f <= 1.4
        ref = fns[name](ref, f)
    np.testing.assert_array_equal(np.asarray(A.color_jitter(img, params)), np.asarray(ref))

    x = A.to_float(img)
    box = (5, 9, 12, 20)
    ref = (
        F.erase(torch.from_numpy(x).permute(2, 0, 1), *box, torch.tensor(0.0))
        .permute(1, 2, 0)
        .numpy()
    )
    np.testing.assert_array_equal(A.erase(x, box), ref)
    rng = np.random.default_rng(0)
    fractions = []
    for _ in range(100):
        b = A.random_erasing_params(rng, 45, 61, p=1.0)
        if b is not None:
            t, left, h, w = b
            assert t + h <= 45 and left + w <= 61
            fractions.append(h * w / (45 * 61))
    assert len(fractions) > 90 and 0.015 < min(fractions) and max(fractions) < 0.36
    assert A.random_erasing_params(rng, 45, 61, p=0.0) is None


def test_v1_ops_and_lighting():
    img = Image.fromarray(_photo(45, 61))
    rng = np.random.default_rng(0)
    ops = [op for _ in range(50) for op in A.sample_v1_rand_augment(rng, 45, 61, n=2, m=9)]
    assert {name for name, _, _ in ops} == {name for name, _, _ in A.V1_RAND_AUGMENT_OPS}
    for name, v, extra in ops:
        out = A.apply_v1_op(img, name, v, extra)
        assert out.size == img.size and out.mode == "RGB"
        if name == "Posterize":  # m=9 of [0, 4] -> 1 bit (the v1 quirk, kept)
            assert set(np.unique(np.asarray(out))) <= {0, 128}
        if (
            name == "CutoutAbs"
        ):  # a square of the v1 grey, 12 px (+1: PIL boxes are inclusive), clipped
            assert 0 < (np.asarray(out) == (125, 123, 114)).all(-1).sum() <= 13 * 13
        if name in ("Rotate", "ShearX", "TranslateXabs"):
            assert abs(v) == {"Rotate": 9.0, "ShearX": 0.09, "TranslateXabs": 30.0}[name]
    x = A.to_float(img)
    y = A.lighting(x, np.random.default_rng(2), 0.1)
    shift = (y - x).reshape(-1, 3)
    np.testing.assert_allclose(
        shift, shift[:1].repeat(len(shift), 0), atol=1e-6
    )  # one colour shift
    alpha = np.random.default_rng(2).normal(0, 0.1, 3).astype(np.float32)
    np.testing.assert_allclose(
        shift[0], A.IMAGENET_PCA_EIGVEC @ (alpha * A.IMAGENET_PCA_EIGVAL), atol=1e-6
    )


@pytest.mark.parametrize("recipe", ["v2", "long", "v1", "cifar", "none"])
def test_recipes_shapes_ranges_determinism_and_masks(recipe):
    size = 32
    src = synthetic.QuickstartSource("train", 8, 6, size, cache=False)
    t = ImageTransform(recipe, size, random_erasing=0.5 if recipe == "long" else 0.0,
                       randaugment_magnitude=10 if recipe == "v2" else 0)
    geometric_only = ImageTransform(recipe, size)
    for i in range(8):
        ex = src[i]
        x1, m1 = t(ex["image"], np.random.default_rng([9, i]), ex["mask"])
        x2, m2 = t(ex["image"], np.random.default_rng([9, i]), ex["mask"])
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(m1, m2)
        assert x1.shape == (size, size, 3) and x1.dtype == np.float32 and m1.shape == (size, size)
        lo, hi = (-0.1, 1.1) if recipe == "v1" else (0.0, 1.0)  # Lighting is not clipped (v1)
        assert lo <= x1.min() and x1.max() <= hi
        if recipe in ("v2", "cifar", "none"):
            # the mask follows the geometry: transform the mask itself as an image
            mimg = np.repeat(ex["mask"][..., None].astype(np.uint8) * 255, 3, -1)
            rng = np.random.default_rng([9, i])
            xm, mm = geometric_only(mimg, rng, ex["mask"])
            agree = np.mean((xm[..., 0] > 0.5) == mm)
            assert agree > (0.999 if recipe != "v2" else 0.9)  # v2: bilinear image, nearest mask


def test_recipe_errors():
    with pytest.raises(ValueError, match="unknown augment"):
        ImageTransform("v3", 32)
    with pytest.raises(ValueError, match="randaugment_magnitude"):
        ImageTransform("long", 32, randaugment_magnitude=9)
    with pytest.raises(ValueError, match="crop size"):
        ImageTransform("cifar", 32)(_photo(40, 40), np.random.default_rng(0))
    with pytest.raises(ValueError, match="eval_resize"):
        ImageTransform("eval", 32, eval_crop=0, output_size=32)(_photo(40, 50))


# ----------------------------------------------------------------------------------------
# mixup / cutmix
# ----------------------------------------------------------------------------------------


def test_mixup_is_a_convex_combination():
    x3 = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    x = np.concatenate([x3, 1 - x3], -1)  # B-cos encoded
    y = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0]]
    xm, ym, _, lam = mixing.mixup(np.random.default_rng(1), x, y, 0.2)
    assert 0 <= lam <= 1
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * np.roll(x, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(ym, lam * y + (1 - lam) * np.roll(y, 1, 0), rtol=1e-6)
    np.testing.assert_allclose(ym.sum(1), 1.0, rtol=1e-6)
    # the inverse channels stay the inverse: mixing commutes with add_inverse
    np.testing.assert_allclose(xm[..., 3:], 1 - xm[..., :3], atol=1e-6)


def test_cutmix_weights_equal_the_pasted_area():
    for seed in range(20):
        x = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones(
            (4, 12, 16, 3), np.float32
        )
        y = np.eye(4, dtype=np.float32)
        mask = np.zeros((4, 12, 16), bool)
        mask[0] = True
        xm, ym, mm, lam = mixing.cutmix(np.random.default_rng(seed), x, y, 1.0, mask)
        pasted = (xm[1, ..., 0] == 0).mean()  # image 1 received pixels of image 0
        np.testing.assert_allclose(ym[1], [pasted, 1 - pasted, 0, 0], atol=1e-6)
        np.testing.assert_allclose(lam, 1 - pasted, atol=1e-6)
        np.testing.assert_array_equal(
            mm[1], xm[1, ..., 0] == 0
        )  # the mask is pasted with the pixels


def test_mix_batch_picks_one_of_both():
    x = np.random.default_rng(0).random((4, 8, 8, 3)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)
    kinds = set()
    for s in range(30):
        xm, _, _ = mixing.mix_batch(np.random.default_rng(s), x, y, 0.2, 1.0)
        kinds.add("cutmix" if np.isin(xm, x).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}
    xm, ym, _ = mixing.mix_batch(np.random.default_rng(0), x, y)
    assert xm is x and ym is y


# ----------------------------------------------------------------------------------------
# pipeline: batches, order, sharding, resumption, evaluation
# ----------------------------------------------------------------------------------------


def test_train_batches_shapes_and_ranges():
    b = _batches(_qs_config(), 1)[0]
    assert set(b) == {"image", "label", "targets", "mask"}
    assert b["image"].shape == (16, 32, 32, 6) and b["image"].dtype == np.float32
    assert b["label"].shape == (16,) and b["label"].dtype == np.int32
    assert b["targets"].shape == (16, 6) and b["targets"].dtype == np.float32
    assert b["mask"].shape == (16, 32, 32) and b["mask"].dtype == bool
    np.testing.assert_allclose(b["image"][..., 3:], 1 - b["image"][..., :3])
    assert 0 <= b["image"].min() and b["image"].max() <= 1
    np.testing.assert_array_equal(b["targets"].argmax(1), b["label"])
    b = _batches(_qs_config(add_inverse=False, mixup_alpha=0.2, cutmix_alpha=1.0), 1)[0]
    assert b["image"].shape == (16, 32, 32, 3) and b["image"].min() < -1  # ImageNet-normalised
    np.testing.assert_allclose(b["targets"].sum(1), 1.0, rtol=1e-6)
    assert (b["targets"].max(1) < 1).any()  # mixed


def test_train_order_epochs_and_repeated_augmentation():
    plan = pipeline._TrainPlan(
        num_examples=50,
        global_batch_size=16,
        process_index=0,
        process_count=1,
        repeated_aug=1,
        seed=0,
    )
    assert plan.steps_per_epoch == 3  # the remainder of 2 is dropped
    epoch = lambda e: [plan[i][2] for i in range(48 * e, 48 * (e + 1))]
    e0, e1 = epoch(0), epoch(1)
    assert len(set(e0)) == 48 and len(set(e1)) == 48 and e0 != e1  # no repeats, reshuffled
    assert [plan[i][:2] for i in (0, 47, 48)] == [(0, 0), (0, 47), (1, 0)]
    ra = pipeline._TrainPlan(50, 16, 0, 1, repeated_aug=4, seed=0)
    idx = [ra[i][2] for i in range(48)]
    assert all(len(set(idx[4 * k : 4 * k + 4])) == 1 for k in range(12)) and len(set(idx)) == 12
    # seeds differ -> orders differ; the same seed -> the same batches
    cfg = _qs_config()
    a, b, c = _batches(cfg, 2), _batches(cfg, 2), _batches(cfg, 2, seed=1)
    for x, y in zip(a, b):
        _equal(x, y)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_two_hosts_split_each_global_batch():
    cfg = _qs_config(augment="v2", repeated_aug=2)
    whole = _batches(cfg, 8, global_batch_size=16)  # crosses the epoch boundary (6 steps/epoch)
    h0 = _batches(cfg, 8, global_batch_size=16, process_index=0, process_count=2)
    h1 = _batches(cfg, 8, global_batch_size=16, process_index=1, process_count=2)
    for w, a, b in zip(whole, h0, h1):
        assert a["image"].shape[0] == 8
        for k in w:
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k], err_msg=k)
    plans = [pipeline._TrainPlan(96, 16, p, 2, 1, 0) for p in (0, 1)]
    pos = [{plans[p][i][3] for i in range(80)} for p in (0, 1)]
    assert not pos[0] & pos[1] and pos[0] | pos[1] == set(range(160))


@pytest.mark.parametrize("skip", [2, 7])  # mid-epoch, and into the next epoch (6 steps/epoch)
def test_train_iterator_resumes_exactly(skip):
    cfg = _qs_config(augment="long", mixup_alpha=0.2, cutmix_alpha=1.0, random_erasing=0.5)
    ds = data.make_dataset(
        cfg, "train", global_batch_size=16, seed=5, process_index=0, process_count=1
    )
    it = iter(ds)
    for _ in range(skip):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    it.close()
    it2 = iter(data.make_dataset(cfg, "train", global_batch_size=16, seed=5, process_index=0,
                                 process_count=1))
    it2.set_state(state)
    for e in expected:
        _equal(next(it2), e)
    it2.close()


@pytest.mark.parametrize("gbs,hosts", [(16, 1), (7, 1), (64, 1), (16, 2)])
def test_eval_counts_every_example_once(gbs, hosts):
    cfg = _qs_config()
    src = synthetic.QuickstartSource("test", 50, 6, 32)
    per_host = []
    for p in range(hosts):
        ds = data.make_dataset(cfg, "test", train=False, global_batch_size=gbs, process_index=p,
                               process_count=hosts)
        per_host.append(list(ds))
    n_batches = -(-50 // gbs)
    assert all(len(b) == n_batches for b in per_host)
    rows = []
    for step in range(n_batches):
        b = {k: np.concatenate([h[step][k] for h in per_host]) for k in per_host[0][step]}
        assert b["image"].shape[0] == gbs and b["valid"].dtype == bool
        assert (b["targets"][~b["valid"]] == 0).all() and (b["image"][~b["valid"]] == 0).all()
        rows += [(b["image"][i], b["label"][i], b["mask"][i]) for i in np.flatnonzero(b["valid"])]
    assert len(rows) == 50
    for k in (0, 17, 49):  # in order, untransformed (the quickstart eval is the identity)
        img, label, mask = rows[k]
        np.testing.assert_allclose(img[..., :3], src[k]["image"] / 255.0, atol=1e-6)
        assert label == src[k]["label"] and np.array_equal(mask, src[k]["mask"])


def test_dataset_info_and_config_errors():
    info = data.dataset_info(_qs_config())
    assert info == data.DatasetInfo(
        num_classes=6, num_train=96, num_eval=50, image_size=32, eval_image_size=32, channels=6
    )
    assert info.steps_per_epoch(16) == 6 and info.eval_steps(16) == 4
    bad = [
        (dict(augment="v3"), "augment"),
        (dict(mixup_alhpa=0.2), "unknown data config"),
        (dict(repeated_aug=0), "repeated_aug"),
        (dict(random_erasing=1.5), "random_erasing"),
    ]
    for overrides, match in bad:
        cfg = _qs_config()
        cfg.update(overrides)
        with pytest.raises(ValueError, match=match):
            data.make_dataset(cfg, "train", process_index=0, process_count=1)
    with pytest.raises(ValueError, match="multiple of the process count"):
        data.make_dataset(
            _qs_config(), "train", global_batch_size=15, process_index=0, process_count=2
        )
    with pytest.raises(ValueError, match="fewer than one global batch"):
        data.make_dataset(
            _qs_config(), "train", global_batch_size=128, process_index=0, process_count=1
        )
    with pytest.raises(ValueError, match="unknown data recipe"):
        data.default_config("v3")
    # a plain dict with only some fields works: the rest take the defaults
    partial = {"name": "quickstart", "image_size": 32, "num_train": 32, "augment": "none"}
    assert _batches(partial, 1, split="train")[0]["image"].shape == (16, 32, 32, 6)
    # no process_index/count: taken from JAX (one process here)
    it = iter(data.make_dataset(partial, "train", global_batch_size=16))
    assert next(it)["image"].shape == (16, 32, 32, 6)
    it.close()


def test_worker_processes_give_the_same_batches():
    cfg = _qs_config(augment="v2")
    expected = _batches(cfg, 3)
    cfg.num_workers = 2
    it = iter(
        data.make_dataset(
            cfg, "train", global_batch_size=16, seed=0, process_index=0, process_count=1
        )
    )
    got = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    for g, e in zip(got, expected):
        _equal({k: np.asarray(v) for k, v in g.items()}, e)
    assert state


# ----------------------------------------------------------------------------------------
# tfds (mock data, no download, no TensorFlow)
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,preset", [("cifar10", "cifar"), ("imagenet2012", "v2"), ("imagenet2012", "baseline")]
)
def test_tfds_mock_batches(name, preset):
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = data.default_config(preset)
    cfg.name, cfg.num_threads, cfg.prefetch = name, 1, 1
    if name == "imagenet2012":  # mock images have random small sizes: resize + crop
        cfg.image_size, cfg.eval_resize, cfg.eval_crop = 40, 46, 40
    with tfds.testing.mock_data(num_examples=12):
        info = data.dataset_info(cfg)
        assert (info.num_classes, info.num_train, info.num_eval) == (
            {"cifar10": 10}.get(name, 1000),
            12,
            12,
        )
        s = info.image_size
        train = _batches(cfg, 1, global_batch_size=8)[0]
        ev = list(
            data.make_dataset(
                cfg,
                cfg.eval_split,
                train=False,
                global_batch_size=8,
                process_index=0,
                process_count=1,
            )
        )
    c = 3 if preset == "baseline" else 6
    assert train["image"].shape == (8, s, s, c) and train["image"].dtype == np.float32
    assert train["label"].dtype == np.int32 and (train["label"] < info.num_classes).all()
    assert train["targets"].shape == (8, info.num_classes)
    assert len(ev) == 2 and ev[1]["valid"].sum() == 4 and ev[0]["image"].shape == (8, s, s, c)
    if c == 6:
        assert 0 <= train["image"].min() and train["image"].max() <= 1
    else:
        lo = (0 - A.IMAGENET_MEAN) / A.IMAGENET_STD
        hi = (1 - A.IMAGENET_MEAN) / A.IMAGENET_STD
        assert (train["image"] >= lo - 1e-5).all() and (train["image"] <= hi + 1e-5).all()


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
    for name, extra in (("cifar10", ""), ("imagenet2012", "--manual_dir")):
        cfg = data.default_config()
        cfg.name, cfg.data_dir = name, str(tmp_path)
        with pytest.raises(data.DatasetNotPreparedError, match="file_format=array_record") as e:
            data.make_dataset(cfg, "train", process_index=0, process_count=1)
        assert f"tfds build {name}" in str(e.value) and extra in str(e.value)
    # prepared, but as TFRecord (tfds' default format): no random access, say how to convert
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder("cifar10", data_dir=str(tmp_path / "tfrecord"))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(
        builder.data_path
    )  # metadata only, as a TFRecord build leaves it
    cfg = data.default_config("cifar")
    cfg.data_dir = str(tmp_path / "tfrecord")
    with pytest.raises(data.DatasetNotPreparedError, match="tfds convert_format"):
        data.make_dataset(cfg, "train", process_index=0, process_count=1)

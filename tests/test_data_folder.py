"""Own data: ``data.name='folder:PATH'`` (ImageFolder layout) and the second synthetic task."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from bcos_jax import data
from bcos_jax.data import folder, sources, synthetic

CLASSES = ("cat", "dog", "emu")


def _write(path, rng, size=(20, 24), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return np.asarray(Image.open(path).convert("RGB"))


def _make(root, per_class=(4, 3, 5), val_per_class=(2, 1, 2), rng=None):
    rng = rng or np.random.default_rng(0)
    for split, counts in (("train", per_class), ("val", val_per_class)):
        for c, n in zip(CLASSES, counts):
            for i in range(n):
                ext = ".png" if i % 2 == 0 else ".JPG"
                _write(os.path.join(root, split, c, f"{i:03d}{ext}"), rng,
                       mode="L" if (i == 1 and c == "dog") else "RGB")
    return str(root)


def _cfg(root, **kw):
    cfg = data.default_config()
    cfg.name = f"folder:{root}"
    cfg.image_size, cfg.eval_resize, cfg.eval_crop = 16, 18, 16
    cfg.augment = "v2"
    cfg.update(kw)
    return cfg


def test_folder_source_classes_labels_and_pixels(tmp_path):
    root = _make(tmp_path)
    open(os.path.join(root, "train", "cat", "README.txt"), "w").write("not an image")
    open(os.path.join(root, "train", "cat", ".DS_Store"), "w").write("x")
    src = folder.FolderSource(root, "train")
    assert src.classes == CLASSES
    assert len(src) == 12  # the text file and the hidden file are not examples
    labels = [int(src[i]["label"]) for i in range(len(src))]
    assert labels == [0] * 4 + [1] * 3 + [2] * 5
    i = src.paths.index(os.path.join(root, "train", "dog", "001.JPG"))
    img = src[i]["image"]
    assert img.dtype == np.uint8 and img.shape == (20, 24, 3)  # greyscale file -> RGB
    assert np.array_equal(img[..., 0], img[..., 2])
    png = os.path.join(root, "train", "emu", "002.png")
    np.testing.assert_array_equal(src[src.paths.index(png)]["image"],
                                  np.asarray(Image.open(png).convert("RGB")))
    # 'validation' finds val/; an eval split may lack a class but not add one.
    assert len(folder.FolderSource(root, "validation")) == 5
    os.makedirs(os.path.join(root, "val", "yak"))
    with pytest.raises(ValueError, match=r"\['yak'\].*training split does not"):
        folder.FolderSource(root, "val")


def test_folder_pipeline_batches_and_info(tmp_path):
    root = _make(tmp_path)
    cfg = _cfg(root)
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.num_train, info.num_eval) == (3, 12, 5)
    assert sources.class_names(cfg) == CLASSES
    it = iter(data.make_dataset(cfg, "train", train=True, global_batch_size=4, seed=1,
                                process_index=0, process_count=1))
    b = next(it)
    assert b["image"].shape == (4, 16, 16, 6) and b["targets"].shape == (4, 3)
    np.testing.assert_allclose(b["image"][..., 3:], 1.0 - b["image"][..., :3], atol=1e-6)
    assert "mask" not in b
    state = it.get_state()
    nxt = next(it)
    it2 = iter(data.make_dataset(cfg, "train", train=True, global_batch_size=4, seed=1,
                                 process_index=0, process_count=1))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["image"], nxt["image"])  # exact resume
    ev = list(data.make_dataset(cfg, "validation", train=False, global_batch_size=4,
                                process_index=0, process_count=1))
    assert sum(int(e["valid"].sum()) for e in ev) == 5
    assert sorted(np.concatenate([e["label"][e["valid"]] for e in ev]).tolist()) == [0, 0, 1, 2, 2]


def test_unreadable_images_are_listed_before_training(tmp_path):
    root = _make(tmp_path)
    bad1 = os.path.join(root, "train", "dog", "broken.png")
    open(bad1, "wb").write(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a header, then garbage
    good = os.path.join(root, "train", "emu", "000.png")
    bad2 = os.path.join(root, "train", "emu", "truncated.png")
    open(bad2, "wb").write(open(good, "rb").read()[:-30])  # cut short: fails only on decode
    sources._folder.cache_clear()
    with pytest.raises(folder.UnreadableImagesError) as e:
        data.dataset_info(_cfg(root))
    msg = str(e.value)
    assert bad1 in msg and bad2 in msg and "2 of 14 images" in msg and good not in msg
    assert sorted(p for p, _ in e.value.bad) == sorted([bad1, bad2])


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no directory"):
        folder.folder_root(f"folder:{tmp_path / 'nowhere'}")
    root = _make(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"no split 'test2'.*\['train', 'val'\]"):
        folder.FolderSource(root, "test2")
    with pytest.raises(ValueError, match="slicing"):
        folder.FolderSource(root, "train[:50%]")
    os.makedirs(os.path.join(root, "train", "fox"))
    with pytest.raises(ValueError, match=r"\['fox'\].*hold no images"):
        folder.FolderSource(root, "train")
    one = tmp_path / "one" / "train" / "only"
    _write(str(one / "a.png"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 2"):
        folder.class_names(str(tmp_path / "one"))


def test_second_synthetic_task():
    names = ("star", "crescent", "frame", "bar", "checker")
    assert synthetic.TASKS["quickstart2"].class_names == names
    cfg = data.default_config("quickstart2")
    cfg.num_train, cfg.num_eval = 20, 10
    info = data.dataset_info(cfg)
    assert (info.num_classes, info.num_train) == (5, 20)
    assert sources.class_names(cfg) == synthetic.TASKS["quickstart2"].class_names
    src = sources.open_source(cfg, "train")
    ex = [src[i] for i in range(10)]
    assert [int(e["label"]) for e in ex] == [0, 1, 2, 3, 4] * 2
    for e in ex:
        assert e["image"].shape == (32, 32, 3) and 0.03 < e["mask"].mean() < 0.6
    # The object (on the mask) carries its class hue; a different stream from the quickstart.
    q = synthetic.QuickstartSource("train", 10, 6, 32, 0)
    assert not np.array_equal(q[0]["image"], ex[0]["image"])
    again = synthetic.QuickstartSource("train", 10, None, 32, 0, task="quickstart2", cache=False)
    np.testing.assert_array_equal(again[3]["image"], ex[3]["image"])
    with pytest.raises(ValueError, match=r"quickstart2 num_classes=6: must be in \[2, 5\]"):
        synthetic.QuickstartSource("train", 4, 6, task="quickstart2")
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic.QuickstartSource("train", 4, 2, task="quickstart3")
    b = next(iter(data.make_dataset(cfg, "train", global_batch_size=4, process_index=0,
                                    process_count=1)))
    assert b["mask"].shape == (4, 32, 32) and b["targets"].shape == (4, 5)


def test_train_py_on_a_folder_dataset(tmp_path):
    """A whole train.py run on class folders of PNGs: classes.json, evaluation on val/."""
    from training_helpers import get_config, train_module

    rng = np.random.default_rng(1)
    root = _make(tmp_path / "data", per_class=(8, 8, 8), val_per_class=(2, 2, 3), rng=rng)
    cfg = get_config("finetune", "quickstart2,scratch")
    cfg.data.name = f"folder:{root}"
    cfg.data.eval_split = "validation"
    cfg.data.augment, cfg.data.image_size = "v2", 16
    cfg.data.eval_resize, cfg.data.eval_crop = 18, 16
    cfg.model.widths = (8, 16)
    cfg.batch_size, cfg.eval_batch_size, cfg.num_steps = 8, 8, 2
    with pytest.raises(ValueError, match="localisation needs object masks"):
        train_module().train_and_evaluate(cfg, str(tmp_path / "masks"))  # before any step
    cfg.localisation = False  # no object masks in a folder dataset
    summary = train_module().train_and_evaluate(cfg, str(tmp_path / "run"))
    assert summary["steps"] == 2 and summary["val_count"] == 7
    with open(tmp_path / "run" / "classes.json") as f:
        assert tuple(json.load(f)) == CLASSES

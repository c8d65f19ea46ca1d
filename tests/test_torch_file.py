"""bcos_jax.torch_file: PyTorch checkpoints read without PyTorch, bitwise torch.load's arrays.

Files are written by ``torch.save`` from random-init reference models of every v1 and v2
family (zip format, and the legacy format of PyTorch < 1.6 that the v1 weights use), and
from tensors with strides, offsets, shared storages and every dtype.
"""
from __future__ import annotations

import collections
import functools
import math
import pathlib
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile

from tests.torch_ref import bcos, torch

import numpy as np
import pytest

from bcos_jax import convert, torch_file

bcos_convnext, bcos_densenet = bcos.models.convnext, bcos.models.densenet
bcos_pretrained, bcos_resnet, bcos_vgg = bcos.models.pretrained, bcos.models.resnet, bcos.models.vgg
BcosConv2dWithScale = bcos.modules.BcosConv2dWithScale

V1_BIAS = math.log(0.01 / 0.99)


def _v1_resnet34():
    conv = functools.partial(BcosConv2dWithScale, max_out=2, scale_factor=100)
    return bcos_resnet.BcosResNet(bcos_resnet.BasicBlock, [3, 4, 6, 3], num_classes=1000,
                                  norm_layer=torch.nn.Identity, conv_layer=conv,
                                  logit_bias=V1_BIAS, logit_temperature=10.0)


def _v1_densenet121():
    conv = functools.partial(BcosConv2dWithScale, max_out=2, scale_factor=100)
    return bcos_densenet.densenet121(conv_layer=conv, norm_layer=lambda c: torch.nn.Identity(),
                                     logit_temperature=1e-3, logit_bias=V1_BIAS)


def _narrow_vgg(v1: bool, width=32):
    """A VGG-11 of the reference classes with a narrow classifier (the full one is 0.5-1 GB);
    the key layout is the official one, only the widths differ."""
    conv = (functools.partial(BcosConv2dWithScale, max_out=2, scale_factor=1000) if v1
            else functools.partial(bcos.modules.BcosConv2d, b=2, max_out=1))
    norm = torch.nn.Identity() if v1 else bcos.modules.norms.NoBias(
        bcos.modules.norms.BatchNormUncentered2d)
    with torch.device("meta"):
        ref = bcos_vgg.BcosVGG(torch.nn.Identity(), num_classes=10, conv_layer=conv)
    ref.features = bcos_vgg.make_layers(bcos_vgg.cfgs["A"], norm_layer=norm, conv_layer=conv,
                                        in_channels=6)
    kw = dict(scale_fact=1000) if v1 else {}
    ref.classifier = torch.nn.Sequential(conv(512, width, kernel_size=7, padding=3, **kw),
                                         conv(width, width, **kw), conv(width, 10, **kw))
    return ref


def _v1_inception():
    """The original v1 Inception v3's state_dict layout (key, shape, dtype per line, listed from
    the moboehle/B-cos model in tests/data), filled with random values."""
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    for line in open(pathlib.Path(__file__).parent / "data" / "v1_inception_v3_state_dict.txt"):
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.rstrip("\n").split("\t")
        sd[key] = torch.randn(*[int(d) for d in shape.strip("()").split(",") if d.strip()],
                              generator=g)
    return sd


def _v1_cifar9l():
    """moboehle/B-cos experiments/CIFAR10/bcos/model.py: 9 B-cos convs (B=2, MaxOut 2)."""
    out_c, ks = [64] * 2 + [128] * 3 + [256] * 3 + [10], [3] * 8 + [1]
    stride, padding = [1, 1, 2, 1, 1, 2, 1, 1, 1], [1] * 8 + [0]
    layers, c_in = [], 6
    for c, k, s, p in zip(out_c, ks, stride, padding):
        layers.append(BcosConv2dWithScale(c_in, c, k, s, p, b=2, max_out=2, scale=0.0562))
        c_in = c
    return torch.nn.Sequential(*layers)


# (zoo name whose key layout the file has, None for a narrowed model; builder; key prefix of
#  the official file; legacy format as the official file: v1 was saved by PyTorch 1.3).
FAMILIES = {
    "v2 resnet (resnet18)": ("resnet18", lambda: bcos_pretrained.resnet18(), "", False),
    "v2 resnet cifar (cifar10_resnet20)": (
        "cifar10_resnet20", lambda: bcos_resnet.cifar10_resnet20(), "", False),
    "v2 densenet (densenet121)": ("densenet121", lambda: bcos_pretrained.densenet121(), "", False),
    "v2 vgg (vgg11_bnu, narrow)": (None, lambda: _narrow_vgg(False), "", False),
    "v2 convnext (convnext_atto)": ("convnext_atto", lambda: bcos_convnext.convnext_atto(), "",
                                    False),
    "v2 vit (simple_vit_ti_patch16_224)": (
        "simple_vit_ti_patch16_224", lambda: bcos_pretrained.simple_vit_ti_patch16_224(), "",
        False),
    "v2 vit conv stem (vitc_ti_patch1_14)": (
        "vitc_ti_patch1_14", lambda: bcos_pretrained.vitc_ti_patch1_14(), "", False),
    "v1 resnet (v1_resnet34)": ("v1_resnet34", _v1_resnet34, "0.", True),
    "v1 densenet (v1_densenet121)": ("v1_densenet121", _v1_densenet121, "0.", True),
    "v1 vgg (v1_vgg11, narrow)": (None, lambda: _narrow_vgg(True), "0.", True),
    "v1 inception (v1_inception_v3)": ("v1_inception_v3", _v1_inception, "", True),
    "v1 cifar 9L (v1_cifar10_9l)": ("v1_cifar10_9l", _v1_cifar9l, "", True),
}


def _as_bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


def assert_bitwise_equal(ours, ref, where="") -> None:
    """``ours`` (torch_file) equals ``ref`` (torch.load) value by value, container by container."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        t = ref.detach()
        want = t.contiguous()
        if t.dtype == torch.bfloat16 or "float8" in str(t.dtype):  # no NumPy dtype in torch
            want = want.view(torch.uint8)
        want = want.numpy()
        assert ours.shape == tuple(t.shape), (where, ours.shape, tuple(t.shape))
        assert str(ours.dtype) == str(t.dtype).replace("torch.", ""), (
            where, ours.dtype, t.dtype)
        assert _as_bits(ours).tobytes() == _as_bits(want).tobytes(), where
    elif isinstance(ref, dict):
        assert type(ours) is type(ref) and list(ours) == list(ref), where
        for k in ref:
            assert_bitwise_equal(ours[k], ref[k], f"{where}.{k}")
    elif isinstance(ref, (list, tuple)):
        assert type(ours) is type(ref) and len(ours) == len(ref), where
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_bitwise_equal(a, b, f"{where}[{i}]")
    else:
        assert type(ours) is type(ref) and ours == ref, (where, ours, ref)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reference_model_files_read_bitwise(family, tmp_path):
    name, build, prefix, legacy = FAMILIES[family]
    torch.manual_seed(0)
    model = build()
    state = model if isinstance(model, dict) else model.state_dict()
    sd = collections.OrderedDict((prefix + k, v) for k, v in state.items())
    sd._metadata = getattr(state, "_metadata", None)
    path = tmp_path / "w.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    t0 = time.perf_counter()
    ours = torch_file.load(str(path))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = torch.load(path, weights_only=True)
    t_torch = time.perf_counter() - t0
    assert_bitwise_equal(ours, ref)
    n = sum(v.numel() for v in ref.values())
    print(f"{family}: {len(ref)} tensors, {n / 1e6:.2f} M values, "
          f"{'legacy' if legacy else 'zip'} format, {path.stat().st_size / 2**20:.1f} MiB: "
          f"bitwise equal; read {t_ours:.2f} s (torch.load {t_torch:.2f} s)")


def _awkward():
    """Tensors that exercise strides, offsets, shared storages and every storage dtype."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    big = torch.randn(4, 5, 6, generator=g)
    return collections.OrderedDict(
        contiguous=torch.randn(3, 4, generator=g),
        transposed=base.t(),
        strided=base[1:5:2, ::3],
        shares_storage=base,
        row_view=base[2],
        permuted=big.permute(2, 0, 1),
        expanded=torch.randn(3, 1, generator=g).expand(3, 4),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        bf16=torch.randn(5, 3, generator=g).bfloat16(),
        bf16_view=torch.randn(4, 6, generator=g).bfloat16()[:, 1::2],
        f16=torch.randn(2, 3, generator=g).half(),
        f16_t=torch.randn(3, 2, generator=g).half().t(),
        f64=torch.randn(4, generator=g).double(),
        i64=torch.arange(-3, 5),
        i32=torch.arange(3, dtype=torch.int32),
        i16=torch.tensor([-7, 300], dtype=torch.int16),
        i8=torch.tensor([-1, 2], dtype=torch.int8),
        u8=torch.tensor([1, 255], dtype=torch.uint8),
        boolean=torch.tensor([True, False, True]),
        c64=torch.randn(3, dtype=torch.complex64, generator=g),
        parameter=torch.nn.Parameter(torch.randn(2, generator=g)),
        nested={"epoch": 3, "lr": 1e-3, "names": ["a", "b"], "t": (1, None, True, b"xy"),
                "raw": bytearray(b"\x00\xffab"), "ids": {1, 2}, "z": complex(1, 2),
                "tensors": [base[0], big[1, :, 2]]},
    )


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_shared_storages_and_dtypes_bitwise(legacy, tmp_path):
    obj = _awkward()
    if not legacy:  # dtypes without a legacy storage class: torch only saves them as zip
        obj["f8"] = torch.randn(4).to(torch.float8_e4m3fn)
        obj["u16"] = torch.arange(4).to(torch.uint16)
    path = tmp_path / "a.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    ours = torch_file.load(str(path))
    assert_bitwise_equal(ours, torch.load(path, weights_only=True))
    ours["transposed"][0, 0] = 123.0  # writing one tensor never changes another
    assert ours["shares_storage"][0, 0] != 123.0
    assert all(a.flags.writeable and a.flags.c_contiguous
               for a in ours.values() if isinstance(a, np.ndarray))


def test_lightning_style_checkpoint(tmp_path):
    """What a Lightning checkpoint of the B-cos-v2 trainer holds besides the weights: plain
    hyper-parameters, optimiser and scheduler states, callback states. Read as torch reads
    it; ``load_torch_checkpoint`` unwraps ``state_dict``."""
    torch.manual_seed(0)
    model = bcos_resnet.cifar10_resnet20()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    model(torch.rand(2, 6, 32, 32)).sum().backward()
    opt.step()
    sched.step()
    sd = {"model." + k: v for k, v in model.state_dict().items()}
    ckpt = {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
        "state_dict": sd, "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "callbacks": {"ModelCheckpoint{'monitor': 'eval_acc1'}": {
            "best_model_score": torch.tensor(0.75), "dirpath": "/ckpt", "best_k_models": {}}},
        "hparams_name": "kwargs",
        "hyper_parameters": {"dataset": "ImageNet", "base_network": "bcos_final",
                             "lr": 1e-3, "betas": (0.9, 0.999), "dtype": torch.float32,
                             "device": torch.device("cpu"), "shape": torch.Size([3, 4])},
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    ours = torch_file.load(str(path))
    ref = torch.load(path, weights_only=True)
    hp = ours.pop("hyper_parameters")
    ref_hp = ref.pop("hyper_parameters")
    assert_bitwise_equal(ours, ref)
    assert hp["dtype"] == np.dtype(np.float32) and hp["device"] == "cpu"
    assert hp["shape"] == (3, 4) and hp["betas"] == ref_hp["betas"]
    flat = convert.load_torch_checkpoint(str(path))
    assert list(flat) == list(sd)
    assert all(flat[k].tobytes() == v.numpy().tobytes() for k, v in sd.items())


def test_big_endian_zip_file(tmp_path):
    """A file written on a big-endian machine (byteorder record 'big') reads to the same values."""
    obj = {"w": torch.randn(3, 4), "h": torch.randn(5).half(), "i": torch.arange(4)}
    little = tmp_path / "little.pth"
    torch.save(obj, little)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as zin, zipfile.ZipFile(big, "w") as zout:
        pkl = next(n for n in zin.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        ref = torch_file.load(str(little))
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == prefix + "byteorder":
                data = b"big"
            elif info.filename.startswith(prefix + "data/"):
                key = info.filename.rsplit("/", 1)[1]
                # storage keys are assigned in pickling order: w, h, i
                dt = [np.float32, np.float16, np.int64][int(key)]
                data = np.frombuffer(data, dt).byteswap().tobytes()
            zout.writestr(info, data)
    got = torch_file.load(str(big))
    for k in obj:
        np.testing.assert_array_equal(got[k], ref[k])
        assert got[k].dtype == ref[k].dtype and got[k].dtype.isnative


class _Payload:
    """Unpickling this would create a marker file (it must never run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_forbidden_global_is_refused_by_name(legacy, tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": _Payload(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(torch_file.UnsafeCheckpointError, match=r"io\.open"):
        torch_file.load(str(path))
    with pytest.raises(ValueError, match=r"refused to load.*io\.open"):
        convert.load_torch_checkpoint(str(path))
    assert not marker.exists()


def test_whole_module_and_other_objects_are_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 3), tmp_path / "module.pth")
    with pytest.raises(torch_file.UnsafeCheckpointError, match="torch.nn.modules.linear.Linear"):
        torch_file.load(str(tmp_path / "module.pth"))
    torch.save({"sd": {"w": torch.ones(1)}, "f": np.float64(1.0)}, tmp_path / "np.pth")
    with pytest.raises(torch_file.UnsafeCheckpointError, match="numpy"):
        torch_file.load(str(tmp_path / "np.pth"))


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="trunc.pth"):
        torch_file.load(str(tmp_path / "trunc.pth"))
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "ltrunc.pth").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        torch_file.load(str(tmp_path / "ltrunc.pth"))
    (tmp_path / "page.pth").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match="not a PyTorch file"):
        torch_file.load(str(tmp_path / "page.pth"))
    with open(tmp_path / "plain.pth", "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(ValueError, match="magic number"):
        torch_file.load(str(tmp_path / "plain.pth"))
    with pytest.raises(FileNotFoundError):
        torch_file.load(str(tmp_path / "absent.pth"))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A crafted size/stride must not read memory outside the storage."""
    path = tmp_path / "w.pth"
    torch.save({"w": torch.arange(6, dtype=torch.float32)}, path)
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                # the pickled size tuple (6,) -> (600,), stride (1,) kept
                data = data.replace(b"K\x06\x85", b"MX\x02\x85", 1)
            zout.writestr(info, data)
    with pytest.raises(ValueError, match="past the end of its storage"):
        torch_file.load(str(bad))


_NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, _Block())
""")


def test_reader_runs_without_torch(tmp_path):
    """In a fresh process with ``import torch`` blocked: both formats read, torch never loaded."""
    torch.manual_seed(0)
    sd = bcos_resnet.cifar10_resnet20().state_dict()
    torch.save(sd, tmp_path / "zip.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    script = _NO_TORCH + textwrap.dedent(f"""
        import numpy as np
        from bcos_jax import convert
        for kind in ("zip", "legacy"):
            sd = convert.load_torch_checkpoint({str(tmp_path)!r} + f"/{{kind}}.pth")
            np.savez({str(tmp_path)!r} + f"/{{kind}}.npz", **sd)
        assert "torch" not in sys.modules, "torch was imported"
        print("torch imported:", "torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "torch imported: False" in out.stdout
    ref = torch.load(tmp_path / "zip.pth", weights_only=True)
    for kind in ("zip", "legacy"):
        got = np.load(tmp_path / f"{kind}.npz")
        assert sorted(got.files) == sorted(ref)
        for k, v in ref.items():
            assert got[k].tobytes() == v.numpy().tobytes() and got[k].dtype == v.numpy().dtype

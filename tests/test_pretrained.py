"""Official weights in one call: download cache, hash checks, and ``pretrained`` end to end.

Files are served by a local HTTP server on 127.0.0.1 (``http.server`` in a thread) through
the same code path as a real download (``$BCOS_JAX_WEIGHTS_URL`` points at it); nothing
here uses the internet.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import subprocess
import sys
import textwrap
import threading
import time

from tests.torch_ref import bcos, torch

import jax
import numpy as np
import pytest

import bcos_jax
from bcos_jax import download, models, released

FAKE_HOST = "https://weights.invalid/release"


class _Server:
    """Serves ``files`` {name: bytes}; names in ``cut`` get a Content-Length 1000 bytes
    larger than what is sent, then the connection closes (a server gone mid-file)."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, set(), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                outer.requests.append(name)
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                self.send_response(200)
                extra = 1000 if name in outer.cut else 0
                self.send_header("Content-Length", str(len(data) + extra))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if extra else data)
                if extra:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, tmp_path):
    s = _Server()
    monkeypatch.setenv("BCOS_JAX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BCOS_JAX_WEIGHTS_URL", s.url)
    yield s
    s.stop()


def _perturb_norms(model) -> None:
    """Non-trivial norm scales and running variances, so a wrong conversion shows in logits."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._NormBase):
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))


def _hashed_name(stem: str, data: bytes, n: int = 10) -> str:
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:n]}.pth"


def _cache_files(tmp_path):
    d = tmp_path / "home" / download.WEIGHTS_SUBDIR
    return sorted(os.listdir(d)) if d.is_dir() else []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BCOS_JAX_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_dir() == str(tmp_path / "xdg" / "bcos_jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert download.cache_dir() == str(tmp_path / "user" / ".cache" / "bcos_jax")
    monkeypatch.setenv("BCOS_JAX_HOME", str(tmp_path / "mine"))
    assert download.cache_dir() == str(tmp_path / "mine")


def test_zoo_file_names_and_hashes():
    """v2 and torchvision files carry a SHA-256 prefix in their names; v1 links none.
    Every URL gets its own cache file name."""
    urls = {n: models.get_spec(n).weights_url for n in released.pretrained_models()}
    assert len(urls) >= 40
    names = {}
    for name, url in urls.items():
        fname = download.file_name(url)
        names.setdefault(fname, set()).add(url)
        h = download.expected_hash(fname)
        if name.startswith("v1_"):
            assert h is None and fname.endswith(".pth"), (name, fname)
        else:
            assert h is not None and len(h) >= 8, (name, fname)
    assert all(len(u) == 1 for u in names.values())  # no two URLs share a cache file
    assert download.expected_hash("resnet_50-ead259efe4.pth") == "ead259efe4"
    assert download.file_name(
        "https://nextcloud.mpi-klsb.mpg.de/index.php/s/mYe6TggQsDymZbk/download"
    ) == "mYe6TggQsDymZbk.pth"
    page = "https://github.com/o/r/releases/tag/v0.0.1-checkpoints"
    assert not download.is_file_url(page)
    with pytest.raises(ValueError, match="not a direct link"):
        download.file_name(page)


def test_download_hash_ok_then_cache_hit_without_network(server, tmp_path):
    data = os.urandom(3 << 20)
    fname = _hashed_name("weights", data)
    server.files[fname] = data
    path = download.fetch(f"{FAKE_HOST}/{fname}", progress=False)
    assert path == str(tmp_path / "home" / "weights" / fname)
    assert open(path, "rb").read() == data
    assert _cache_files(tmp_path) == [fname]  # no .part left
    server.stop()
    assert download.fetch(f"{FAKE_HOST}/{fname}", progress=False) == path
    assert server.requests == [fname]


def test_download_hash_mismatch_names_both_and_keeps_nothing(server, tmp_path):
    data = b"not the released file" * 1000
    fname = "weights-0123456789.pth"
    server.files[fname] = data
    with pytest.raises(download.HashMismatchError) as err:
        download.fetch(f"{FAKE_HOST}/{fname}", progress=False)
    msg = str(err.value)
    assert hashlib.sha256(data).hexdigest() in msg and "0123456789" in msg
    assert _cache_files(tmp_path) == []
    # a file placed by hand under a hashed name is checked too, and deleted on mismatch
    os.makedirs(tmp_path / "home" / "weights", exist_ok=True)
    (tmp_path / "home" / "weights" / fname).write_bytes(data)
    with pytest.raises(download.HashMismatchError):
        download.fetch(f"{FAKE_HOST}/{fname}", progress=False)
    assert _cache_files(tmp_path) == []


def test_server_gone_mid_file_leaves_nothing(server, tmp_path):
    data = os.urandom(1 << 20)
    fname = _hashed_name("weights", data)
    server.files[fname] = data
    server.cut.add(fname)
    with pytest.raises(download.DownloadError) as err:
        download.fetch(f"{FAKE_HOST}/{fname}", progress=False)
    msg = str(err.value)
    assert str(tmp_path / "home" / "weights" / fname) in msg  # where to place it by hand
    assert "bcos-jax convert" in msg
    assert _cache_files(tmp_path) == []


def test_unreachable_and_missing_files_are_clear_errors(server, tmp_path, monkeypatch):
    with pytest.raises(download.DownloadError, match="HTTP 404"):
        download.fetch(f"{FAKE_HOST}/absent-0123456789.pth", progress=False)
    server.stop()
    with pytest.raises(download.DownloadError) as err:
        download.fetch(f"{FAKE_HOST}/other-0123456789.pth", progress=False, timeout=5)
    assert "expected at " + str(tmp_path / "home" / "weights" / "other-0123456789.pth") in str(
        err.value)
    assert _cache_files(tmp_path) == []


# ------------------------------------------------------------------------------ pretrained
NAME = "cifar10_resnet20"


@pytest.fixture
def fake_release(server, monkeypatch):
    """cifar10_resnet20 "officially released": a random-init reference state_dict served
    under a hash-prefixed name, the zoo entry pointing at it."""
    torch.manual_seed(0)
    ref = bcos.models.resnet.cifar10_resnet20()
    _perturb_norms(ref)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    data = buf.getvalue()
    fname = _hashed_name("cifar10_resnet20", data)
    server.files[fname] = data
    spec = dataclasses.replace(models.get_spec(NAME), weights_url=f"{FAKE_HOST}/{fname}")
    monkeypatch.setitem(models._MODELS, NAME, spec)
    return ref, fname


_NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, _Block())
""")


def test_pretrained_downloads_converts_once_then_reads_the_cache(fake_release, server, tmp_path):
    from bcos_jax import convert

    ref, fname = fake_release
    t0 = time.perf_counter()
    model, variables = bcos_jax.pretrained(NAME, progress=False)
    first = time.perf_counter() - t0
    assert server.requests == [fname]
    want = convert.from_torch(NAME, ref.state_dict())
    jax.tree.map(np.testing.assert_array_equal, variables, want)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    x = np.concatenate([x, 1 - x], -1)
    logits = np.asarray(model.apply(variables, x))
    with torch.no_grad():
        t_logits = ref.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(logits, t_logits, rtol=1e-4, atol=1e-4)
    converted = released.converted_dir(NAME)
    assert os.path.isdir(converted) and not [
        n for n in os.listdir(os.path.dirname(converted)) if n.endswith(".part")]

    # Second call: a fresh process, server stopped, torch import blocked, weights deleted.
    server.stop()
    os.unlink(download.weights_path(models.get_spec(NAME).weights_url))
    url = f"{FAKE_HOST}/{fname}"
    script = _NO_TORCH + textwrap.dedent(f"""
        import dataclasses, time
        import jax, numpy as np
        import bcos_jax
        from bcos_jax import models
        spec = dataclasses.replace(models.get_spec({NAME!r}), weights_url={url!r})
        models._MODELS[{NAME!r}] = spec
        t0 = time.perf_counter()
        model, variables = bcos_jax.pretrained({NAME!r})
        print(f"second call {{time.perf_counter() - t0:.2f}} s")
        leaves = jax.tree_util.tree_leaves_with_path(variables)
        np.savez({str(tmp_path / "second.npz")!r},
                 **{{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}})
        assert "torch" not in sys.modules
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    second = np.load(tmp_path / "second.npz")
    first_leaves = dict(jax.tree_util.tree_leaves_with_path(variables))
    assert sorted(second.files) == sorted(jax.tree_util.keystr(k) for k in first_leaves)
    for k, v in first_leaves.items():
        np.testing.assert_array_equal(second[jax.tree_util.keystr(k)], np.asarray(v))
    print(f"pretrained({NAME!r}) via 127.0.0.1: first call (download + convert + save) "
          f"{first:.2f} s; {out.stdout.strip()} (fresh process, no server, torch blocked)")


def test_pretrained_errors(fake_release, server):
    with pytest.raises(ValueError, match="no released weights"):
        released.pretrained("convnext_atto")
    with pytest.raises(ValueError, match="did you mean"):
        released.pretrained("resnet_50")
    with pytest.raises(ValueError, match="do not fit"):
        released.pretrained(NAME, progress=False, num_classes=7)


def test_pretrained_wrong_architecture_is_a_conversion_error(server, monkeypatch, tmp_path):
    """A file of another architecture under a model's name: an error naming keys, no cache."""
    from bcos_jax import convert

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(bcos.models.resnet.cifar10_resnet32().state_dict(), buf)
    fname = _hashed_name("wrong", buf.getvalue())
    server.files[fname] = buf.getvalue()
    spec = dataclasses.replace(models.get_spec(NAME), weights_url=f"{FAKE_HOST}/{fname}")
    monkeypatch.setitem(models._MODELS, NAME, spec)
    with pytest.raises(convert.ConversionError, match="unexpected"):
        released.pretrained(NAME, progress=False)
    assert not os.path.exists(released.converted_dir(NAME))


def test_cli_explain_pretrained_names_imagenet_classes(server, monkeypatch, tmp_path, capsys):
    """``bcos-jax explain --model NAME --pretrained``: the released weights through the cache;
    a 1000-class model's top5.json names the classes. Offline and not cached: one error line."""
    import functools
    import json

    from PIL import Image

    from bcos_jax import commands
    from bcos_jax.data import imagenet_classes

    torch.manual_seed(0)
    ref = bcos.models.resnet.cifar10_resnet20(num_classes=1000)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    fname = _hashed_name("imagenet_like", buf.getvalue())
    server.files[fname] = buf.getvalue()
    spec = models.get_spec(NAME)
    spec = dataclasses.replace(spec, build=functools.partial(spec.build, num_classes=1000),
                               num_classes=1000, weights_url=f"{FAKE_HOST}/{fname}")
    monkeypatch.setitem(models._MODELS, NAME, spec)
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)).save(img)
    out = tmp_path / "out"
    rc = commands.main(["explain", str(img), "--model", NAME, "--pretrained", "--out", str(out)])
    assert rc == 0
    record = json.loads((out / "img_top5.json").read_text())
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench"
    assert record["name"] == names[record["target"]]
    assert [t["name"] for t in record["top5"]] == [names[t["class"]] for t in record["top5"]]
    assert f"({record['name']})" in capsys.readouterr().out

    server.stop()  # not cached yet and no network: the error says where to put the file
    monkeypatch.setenv("BCOS_JAX_HOME", str(tmp_path / "empty_cache"))
    rc = commands.main(["explain", str(img), "--model", NAME, "--pretrained", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: could not download" in err and str(tmp_path / "empty_cache") in err

"""Download the official weights files into a local cache, atomically and hash-checked.

Cache: ``$BCOS_JAX_HOME`` if set, else ``$XDG_CACHE_HOME/bcos_jax``, else
``~/.cache/bcos_jax``. Downloaded files live in ``<cache>/weights/<file name>``.

* **Atomic**: a file is streamed to ``<cache>/weights/.<name>.<random>.part`` in the same
  directory, checked, then ``os.replace``-d to its name; a killed download leaves only a
  ``.part`` file, never a file under the final name.
* **Hash**: the torch.hub convention — a file named ``<stem>-<hex>.<ext>`` carries the first
  hex digits of its SHA-256 (the B-cos v2 release: 10 digits; torchvision: 8). A mismatch
  deletes the file and raises ``HashMismatchError`` naming both hashes. The v1 files (MPI
  nextcloud share links) carry no hash and are not checked.
* **Mirrors and tests**: ``$BCOS_JAX_WEIGHTS_URL`` replaces the host: the file name is
  appended to it (``$BCOS_JAX_WEIGHTS_URL/<file name>``).
* **Offline**: ``DownloadError`` says where the file is expected, so it can be placed there
  by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

__all__ = [
    "DownloadError",
    "HashMismatchError",
    "cache_dir",
    "expected_hash",
    "fetch",
    "file_name",
    "is_file_url",
    "source_url",
    "weights_path",
]

WEIGHTS_SUBDIR = "weights"
_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
# What a direct link to a weights file ends in (a release *page* does not).
WEIGHTS_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_CHUNK = 1 << 20


class DownloadError(OSError):
    """The file could not be fetched; the message says where to place it by hand."""


class HashMismatchError(ValueError):
    """The file's SHA-256 does not start with the prefix its name carries."""


def cache_dir() -> str:
    """``$BCOS_JAX_HOME``, else ``$XDG_CACHE_HOME/bcos_jax``, else ``~/.cache/bcos_jax``."""
    home = os.environ.get("BCOS_JAX_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(xdg), "bcos_jax")


def file_name(url: str) -> str:
    """The cache file name of ``url``: its last path component, e.g. ``resnet_50-ead259efe4.pth``.

    The v1 nextcloud links end in ``/s/<share key>/download``: their file is
    ``<share key>.pth`` (a name without a hash).
    """
    parts = [p for p in urllib.parse.urlparse(url).path.split("/") if p]
    if not parts:
        raise ValueError(f"no file name in the URL {url!r}")
    name = parts[-1]
    if name == "download" and len(parts) >= 2:  # nextcloud share link
        name = parts[-2] + ".pth"
    if (not name.endswith(WEIGHTS_SUFFIXES) or name.startswith(".")
            or not re.fullmatch(r"[\w.\-]+", name)):
        raise ValueError(
            f"{url!r} is not a direct link to a weights file (one ending in "
            f"{', '.join(WEIGHTS_SUFFIXES)}, or a nextcloud '/download' link)")
    return name


def is_file_url(url: str) -> bool:
    """Whether ``url`` links a weights file itself (not, e.g., a release page)."""
    try:
        file_name(url)
    except ValueError:
        return False
    return True


def expected_hash(name: str) -> Optional[str]:
    """The SHA-256 prefix a file name carries (``resnet_50-ead259efe4.pth`` -> 'ead259efe4')."""
    m = _HASH.search(name)
    return m.group(1) if m else None


def weights_path(url: str) -> str:
    """Where the file of ``url`` is kept: ``<cache_dir()>/weights/<file_name(url)>``."""
    return os.path.join(cache_dir(), WEIGHTS_SUBDIR, file_name(url))


def source_url(url: str) -> str:
    """``url``, or ``$BCOS_JAX_WEIGHTS_URL/<file name>`` when that variable is set."""
    base = os.environ.get("BCOS_JAX_WEIGHTS_URL")
    return f"{base.rstrip('/')}/{file_name(url)}" if base else url


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hash(path: str, digest: str, label: str) -> None:
    want = expected_hash(os.path.basename(path))
    if want is not None and not digest.startswith(want):
        raise HashMismatchError(
            f"{label}: SHA-256 {digest} does not start with {want}, the prefix in its file name "
            f"{os.path.basename(path)!r}; the file was deleted (a corrupt or substituted "
            "download: try again, or check the mirror in BCOS_JAX_WEIGHTS_URL)")


def _manual_hint(url: str, dest: str) -> str:
    return (
        f"The file is expected at {dest}: download {url} by hand and place it there under that "
        "name (or set BCOS_JAX_WEIGHTS_URL to a mirror that serves it). A weights file kept "
        "elsewhere converts with `bcos-jax convert --model NAME --weights FILE --out DIR`.")


def fetch(url: str, *, progress: bool = True, timeout: float = 60.0) -> str:
    """The local path of the weights file of ``url``, downloading it once.

    A file already in the cache is used as it is, after its hash check (so a file placed
    there by hand is checked too). Otherwise it is downloaded from ``source_url(url)`` with
    a progress bar (``progress``), hash-checked and moved into place.

    Raises:
      DownloadError: unreachable, an HTTP error, or a connection lost mid-file.
      HashMismatchError: the SHA-256 does not match the file name's prefix (file deleted).
    """
    dest = weights_path(url)
    if os.path.isfile(dest):
        if expected_hash(os.path.basename(dest)) is not None:
            try:
                _check_hash(dest, _sha256(dest), dest)
            except HashMismatchError:
                os.unlink(dest)
                raise
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    src = source_url(url)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=f".{os.path.basename(dest)}.",
                               suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(src, out, progress=progress, timeout=timeout,
                             hint=_manual_hint(url, dest))
        _check_hash(dest, digest, src)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _stream(src: str, out, *, progress: bool, timeout: float, hint: str) -> str:
    """Copy ``src`` into ``out`` and return its SHA-256; a DownloadError on any failure."""
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    got = 0
    try:
        req = urllib.request.Request(src, headers={"User-Agent": "bcos-jax"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=os.path.basename(urllib.parse.urlparse(src).path) or src,
                      disable=not progress) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"could not download {src}: HTTP {e.code} {e.reason}. {hint}") from e
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        what = "the connection was lost after" if got else "no data received"
        raise DownloadError(
            f"could not download {src} ({what}{f' {got} bytes' if got else ''}: {reason}). "
            f"{hint}") from e
    if total is not None and got != total:
        raise DownloadError(
            f"could not download {src}: the connection closed after {got} of {total} bytes. "
            f"{hint}")
    return h.hexdigest()

"""Fetching and unpacking archives without ever leaving a half-written cache.

A download goes to a temporary name beside its destination, its md5 is checked, and
only then is it renamed into place; an archive is extracted into a temporary folder
whose top-level entries are renamed into the cache one by one. A crash, a bad checksum
or a refused archive therefore leaves nothing that a later run could mistake for data.

Archives come from the internet, so every member is checked before anything is written:
absolute paths, ``..`` components, links that point outside the target and special files
are refused rather than silently rewritten.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_write
from .core import DataError

MIRROR_ENV = "NPVIT_DATA_MIRROR"
_CHUNK = 1 << 20


def md5sum(path) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_url(url: str, mirror: str | None = None) -> str:
    """``url``, or the same file name under ``mirror`` (argument, else $NPVIT_DATA_MIRROR)."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def download(url: str, dest, md5: str | None = None, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its md5 when one is given.

    Any failure (HTTP error, unreachable host, short transfer, wrong checksum) raises
    DataError and leaves neither ``dest`` nor a partial file behind.
    """
    dest = Path(dest)
    hint = f"or put {dest.name} in {dest.parent} by hand"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, suffix=".part") as out:
            _fetch_into(out, url, dest.name, md5, progress, hint)
    except OSError as e:  # the folder cannot be written; errors of the transfer are DataErrors already
        raise DataError(f"cannot write to {dest.parent} ({e.strerror}); choose another cache dir (--cache-dir or $NPVIT_CACHE_DIR)") from None
    return dest


def _fetch_into(out, url: str, name: str, md5, progress: bool, hint: str) -> None:
    """Stream ``url`` into the open file ``out``; DataError on any failure, a short transfer or a wrong md5."""
    digest = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}; retry later, use a mirror ({MIRROR_ENV}), {hint}") from None
    except urllib.error.URLError as e:
        raise DataError(f"cannot reach {url} ({e.reason}); check the network or {MIRROR_ENV}, {hint}") from None
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as e:
        raise DataError(f"download of {url} was cut off after {received} bytes ({type(e).__name__}); retry, {hint}") from None
    except OSError as e:  # e.g. the disk filled up
        raise DataError(f"download of {url} failed after {received} bytes ({e}); free space or choose another cache dir, {hint}") from None
    if total is not None and received != total:
        raise DataError(f"download of {url} is truncated: got {received} of {total} bytes; retry, {hint}")
    if md5 is not None and digest.hexdigest() != md5:
        raise DataError(
            f"checksum mismatch for {name} from {url}: md5 {digest.hexdigest()}, expected {md5}; "
            f"the file is corrupt or not the official one, nothing was kept; retry, {hint}"
        )


def _inside(root: str, name: str) -> bool:
    """True when the archive member ``name`` lands inside folder ``root``."""
    target = os.path.realpath(os.path.join(root, name))
    return os.path.commonpath([root, target]) == root


def _check_member(archive: Path, root: str, name: str) -> None:
    """Refuse a member name that is absolute or climbs out of ``root``."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or not _inside(root, name):
        raise DataError(f"refusing to extract {archive.name}: member {name!r} would land outside the target folder; the archive is not trustworthy, delete it")


def _check_tar(archive: Path, tar: tarfile.TarFile, root: str) -> list[tarfile.TarInfo]:
    """All members of ``tar``, each checked to stay inside ``root``."""
    members = tar.getmembers()
    for m in members:
        _check_member(archive, root, m.name)
        if m.issym() or m.islnk():
            # a symlink resolves from its own folder, a hard link from the archive root
            base = os.path.dirname(m.name) if m.issym() else ""
            if os.path.isabs(m.linkname) or not _inside(root, os.path.join(base, m.linkname)):
                raise DataError(f"refusing to extract {archive.name}: link {m.name!r} -> {m.linkname!r} points outside the target folder; delete the archive")
        elif not (m.isfile() or m.isdir()):
            raise DataError(f"refusing to extract {archive.name}: member {m.name!r} is a device or fifo; delete the archive")
    return members


def extract(archive, dest) -> Path:
    """Safely extract a .tar.gz/.tgz/.tar or .zip ``archive`` into folder ``dest``.

    Members are checked before anything is written, extraction goes to a temporary
    folder inside ``dest``, and each top-level entry is then renamed into ``dest``
    (entries that already exist there are kept). Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extract", dir=dest)
    except OSError as e:
        raise DataError(f"cannot write to {dest} ({e.strerror}); choose another cache dir (--cache-dir or $NPVIT_CACHE_DIR)") from None
    root = os.path.realpath(tmp)
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for name in z.namelist():
                        _check_member(archive, root, name)
                    z.extractall(root)
            else:
                with tarfile.open(archive) as tar:
                    members = _check_tar(archive, tar, root)
                    # the "data" filter (Python >= 3.11.4) also drops setuid bits and odd modes
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(root, members=members, **safe)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            raise DataError(f"archive {archive} is corrupt or truncated ({type(e).__name__}: {e}); delete it and download it again") from None
        for entry in os.listdir(root):
            if not (dest / entry).exists():
                os.replace(os.path.join(root, entry), dest / entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

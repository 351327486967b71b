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
import math
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from ..fileio import atomic_write
from .core import DataError

MIRROR_ENV = "NPVIT_DATA_MIRROR"
_CHUNK = 1 << 20
EXTRACT_SUFFIX = ".extract"
# What a process killed mid-download or mid-extraction leaves (``atomic_write``'s temporary
# names and the extraction folders), and how old it must be before it is taken for dead
# rather than the work of another process that is still running.
PARTIAL_SUFFIXES = (".part", ".tmp", EXTRACT_SUFFIX)
STALE_AFTER_S = 3600.0
# A download must end: within a total deadline, and never slower than a minimum rate
# measured over each window (which is also how long one read may wait for a byte).
DEADLINE_ENV, MIN_RATE_ENV = "NPVIT_DOWNLOAD_DEADLINE_S", "NPVIT_DOWNLOAD_MIN_RATE"
DEADLINE_S, MIN_RATE, WINDOW_S = 6 * 3600.0, 1024.0, 60.0


def clean_partial(folder, older_than: float = STALE_AFTER_S) -> list[Path]:
    """Remove the partial downloads and extractions a killed process left in ``folder`` (not below it).

    Only hidden entries ending in ``PARTIAL_SUFFIXES`` and untouched for ``older_than``
    seconds are removed; returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in folder.iterdir():
        if not (entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIXES)):
            continue
        try:
            if now - entry.lstat().st_mtime < older_than:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue  # another process took it first, or the folder is read-only: nothing to clean then
    return removed


def md5sum(path) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_url(url: str, mirror: str | None = None) -> str:
    """``url``, or the same file name under ``mirror`` (argument, else $NPVIT_DATA_MIRROR); DataError when the
    mirror is not an http(s) or file URL."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(mirror.strip())
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise DataError(f"{MIRROR_ENV}={mirror!r} is not a base URL; set it to one such as "
                        "https://host/path/ (the official file names are appended) or unset it")
    return mirror.strip().rstrip("/") + "/" + url.rsplit("/", 1)[-1]


def _limit(value, env: str, default: float) -> float:
    """A download limit: ``value``, else the environment variable ``env``, else ``default``; must be positive."""
    if value is None:
        text = os.environ.get(env)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"${env}={text!r} is not a number; set it to a positive number or unset it") from None
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"${env} must be a positive number, not {value}")
    return float(value)


def download(url: str, dest, md5: str | None = None, *, progress: bool = True, deadline_s: float | None = None,
             min_rate: float | None = None, window_s: float = WINDOW_S) -> Path:
    """Download ``url`` to ``dest`` atomically, checking its md5 when one is given.

    Any failure (HTTP error, unreachable host, short transfer, wrong checksum) raises
    DataError and leaves neither ``dest`` nor a partial file behind. So does a transfer
    that takes longer than ``deadline_s`` in all (default $NPVIT_DOWNLOAD_DEADLINE_S, else
    6 hours) or brings fewer than ``min_rate`` bytes a second over any ``window_s``
    seconds (default $NPVIT_DOWNLOAD_MIN_RATE, else 1024).
    """
    dest = Path(dest)
    hint = f"or put {dest.name} in {dest.parent} by hand"
    limits = (_limit(deadline_s, DEADLINE_ENV, DEADLINE_S), _limit(min_rate, MIN_RATE_ENV, MIN_RATE), window_s)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, suffix=".part") as out:
            _fetch_into(out, url, dest.name, md5, progress, hint, limits)
    except OSError as e:  # the folder cannot be written; errors of the transfer are DataErrors already
        raise DataError(f"cannot write to {dest.parent} ({e.strerror}); point $NPVIT_CACHE_DIR at a writable folder") from None
    return dest


def _fetch_into(out, url: str, name: str, md5, progress: bool, hint: str, limits) -> None:
    """Stream ``url`` into the open file ``out``; DataError on any failure, a short, late or slow transfer or a
    wrong md5. ``limits``: (deadline in s, minimum rate in bytes/s, the window it is measured over in s)."""
    deadline_s, min_rate, window_s = limits
    digest = hashlib.md5()
    received = 0
    started = time.monotonic()
    window = (started, 0)  # when the current window began, and the bytes received by then
    try:
        with urllib.request.urlopen(url, timeout=min(window_s, deadline_s)) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            read = getattr(response, "read1", response.read)  # read1: what one receive brings, not a full chunk
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    now = time.monotonic()
                    if now - started > deadline_s:
                        raise DataError(f"download of {url} took longer than {deadline_s:g} s (${DEADLINE_ENV}); "
                                        f"nothing was kept; retry, use a mirror ({MIRROR_ENV}), {hint}")
                    if now - window[0] >= window_s:
                        rate = (received - window[1]) / (now - window[0])
                        if rate < min_rate:
                            raise DataError(f"download of {url} is too slow ({rate:.0f} B/s, under {min_rate:g} B/s, "
                                            f"${MIN_RATE_ENV}); nothing was kept; retry, use a mirror ({MIRROR_ENV}), "
                                            f"{hint}")
                        window = (now, received)
    except urllib.error.HTTPError as e:
        raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}; retry later, use a mirror ({MIRROR_ENV}), {hint}") from None
    except urllib.error.URLError as e:
        raise DataError(f"cannot reach {url} ({e.reason}); check the network or {MIRROR_ENV}, {hint}") from None
    except (TimeoutError, socket.timeout):
        raise DataError(f"download of {url} stalled: no data for {min(window_s, deadline_s):g} s after {received} "
                        f"bytes; nothing was kept; retry, use a mirror ({MIRROR_ENV}), {hint}") from None
    except (http.client.IncompleteRead, ConnectionError) as e:
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


def _resolve(links: dict, name: str, depth: int = 0) -> str | None:
    """Where the archive path ``name`` lands once the archive's own symlinks (``links``: member -> target) are
    followed, as a path relative to the target folder; None when it climbs out of it.

    This is ``os.path.realpath`` computed over the archive instead of the disk, so a chain
    of links (``a -> .``, then ``a/b -> ..``, then a file ``a/b/x``) is seen for what it
    is before anything is written, whatever Python's tarfile filters can do.
    """
    if depth > 40:  # a loop of links
        return None
    parts: list[str] = []
    for part in name.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(part)
        target = links.get("/".join(parts))
        if target is not None:
            if target.startswith(("/", "\\")):
                return None
            resolved = _resolve(links, "/".join([*parts[:-1], target]), depth + 1)
            if resolved is None:
                return None
            parts = resolved.split("/") if resolved else []
    return "/".join(parts)


def _check_tar(archive: Path, tar: tarfile.TarFile, root: str) -> list[tarfile.TarInfo]:
    """All members of ``tar``, each checked to stay inside ``root`` with the links before it followed.

    Members are checked in the order tarfile writes them. A file or folder is written
    through any link already at its path, so its whole name is resolved; a symlink
    replaces what is at its path, so only its folder is, and its target must resolve
    inside too; a hard link may only name a regular file written before it (a hard link
    to a symlink would copy the link, to be read again from another folder).
    """
    def refuse(why):
        raise DataError(f"refusing to extract {archive.name}: {why}; the archive is not trustworthy, delete it")

    members = tar.getmembers()
    links, files = {}, set()
    for m in members:
        _check_member(archive, root, m.name)
        folder = _resolve(links, os.path.dirname(os.path.normpath(m.name)))
        if folder is None:
            refuse(f"member {m.name!r} is written through a link that points outside the target folder")
        here = f"{folder}/{os.path.basename(os.path.normpath(m.name))}".lstrip("/")
        if m.issym():
            if os.path.isabs(m.linkname) or _resolve(links, f"{folder}/{m.linkname}") is None:
                refuse(f"link {m.name!r} -> {m.linkname!r} points outside the target folder")
            links[here] = m.linkname
            files.discard(here)
        elif m.islnk():
            source = os.path.normpath(m.linkname)
            source_folder = _resolve(links, os.path.dirname(source))
            if os.path.isabs(m.linkname) or source_folder is None or \
                    f"{source_folder}/{os.path.basename(source)}".lstrip("/") not in files:
                refuse(f"hard link {m.name!r} -> {m.linkname!r} does not name a file of the archive inside the "
                       "target folder")
            links.pop(here, None)
            files.add(here)
        elif m.isfile() or m.isdir():
            lands = _resolve(links, m.name)
            if lands is None:
                refuse(f"member {m.name!r} is written through a link that points outside the target folder")
            if m.isfile():
                files.add(lands)
        else:
            refuse(f"member {m.name!r} is a device or fifo")
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
        tmp = tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=EXTRACT_SUFFIX, dir=dest)
    except OSError as e:
        raise DataError(f"cannot write to {dest} ({e.strerror}); point $NPVIT_CACHE_DIR at a writable folder") from None
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
            why = " ".join(str(e).split())  # tarfile lists each method it tried on a line of its own
            raise DataError(f"archive {archive} is corrupt or truncated ({type(e).__name__}: {why}); delete it and download it again") from None
        for entry in os.listdir(root):
            if not (dest / entry).exists():
                os.replace(os.path.join(root, entry), dest / entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest

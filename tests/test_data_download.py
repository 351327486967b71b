"""Downloads against a real HTTP server on 127.0.0.1, and safe extraction of hostile archives."""
import dataclasses
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import time
import zipfile

import numpy as np
import pytest

from npvit.data import DataError, download, extract, load_dataset
from npvit.data import datasets as datasets_module


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``: name -> bytes; names starting 'short-' lie about their length, 'slow-' trickle."""

    def do_GET(self):
        name = self.path.lstrip("/")
        if name.startswith("fail-"):
            self.send_error(500, "Internal Server Error")
            return
        if name.startswith("slow-"):  # one byte at a time, far too slowly
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(100000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:  # the client gave up, as it should
                pass
            return
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) * 2 if name.startswith("short-") else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _small_cifar(monkeypatch):
    """The record counts of ``_cifar10_archive``'s files, in place of the official 10,000."""
    monkeypatch.setattr(datasets_module, "_CIFAR_RECORDS", {"data_batch": 2, "test_batch": 1})


def _url(server, name):
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_download_verifies_md5_and_renames_into_place(server, tmp_path):
    body = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    server.files["blob.bin"] = body
    dest = download(_url(server, "blob.bin"), tmp_path / "cache" / "blob.bin", hashlib.md5(body).hexdigest(), progress=False)
    assert dest.read_bytes() == body
    assert _leftovers(tmp_path / "cache") == ["blob.bin"]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    server.files["bad.bin"] = b"not the official bytes"
    with pytest.raises(DataError, match="checksum mismatch") as e:
        download(_url(server, "bad.bin"), tmp_path / "bad.bin", "0" * 32, progress=False)
    assert "\n" not in str(e.value)
    assert _leftovers(tmp_path) == []


def test_truncated_transfer_is_refused(server, tmp_path):
    server.files["short-file.bin"] = b"x" * 5000
    with pytest.raises(DataError, match="truncated|cut off"):
        download(_url(server, "short-file.bin"), tmp_path / "f.bin", progress=False)
    assert _leftovers(tmp_path) == []


def test_server_error_and_unreachable_host(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 500"):
        download(_url(server, "fail-always"), tmp_path / "f.bin", progress=False)
    with pytest.raises(DataError, match="HTTP 404"):
        download(_url(server, "missing"), tmp_path / "f.bin", progress=False)
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="cannot reach"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "f.bin", progress=False)
    assert _leftovers(tmp_path) == []


def _cifar10_archive(rng):
    """A tiny cifar-10-binary.tar.gz in the official layout, and its training labels."""
    buf = io.BytesIO()
    labels = rng.integers(0, 10, 10)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for b in range(5):
            records = np.concatenate([labels[2 * b:2 * b + 2, None], rng.integers(0, 256, (2, 3072))], 1)
            add(f"data_batch_{b + 1}.bin", records.astype(np.uint8).tobytes())
        add("test_batch.bin", np.zeros((1, 3073), np.uint8).tobytes())
        add("batches.meta.txt", "\n".join(f"c{i}" for i in range(10)).encode())
    return buf.getvalue(), labels


def test_load_dataset_downloads_from_a_mirror_once(server, tmp_path, monkeypatch):
    body, labels = _cifar10_archive(np.random.default_rng(0))
    server.files["cifar-10-binary.tar.gz"] = body
    spec = dataclasses.replace(datasets_module._CIFAR10, md5=hashlib.md5(body).hexdigest())
    monkeypatch.setattr(datasets_module, "_CIFAR10", spec)
    mirror = _url(server, "")
    cache = tmp_path / "cache"
    ds = load_dataset("cifar10", "train", cache_dir=cache, mirror=mirror, progress=False)
    np.testing.assert_array_equal(ds.y, labels)
    assert (cache / "cifar-10-binary.tar.gz").is_file() and (cache / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    del server.files["cifar-10-binary.tar.gz"]  # a second load must not need the network
    monkeypatch.setenv("NPVIT_DATA_MIRROR", mirror)
    assert len(load_dataset("cifar10", "test", cache_dir=cache, progress=False)) == 1


def test_load_dataset_with_a_wrong_archive_leaves_the_cache_clean(server, tmp_path):
    server.files["cifar-100-binary.tar.gz"] = b"an html error page served with status 200"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar100", cache_dir=tmp_path, mirror=_url(server, ""), progress=False)
    assert _leftovers(tmp_path) == []


def _tar(path, members):
    """Write a tar.gz of TarInfo/bytes pairs."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"payload"):
    return tarfile.TarInfo(name), data


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("members", [
    [_file("good/a.txt"), _file("../escaped.txt")],
    [_file("good/../../escaped.txt")],
    [_file("/tmp/npvit-absolute-escape.txt")],
    [_file("good/a.txt"), _link("good/link", "../../escaped.txt", tarfile.SYMTYPE)],
    [_link("good/abs", "/etc/passwd", tarfile.SYMTYPE)],
    [_file("good/a.txt"), _link("good/hard", "../escaped.txt", tarfile.LNKTYPE)],
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"])
def test_hostile_tar_members_are_refused_before_writing(tmp_path, members):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    target = tmp_path / "deep" / "target"
    with pytest.raises(DataError, match="refusing to extract"):
        extract(archive, target)
    assert _leftovers(target) == []
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
    assert not os.path.exists("/tmp/npvit-absolute-escape.txt")


def test_hostile_zip_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok/a.txt", b"x")
        z.writestr("../escaped.txt", b"x")
    with pytest.raises(DataError, match="refusing to extract"):
        extract(archive, tmp_path / "t")
    assert _leftovers(tmp_path / "t") == [] and not (tmp_path / "escaped.txt").exists()


def test_extract_good_archive_with_internal_link_and_corrupt_archive(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [_file("top/a.txt", b"hello"), _link("top/b.txt", "a.txt", tarfile.SYMTYPE)])
    extract(archive, tmp_path / "t")
    assert (tmp_path / "t" / "top" / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "t" / "top" / "b.txt").read_bytes() == b"hello"
    assert _leftovers(tmp_path / "t") == ["a.txt", "b.txt", "top"]
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        extract(cut, tmp_path / "t2")
    assert _leftovers(tmp_path / "t2") == []


@pytest.mark.parametrize("limits, message", [
    (dict(deadline_s=0.5, min_rate=0.001, window_s=0.3), "took longer than 0.5 s"),
    (dict(deadline_s=60, min_rate=100, window_s=0.5), "too slow"),
], ids=["deadline", "min-rate"])
def test_a_trickling_download_ends_with_a_clear_error_and_no_part_file(server, tmp_path, limits, message):
    started = time.monotonic()
    with pytest.raises(DataError, match=message):
        download(_url(server, "slow-file"), tmp_path / "f.bin", progress=False, **limits)
    assert time.monotonic() - started < 5
    assert _leftovers(tmp_path) == []


def test_download_limits_from_the_environment_are_checked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NPVIT_DOWNLOAD_DEADLINE_S", "soon")
    with pytest.raises(DataError, match="NPVIT_DOWNLOAD_DEADLINE_S='soon' is not a number"):
        download(_url(server, "slow-file"), tmp_path / "f.bin", progress=False)
    monkeypatch.setenv("NPVIT_DOWNLOAD_DEADLINE_S", "0.4")
    with pytest.raises(DataError, match="took longer"):
        download(_url(server, "slow-file"), tmp_path / "f.bin", progress=False, window_s=1.0)


@pytest.mark.parametrize("mirror", ["ftp//nowhere", "not a url", "http://"])
def test_a_malformed_mirror_is_one_line(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("NPVIT_DATA_MIRROR", mirror)
    with pytest.raises(DataError, match="NPVIT_DATA_MIRROR=.* is not a base URL") as e:
        load_dataset("cifar10", cache_dir=tmp_path, progress=False)
    assert "\n" not in str(e.value)


_CHAINS = {
    # a -> . makes a/b the root's b, and b -> .. leaves the target
    "link-chain": [_link("a", ".", tarfile.SYMTYPE), _link("a/b", "..", tarfile.SYMTYPE), _file("a/b/escaped.txt")],
    "link-then-file": [_link("up", "sub/..", tarfile.SYMTYPE), _link("sub", "..", tarfile.SYMTYPE),
                       _file("up/escaped.txt")],
    "file-through-link": [_link("x", ".", tarfile.SYMTYPE), _link("y", "x/..", tarfile.SYMTYPE),
                          _link("x/z", "..", tarfile.SYMTYPE), _file("x/z/escaped.txt")],
    "hardlink-to-symlink": [_link("d/s", "..", tarfile.SYMTYPE), _link("h", "d/s", tarfile.LNKTYPE),
                            _file("h/escaped.txt")],
}


@pytest.mark.parametrize("members", list(_CHAINS.values()), ids=list(_CHAINS))
def test_chains_of_links_are_refused_even_without_tarfile_filters(tmp_path, monkeypatch, members):
    # Python 3.10.0-3.10.11 and 3.11.0-3.11.3 have no extraction filters: the checks alone must hold
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _tar(tmp_path / "evil.tar.gz", members)
    target = tmp_path / "deep" / "target"
    with pytest.raises(DataError, match="refusing to extract"):
        extract(archive, target)
    assert _leftovers(target) == []
    assert not list(tmp_path.rglob("escaped.txt"))


def _cifar10_folder_archive(path, with_marker, rng):
    """A cifar-10-binary.tar.gz at ``path``; without the marker it holds only part of the folder."""
    body, labels = _cifar10_archive(rng)
    if not with_marker:
        with tarfile.open(fileobj=io.BytesIO(body)) as src, tarfile.open(path, "w:gz") as dst:
            for m in src.getmembers():
                if not m.name.endswith("batches.meta.txt"):
                    dst.addfile(m, src.extractfile(m))
    else:
        path.write_bytes(body)
    return labels


def test_a_bad_archive_leaves_nothing_that_blames_a_later_good_one(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    rng = np.random.default_rng(0)
    _cifar10_folder_archive(cache / "cifar-10-binary.tar.gz", False, rng)
    with pytest.raises(DataError, match="does not contain cifar-10-batches-bin/batches.meta.txt"):
        load_dataset("cifar10", cache_dir=cache, download=False, progress=False)
    assert _leftovers(cache) == ["cifar-10-binary.tar.gz"]
    (cache / "cifar-10-batches-bin").mkdir()  # what an older version left behind
    (cache / "cifar-10-batches-bin" / "data_batch_1.bin").write_bytes(b"stale")
    labels = _cifar10_folder_archive(cache / "cifar-10-binary.tar.gz", True, rng)
    np.testing.assert_array_equal(load_dataset("cifar10", cache_dir=cache, progress=False).y, labels)


def test_partial_files_of_a_killed_process_are_cleaned_on_the_next_start(tmp_path):
    cache = tmp_path / "cache"
    (cache / "fashion-mnist").mkdir(parents=True)
    old = [cache / ".cifar-10-binary.tar.gz.x1.part", cache / "fashion-mnist" / ".t.gz.x2.part",
           cache / ".cifar-10-binary.tar.gz.x3.extract"]
    for p in old[:2]:
        p.write_bytes(b"half")
    old[2].mkdir()
    fresh = cache / ".cifar-100-binary.tar.gz.x4.part"  # perhaps another process still downloading
    fresh.write_bytes(b"half")
    kept = cache / "mine.part"  # not a name npvit makes
    kept.write_bytes(b"x")
    for p in old:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    with pytest.raises(DataError):
        load_dataset("cifar10", cache_dir=cache, download=False, progress=False)
    assert not any(p.exists() for p in old) and fresh.exists() and kept.exists()

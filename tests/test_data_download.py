"""Downloads against a real HTTP server on 127.0.0.1, and safe extraction of hostile archives."""
import dataclasses
import hashlib
import http.server
import io
import os
import socket
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from npvit.data import DataError, download, extract, load_dataset
from npvit.data import datasets as datasets_module


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``: name -> bytes; names starting 'short-' lie about their length."""

    def do_GET(self):
        name = self.path.lstrip("/")
        if name.startswith("fail-"):
            self.send_error(500, "Internal Server Error")
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

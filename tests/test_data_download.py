"""LibriSpeech download from a local HTTP server: Range resume, cut connections, MD5, safe extraction."""

import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

from rnnt_plugin.data import download
from rnnt_plugin.data.librispeech import prepare


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]  # URL path -> content
    cut_next: int = 0  # this many next GETs send the headers of the whole file but only half of it
    ignore_range: bool = False
    requests: list  # (path, Range header or None)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not server.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if server.cut_next:
            server.cut_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def archives(synth_corpus):
    """Small archives in the real layout: synthetic train -> train-clean-100, dev -> dev-clean."""
    made = {}
    for split, subset in (("train", "train-clean-100"), ("dev", "dev-clean")):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(synth_corpus.data_dir / split, arcname=f"LibriSpeech/{subset}")
            info = tarfile.TarInfo("LibriSpeech/SPEAKERS.TXT")
            info.size = 6
            tar.addfile(info, io.BytesIO(b"; test"))
        made[subset] = buffer.getvalue()
    return made


@pytest.fixture
def server(archives):
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files = {f"/12/{s}.tar.gz": data for s, data in archives.items()}
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _md5(data):
    return hashlib.md5(data).hexdigest()


def _url(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}/12"


def test_published_checksums_cover_the_seven_subsets():
    assert len(download.PUBLISHED_MD5) == 7
    assert all(len(m) == 32 and int(m, 16) >= 0 for m in download.PUBLISHED_MD5.values())


def test_download_extract_prepare(server, archives, tmp_path, synth_corpus):
    checksums = {s: _md5(d) for s, d in archives.items()}
    done = download.download(tmp_path, mirror=_url(server), checksums=checksums, progress=False)
    assert set(done) == {"train-clean-100", "dev-clean"}
    root = tmp_path / "LibriSpeech"
    assert (root / ".dev-clean.complete").exists() and (root / "SPEAKERS.TXT").read_text() == "; test"
    assert not list(tmp_path.glob(".extract-*")) and not list(tmp_path.glob("archives/*.part"))
    result = prepare(tmp_path, ["train-clean-100", "dev-clean"], vocab_size=32)
    assert result.kept == {"train-clean-100": 40, "dev-clean": 10}
    texts = [json.loads(r)["text"] for r in result.manifests["dev-clean"].read_text().splitlines()]
    assert texts == [json.loads(r)["text"] for r in synth_corpus.manifests["dev"].read_text().splitlines()]
    # A second run finds the markers and downloads nothing.
    n_requests = len(server.requests)
    download.download(tmp_path, mirror=_url(server), checksums=checksums, progress=False)
    assert len(server.requests) == n_requests


def test_resume_after_cut_connections(server, archives, tmp_path):
    data = archives["dev-clean"]
    server.cut_next = 2
    path = download.fetch(f"{_url(server)}/dev-clean.tar.gz", tmp_path / "d.tar.gz", _md5(data), backoff=0,
                          progress=False)
    assert path.read_bytes() == data
    ranges = [r for _, r in server.requests]
    assert ranges == [None, f"bytes={len(data) // 2}-", f"bytes={len(data) // 2 + (len(data) - len(data) // 2) // 2}-"]


def test_resume_of_a_part_file_and_server_ignoring_range(server, archives, tmp_path):
    data = archives["dev-clean"]
    (tmp_path / "d.tar.gz.part").write_bytes(data[:1000])
    download.fetch(f"{_url(server)}/dev-clean.tar.gz", tmp_path / "d.tar.gz", _md5(data), progress=False)
    assert server.requests == [("/12/dev-clean.tar.gz", "bytes=1000-")]
    server.ignore_range = True
    (tmp_path / "e.tar.gz.part").write_bytes(b"x" * 1000)  # stale bytes: must not survive a 200 reply
    assert download.fetch(f"{_url(server)}/dev-clean.tar.gz", tmp_path / "e.tar.gz", _md5(data),
                          progress=False).read_bytes() == data


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    with pytest.raises(ValueError, match="dev-clean.tar.gz: MD5 .* does not match the expected 0+"):
        download.download(tmp_path, ["dev-clean"], _url(server), {"dev-clean": "0" * 32}, progress=False)
    assert list((tmp_path / "archives").iterdir()) == []
    assert not (tmp_path / "LibriSpeech" / "dev-clean").exists()


def test_gives_up_and_keeps_the_part_file(server, archives, tmp_path):
    server.cut_next = 10
    with pytest.raises(RuntimeError, match="gave up after 3 attempts"):
        download.fetch(f"{_url(server)}/dev-clean.tar.gz", tmp_path / "d.tar.gz", retries=2, backoff=0,
                       progress=False)
    assert (tmp_path / "d.tar.gz.part").stat().st_size > 0 and not (tmp_path / "d.tar.gz").exists()
    with pytest.raises(RuntimeError, match="HTTP 404"):
        download.fetch(f"{_url(server)}/nothing.tar.gz", tmp_path / "n.tar.gz", progress=False)


def test_broken_archive_leaves_no_subset(archives, tmp_path):
    data = archives["dev-clean"]
    (tmp_path / "bad.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        download.extract(tmp_path / "bad.tar.gz", tmp_path, "dev-clean", progress=False)
    (tmp_path / "good.tar.gz").write_bytes(data)
    with pytest.raises(ValueError, match="does not hold LibriSpeech/dev-other"):
        download.extract(tmp_path / "good.tar.gz", tmp_path, "dev-other", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LibriSpeech", "bad.tar.gz", "good.tar.gz"]
    assert list((tmp_path / "LibriSpeech").iterdir()) == []
    # A subset moved in by a run that died before its marker is redone.
    (tmp_path / "LibriSpeech" / "dev-clean").mkdir()
    (tmp_path / "LibriSpeech" / "dev-clean" / "stale").write_text("x")
    target = download.extract(tmp_path / "good.tar.gz", tmp_path, "dev-clean", progress=False)
    assert not (target / "stale").exists() and len(list(target.glob("*/*/*.flac"))) == 10


def test_command_line_checks_the_published_md5(server, tmp_path):
    with pytest.raises(SystemExit, match="download failed: dev-clean.tar.gz: MD5 .* expected 42e2234b"):
        download.main([str(tmp_path), "--subsets", "dev-clean", "--mirror", _url(server)])
    assert list((tmp_path / "archives").iterdir()) == []

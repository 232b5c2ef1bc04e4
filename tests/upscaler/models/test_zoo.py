"""Published models by name, fetched from a server these tests start on 127.0.0.1 and that serves files
the tests make: a good file (with Range requests), a wrong hash, a truncated download, a 404 and a
server that stalls."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import tiny_weights
from upscaler.cli import cli
from upscaler.errors import ModelError
from upscaler.models import zoo
from upscaler.models.catalog import resolve_model_spec


class Files:
    """What the server serves, and how: path -> (bytes, behaviour)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        # a stalling response holds until the test is over, then ends
        self.release = threading.Event()


def handler_for(files: Files):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            files.requests.append((self.path, self.headers.get("Range")))
            if self.path not in files.items:
                self.send_error(404, "Not Found")
                return
            data, how = files.items[self.path]
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if how == "stall":
                files.release.wait(30)
                return
            if how == "truncate-once":
                files.items[self.path] = (data, "whole")  # the next request gets the rest
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Files]]:
    files = Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(files))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        files.release.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def own_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "zoo"
    monkeypatch.setenv(zoo.MODELS_ENV, str(folder))
    return folder


def publish(monkeypatch, url: str, data: bytes, name: str = "tiny-published", sha256: str | None = None):
    entry = zoo.Published(
        name=name,
        arch="compact",
        scale=4,
        licence="test",
        url=url,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        size=len(data),
        description="made by the test",
    )
    monkeypatch.setattr(zoo, "ZOO", (entry,))
    return entry


def test_a_pulled_model_is_checked_kept_and_used_by_name(server, monkeypatch, tmp_path: Path) -> None:
    base, files = server
    data = tiny_weights(tmp_path, "compact").read_bytes()
    files.items["/w/tiny.safetensors"] = (data, "whole")
    publish(monkeypatch, f"{base}/w/tiny.safetensors", data)
    with pytest.raises(ModelError, match="has not been downloaded") as missing:
        resolve_model_spec("tiny-published")
    assert missing.value.hint.startswith("upscale models pull tiny-published")

    result = CliRunner().invoke(cli, ["models", "pull", "tiny-published"])
    assert result.exit_code == 0, result.output
    assert "sha256 checked" in result.output
    path, name, _ = resolve_model_spec("tiny-published")
    assert path.read_bytes() == data and name == "tiny-published"

    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "x.png")
    used = CliRunner().invoke(
        cli, ["images", str(tmp_path / "x.png"), "-m", "tiny-published", "--no-progress"]
    )
    assert used.exit_code == 0, used.output
    assert Image.open(tmp_path / "x_x4.png").size == (32, 24)
    # pulled once: a second pull reads the cache, no request
    before = len(files.requests)
    assert CliRunner().invoke(cli, ["models", "pull", "tiny-published"]).exit_code == 0
    assert len(files.requests) == before


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server, monkeypatch, own_zoo: Path) -> None:
    base, files = server
    files.items["/w/bad.pth"] = (b"not the published bytes", "whole")
    publish(monkeypatch, f"{base}/w/bad.pth", b"the published bytes")
    result = CliRunner().invoke(cli, ["models", "pull", "tiny-published"])
    assert result.exit_code == 1
    assert (
        "sha256 does not match the manifest's" in result.output and "deleted and is not used" in result.output
    )
    assert not any(own_zoo.iterdir())


def test_a_truncated_download_resumes_where_it_stopped(server, monkeypatch, own_zoo: Path) -> None:
    base, files = server
    data = bytes(range(256)) * 2000  # 512 KB: the half that arrives holds whole 64 KB chunks
    files.items["/w/big.pth"] = (data, "truncate-once")
    entry = publish(monkeypatch, f"{base}/w/big.pth", data)
    with pytest.raises(ModelError, match="stopped after") as stopped:
        zoo.pull(entry, timeout=5)
    assert "continues where it stopped" in stopped.value.hint
    kept = (own_zoo / "big.pth.part").stat().st_size
    assert 0 < kept <= len(data) // 2
    path = zoo.pull(entry, timeout=5)
    assert path.read_bytes() == data
    assert files.requests[-1] == ("/w/big.pth", f"bytes={kept}-")  # only the rest was asked for
    assert not (own_zoo / "big.pth.part").exists()


def test_a_404_and_a_stall_are_one_line_each(server, monkeypatch) -> None:
    base, files = server
    entry = publish(monkeypatch, f"{base}/w/none.pth", b"x")
    with pytest.raises(ModelError, match="HTTP 404"):
        zoo.pull(entry)
    files.items["/w/slow.pth"] = (b"y" * 100, "stall")
    slow = replace(entry, url=f"{base}/w/slow.pth", sha256=hashlib.sha256(b"y" * 100).hexdigest())
    with pytest.raises(ModelError, match=r"stalled \(no data for 1 s\)"):
        zoo.pull(slow, timeout=1)


def test_an_unknown_name_lists_the_published_ones() -> None:
    result = CliRunner().invoke(cli, ["models", "pull", "nope"])
    assert (
        result.exit_code == 1 and "no published model named 'nope'; known: RealESRGAN_x4plus" in result.output
    )


def test_the_manifest_holds_real_sources() -> None:
    for entry in zoo.ZOO:
        assert entry.url.startswith("https://github.com/") and len(entry.sha256) == 64
        assert entry.arch in ("rrdbnet", "compact") and entry.scale in (2, 4)
    names = {entry.name for entry in zoo.ZOO}
    assert {"RealESRGAN_x4plus", "RealESRGAN_x2plus", "realesr-animevideov3", "realesr-general-x4v3"} <= names

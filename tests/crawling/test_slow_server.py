"""http.total_timeout holds from request to last byte against a loopback server that drips its answer."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from crawling.config import CrawlConfig
from crawling.stage import run
from data_catalog import Workspace

DRIP_SECONDS = 0.5  # one byte every half second: the image alone would take over ten minutes


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((96, 96)).save(out, "JPEG", quality=90)
    return out.getvalue()


class DripServer(ThreadingHTTPServer):
    """Answers /robots.txt at once (404: allowed) and every other path one byte at a time."""

    daemon_threads = True

    def __init__(self, drip_headers: bool) -> None:
        super().__init__(("127.0.0.1", 0), DripHandler)
        self.drip_headers = drip_headers
        self.stopping = threading.Event()
        self.image = jpeg_bytes()
        self.gave_up: list[int] = []  # bytes sent to each client that hung up

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the crawler hanging up mid-drip is the point


class DripHandler(BaseHTTPRequestHandler):
    server: DripServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/robots.txt":
            self.send_error(404)
            return
        head = (f"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(self.server.image)}\r\n\r\n").encode()
        if self.server.drip_headers:
            payload = head + self.server.image
        else:
            self.wfile.write(head)
            self.wfile.flush()
            payload = self.server.image
        sent = 0
        try:
            for byte in payload:
                if self.server.stopping.wait(DRIP_SECONDS):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                sent += 1
        except OSError:
            self.server.gave_up.append(sent)


@pytest.fixture(params=[False, True], ids=["body-drips", "headers-drip"])
def drip_server(request: pytest.FixtureRequest) -> Iterator[DripServer]:
    server = DripServer(drip_headers=request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def test_total_timeout_ends_a_dripping_download(drip_server: DripServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{drip_server.server_address[1]}/face.jpg"
    urls = tmp_path / "urls.txt"
    urls.write_text(url + "\n")
    cfg = CrawlConfig.model_validate({
        "sources": ["urls"], "urls": str(urls), "images": {"min_side": 32},
        # read_timeout above the drip interval: only the total limit can end this download
        "http": {"connect_timeout": 2, "read_timeout": 2, "total_timeout": 2, "max_attempts": 1},
    })
    ws = Workspace(tmp_path / "ws")
    started = time.monotonic()
    manifest = run(cfg, ws)
    elapsed = time.monotonic() - started
    (row,) = ws.table("candidates").to_dict("records")
    assert (row["url"], row["status"], row["reason"]) == (url, "failed", "timeout")
    assert manifest.counts["reason_timeout"] == 1
    # The whole drip lasts len(image) / 2 s (minutes); the crawl ends a few seconds after the 2 s limit.
    assert len(drip_server.image) * DRIP_SECONDS > 300
    assert elapsed < 30

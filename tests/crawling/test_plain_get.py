"""The short way for plain GETs (crawling/plain_get.py) sends what requests sends and fails as requests fails.

A raw TCP server on loopback records the request bytes and answers per path, so the short way and requests'
own `Session.get` are compared byte for byte and outcome for outcome."""

from __future__ import annotations

import random
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from crawling.config import HttpConfig
from crawling.http import PoliteClient
from crawling.plain_get import PlainResponse, is_canonical_url

BODY = b"\xff\xd8" + bytes(range(256)) * 4


class RecordingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.requests: list[bytes] = []

    @property
    def port(self) -> int:
        return self.server_address[1]


class RecordingHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            data += chunk
        self.server.requests.append(data)  # type: ignore[attr-defined]
        path = data.split(b" ", 2)[1]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
        if path.startswith(b"/slow"):
            time.sleep(1.5)
        if path.startswith(b"/short"):  # promises more than it sends, then hangs up
            self.request.sendall(head + b"Content-Length: 5000\r\n\r\n" + BODY[:100])
            return
        if path.startswith(b"/cookie"):
            head += b"Set-Cookie: visit=1; Path=/\r\n"
        self.request.sendall(head + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(**http: object) -> PoliteClient:
    return PoliteClient(HttpConfig.model_validate({"respect_robots": False, "max_attempts": 1, **http}))


def long_way(c: PoliteClient) -> None:
    """Send every request through requests itself from now on."""
    c.session.plain.applies = lambda url: False  # type: ignore[method-assign]


ACCEPTED = [
    "http://127.0.0.1:8080/images/img00001.jpg",
    "https://cdn.example.com/a/b/c.jpeg",
    "https://i.pinimg.com/736x/0f/3a/photo.jpg?w=640&h=480&fit=crop",
    "https://example.com/path;params/x(1)~y_z-!$'*+,=:@.png",
    "https://example.com/caf%C3%A9/photo%20one.jpg",
    "https://example.com/%2F/x.jpg?q=a%26b",
    "http://example.com:65535/",
]
REJECTED = [
    "http://Example.com/x.jpg",  # host lower-cased by requests
    "HTTP://example.com/x.jpg",  # scheme lower-cased
    "http://example.com",  # no path: requests adds "/"
    "http://example.com/x.jpg?",  # empty query: requests drops "?"
    "http://example.com/x.jpg#top",  # fragment
    "http://example.com/a b.jpg",  # space: percent-encoded
    "http://example.com/caf\u00e9.jpg",  # non-ASCII path
    "http://b\u00fccher.de/x.jpg",  # IDNA host
    "http://example.com/%41.jpg",  # escape of an unreserved character: decoded
    "http://example.com/%c3%a9.jpg",  # lower-case escape: upper-cased
    "http://example.com/100%.jpg",  # bare percent
    "http://example.com/a/../b.jpg",  # dot segments: removed
    "http://example.com/a/./b.jpg",
    "http://example.com/a/..",
    "http://user:pw@example.com/x.jpg",  # userinfo
    "http://example.com:080/x.jpg",  # port with a leading zero: rewritten
    "http://example.com:70000/x.jpg",  # no such port: requests refuses
    "http://example.com/x\"y.jpg",
    "http://example.com/x{y}.jpg",
    "ftp://example.com/x.jpg",
]


def test_canonical_urls_are_exactly_what_requests_sends() -> None:
    for url in ACCEPTED:
        assert is_canonical_url(url), url
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        assert prepared.url == url
    for url in REJECTED:
        assert not is_canonical_url(url), url
    # Random URLs over a hostile alphabet: whatever is called canonical is left as it is by requests.
    rng = random.Random(7)
    alphabet = "aZ09-._~!$&'()*+,;=:@/%?#[] \"{}|\\^`<>éAF2fc3.."
    accepted = 0
    for _ in range(20000):
        path = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        url = f"http://ex.com/{path}"
        if not is_canonical_url(url):
            continue
        accepted += 1
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        assert prepared.url == url, url
    assert accepted > 500  # the check is not vacuous


def test_a_plain_get_sends_the_bytes_requests_sends(server: RecordingServer) -> None:
    url = f"http://127.0.0.1:{server.port}/images/img%20one.jpg?size=128"
    short = client()
    assert short.session.plain.applies(url)
    assert short.fetch(url).body == BODY
    long = client()
    long_way(long)
    assert long.fetch(url).body == BODY
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]
    assert server.requests[0].startswith(b"GET /images/img%20one.jpg?size=128 HTTP/1.1\r\n")


def test_a_host_alias_keeps_the_name_in_the_host_header(server: RecordingServer) -> None:
    url = "http://images.example.invalid/photo.jpg"
    aliases = {"images.example.invalid": f"127.0.0.1:{server.port}"}
    short, long = client(host_aliases=aliases), client(host_aliases=aliases)
    long_way(long)
    assert short.fetch(url).body == long.fetch(url).body == BODY
    assert server.requests[0] == server.requests[1]
    assert b"\r\nHost: images.example.invalid\r\n" in server.requests[0]


@pytest.mark.parametrize(("path", "reason"), [("/short.jpg", "truncated"), ("/slow.jpg", "timeout")])
def test_failures_are_reported_as_requests_reports_them(server: RecordingServer, path: str, reason: str) -> None:
    url = f"http://127.0.0.1:{server.port}{path}"
    short, long = client(read_timeout=0.5), client(read_timeout=0.5)
    long_way(long)
    got = [short.fetch(url), long.fetch(url)]
    assert [(r.status, r.reason) for r in got] == [("failed", reason)] * 2


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.jpg"
    short, long = client(), client()
    long_way(long)
    assert short.session.plain.applies(url)
    assert [(r.status, r.reason) for r in (short.fetch(url), long.fetch(url))] == [("failed", "connection_error")] * 2


def test_set_cookie_is_stored_and_later_requests_carry_it(server: RecordingServer) -> None:
    c = client()
    first = f"http://127.0.0.1:{server.port}/cookie.jpg"
    assert c.fetch(first).status == "ok"
    assert c.session.cookies.get("visit") == "1"
    assert not c.session.plain.applies(f"http://127.0.0.1:{server.port}/next.jpg")  # requests sends cookies
    assert c.fetch(f"http://127.0.0.1:{server.port}/next.jpg").status == "ok"
    assert b"\r\nCookie: visit=1\r\n" in server.requests[-1]


def test_proxies_and_own_headers_take_the_long_way(server: RecordingServer) -> None:
    c = client()
    url = f"http://127.0.0.1:{server.port}/x.jpg"
    assert c.session.plain.applies(url)
    c.session.env_proxies = {"http": "http://127.0.0.1:9"}  # proxy variables in the environment
    assert not c.session.plain.applies(url)
    c.session.env_proxies = {}
    c.session.proxies = {"http": "http://127.0.0.1:9"}
    assert not c.session.plain.applies(url)
    c.session.proxies = {}
    assert c.fetch(url, headers={"X-Test": "1"}).status == "ok"  # headers of its own: requests builds it
    assert b"\r\nX-Test: 1\r\n" in server.requests[-1]


def test_an_unread_body_closes_its_connection(server: RecordingServer) -> None:
    c = client()
    response = c.session.plain.send(f"http://127.0.0.1:{server.port}/x.jpg", (5.0, 5.0))
    assert isinstance(response, PlainResponse)
    assert response.status_code == 200 and response.headers.get("content-type") == "image/jpeg"
    with response:
        pass
    assert response.raw.closed

"""The polite HTTP client every crawler request goes through.

One place for: the honest user agent, per-host and global concurrency and rate limits, robots.txt (RFC
9309, cached per host), X-Robots-Tag opt-outs, scheme and opt-out checks on every redirect hop, retries
with backoff that honour Retry-After, connect/read/total timeouts, a hard cap on response size, and host
aliases (curl's --resolve: a host name connects to another address while URLs keep the name).
"""

from __future__ import annotations

import email.utils
import http.client
import io
import os
import socket
import threading
import time
import urllib.request
import urllib.robotparser
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.poolmanager import PoolManager

from crawling.config import HttpConfig, split_host_port
from crawling.plain_get import PlainGetter, PlainResponse
from data_catalog.optout import OptOutRegistry

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
DEFAULT_PORTS = {"http": 80, "https": 443}

# The monotonic time by which the response being read in this thread must be complete (None: no total limit).
# A context variable because requests gives no way to hand a value to the connection that reads the response.
_DEADLINE: ContextVar[float | None] = ContextVar("sdgan_http_deadline", default=None)


@contextmanager
def response_deadline(seconds: float) -> Iterator[float]:
    """Every response read in this block, status line to last byte, ends within `seconds` of entering it.

    A socket timeout only bounds the silence between two reads, so a server that sends a byte every half
    second would hold a worker for as long as it likes; this bounds the whole exchange."""
    deadline = time.monotonic() + seconds
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)


class _DeadlineReader(io.RawIOBase):
    """One response's socket reads, each with its timeout cut to the time left before the deadline.

    It sits under http.client's buffer, so it sees every recv (status line, headers, body, chunk sizes);
    a read that would end after the deadline raises the socket timeout urllib3 turns into ReadTimeoutError."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._raw, self._sock, self._deadline = raw, sock, deadline
        self._silence = sock.gettimeout()  # the read timeout urllib3 set: the longest silence between bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("total timeout exceeded")
        self._sock.settimeout(left if self._silence is None else min(self._silence, left))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client.HTTPResponse is given instead of the socket: it only calls makefile('rb')."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        # An unbuffered makefile counts as a reference, so the socket stays open while the body is read
        # even after http.client closes the connection of a 'Connection: close' response.
        raw = self._sock.makefile(mode, buffering=0)
        return io.BufferedReader(_DeadlineReader(raw, self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        deadline = _DEADLINE.get()
        super().__init__(sock if deadline is None else _DeadlineSocket(sock, deadline), *args, **kwargs)


class _DeadlineHTTPConnection(HTTPConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPSConnection(HTTPSConnection):
    response_class = _DeadlineResponse


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


def _use_deadline_pools(manager: PoolManager) -> None:
    """Swap urllib3's stock pools for ones whose responses honour `response_deadline` (SOCKS pools stay)."""
    stock = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}
    ours = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}
    manager.pool_classes_by_scheme = {scheme: ours[scheme] if cls is stock.get(scheme) else cls
                                      for scheme, cls in manager.pool_classes_by_scheme.items()}


class HostAliasAdapter(HTTPAdapter):
    """Connects aliased hosts to another address (curl's --resolve) while the request keeps its URL.

    The URL, the Host header, TLS server name, robots.txt per host and redirect targets all stay on the
    public name; only the TCP connection goes elsewhere. That is what lets the crawl record port-free URLs
    for the loopback emulator (`http://search-emulator.invalid/...`) whose real port changes every run.
    Keys are "host" or "host:port", values "address:port" or "address" (then the URL's port is kept).
    Its connections also honour `response_deadline`, which is how `http.total_timeout` holds.
    """

    def __init__(self, aliases: Mapping[str, str], **kwargs: Any) -> None:
        self.aliases: dict[str, tuple[str, int | None]] = {}
        for key, value in aliases.items():
            host, port = split_host_port(key)
            self.aliases[host if port is None else f"{host}:{port}"] = split_host_port(value)
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_deadline_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _use_deadline_pools(manager)
        return manager

    def target(self, url: str | None) -> tuple[str, int] | None:
        """(address, port) to connect to for `url`, or None when its host is not aliased."""
        if not self.aliases or not url:
            return None
        try:
            parts = urlsplit(url)
            host, port = (parts.hostname or "").lower(), parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
        except ValueError:
            return None
        found = self.aliases.get(f"{host}:{port}") or self.aliases.get(host)
        if found is None or port is None:
            return None
        return found[0], found[1] or port

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if (target := self.target(request.url)) is not None:
            name = host_params["host"]
            host_params["host"], host_params["port"] = target
            if host_params["scheme"] == "https":  # the certificate is checked against the public name
                pool_kwargs["server_hostname"] = name
                pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        if self.target(request.url) is not None:
            # urllib3 would write the connection's address; the server must see the name the URL has.
            request.headers["Host"] = urlsplit(request.url).netloc.rpartition("@")[2]

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Mapping[str, str] | None = None) -> requests.Response:
        if self.target(request.url) is not None:
            proxies = {}  # an alias is a direct connection: a proxy could not resolve the name
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


class CrawlSession(requests.Session):
    """A requests Session that reads the proxy and CA-bundle variables once, not on every request.

    With `trust_env`, requests walks all of os.environ twice per request to look for proxies: about 0.14 ms,
    a tenth of the CPU of fetching a small image, and the environment does not change while a crawl runs.
    When proxy variables are set, requests' own per-URL rules (no_proxy) still run on every request; ~/.netrc
    is still honoured."""

    def __init__(self) -> None:
        super().__init__()
        self.env_proxies = urllib.request.getproxies()  # what requests.utils.get_environ_proxies reads
        self._env_ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self.plain = PlainGetter(self)

    def environment_verify(self, verify: Any) -> Any:
        """`verify` with the CA-bundle variables applied as requests applies them (with `trust_env`)."""
        if self.trust_env and (verify is True or verify is None):
            return self._env_ca_bundle or verify
        return verify

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        if not self.trust_env or self.env_proxies:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        verify = self.environment_verify(verify)  # no proxies to add: only the CA bundle, as requests does
        return {"proxies": merge_setting(proxies, self.proxies), "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify), "cert": merge_setting(cert, self.cert)}


@dataclass
class Response:
    """What a fetch ended with. `body` is the payload when ok, or the start of an API's error payload."""

    status: str  # ok | failed | skipped
    reason: str | None
    url: str  # final URL after redirects
    http_status: int | None = None
    content_type: str | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 0


class _RateLimiter:
    """Spaces request starts at least 1/rate seconds apart (0 = no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Host:
    def __init__(self, connections: int, rate: float) -> None:
        self.slots = threading.BoundedSemaphore(connections)
        self.rate = _RateLimiter(rate)
        self.robots: urllib.robotparser.RobotFileParser | None = None
        self.robots_lock = threading.Lock()


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class PoliteClient:
    def __init__(self, config: HttpConfig, optout: OptOutRegistry | None = None) -> None:
        self.config = config
        self.optout = optout or OptOutRegistry()
        self.session = CrawlSession()
        adapter = HostAliasAdapter(config.host_aliases, pool_connections=64, pool_maxsize=max(config.threads, 8),
                                   max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": config.user_agent, "Accept-Encoding": "identity"})
        self._hosts: dict[str, _Host] = {}
        self._hosts_lock = threading.Lock()
        self._global_rate = _RateLimiter(config.global_rate)

    def close(self) -> None:
        self.session.close()

    # hosts and robots ---------------------------------------------------------------------------
    def _host(self, url: str) -> _Host:
        key = urlsplit(url).netloc.lower()
        with self._hosts_lock:
            if key not in self._hosts:
                self._hosts[key] = _Host(self.config.per_host_connections, self.config.per_host_rate)
            return self._hosts[key]

    @contextmanager
    def _slot(self, url: str) -> Iterator[None]:
        host = self._host(url)
        with host.slots:
            host.rate.wait()
            self._global_rate.wait()
            yield

    def robots_allows(self, url: str) -> bool:
        """RFC 9309: 4xx = no rules (allowed), 5xx or unreachable = everything disallowed."""
        host = self._host(url)
        with host.robots_lock:
            if host.robots is None:
                parts = urlsplit(url)
                parser = urllib.robotparser.RobotFileParser()
                robots_url = f"{parts.scheme}://{parts.netloc}/robots.txt"
                try:
                    with self._slot(url), response_deadline(self.config.total_timeout):
                        response = self.session.get(robots_url, timeout=self._timeouts())
                    if response.status_code >= 500:
                        parser.disallow_all = True
                    elif response.status_code >= 400:
                        parser.allow_all = True
                    else:
                        parser.parse(response.text[:500_000].splitlines())
                except requests.RequestException:
                    parser.disallow_all = True
                host.robots = parser
            return host.robots.can_fetch(self.config.robots_token, url)

    # checks ---------------------------------------------------------------------------------------
    def refusal(self, url: str, image: bool) -> tuple[str, str] | None:
        """(status, reason) if `url` must not be requested, else None. Run on every redirect hop.

        Opt-outs and robots.txt concern the images we keep, not the search pages that list them."""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return "skipped", "unsupported_scheme"
        if not urlsplit(url).hostname:
            return "failed", "invalid_url"
        if image and (reason := self.optout.blocks_url(url)):
            return "skipped", reason
        if image and self.config.respect_robots and not self.robots_allows(url):
            return "skipped", "robots_disallowed"
        return None

    def _x_robots_block(self, headers: requests.structures.CaseInsensitiveDict) -> str | None:
        tokens: set[str] = set()
        for value in headers.get("X-Robots-Tag", "").split(","):
            # Directives may be scoped to a user agent: "sdgan-pipeline: noai".
            agent, sep, directive = value.strip().rpartition(":")
            if sep and agent.strip().lower() not in ("", self.config.robots_token.lower()):
                continue
            tokens.add((directive if sep else value).strip().lower())
        blocked = tokens & {t.lower() for t in self.config.x_robots_tag_blocks}
        return f"x_robots_tag_{sorted(blocked)[0]}" if blocked else None

    def _content_type_allowed(self, content_type: str) -> bool:
        return any(content_type.startswith(prefix) for prefix in self.config.allowed_content_types)

    # fetching -------------------------------------------------------------------------------------
    def fetch(self, url: str, headers: dict[str, str] | None = None, *, image: bool = True, params: dict | None = None) -> Response:
        """GET `url` with every policy applied. `image=False` (search pages, API calls) skips robots,
        X-Robots-Tag and the content-type rule, which concern the images we keep."""
        cfg = self.config
        attempts, hops = 0, 0
        last = Response("failed", "no_attempt", url)
        while attempts < cfg.max_attempts:
            if refused := self.refusal(url, image):
                return Response(refused[0], refused[1], url, attempts=attempts)
            attempts += 1
            retry_after: float | None = None
            try:
                with self._slot(url):
                    last = self._get_once(url, headers, image, params)
            except requests.exceptions.Timeout:
                last = Response("failed", "timeout", url)
            except requests.exceptions.TooManyRedirects:
                last = Response("failed", "too_many_redirects", url)
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
                last = Response("failed", "truncated", url)
            except requests.exceptions.ConnectionError as exc:
                # requests reports a read timeout in the body as a ConnectionError wrapping urllib3's.
                timed_out = bool(exc.args) and isinstance(exc.args[0], ReadTimeoutError)
                last = Response("failed", "timeout" if timed_out else "connection_error", url)
            except requests.exceptions.RequestException as exc:
                last = Response("failed", f"request_error:{type(exc).__name__}", url)
            last.attempts = attempts
            if last.reason == "redirect":
                hops += 1
                attempts -= 1  # following a redirect is not a retry
                if hops > cfg.max_redirects:
                    return Response("failed", "too_many_redirects", url, last.http_status, attempts=attempts)
                url = last.url
                continue
            if last.status != "failed" or last.reason not in {"timeout", "connection_error", "truncated", "retryable_status"}:
                return last
            retry_after = _retry_after_seconds(last.headers.get("retry-after"))
            if retry_after is not None and retry_after > cfg.max_retry_after:
                last.reason = f"http_{last.http_status}"
                return last
            if attempts < cfg.max_attempts:
                time.sleep(retry_after if retry_after is not None else cfg.backoff_seconds * 2 ** (attempts - 1))
        if last.reason == "retryable_status":
            last.reason = f"http_{last.http_status}"
        return last

    def _timeouts(self) -> tuple[float, float]:
        """(connect, read) socket timeouts, neither longer than the total the whole response gets."""
        cfg = self.config
        return min(cfg.connect_timeout, cfg.total_timeout), min(cfg.read_timeout, cfg.total_timeout)

    def _send_get(self, url: str, headers: dict[str, str] | None,
                  params: dict | None) -> requests.Response | PlainResponse:
        """`session.get(url, headers, params, stream=True, allow_redirects=False)`; a plain GET (every image
        fetch) goes straight through the adapter's pool when that sends the same request (crawling/plain_get.py)."""
        session = self.session
        if not (params or headers) and session.plain.applies(url):
            return session.plain.send(url, self._timeouts())
        return session.get(url, headers=headers, params=params, stream=True, allow_redirects=False,
                           timeout=self._timeouts())

    def _get_once(self, url: str, headers: dict[str, str] | None, image: bool, params: dict | None) -> Response:
        with response_deadline(self.config.total_timeout) as deadline:
            return self._get_within(url, headers, image, params, deadline)

    def _get_within(self, url: str, headers: dict[str, str] | None, image: bool, params: dict | None,
                    deadline: float) -> Response:
        cfg = self.config
        with self._send_get(url, headers, params) as response:
            status = response.status_code
            kept = {k.lower(): v for k, v in response.headers.items() if k.lower() in ("retry-after", "content-type", "x-robots-tag", "location")}
            if 300 <= status < 400 and status != 304 and response.headers.get("Location"):
                return Response("failed", "redirect", urljoin(url, response.headers["Location"]), status, headers=kept)
            if status in RETRYABLE_STATUS:
                return Response("failed", "retryable_status", url, status, headers=kept)
            if status != 200:
                # API error payloads explain themselves (bad key, quota): keep a little of them.
                error_body = None if image else response.raw.read(65536, decode_content=True)
                return Response("failed", f"http_{status}", url, status, headers=kept, body=error_body)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if image and (blocked := self._x_robots_block(response.headers)):
                return Response("skipped", blocked, url, status, content_type, headers=kept)
            if image and not self._content_type_allowed(content_type):
                return Response("failed", "content_type", url, status, content_type, headers=kept)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
                return Response("failed", "too_large", url, status, content_type, headers=kept)
            chunks, size = [], 0
            for chunk in response.iter_content(chunk_size=65536):
                size += len(chunk)
                if size > cfg.max_bytes:
                    return Response("failed", "too_large", url, status, content_type, headers=kept)
                if time.monotonic() > deadline:
                    return Response("failed", "timeout", url, status, content_type, headers=kept)
                chunks.append(chunk)
            body = b"".join(chunks)
            if declared and declared.isdigit() and len(body) < int(declared):
                return Response("failed", "truncated", url, status, content_type, headers=kept)
            return Response("ok", None, url, status, content_type, body, kept)

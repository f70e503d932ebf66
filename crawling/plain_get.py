"""A plain GET sent straight through the adapter's urllib3 pool: requests' request, without requests' layers.

Every image fetch of a crawl is a plain GET (no params, no headers of its own, no cookies, no auth). For those,
preparing a requests.PreparedRequest, merging the environment and building a requests.Response cost as much
CPU as the HTTP exchange itself on a fast network, and a crawl's per-image work shares one interpreter.

`PlainGetter.send` takes the short way only when it provably sends the same bytes requests would: a URL already
in the form requests' `prepare_url` gives (so no IDNA, percent-encoding or dot-segment rewriting is skipped), a
session with no proxies, cookies, auth, hooks, client certificate or netrc file. It goes through the same
adapter's pool manager (host aliases, TLS verification, the response deadline) with the session's headers, and
raises the requests exceptions `HTTPAdapter.send` and `Response.iter_content` would. Anything else returns None
and the caller uses requests itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.utils import NETRC_FILES
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    InvalidHeader,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout

if TYPE_CHECKING:  # crawling.http builds the getter inside its session
    from crawling.http import CrawlSession

__all__ = ["PlainGetter", "PlainResponse", "is_canonical_url"]

# Lower-case http(s) scheme and host, an optional port without leading zeros, a path, an optional non-empty query;
# every character one that requests' requote_uri and urllib3's parse_url leave as it is; no fragment, no userinfo.
_CANONICAL = re.compile(r"https?://[a-z0-9][a-z0-9.-]*(?::(?P<port>[1-9][0-9]{0,4}))?"
                        r"(?P<path>/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*)(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]+)?")
_DOT_SEGMENT = re.compile(r"/\.\.?(?:[/?]|\Z)")
_PERCENT = re.compile(r"%(.?.?)")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX_UPPER = frozenset("0123456789ABCDEF")


def is_canonical_url(url: str) -> bool:
    """True when requests would send `url` exactly as written (its `prepare_url` returns it unchanged).

    Percent escapes must be upper-case (urllib3 upper-cases them) and must not stand for an unreserved character
    (requests decodes those); the port must fit in 16 bits (else requests refuses the URL)."""
    match = _CANONICAL.fullmatch(url)
    if match is None or _DOT_SEGMENT.search(url, match.start("path")) is not None:
        return False
    if "%" in url:
        for escape in _PERCENT.findall(url):
            if len(escape) != 2 or not set(escape) <= _HEX_UPPER or chr(int(escape, 16)) in _UNRESERVED:
                return False
    return match["port"] is None or int(match["port"]) <= 65535


def _netrc_file_exists() -> bool:
    """Whether requests would find a netrc file (its get_netrc_auth looks on every request)."""
    named = os.environ.get("NETRC")
    locations = (named,) if named is not None else tuple(f"~/{name}" for name in NETRC_FILES)
    return any(os.path.exists(os.path.expanduser(location)) for location in locations)


class PlainResponse:
    """What a fetch reads of a requests.Response (status_code, headers, raw, iter_content, closing), over
    urllib3's response, with requests' exceptions for a body that breaks off."""

    def __init__(self, raw: BaseHTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # urllib3's HTTPHeaderDict: case-insensitive, repeated headers joined
        self._consumed = False

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from self.raw.stream(chunk_size, decode_content=True)
        except ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        self._consumed = True

    def close(self) -> None:
        """As requests.Response.close: an unread body closes the connection; the connection goes back."""
        if not self._consumed:
            self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> PlainResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainGetter:
    """Plain GETs for one CrawlSession (see the module docstring for when it applies); the session's proxy and
    CA-bundle environment, read once, is the session's."""

    def __init__(self, session: CrawlSession) -> None:
        self.session = session
        self._netrc = _netrc_file_exists()
        self._pool_keys: dict[tuple[HTTPAdapter, str, Any], tuple[dict[str, Any], dict[str, Any]]] = {}

    def applies(self, url: str) -> bool:
        session = self.session
        if session.cookies or session.auth is not None or session.params or session.proxies or session.cert:
            return False
        if any(session.hooks.values()) or (session.trust_env and (session.env_proxies or self._netrc)):
            return False
        return is_canonical_url(url)

    def send(self, url: str, timeout: tuple[float, float]) -> PlainResponse:
        """GET `url` (which `applies`) without following redirects; the body is left to stream."""
        session = self.session
        adapter = session.get_adapter(url)
        if not isinstance(adapter, HTTPAdapter):
            raise TypeError(f"plain GETs need an HTTPAdapter, {url} is mounted on {type(adapter).__name__}")
        verify = session.environment_verify(session.verify)
        path_start = url.index("/", 8)
        key = (adapter, url[:path_start], verify)  # the pool's TLS settings follow `verify`
        try:
            if (attributes := self._pool_keys.get(key)) is None:
                probe = requests.PreparedRequest()
                probe.url = url
                attributes = adapter.build_connection_pool_key_attributes(probe, verify, None)
                self._pool_keys[key] = attributes
            host_params, pool_kwargs = attributes
            pool = adapter.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)
        except LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc) from exc
        adapter.cert_verify(pool, url, verify, None)
        headers = dict(session.headers)
        target = getattr(adapter, "target", None)
        if target is not None and target(url) is not None:  # a host alias: the server sees the URL's name
            headers["Host"] = url[url.index("//") + 2:path_start]
        raw = self._urlopen(pool, adapter, url[path_start:], headers, timeout)
        if "set-cookie" in raw.headers:  # stored as Session.send would (then the session's next GETs take the long way)
            prepared = requests.PreparedRequest()
            prepared.prepare(method="GET", url=url, headers=session.headers, hooks={})
            extract_cookies_to_jar(session.cookies, prepared, raw)
        return PlainResponse(raw)

    @staticmethod
    def _urlopen(pool: Any, adapter: HTTPAdapter, path: str, headers: dict[str, str],
                 timeout: tuple[float, float]) -> BaseHTTPResponse:
        """urllib3's urlopen with HTTPAdapter.send's arguments, its exceptions turned into the ones send raises."""
        try:
            return pool.urlopen(method="GET", url=path, body=None, headers=headers, redirect=False,
                                assert_same_host=False, preload_content=False, decode_content=False,
                                retries=adapter.max_retries, timeout=Timeout(connect=timeout[0], read=timeout[1]),
                                chunked=False)
        except (ProtocolError, OSError) as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except MaxRetryError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
                raise requests.exceptions.ConnectTimeout(exc) from exc
            if isinstance(reason, ResponseError):
                raise requests.exceptions.RetryError(exc) from exc
            if isinstance(reason, ProxyError):
                raise requests.exceptions.ProxyError(exc) from exc
            if isinstance(reason, SSLError):
                raise requests.exceptions.SSLError(exc) from exc
            raise requests.exceptions.ConnectionError(exc) from exc
        except ClosedPoolError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except ProxyError as exc:
            raise requests.exceptions.ProxyError(exc) from exc
        except SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        except ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(exc) from exc
        except InvalidHeader as exc:
            raise requests.exceptions.InvalidHeader(exc) from exc

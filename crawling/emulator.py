"""A loopback HTTP server that plays image search engines and image hosts, for tests and the offline demo.

The crawler talks to real search engines in production; tests and the demo cannot (no network, no keys,
no rate limits to respect), so this module serves a folder of images as search results on 127.0.0.1 in
the five formats the crawler reads, with the same paging rules:

* Google web image search, ``/search?q&ijn&start&tbm=isch``: an HTML page whose second ``<script>``
  holds an ``AF_initDataCallback({... data: [...]})`` blob with 100 results a page. icrawler 0.6.10's
  ``GoogleParser`` finds image URLs in it with the regex ``http[^\\[]*?.(?:jpg|png|bmp)``, so every
  other string in the blob (titles, source pages, thumbnails) is written so that the regex cannot match
  it, and stray ``jpg``/``png``/``bmp`` inside an image URL are ``\\u``-escaped (icrawler unescapes them).
  Consequence: a corpus file named ``*.jpeg`` is served but the regex cannot see its URL.
* Naver web image search as JSON, ``/p/c/image/search.naver?where=image&json_type=6&query&start&display``
  (``items[].originalUrl``). This is modelled on the public ``s.search.naver.com`` JSON endpoint; its
  shape could not be checked against the live service from the offline build machine.
* Naver web image search as HTML, ``/search.naver?where=image&query&start``: ``img._image`` tags with
  ``data-source`` (the original) and ``data-link`` (the source page).
* Google Custom Search JSON API, ``/customsearch/v1?key&cx&q&searchType=image&start&num``: needs key and
  cx, at most 10 results a call and 100 in all, Google's error shape on bad arguments.
* Naver Open API, ``/v1/search/image?query&display&start``: needs the ``X-Naver-Client-Id`` and
  ``X-Naver-Client-Secret`` headers; Naver's error codes (024, SE02, SE03).

Images are served from ``/images/<name>``, a "source page" per image from ``/pages/<stem>.html``, and a
``/robots.txt`` that disallows ``/private/``. Fault injection: every mode in ``FAULT_MODES`` adds one
result per query whose URL (``/fault/<mode>/<name>``) misbehaves in that way, so the downloader's
handling of each failure can be tested end to end; ``search_fault`` makes the search endpoints
themselves fail. Every request is logged in ``requests_log`` so tests can assert what a client fetched.

Every URL the emulator hands out starts with ``url``: the real ``http://127.0.0.1:<port>`` by default (what a
plain HTTP client can fetch), or ``public_url`` when given, a stable name such as
``http://search-emulator.invalid`` that a client reaches through ``host_aliases`` (the crawl's HTTP client maps
the name to the real address). The crawl's built-in emulator uses the stable name so that the URLs it records
do not depend on which port happened to be free.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import html
import io
import json
import logging
import random
import re
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from PIL import Image

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
FAULT_MODES: tuple[str, ...] = (
    "slow", "timeout", "error500", "flaky503", "rate429", "not-found", "reset", "truncated", "wrong-type",
    "html", "html-as-image", "corrupt", "tiny", "bomb", "redirect", "redirect-loop", "huge", "noai",
    "noimageai", "robots",
)
SEARCH_FAULTS: tuple[str, ...] = ("rate429-once", "error500")
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
ROBOTS_TXT = "User-agent: *\nDisallow: /private/\n"
GOOGLE_PAGE_SIZE = 100
CSE_MAX_RESULTS = 100
CHUNK = 64 * 1024
BOMB_SIDE = 30000
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
SEARCH_PATHS = {
    "google": "/search",
    "naver": "/p/c/image/search.naver",
    "naver-html": "/search.naver",
    "google-api": "/customsearch/v1",
    "naver-api": "/v1/search/image",
}


@dataclass(frozen=True)
class CorpusImage:
    """One served image; size is read once at start so search pages need no disk access."""

    name: str
    path: Path
    title: str
    keywords: tuple[str, ...] | None  # None: no index.json, the image matches every query
    licence: str | None
    width: int
    height: int
    byte_size: int

    @property
    def mime(self) -> str:
        return IMAGE_TYPES.get(Path(self.name).suffix.lower(), "application/octet-stream")

    def matches(self, query: str) -> bool:
        """A keyword inside the query, or the query inside a keyword (both casefolded)."""
        if self.keywords is None:
            return True
        q = query.casefold()
        return any(k.casefold() in q or q in k.casefold() for k in self.keywords)


def load_corpus(corpus_dir: Path) -> list[CorpusImage]:
    """Every .jpg/.jpeg/.png in the folder, with index.json metadata when the folder has one."""
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"emulator corpus folder not found: {corpus_dir}")
    index_path = corpus_dir / "index.json"
    index: dict[str, dict[str, Any]] | None = None
    if index_path.is_file():
        entries = json.loads(index_path.read_text(encoding="utf-8")).get("images", [])
        index = {str(e["file"]): e for e in entries if isinstance(e, dict) and "file" in e}
    images = []
    for path in sorted(corpus_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_TYPES:
            continue
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
        entry = index.get(path.name) if index is not None else None
        keywords = None if index is None else tuple(str(k) for k in (entry or {}).get("keywords", []))
        images.append(CorpusImage(
            name=path.name, path=path, title=str((entry or {}).get("title") or path.stem), keywords=keywords,
            licence=(entry or {}).get("licence"), width=width, height=height, byte_size=path.stat().st_size,
        ))
    return images


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A valid 30000 x 30000 1-bit PNG of ~110 KB: tiny on the wire, 900 megapixels once decoded.

    Built by hand with zlib because Pillow would need the whole bitmap in memory; cached per process.
    """
    row_bytes = (BOMB_SIDE + 7) // 8
    compressor = zlib.compressobj(9)
    parts = []
    pattern = bytes([0xAA] * 64) + bytes(row_bytes - 64)  # a few set pixels so it is not all blank
    parts.append(compressor.compress((b"\0" + pattern) * 8))
    blank_rows = (b"\0" + bytes(row_bytes)) * 1000
    remaining = BOMB_SIDE - 8
    while remaining > 0:
        n = min(1000, remaining)
        parts.append(compressor.compress(blank_rows if n == 1000 else (b"\0" + bytes(row_bytes)) * n))
        remaining -= n
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=1)
def tiny_jpeg() -> bytes:
    """A valid 8 x 8 JPEG: decodes fine but is below any sensible minimum size."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 80)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _js_string(value: str) -> str:
    """JSON string with no raw `http`, `<`, `>` or `&`, so icrawler's regex and the HTML parser skip it."""
    text = json.dumps(value, ensure_ascii=True)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("http", "\\u0068ttp")):
        text = text.replace(raw, escaped)
    return text


def _js_image_url(url: str) -> str:
    """JSON string of an image URL whose only regex-visible jpg/png/bmp is the final extension."""
    text = json.dumps(url, ensure_ascii=True)
    head, tail = text[:-4], text[-4:]  # tail: 'jpg"' (the extension and closing quote)
    head = re.sub(r"jpg|png|bmp", lambda m: f"\\u{ord(m.group(0)[0]):04x}{m.group(0)[1:]}", head)
    return head + tail


def google_web_page(results: list[dict[str, Any]], start: int) -> str:
    """Google's result page shape: a URL-free first script, then one AF_initDataCallback blob."""
    entries = ",".join(
        f'[1,["data:thumb",90,120],[{_js_image_url(r["url"])},{r["height"]},{r["width"]}],'
        f'{_js_string(r["title"])},{_js_string(r["page_url"])}]'
        for r in results[start:start + GOOGLE_PAGE_SIZE]
    )
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Google Images</title>"
        "<script>var _g={kEI:'x'};</script></head><body><div id=\"islrg\"></div>"
        f"<script nonce=\"e\">AF_initDataCallback({{key: 'ds:1', hash: '2', data:[null,[{entries}]]}});</script>"
        "</body></html>"
    )


def naver_html_page(query: str, results: list[dict[str, Any]]) -> str:
    """Naver's HTML result page: one img._image per result, original in data-source."""
    esc = functools.partial(html.escape, quote=True)
    tiles = "\n".join(
        f'<div class="tile_item"><img class="_image _listImage" src="{esc(r["url"])}" '
        f'data-source="{esc(r["url"])}" alt="{esc(r["title"])}" data-link="{esc(r["page_url"])}"></div>'
        for r in results
    )
    return (f"<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{esc(query)} : 네이버 이미지검색</title></head>"
            f"<body><div class=\"photo_group\">\n{tiles}\n</div></body></html>")


def source_page(image_url: str, title: str) -> str:
    """The tiny HTML page that 'hosts' an image (the result's page_url)."""
    esc = functools.partial(html.escape, quote=True)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title></head>"
            f"<body><h1>{esc(title)}</h1><img src=\"{esc(image_url)}\" alt=\"{esc(title)}\"></body></html>")


def _int_param(params: dict[str, list[str]], name: str, default: int) -> int | None:
    """An integer query parameter; None when present but not an integer (callers decide if that is an error)."""
    values = params.get(name)
    if not values or values[0] == "":
        return default
    try:
        return int(values[0])
    except ValueError:
        return None


def _param(params: dict[str, list[str]], name: str) -> str:
    values = params.get(name)
    return values[0] if values else ""


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that does not print tracebacks when a client goes away.

    socketserver listens with a backlog of 5: with more concurrent clients than that (a crawl runs 16
    download threads, each opening a connection per image since responses end the connection) the kernel
    drops SYNs, and each dropped one stalls its client for the 1 s SYN retransmit timeout."""

    daemon_threads = True
    request_queue_size = 128
    emulator: SearchEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError) or self.emulator.stopping:
            return  # a client that hung up (reset, timeout, broken pipe) is expected, not an error
        logger.exception("emulator: error while serving %s", client_address)


class SearchEmulator:
    """Serves a folder of images as search results (five formats) plus faulty image URLs on 127.0.0.1."""

    def __init__(self, corpus_dir: str | Path, port: int = 0, faults: Iterable[str] = (), *,
                 slow_seconds: float = 1.0, hang_seconds: float = 30.0, huge_bytes: int = 1 << 30,
                 search_fault: str | None = None, naver_web_page_size: int = 50,
                 public_url: str | None = None) -> None:
        self.corpus_dir = Path(corpus_dir)
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query:
                raise ValueError(f"public_url must be a plain http://host[:port] base, got {public_url!r}")
        self.public_url = public_url.rstrip("/") if public_url is not None else None
        self.faults = tuple(faults)
        unknown = [f for f in self.faults if f not in FAULT_MODES]
        if unknown:
            raise ValueError(f"unknown fault modes {unknown}; known: {', '.join(FAULT_MODES)}")
        if search_fault is not None and search_fault not in SEARCH_FAULTS:
            raise ValueError(f"unknown search_fault {search_fault!r}; known: {', '.join(SEARCH_FAULTS)}")
        self.port = port
        self.slow_seconds = slow_seconds
        self.hang_seconds = hang_seconds
        self.huge_bytes = huge_bytes
        self.search_fault = search_fault
        self.naver_web_page_size = naver_web_page_size
        self.images = load_corpus(self.corpus_dir)
        self.by_name = {im.name: im for im in self.images}
        self.by_stem: dict[str, CorpusImage] = {}
        for im in self.images:
            self.by_stem.setdefault(Path(im.name).stem, im)
        self.requests_log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> SearchEmulator:
        """Bind 127.0.0.1 and serve from a daemon thread; returns self for chaining."""
        if self._server is not None:
            return self
        bomb_png(), tiny_jpeg()  # build the cached fault bodies before the first request needs them
        self._stop_event.clear()
        server = _Server((HOST, self.port), _Handler)
        server.emulator = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"search-emulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly: sleeping handlers watch the stop event, and handler threads are daemons."""
        if self._server is None:
            return
        self._stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._server = None
        self._thread = None

    def __enter__(self) -> SearchEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; False when it did (the handler should give up)."""
        return not self._stop_event.wait(max(0.0, seconds))

    # ----- addresses -----------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); host is always 127.0.0.1."""
        if self._server is None:
            raise RuntimeError("SearchEmulator is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def local_url(self) -> str:
        """The real loopback base, http://127.0.0.1:<port>."""
        if self._server is None and not self.port:
            raise RuntimeError("SearchEmulator has no port yet: call start() first")
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The base of every URL handed out: `public_url` when given, else the real loopback base."""
        return self.public_url if self.public_url is not None else self.local_url

    @property
    def host_aliases(self) -> dict[str, str]:
        """What a client needs to reach `url` (`http.host_aliases`, curl's --resolve); empty without public_url."""
        if self.public_url is None:
            return {}
        parts = urlsplit(self.public_url)
        return {f"{parts.hostname}:{parts.port or 80}": f"{HOST}:{self.address[1]}"}

    @property
    def endpoints(self) -> dict[str, str]:
        return {engine: self.url + path for engine, path in SEARCH_PATHS.items()}

    def image_url(self, name: str) -> str:
        return f"{self.url}/images/{quote(name)}"

    def fault_url(self, mode: str, name: str) -> str:
        if mode == "robots":
            return f"{self.url}/private/{quote(name)}"
        return f"{self.url}/fault/{mode}/{quote(name)}"

    def page_url(self, name: str) -> str:
        return f"{self.url}/pages/{quote(Path(name).stem)}.html"

    # ----- search --------------------------------------------------------------------------------------
    def results(self, query: str) -> list[dict[str, Any]]:
        """Matching images in a per-query deterministic order, then one result per configured fault."""
        def rank(im: CorpusImage) -> str:
            return hashlib.sha1(f"{query}\0{im.name}".encode()).hexdigest()

        matching = sorted((im for im in self.images if im.matches(query)), key=rank)
        found = [self._result(im, self.image_url(im.name), im.title) for im in matching]
        if matching:
            first = matching[0]
            found += [self._result(first, self.fault_url(mode, first.name), f"{first.title} ({mode})")
                      for mode in FAULT_MODES if mode in self.faults]
        return found

    def _result(self, image: CorpusImage, url: str, title: str) -> dict[str, Any]:
        return {"url": url, "page_url": self.page_url(image.name), "title": title,
                "width": image.width, "height": image.height, "name": image.name}

    # ----- bookkeeping ---------------------------------------------------------------------------------
    def log_request(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._log_lock:
            self.requests_log.append({"method": method, "path": path, "headers": headers, "time": time.time()})

    def hits(self, path_prefix: str) -> int:
        """How many logged requests asked for a path starting with path_prefix."""
        with self._log_lock:
            return sum(1 for r in self.requests_log if r["path"].startswith(path_prefix))

    def bump(self, key: str) -> int:
        """Count one more request for a stateful fault; returns the new count (1 on the first)."""
        with self._count_lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]


Response = tuple[int, bytes, str, dict[str, str]]  # status, body, content type, extra headers
JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=utf-8"


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), JSON_TYPE, headers or {}


def _google_error(message: str) -> Response:
    return _json(400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})


def _naver_error(status: int, code: str, message: str) -> Response:
    return _json(status, {"errorMessage": message, "errorCode": code})


def google_web(emu: SearchEmulator, params: dict[str, list[str]], headers: Any) -> Response:
    page = _int_param(params, "ijn", 0) or 0
    start = _int_param(params, "start", page * GOOGLE_PAGE_SIZE)
    start = max(0, start if start is not None else page * GOOGLE_PAGE_SIZE)
    body = google_web_page(emu.results(_param(params, "q")), start)
    return 200, body.encode("utf-8"), HTML_TYPE, {}


def naver_web_json(emu: SearchEmulator, params: dict[str, list[str]], headers: Any) -> Response:
    start = max(1, _int_param(params, "start", 1) or 1)
    display = max(1, _int_param(params, "display", emu.naver_web_page_size) or emu.naver_web_page_size)
    results = emu.results(_param(params, "query"))
    items = [{"originalUrl": r["url"], "title": r["title"], "link": r["page_url"], "thumb": r["url"],
              "orgWidth": r["width"], "orgHeight": r["height"]} for r in results[start - 1:start - 1 + display]]
    return _json(200, {"total": len(results), "start": start, "display": len(items), "items": items})


def naver_web_html(emu: SearchEmulator, params: dict[str, list[str]], headers: Any) -> Response:
    start = max(1, _int_param(params, "start", 1) or 1)
    query = _param(params, "query")
    page = emu.results(query)[start - 1:start - 1 + emu.naver_web_page_size]
    return 200, naver_html_page(query, page).encode("utf-8"), HTML_TYPE, {}


def google_cse(emu: SearchEmulator, params: dict[str, list[str]], headers: Any) -> Response:
    """Google Custom Search JSON API: argument checks in the order Google reports them, then one page."""
    if not _param(params, "key") or not _param(params, "cx"):
        return _google_error("Request is missing a valid API key or cx (search engine ID).")
    if _param(params, "searchType") != "image":
        return _google_error("Invalid value for searchType: this emulator serves only searchType=image.")
    query = _param(params, "q")
    if not query:
        return _google_error("Missing required parameter: q.")
    num, start = _int_param(params, "num", 10), _int_param(params, "start", 1)
    if num is None or not 1 <= num <= 10:
        return _google_error("Invalid value for num: it must be between 1 and 10.")
    if start is None or start < 1 or start + num - 1 > CSE_MAX_RESULTS:
        return _google_error("Request contains an invalid argument: start + num - 1 must not exceed 100.")
    results = emu.results(query)
    page = results[start - 1:start - 1 + num]
    queries: dict[str, Any] = {"request": [{"startIndex": start, "count": len(page), "searchTerms": query}]}
    if start + num <= len(results) and start + num <= CSE_MAX_RESULTS:
        queries["nextPage"] = [{"startIndex": start + num}]
    payload: dict[str, Any] = {"kind": "customsearch#search", "queries": queries,
                               "searchInformation": {"totalResults": str(len(results))}}
    if page:
        payload["items"] = [_cse_item(emu, r) for r in page]
    return _json(200, payload)


def _cse_item(emu: SearchEmulator, r: dict[str, Any]) -> dict[str, Any]:
    image = emu.by_name[r["name"]]
    return {"kind": "customsearch#result", "title": r["title"], "link": r["url"],
            "displayLink": urlsplit(emu.url).netloc, "mime": image.mime, "fileFormat": image.mime,
            "image": {"contextLink": r["page_url"], "height": r["height"], "width": r["width"],
                      "byteSize": image.byte_size, "thumbnailLink": r["url"],
                      "thumbnailHeight": min(r["height"], 150), "thumbnailWidth": min(r["width"], 150)}}


def naver_api(emu: SearchEmulator, params: dict[str, list[str]], headers: Any) -> Response:
    """Naver Open API image search: client id/secret headers, display 1..100, start 1..1000."""
    if not headers.get("X-Naver-Client-Id") or not headers.get("X-Naver-Client-Secret"):
        return _naver_error(401, "024", "Not Exist Client ID : Authentication failed. (인증에 실패했습니다.)")
    query = _param(params, "query")
    if not query:
        return _naver_error(400, "SE01", "Incorrect query request (잘못된 쿼리요청입니다.)")
    display, start = _int_param(params, "display", 10), _int_param(params, "start", 1)
    if display is None or not 1 <= display <= 100:
        return _naver_error(400, "SE02", "Invalid display value (부적절한 display 값입니다.)")
    if start is None or not 1 <= start <= 1000:
        return _naver_error(400, "SE03", "Invalid start value (부적절한 start 값입니다.)")
    results = emu.results(query)
    items = [{"title": r["title"], "link": r["url"], "thumbnail": r["url"], "sizeheight": str(r["height"]),
              "sizewidth": str(r["width"])} for r in results[start - 1:start - 1 + display]]
    return _json(200, {"lastBuildDate": formatdate(localtime=True), "total": len(results), "start": start,
                       "display": len(items), "items": items})


SEARCH_HANDLERS: dict[str, Callable[[SearchEmulator, dict[str, list[str]], Any], Response]] = {
    SEARCH_PATHS["google"]: google_web,
    SEARCH_PATHS["naver"]: naver_web_json,
    SEARCH_PATHS["naver-html"]: naver_web_html,
    SEARCH_PATHS["google-api"]: google_cse,
    SEARCH_PATHS["naver-api"]: naver_api,
}
HTML_BODY = b"<!doctype html><html><head><title>Not an image</title></head><body><p>Sign in to view.</p></body></html>"


class _Handler(BaseHTTPRequestHandler):
    """Routes one request; HTTP/1.0 so every response ends the connection (simple, and faults stay clean)."""

    server: _Server
    server_version = "SearchEmulator/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silent: tests and the demo keep their own log (requests_log)."""

    @property
    def emu(self) -> SearchEmulator:
        return self.server.emulator

    def do_GET(self) -> None:  # noqa: N802 - the base class's naming
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        self.emu.log_request(self.command, self.path, dict(self.headers.items()))
        try:
            self._route()
        except DISCONNECTS:
            self.close_connection = True

    def _route(self) -> None:
        split = urlsplit(self.path)
        path, params = split.path, parse_qs(split.query, keep_blank_values=True)
        if path in SEARCH_HANDLERS:
            self._search(path, params)
        elif path == "/robots.txt":
            self._send(200, ROBOTS_TXT.encode(), "text/plain; charset=utf-8")
        elif path.startswith(("/images/", "/private/")):
            self._serve_image(unquote(path.split("/", 2)[2]))
        elif path.startswith("/pages/") and path.endswith(".html"):
            self._serve_page(unquote(path[len("/pages/"):-len(".html")]))
        elif path.startswith("/fault/") and path.count("/") == 3:
            _, _, mode, name = path.split("/")
            self._fault(mode, unquote(name))
        else:
            self._not_found()

    # ----- responses -----------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain; charset=utf-8",
              headers: dict[str, str] | None = None, length: int | None = None) -> None:
        """Status, headers and body (no body for HEAD); length overrides Content-Length for faults."""
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _not_found(self) -> None:
        self._send(404, b"not found\n")

    def _redirect(self, location: str) -> None:
        self._send(302, b"", headers={"Location": location})

    def _search(self, path: str, params: dict[str, list[str]]) -> None:
        fault = self.emu.search_fault
        if fault == "error500":
            self._send(500, b"internal server error\n")
            return
        if fault == "rate429-once" and self.emu.bump(f"search:{path}") == 1:
            self._send(429, b"too many requests\n", headers={"Retry-After": "1"})
            return
        status, body, ctype, headers = SEARCH_HANDLERS[path](self.emu, params, self.headers)
        self._send(status, body, ctype, headers)

    def _image(self, name: str) -> tuple[CorpusImage, bytes] | None:
        image = self.emu.by_name.get(name)
        if image is None or not image.path.is_file():
            return None
        return image, image.path.read_bytes()

    def _serve_image(self, name: str, headers: dict[str, str] | None = None) -> None:
        found = self._image(name)
        if found is None:
            self._not_found()
            return
        image, data = found
        self._send(200, data, image.mime, headers)

    def _serve_page(self, stem: str) -> None:
        image = self.emu.by_stem.get(stem)
        if image is None:
            self._not_found()
            return
        self._send(200, source_page(self.emu.image_url(image.name), image.title).encode("utf-8"), HTML_TYPE)

    # ----- faults --------------------------------------------------------------------------------------
    def _fault(self, mode: str, name: str) -> None:
        """Misbehave as the mode says; unknown modes and names are 404s."""
        handler = FAULT_HANDLERS.get(mode)
        found = self._image(name)
        if handler is None or found is None:
            self._not_found()
            return
        handler(self, found[0], found[1])

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST: the client sees a reset, not a response."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the makefile() reference would otherwise keep the socket open
        self.connection.close()

    def fault_slow(self, image: CorpusImage, data: bytes) -> None:
        if self.emu.sleep(self.emu.slow_seconds):
            self._send(200, data, image.mime)

    def fault_timeout(self, image: CorpusImage, data: bytes) -> None:
        if self.emu.sleep(self.emu.hang_seconds):
            self._send(200, data, image.mime)
        else:
            self.close_connection = True  # stopping: hang up without a response

    def fault_error500(self, image: CorpusImage, data: bytes) -> None:
        self._send(500, b"internal server error\n")

    def fault_flaky503(self, image: CorpusImage, data: bytes) -> None:
        if self.emu.bump(f"fault:{self.path}") == 1:
            self._send(503, b"service unavailable\n")
        else:
            self._send(200, data, image.mime)

    def fault_rate429(self, image: CorpusImage, data: bytes) -> None:
        if self.emu.bump(f"fault:{self.path}") == 1:
            self._send(429, b"too many requests\n", headers={"Retry-After": "1"})
        else:
            self._send(200, data, image.mime)

    def fault_not_found(self, image: CorpusImage, data: bytes) -> None:
        self._not_found()

    def fault_reset(self, image: CorpusImage, data: bytes) -> None:
        self._reset()

    def fault_truncated(self, image: CorpusImage, data: bytes) -> None:
        self.close_connection = True
        self._send(200, data[:len(data) // 2], image.mime, length=len(data))
        self.wfile.flush()

    def fault_wrong_type(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, data, "text/plain")

    def fault_html(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, HTML_BODY, HTML_TYPE)

    def fault_html_as_image(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, HTML_BODY, "image/jpeg")

    def fault_corrupt(self, image: CorpusImage, data: bytes) -> None:
        noise = random.Random(f"corrupt:{image.name}").randbytes(2000)
        self._send(200, data[:200] + noise, image.mime)

    def fault_tiny(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, tiny_jpeg(), "image/jpeg")

    def fault_bomb(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, bomb_png(), "image/png")

    def fault_redirect(self, image: CorpusImage, data: bytes) -> None:
        self._redirect(self.emu.image_url(image.name))

    def fault_redirect_loop(self, image: CorpusImage, data: bytes) -> None:
        self._redirect(self.emu.fault_url("redirect-loop-b", image.name))

    def fault_redirect_loop_b(self, image: CorpusImage, data: bytes) -> None:
        self._redirect(self.emu.fault_url("redirect-loop", image.name))

    def fault_huge(self, image: CorpusImage, data: bytes) -> None:
        """Promise huge_bytes and stream zeros until the client hangs up, all is sent, or we stop."""
        self.close_connection = True
        self._send(200, b"", "image/jpeg", length=self.emu.huge_bytes)
        if self.command == "HEAD":
            return
        zeros, left = bytes(CHUNK), self.emu.huge_bytes
        while left > 0 and not self.emu.stopping:
            self.wfile.write(zeros[:min(CHUNK, left)])
            left -= CHUNK

    def fault_noai(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, data, image.mime, {"X-Robots-Tag": "noai"})

    def fault_noimageai(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, data, image.mime, {"X-Robots-Tag": "noimageai"})

    def fault_robots(self, image: CorpusImage, data: bytes) -> None:
        self._send(200, data, image.mime)  # results point at /private/<name>; this path is a convenience


FAULT_HANDLERS: dict[str, Callable[[_Handler, CorpusImage, bytes], None]] = {
    mode: getattr(_Handler, "fault_" + mode.replace("-", "_")) for mode in FAULT_MODES + ("redirect-loop-b",)
}


def parse_faults(text: str) -> tuple[str, ...]:
    """CLI fault list: 'all', or comma-separated mode names (validated)."""
    if text.strip() == "all":
        return FAULT_MODES
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in FAULT_MODES]
    if unknown:
        raise ValueError(f"unknown fault modes {unknown}; known: all, {', '.join(FAULT_MODES)}")
    return modes


def main(argv: list[str] | None = None) -> int:
    """Serve a corpus folder on 127.0.0.1 until Ctrl-C, printing the endpoints to point a crawl at."""
    parser = argparse.ArgumentParser(prog="python -m crawling.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="folder of .jpg/.jpeg/.png images (+ optional index.json)")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--faults", default="", help="comma-separated fault modes, or 'all'")
    parser.add_argument("--search-fault", choices=SEARCH_FAULTS, default=None, help="make search endpoints fail")
    args = parser.parse_args(argv)
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    with SearchEmulator(args.corpus, args.port, faults, search_fault=args.search_fault) as emulator:
        print(f"search emulator serving {len(emulator.images)} images from {args.corpus} at {emulator.url}")
        for engine, endpoint in emulator.endpoints.items():
            print(f"  {engine:<11} {endpoint}")
        if faults:
            print(f"  faults: {', '.join(faults)}")
            keywords = {k for im in emulator.images for k in (im.keywords or ("",))}
            longest = max((len(emulator.results(k)) for k in keywords), default=len(faults))
            print(f"  a query's {len(faults)} fault results come after its matching images: set the crawl's "
                  f"max_per_query to at least matching + {len(faults)} ({longest} reaches them for every keyword "
                  "of this corpus)")
        print("Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())

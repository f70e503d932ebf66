"""The loopback search emulator: five search formats with paging, the image host, and every fault mode."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from icrawler.builtin.google import GoogleParser
from icrawler.utils import Signal
from PIL import Image

from crawling.emulator import FAULT_MODES, SearchEmulator, bomb_png, parse_faults

FILES = {"alpha.jpg": (96, 64), "beta.png": (80, 80), "png-shot.jpg": (64, 72), "gamma photo.jpg": (70, 50)}
TIMEOUT = (2, 5)


def image_bytes(size: tuple[int, int], fmt: str, seed: int) -> bytes:
    image = Image.effect_noise(size, 30 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write_images(folder: Path, files: dict[str, tuple[int, int]]) -> None:
    for seed, (name, size) in enumerate(files.items()):
        (folder / name).write_bytes(image_bytes(size, "PNG" if name.endswith(".png") else "JPEG", seed))


@pytest.fixture(scope="module")
def plain_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No index.json: every image matches every query. One stem holds 'png', one name a space."""
    folder = tmp_path_factory.mktemp("emulator-corpus")
    write_images(folder, FILES)
    return folder


@pytest.fixture(scope="module")
def indexed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("emulator-indexed")
    write_images(folder, {"mask1.jpg": (64, 64), "mask2.jpg": (64, 64), "plain1.png": (64, 64),
                          "unlisted.jpg": (64, 64)})
    entries = [
        # a title that looks like an image URL must not leak into icrawler's regex
        {"file": "mask1.jpg", "keywords": ["face mask", "마스크"], "title": "마스크 사진 http://x.test/a.jpg",
         "licence": "cc-by"},
        {"file": "mask2.jpg", "keywords": ["Face Mask"], "title": "mask two"},
        {"file": "plain1.png", "keywords": ["face portrait", "얼굴 사진"]},
        {"file": "missing.jpg", "keywords": ["face mask"]},  # listed but absent: ignored
    ]
    (folder / "index.json").write_text(json.dumps({"images": entries}, ensure_ascii=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def emu(plain_corpus: Path) -> Iterator[SearchEmulator]:
    with SearchEmulator(plain_corpus, faults=FAULT_MODES, slow_seconds=0.3, hang_seconds=2,
                        naver_web_page_size=3) as emulator:
        yield emulator


def google_parse(response: requests.Response) -> list[str] | None:
    """icrawler's real GoogleParser; None means it found nothing (its known behaviour)."""
    found = GoogleParser(thread_num=1, signal=Signal(), session=None).parse(response)
    return None if found is None else [task["file_url"] for task in found]


def google_blob(text: str) -> list:
    """The data list of the AF_initDataCallback script, parsed as JSON."""
    match = re.search(r"AF_initDataCallback\(\{key: 'ds:1', hash: '2', data:(.*)\}\);</script>", text)
    assert match
    return json.loads(match.group(1))[1]


def get(url: str, **kwargs) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    return requests.get(url, **kwargs)


# ----- server basics ------------------------------------------------------------------------------------
def test_binds_loopback_only(emu: SearchEmulator) -> None:
    host, port = emu.address
    assert host == "127.0.0.1" and port > 0
    assert emu.url == f"http://127.0.0.1:{port}"
    assert emu.endpoints == {
        "google": emu.url + "/search", "naver": emu.url + "/p/c/image/search.naver",
        "naver-html": emu.url + "/search.naver", "google-api": emu.url + "/customsearch/v1",
        "naver-api": emu.url + "/v1/search/image",
    }


def test_listen_backlog_holds_a_crawls_threads() -> None:
    """socketserver's default backlog (5) drops SYNs from 16 download threads, each then stalls 1 s."""
    from crawling.emulator import _Server

    assert _Server.request_queue_size >= 64


def test_rejects_unknown_modes(plain_corpus: Path) -> None:
    with pytest.raises(ValueError):
        SearchEmulator(plain_corpus, faults=["nope"])
    with pytest.raises(ValueError):
        SearchEmulator(plain_corpus, search_fault="nope")
    assert parse_faults("all") == FAULT_MODES
    assert parse_faults("slow, bomb") == ("slow", "bomb")
    with pytest.raises(ValueError):
        parse_faults("slow,nope")


def test_results_order_and_fault_results(emu: SearchEmulator) -> None:
    results = emu.results("cats")
    real, faults = results[:len(FILES)], results[len(FILES):]
    assert sorted(r["name"] for r in real) == sorted(FILES)
    assert emu.results("cats") == results  # deterministic
    for r in real:
        assert r["url"] == emu.image_url(r["name"]) and r["page_url"] == emu.page_url(r["name"])
        assert (r["width"], r["height"]) == FILES[r["name"]] and r["title"] == Path(r["name"]).stem
    assert [r["url"] for r in faults] == [emu.fault_url(m, real[0]["name"]) for m in FAULT_MODES]
    assert all(r["url"].endswith((".jpg", ".png")) for r in results)


def test_image_host_pages_and_robots(emu: SearchEmulator, plain_corpus: Path) -> None:
    response = get(emu.image_url("gamma photo.jpg"))
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/jpeg"
    assert response.content == (plain_corpus / "gamma photo.jpg").read_bytes()
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert get(emu.image_url("beta.png")).headers["Content-Type"] == "image/png"
    head = requests.head(emu.image_url("alpha.jpg"), timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == (plain_corpus / "alpha.jpg").stat().st_size
    assert get(emu.image_url("absent.jpg")).status_code == 404
    assert get(emu.url + "/images/..%2Findex.json").status_code == 404
    page = get(emu.page_url("alpha.jpg"))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert f'src="{emu.image_url("alpha.jpg")}"' in page.text
    robots = get(emu.url + "/robots.txt")
    assert robots.text == "User-agent: *\nDisallow: /private/\n"
    assert robots.headers["Content-Type"].startswith("text/plain")
    private = get(emu.fault_url("robots", "alpha.jpg"))
    assert urlsplit(private.url).path == "/private/alpha.jpg"
    assert private.content == (plain_corpus / "alpha.jpg").read_bytes()


# ----- search formats -------------------------------------------------------------------------------------
def test_google_web_page_parses_with_icrawler(emu: SearchEmulator) -> None:
    query = "얼굴 사진"
    expected = emu.results(query)
    response = get(emu.endpoints["google"], params={"q": query, "ijn": 0, "start": 0, "tbm": "isch", "tbs": ""})
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert google_parse(response) == [r["url"] for r in expected]
    blob = google_blob(response.text)
    assert [(e[2][1], e[2][2], e[3], e[4]) for e in blob] == [
        (r["height"], r["width"], r["title"], r["page_url"]) for r in expected]
    assert response.text.isascii()  # non-ASCII is \u-escaped, as Google does
    second = get(emu.endpoints["google"], params={"q": query, "ijn": 0, "start": 3, "tbm": "isch"})
    assert google_parse(second) == [r["url"] for r in expected[3:]]
    beyond = get(emu.endpoints["google"], params={"q": query, "ijn": 1, "start": 100, "tbm": "isch"})
    assert google_blob(beyond.text) == [] and google_parse(beyond) is None


def test_google_web_escapes_lookalike_titles(indexed_corpus: Path) -> None:
    with SearchEmulator(indexed_corpus, faults=["slow"]) as emulator:
        response = get(emulator.endpoints["google"], params={"q": "마스크 face mask", "start": 0, "tbm": "isch"})
        expected = emulator.results("마스크 face mask")
        assert len(expected) == 3  # mask1, mask2 and one fault result
        assert google_parse(response) == [r["url"] for r in expected]
        assert "마스크 사진 http://x.test/a.jpg" in [e[3] for e in google_blob(response.text)]


def test_naver_web_json_pages(emu: SearchEmulator) -> None:
    query = "마스크"
    expected = emu.results(query)
    seen = []
    for start in range(1, len(expected) + 1, 5):
        response = get(emu.endpoints["naver"], params={"where": "image", "json_type": 6, "query": query,
                                                       "start": start, "display": 5})
        assert response.headers["Content-Type"].startswith("application/json")
        payload = response.json()
        assert payload["total"] == len(expected) and payload["start"] == start
        assert payload["display"] == len(payload["items"])
        seen += payload["items"]
    assert [i["originalUrl"] for i in seen] == [r["url"] for r in expected]
    assert [(i["link"], i["title"], i["orgWidth"], i["orgHeight"], i["thumb"]) for i in seen] == [
        (r["page_url"], r["title"], r["width"], r["height"], r["url"]) for r in expected]
    default = get(emu.endpoints["naver"], params={"where": "image", "query": query, "start": 1}).json()
    assert default["display"] == 3  # naver_web_page_size


class ImgCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def test_naver_web_html_pages(indexed_corpus: Path) -> None:
    with SearchEmulator(indexed_corpus, naver_web_page_size=1) as emulator:
        expected = emulator.results("face mask 마스크")
        assert len(expected) == 2
        for start, result in enumerate(expected, start=1):
            response = get(emulator.endpoints["naver-html"], params={"where": "image", "query": "face mask 마스크",
                                                                      "start": start})
            collector = ImgCollector()
            collector.feed(response.text)
            assert collector.images == [{"class": "_image _listImage", "src": result["url"],
                                         "data-source": result["url"], "alt": result["title"],
                                         "data-link": result["page_url"]}]
        empty = get(emulator.endpoints["naver-html"], params={"query": "face mask 마스크", "start": 3})
        assert "<img" not in empty.text


def test_google_custom_search_api(emu: SearchEmulator) -> None:
    url, expected = emu.endpoints["google-api"], emu.results("mask")
    base = {"key": "k", "cx": "c", "q": "mask", "searchType": "image"}
    seen, start = [], 1
    while start:
        payload = get(url, params={**base, "start": start, "num": 10}).json()
        assert payload["kind"] == "customsearch#search"
        assert payload["searchInformation"]["totalResults"] == str(len(expected))
        request = payload["queries"]["request"][0]
        assert (request["startIndex"], request["searchTerms"]) == (start, "mask")
        assert request["count"] == len(payload["items"])
        seen += payload["items"]
        start = payload["queries"].get("nextPage", [{}])[0].get("startIndex")
    assert [i["link"] for i in seen] == [r["url"] for r in expected]
    item = seen[0]
    name = expected[0]["name"]
    assert item["displayLink"] == emu.url.removeprefix("http://")
    assert item["mime"] == item["fileFormat"] == ("image/png" if name.endswith(".png") else "image/jpeg")
    assert item["image"]["contextLink"] == expected[0]["page_url"]
    assert (item["image"]["width"], item["image"]["height"]) == FILES[name]
    assert item["image"]["byteSize"] > 0 and item["image"]["thumbnailLink"] == expected[0]["url"]
    default = get(url, params=base).json()
    assert len(default["items"]) == 10 and default["queries"]["nextPage"] == [{"startIndex": 11}]
    past = get(url, params={**base, "start": 91, "num": 10}).json()
    assert "items" not in past and "nextPage" not in past["queries"]


@pytest.mark.parametrize("params", [
    {"cx": "c"}, {"key": "k"}, {"key": "", "cx": "c"}, {"key": "k", "cx": "c", "num": 0},
    {"key": "k", "cx": "c", "num": 11}, {"key": "k", "cx": "c", "num": "x"}, {"key": "k", "cx": "c", "start": 0},
    {"key": "k", "cx": "c", "start": 92, "num": 10}, {"key": "k", "cx": "c", "searchType": "web"},
])
def test_google_custom_search_argument_errors(emu: SearchEmulator, params: dict) -> None:
    response = get(emu.endpoints["google-api"], params={"q": "mask", "searchType": "image", **params})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and error["message"]


def test_naver_open_api(emu: SearchEmulator) -> None:
    url, expected = emu.endpoints["naver-api"], emu.results("강아지")
    auth = {"X-Naver-Client-Id": "id", "X-Naver-Client-Secret": "secret"}
    first = get(url, params={"query": "강아지", "display": 4, "start": 1, "sort": "sim", "filter": "all"},
                headers=auth).json()
    rest = get(url, params={"query": "강아지", "display": 100, "start": 5}, headers=auth).json()
    assert first["total"] == rest["total"] == len(expected)
    assert (first["start"], first["display"], rest["start"], rest["display"]) == (1, 4, 5, len(expected) - 4)
    items = first["items"] + rest["items"]
    assert [(i["link"], i["thumbnail"], i["title"]) for i in items] == [
        (r["url"], r["url"], r["title"]) for r in expected]
    assert items[0]["sizewidth"] == str(expected[0]["width"]) and items[0]["sizeheight"] == str(expected[0]["height"])
    assert re.match(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$", first["lastBuildDate"])
    assert len(get(url, params={"query": "강아지"}, headers=auth).json()["items"]) == 10  # display default


@pytest.mark.parametrize("headers,params,status,code", [
    ({}, {}, 401, "024"),
    ({"X-Naver-Client-Id": "id"}, {}, 401, "024"),
    ({"X-Naver-Client-Id": "id", "X-Naver-Client-Secret": ""}, {}, 401, "024"),
    (None, {"display": 0}, 400, "SE02"),
    (None, {"display": 101}, 400, "SE02"),
    (None, {"start": 0}, 400, "SE03"),
    (None, {"start": 1001}, 400, "SE03"),
])
def test_naver_open_api_errors(emu: SearchEmulator, headers: dict | None, params: dict, status: int,
                               code: str) -> None:
    headers = {"X-Naver-Client-Id": "id", "X-Naver-Client-Secret": "s"} if headers is None else headers
    response = get(emu.endpoints["naver-api"], params={"query": "q", **params}, headers=headers)
    assert response.status_code == status
    assert response.json()["errorCode"] == code
    if code == "024":
        assert response.json()["errorMessage"].startswith("Not Exist Client ID : Authentication failed.")


# ----- index.json ----------------------------------------------------------------------------------------
def test_index_keyword_matching(indexed_corpus: Path) -> None:
    with SearchEmulator(indexed_corpus, faults=["tiny", "bomb"]) as emulator:
        def names(query: str) -> list[str]:
            return [r["name"] for r in emulator.results(query)]

        assert sorted(names("blue FACE MASK photo")[:2]) == ["mask1.jpg", "mask2.jpg"]  # keyword in query
        assert sorted(names("mask")[:2]) == ["mask1.jpg", "mask2.jpg"]  # query in keyword
        assert names("마스크") == ["mask1.jpg"] * 3  # one match, then the two fault results
        assert names("얼굴 사진") == ["plain1.png"] * 3
        assert names("zebra") == []  # no match: no fault results either
        results = emulator.results("마스크")
        assert results[0]["title"] == "마스크 사진 http://x.test/a.jpg"
        assert [r["url"] for r in results[1:]] == [emulator.fault_url(m, "mask1.jpg") for m in ("tiny", "bomb")]
        assert emulator.results("face portrait")[0]["title"] == "plain1"  # title defaults to the stem
        assert "unlisted.jpg" not in names("") and "missing.jpg" not in names("face mask")
        assert get(emulator.image_url("unlisted.jpg")).status_code == 200  # hosted, just never a result
        payload = get(emulator.endpoints["naver"], params={"query": "zebra"}).json()
        assert payload == {"total": 0, "start": 1, "display": 0, "items": []}


# ----- fault modes -----------------------------------------------------------------------------------------
def raw_get(url: str) -> tuple[bytes, dict[str, str], bytes]:
    """Status line, headers and whatever body arrived before the server closed: no client-side checks."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {k.decode().lower(): v.decode().strip() for k, _, v in (line.partition(b":") for line in lines)}
    return status, headers, body


NAME = "alpha.jpg"


def check_slow(emu: SearchEmulator, url: str, data: bytes) -> None:
    started = time.monotonic()
    assert get(url).content == data
    assert time.monotonic() - started >= 0.3


def check_timeout(emu: SearchEmulator, url: str, data: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(url, timeout=(1, 0.5))
    assert time.monotonic() - started < 1.5


def check_status(status: int, retry_after: bool = False) -> Callable[[SearchEmulator, str, bytes], None]:
    def check(emu: SearchEmulator, url: str, data: bytes) -> None:
        response = get(url)
        assert response.status_code == status
        assert (response.headers.get("Retry-After") == "1") == retry_after
    return check


def check_first_fails(status: int, retry_after: bool) -> Callable[[SearchEmulator, str, bytes], None]:
    def check(emu: SearchEmulator, url: str, data: bytes) -> None:
        check_status(status, retry_after)(emu, url, data)
        again = get(url)
        assert again.status_code == 200 and again.content == data
        assert get(url).status_code == 200
    return check


def check_reset(emu: SearchEmulator, url: str, data: bytes) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        get(url)


def check_truncated(emu: SearchEmulator, url: str, data: bytes) -> None:
    status, headers, body = raw_get(url)
    assert b" 200 " in status and int(headers["content-length"]) == len(data)
    assert body == data[:len(data) // 2]
    with pytest.raises(requests.exceptions.RequestException):  # ChunkedEncodingError: IncompleteRead
        get(url)


def check_wrong_type(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    assert response.headers["Content-Type"] == "text/plain" and response.content == data


def check_html(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<!doctype html>")


def check_html_as_image(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    assert response.headers["Content-Type"] == "image/jpeg" and response.content.startswith(b"<!doctype html>")


def check_corrupt(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    body = response.content
    assert response.headers["Content-Type"] == "image/jpeg" and len(body) == 2200
    assert body[:200] == data[:200] and body != data and get(url).content == body  # seeded
    with pytest.raises(Exception):
        with Image.open(io.BytesIO(body)) as image:
            image.load()


def check_tiny(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    assert response.headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        assert (image.format, image.size) == ("JPEG", (8, 8))


def check_bomb(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    body = response.content
    assert response.headers["Content-Type"] == "image/png" and len(body) < 300_000
    assert struct.unpack(">II", body[16:24]) == (30000, 30000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(body))
    offset = 8
    while offset < len(body):  # every chunk's CRC is right, so it is a valid PNG, not a broken one
        (length,) = struct.unpack(">I", body[offset:offset + 4])
        tag_and_data = body[offset + 4:offset + 8 + length]
        assert struct.unpack(">I", body[offset + 8 + length:offset + 12 + length])[0] == zlib.crc32(tag_and_data)
        offset += 12 + length
    assert offset == len(body) and body.endswith(b"IEND\xaeB`\x82")


def check_redirect(emu: SearchEmulator, url: str, data: bytes) -> None:
    response = get(url)
    assert [r.status_code for r in response.history] == [302]
    assert response.url == emu.image_url(NAME) and response.content == data


def check_redirect_loop(emu: SearchEmulator, url: str, data: bytes) -> None:
    first = get(url, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"] == emu.fault_url("redirect-loop-b", NAME)
    back = get(first.headers["Location"], allow_redirects=False)
    assert back.headers["Location"] == url
    with pytest.raises(requests.exceptions.TooManyRedirects):
        get(url)


def check_huge(emu: SearchEmulator, url: str, data: bytes) -> None:
    with get(url, stream=True) as response:
        assert response.headers["Content-Length"] == str(1 << 30)
        assert response.headers["Content-Type"] == "image/jpeg"
        received = 0
        for chunk in response.iter_content(65536):
            assert not chunk.strip(b"\0")
            received += len(chunk)
            if received >= 4 << 20:
                break
    assert received >= 4 << 20


def check_x_robots(value: str) -> Callable[[SearchEmulator, str, bytes], None]:
    def check(emu: SearchEmulator, url: str, data: bytes) -> None:
        response = get(url)
        assert response.headers["X-Robots-Tag"] == value and response.content == data
    return check


def check_robots(emu: SearchEmulator, url: str, data: bytes) -> None:
    assert urlsplit(url).path == f"/private/{NAME}"
    assert "Disallow: /private/" in get(emu.url + "/robots.txt").text
    assert get(url).content == data


FAULT_CHECKS: dict[str, Callable[[SearchEmulator, str, bytes], None]] = {
    "slow": check_slow, "timeout": check_timeout, "error500": check_status(500),
    "flaky503": check_first_fails(503, False), "rate429": check_first_fails(429, True),
    "not-found": check_status(404), "reset": check_reset, "truncated": check_truncated,
    "wrong-type": check_wrong_type, "html": check_html, "html-as-image": check_html_as_image,
    "corrupt": check_corrupt, "tiny": check_tiny, "bomb": check_bomb, "redirect": check_redirect,
    "redirect-loop": check_redirect_loop, "huge": check_huge, "noai": check_x_robots("noai"),
    "noimageai": check_x_robots("noimageai"), "robots": check_robots,
}


def test_every_fault_mode_has_a_check() -> None:
    assert tuple(FAULT_CHECKS) == FAULT_MODES


@pytest.mark.parametrize("mode", FAULT_MODES)
def test_fault_mode(emu: SearchEmulator, plain_corpus: Path, mode: str) -> None:
    FAULT_CHECKS[mode](emu, emu.fault_url(mode, NAME), (plain_corpus / NAME).read_bytes())


def test_huge_sends_exactly_huge_bytes(plain_corpus: Path) -> None:
    with SearchEmulator(plain_corpus, huge_bytes=200_000) as emulator:
        response = get(emulator.fault_url("huge", NAME))
        assert response.content == bytes(200_000)


def test_bomb_is_a_decodable_png_when_limits_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(io.BytesIO(bomb_png())) as image:
        assert (image.size, image.mode) == ((30000, 30000), "1")
        image.verify()


def test_fault_urls_for_unknown_names_or_modes_are_404(emu: SearchEmulator) -> None:
    assert get(emu.fault_url("slow", "absent.jpg")).status_code == 404
    assert get(emu.fault_url("no-such-mode", NAME)).status_code == 404


# ----- search faults, request log, shutdown ------------------------------------------------------------------
def test_search_fault_rate429_once(plain_corpus: Path) -> None:
    auth = {"X-Naver-Client-Id": "id", "X-Naver-Client-Secret": "s"}
    with SearchEmulator(plain_corpus, search_fault="rate429-once") as emulator:
        for engine, params in [("google", {"q": "x"}), ("naver", {"query": "x"}), ("naver-html", {"query": "x"}),
                               ("google-api", {"q": "x", "key": "k", "cx": "c", "searchType": "image"}),
                               ("naver-api", {"query": "x"})]:
            first = get(emulator.endpoints[engine], params=params, headers=auth)
            assert (first.status_code, first.headers["Retry-After"]) == (429, "1"), engine
            assert get(emulator.endpoints[engine], params=params, headers=auth).status_code == 200, engine
        assert get(emulator.image_url(NAME)).status_code == 200


def test_search_fault_error500(plain_corpus: Path) -> None:
    with SearchEmulator(plain_corpus, search_fault="error500") as emulator:
        for endpoint in emulator.endpoints.values():
            assert get(endpoint, params={"q": "x", "query": "x"}).status_code == 500
            assert get(endpoint, params={"q": "x", "query": "x"}).status_code == 500
        assert get(emulator.image_url(NAME)).status_code == 200


def test_requests_log_and_hits(plain_corpus: Path) -> None:
    with SearchEmulator(plain_corpus) as emulator:
        before = time.time()
        get(emulator.endpoints["google"], params={"q": "마스크"}, headers={"X-Probe": "1"})
        requests.head(emulator.image_url(NAME), timeout=TIMEOUT)
        get(emulator.image_url("beta.png"))
        get(emulator.image_url("absent.jpg"))
        log = emulator.requests_log
        assert [r["method"] for r in log] == ["GET", "HEAD", "GET", "GET"]
        assert log[0]["path"].startswith("/search?q=%EB%A7%88") and log[0]["headers"]["X-Probe"] == "1"
        assert all(r["time"] >= before for r in log)
        assert emulator.hits("/images/") == 3 and emulator.hits(f"/images/{NAME}") == 1
        assert emulator.hits("/search") == 1 and emulator.hits("/private/") == 0


def test_requests_log_is_thread_safe(plain_corpus: Path) -> None:
    with SearchEmulator(plain_corpus) as emulator:
        threads = [threading.Thread(target=lambda: [get(emulator.image_url(NAME)) for _ in range(5)])
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert emulator.hits("/images/") == 40


def test_stop_is_prompt_while_a_request_hangs(plain_corpus: Path) -> None:
    emulator = SearchEmulator(plain_corpus, hang_seconds=30).start()
    outcome: list[BaseException | int] = []

    def client() -> None:
        try:
            outcome.append(requests.get(emulator.fault_url("timeout", NAME), timeout=(2, 20)).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while emulator.hits("/fault/timeout/") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    started = time.monotonic()
    emulator.stop()
    assert time.monotonic() - started < 3
    thread.join(timeout=3)
    assert not thread.is_alive()  # the hung handler gave up and hung up
    assert isinstance(outcome[0], requests.exceptions.ConnectionError)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(emulator.url + "/robots.txt", timeout=1)

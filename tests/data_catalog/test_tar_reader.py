from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
import webdataset as wds

from data_catalog.loader import MegnDataset, read_samples
from data_catalog.shards import ShardSample, write_shards
from data_catalog.tar_reader import TarFormatError, group_samples, iter_members, shard_samples


def _shards(folder: Path, count: int = 12, max_count: int = 5) -> list[Path]:
    samples = (ShardSample(f"k{i:04d}", bytes([i]) * (100 + 37 * i), "jpg", {"i": i}, i % 4) for i in range(count))
    write_shards(samples, folder, "train", max_count=max_count)
    return sorted(folder.glob("megn-train-*.tar"))


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info in extra:
            archive.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _stock(urls: list[str]) -> list[dict]:
    """What webdataset's own tar reader makes of the same shards."""
    return list(wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()))


def test_shards_read_exactly_as_webdatasets_tarfile_reader_reads_them(tmp_path: Path) -> None:
    urls = [str(p) for p in _shards(tmp_path)]
    ours = list(shard_samples({"url": url} for url in urls))
    assert len(ours) == 12
    assert ours == _stock(urls)  # keys, urls, every member's bytes
    assert [s.key for s in read_samples(urls)] == [f"k{i:04d}" for i in range(12)]


def test_gnu_long_names_pax_paths_and_non_files(tmp_path: Path) -> None:
    deep = "d/" * 60 + "sample"  # past ustar's 100 + 155 bytes: needs a GNU or pax extension
    directory = tarfile.TarInfo("d")
    directory.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("a.link")
    link.type, link.linkname = tarfile.SYMTYPE, "x" * 150
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        data = _tar([(f"{deep}.jpg", b"image"), (f"{deep}.cls", b"2"), ("ä/ö.txt", b"text")], fmt, [directory, link])
        members = list(iter_members(io.BytesIO(data), "mem"))
        assert members == [(f"{deep}.jpg", b"image"), (f"{deep}.cls", b"2"), ("ä/ö.txt", b"text")], fmt
        (path := tmp_path / f"fmt{fmt}.tar").write_bytes(data)
        assert list(shard_samples([{"url": str(path)}])) == _stock([str(path)])


def test_ustar_prefix_field_carries_the_front_of_long_paths(tmp_path: Path) -> None:
    path = "p" * 90 + "/" + "q" * 60 + "/sample.jpg"  # 157 bytes: split into ustar's prefix and name fields
    data = _tar([(path, b"x")], tarfile.USTAR_FORMAT)
    assert data[345:350] == b"ppppp"  # the prefix field is in use
    assert list(iter_members(io.BytesIO(data), "mem")) == [(path, b"x")]


def test_grouping_follows_webdataset_key_rules(tmp_path: Path) -> None:
    members = [("a/x.seg.png", b"1"), ("a/x.cls", b"2"), ("noext", b"3"), ("b.JPG", b"4"), (".hidden", b"5"),
               ("__meta.x__", b"6")]
    samples = list(group_samples(members, "u"))
    assert samples == [{"__key__": "a/x", "__url__": "u", "seg.png": b"1", "cls": b"2"},
                       {"__key__": "b", "__url__": "u", "jpg": b"4"}]
    (path := tmp_path / "mixed.tar").write_bytes(_tar(members))  # webdataset reads the same members alike
    assert [{**s, "__url__": "u"} for s in shard_samples([{"url": str(path)}])] == [
        {**s, "__url__": "u"} for s in _stock([str(path)])] == samples
    with pytest.raises(TarFormatError, match="two 'jpg' members"):
        list(group_samples([("k.jpg", b"1"), ("k.jpg", b"2")], "u"))


@pytest.mark.parametrize("cut", ["mid-header", "mid-member", "member-boundary"])
def test_truncated_shards_are_an_error_naming_the_shard_and_offset(tmp_path: Path, cut: str) -> None:
    (shard, *_) = _shards(tmp_path)
    data = shard.read_bytes()
    boundary = 512 + 512 * ((100 + 511) // 512)  # header + the first member's padded body
    at = {"mid-header": boundary + 100, "mid-member": boundary + 512 + 10, "member-boundary": boundary}[cut]
    shard.write_bytes(data[:at])
    with pytest.raises(TarFormatError, match=rf"{shard.name} at byte \d+: truncated"):
        list(shard_samples([{"url": str(shard)}]))
    with pytest.raises(TarFormatError, match="truncated"):
        list(MegnDataset([shard], rank=0, world_size=1))


def test_a_corrupt_header_fails_its_checksum(tmp_path: Path) -> None:
    (shard, *_) = _shards(tmp_path)
    data = bytearray(shard.read_bytes())
    data[1024 + 3] ^= 0x20  # a name byte of the second header
    shard.write_bytes(bytes(data))
    with pytest.raises(TarFormatError, match="at byte 1024: header checksum"):
        list(shard_samples([{"url": str(shard)}]))
    with pytest.raises(TarFormatError, match="checksum"):
        list(iter_members(io.BytesIO(b"not a tar file".ljust(512, b"x")), "junk"))


def test_pipe_urls_stream_through_webdatasets_gopen(tmp_path: Path) -> None:
    shards = _shards(tmp_path)
    piped = list(shard_samples({"url": f"pipe:cat {p}"} for p in shards))
    assert [s["__key__"] for s in piped] == [f"k{i:04d}" for i in range(12)]
    assert [s["jpg"] for s in piped] == [s["jpg"] for s in _stock([str(p) for p in shards])]


def test_http_urls_stream_from_a_real_server_and_a_dead_url_is_an_error(tmp_path: Path) -> None:
    shards = _shards(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        fetched = list(shard_samples({"url": f"{base}/{p.name}"} for p in shards))
        assert [s["jpg"] for s in fetched] == [s["jpg"] for s in _stock([str(p) for p in shards])]
        with pytest.raises(OSError, match="exit 22"):  # curl -f on a 404
            list(shard_samples([{"url": f"{base}/megn-train-999999.tar"}]))
    finally:
        server.shutdown()
        server.server_close()

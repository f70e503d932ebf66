from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from crawling.validate import check_image
from data_catalog.optout import OptOutRegistry

FORMATS = {"JPEG", "PNG"}


def jpeg(size: tuple[int, int] = (80, 60), quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


NOISY = jpeg((200, 200))


def test_registry_entries_and_matching(tmp_path: Path) -> None:
    path = tmp_path / "optout.txt"
    sha = "ab" * 32
    path.write_text(f"# takedowns\nhttps://Example.com/a.jpg\ndomain:private.org\nphotos.example.net\nsha256:{sha}\n")
    registry = OptOutRegistry.load(path)
    assert registry.blocks_url("https://example.com/a.jpg#frag") == "opt_out_url"
    assert registry.blocks_url("https://example.com/b.jpg") is None
    assert registry.blocks_url("http://cdn.private.org/x.png") == "opt_out_domain"
    assert registry.blocks_url("http://notprivate.org/x.png") is None
    assert registry.blocks_url("http://photos.example.net/y") == "opt_out_domain"
    assert registry.blocks_sha256(sha) == "opt_out_sha256"
    assert OptOutRegistry.load(None).blocks_url("http://x/y") is None
    with pytest.raises(FileNotFoundError):
        OptOutRegistry.load(tmp_path / "missing.txt")
    path.write_text("sha256:nothex\n")
    with pytest.raises(ValueError, match=r"optout\.txt:1"):
        OptOutRegistry.load(path)


def test_valid_image_passes_with_its_size() -> None:
    check = check_image(jpeg(), min_side=32, max_pixels=10**6, allowed_formats=FORMATS)
    assert check.ok and (check.format, check.width, check.height, check.ext) == ("JPEG", 80, 60, "jpg")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html><body>not an image</body></html>", "not_an_image"),
        (NOISY[: len(NOISY) // 2], "truncated_image"),
        (jpeg((20, 20)), "too_small"),
        (jpeg((2000, 1000)), "decompression_bomb"),  # over max_pixels below
    ],
)
def test_rejections_name_their_reason(data: bytes, reason: str) -> None:
    assert check_image(data, min_side=32, max_pixels=10**6, allowed_formats=FORMATS).reason == reason


def test_corrupt_body_and_disallowed_format() -> None:
    good = jpeg((200, 200))
    corrupt = good[:300] + bytes(range(256)) * 8
    assert not check_image(corrupt, 32, 10**6, FORMATS).ok
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "GIF")
    assert check_image(buffer.getvalue(), 32, 10**6, FORMATS).reason == "format_gif"


def test_real_decompression_bomb_is_refused_before_decoding() -> None:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 400 Mpx, a few KB compressed
    assert check_image(buffer.getvalue(), 32, 40_000_000, FORMATS).reason == "decompression_bomb"


def test_check_image_leaves_the_warning_filters_alone_under_threads() -> None:
    """Download threads call check_image at once: it must not swap the process-wide warnings filters (what
    `catch_warnings` does, which concurrent callers leave scrambled), and an image just over Pillow's own
    warning limit is still refused by `max_pixels` before decoding."""
    import threading
    import warnings

    over_warning = io.BytesIO()
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 100  # above the warning, below Pillow's error
    Image.new("1", (side, side)).save(over_warning, "PNG")
    payloads = [NOISY, over_warning.getvalue()]
    results: list[str | None] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        results.extend(check_image(payloads[i % 2], 32, 40_000_000, FORMATS).reason for i in range(40))

    threads = [threading.Thread(target=work) for _ in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own warning: not under test
        before = list(warnings.filters)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert warnings.filters == before
    assert sorted(set(results), key=str) == sorted({None, "decompression_bomb"}, key=str)
    assert results.count(None) == 160

"""Full decode check of downloaded bytes: only complete, real, reasonably sized images are stored."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}


@dataclass(frozen=True)
class ImageCheck:
    ok: bool
    reason: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def ext(self) -> str:
        return EXTENSIONS.get(self.format or "", "bin")


def check_image(data: bytes, min_side: int, max_pixels: int, allowed_formats: frozenset[str] | set[str]) -> ImageCheck:
    """Open, size-check before decoding (decompression bombs), then decode every pixel.

    Pillow refuses images over twice its MAX_IMAGE_PIXELS when opening them; `max_pixels` (below Pillow's limit
    by default) refuses the rest before a pixel is decoded. No warnings filter is set here: `catch_warnings`
    swaps the process-wide filter list, which download threads calling this at once would leave scrambled."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        return ImageCheck(False, "decompression_bomb")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return ImageCheck(False, "not_an_image")
    width, height = image.size
    fmt = image.format
    if fmt not in allowed_formats:
        return ImageCheck(False, f"format_{(fmt or 'unknown').lower()}", fmt, width, height)
    if width * height > max_pixels:
        return ImageCheck(False, "decompression_bomb", fmt, width, height)
    if min(width, height) < min_side:
        return ImageCheck(False, "too_small", fmt, width, height)
    try:
        image.load()
    except Image.DecompressionBombError:
        return ImageCheck(False, "decompression_bomb", fmt, width, height)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = "truncated_image" if "truncated" in str(exc).lower() else "decode_error"
        return ImageCheck(False, reason, fmt, width, height)
    return ImageCheck(True, None, fmt, width, height)

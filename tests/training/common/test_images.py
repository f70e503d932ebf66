"""Image grids: tiling, value mapping, atomic PNG writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.common.images import image_grid, save_grid, to_uint8


def test_to_uint8_maps_minus_one_to_one_onto_the_byte_range() -> None:
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    assert to_uint8(images)[0, 0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255], [255, 255, 255]]


def test_grid_tiles_row_major_and_saves_a_png(tmp_path: Path) -> None:
    images = torch.stack([torch.full((3, 2, 2), value) for value in (-1.0, 1.0, -1.0)])
    grid = np.asarray(image_grid(images))
    assert grid.shape == (4, 4, 3)  # 3 tiles: 2 columns, 2 rows, one empty slot
    assert grid[0, 2, 0] == 255 and grid[2, 0, 0] == 0 and grid[2, 2, 0] == 0
    path = save_grid(images, tmp_path / "grids" / "fakes.png", columns=3)
    assert Image.open(path).size == (6, 2) and [p.name for p in path.parent.iterdir()] == ["fakes.png"]

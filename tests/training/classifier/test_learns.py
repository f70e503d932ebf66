"""The classifier learns a real, if easy, task: composited versus clean faces, on real aligned face crops."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tests.training.classifier.helpers import aligned_faces, crop_points, shifted
from training.classifier.data import TemplatePool, choose_attributes, make_composite
from training.classifier.model import build_classifier


def make_set(pool: TemplatePool, rng: np.random.Generator, per_face: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each face `per_face` times clean and `per_face` times composited (random attributes), shifted/flipped."""
    images, labels = [], []
    for image, meta in aligned_faces():
        for _ in range(per_face):
            images.append(shifted(image, rng))
            labels.append(0.0)
            dressed = make_composite(image, crop_points(meta), choose_attributes(rng, 0.2), pool, rng)
            images.append(shifted(dressed, rng))
            labels.append(1.0)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(batch, size=(32, 32), mode="area"), torch.tensor(labels)[:, None]


def test_composited_vs_clean_reaches_95_percent_val_accuracy() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train_x, train_y = make_set(TemplatePool(1, 6, 64), np.random.default_rng(1), per_face=12)
    val_x, val_y = make_set(TemplatePool(2, 4, 64), np.random.default_rng(2), per_face=4)  # unseen templates
    model = build_classifier(resolution=32, num_attributes=1, width=8, max_width=64, depth=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        index = torch.randint(len(train_x), (32,), generator=generator)
        flip = torch.rand(32, 1, 1, 1, generator=generator) < 0.5
        images = torch.where(flip, train_x[index].flip(3), train_x[index])
        loss = F.binary_cross_entropy_with_logits(model(images), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = ((model(val_x) > 0).float() == val_y).float().mean().item()
    assert accuracy >= 0.95, accuracy

"""Fusion-pairs runs for the train-fusion tests, written directly in the fusion-pairs format and registered as
completed fusion-pairs runs: a tiny random StyleGAN2 renders origins G(trunc(w)) and GTs G(trunc(w + n_b +
n_true)) for a hidden per-attribute W offset n_true, so a fusion network can learn them (test_learns)."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from data_catalog.config import StageConfig
from data_catalog.manifest import Manifest
from data_catalog.runs import new_run_id, stage_run
from data_catalog.shards import _OpenShard
from data_catalog.workspace import Workspace
from training.common.images import to_uint8
from training.fusion.config import TrainFusionConfig
from training.fusion.data import PairsRun, find_pairs_run, pair_batches, shard_counts
from training.fusion.trainer import Editor, FusionTrainer, resolve_arch
from training.fusion_pairs.format import (
    ATTRIBUTES,
    INDEX_FILE,
    SHARD_PREFIX,
    SHARDS_DIR,
    AttributePair,
    FusionPair,
    PairsIndex,
    encode,
)
from training.stylegan2.handle import GeneratorHandle
from training.stylegan2.networks import Discriminator, Generator

SIZE, STYLE_DIM, CANONICAL = 32, 16, 16
N_LATENT = 2 * 5 - 2  # a 32 px generator takes 8 W+ layers
PSI = 0.7


class PairsStandIn(StageConfig):
    """What the test's pairs runs are booked under (the real fusion-pairs config is not needed to read them)."""

    STAGE = "fusion-pairs"
    seed: int = 0
    n_train: int = 0
    n_test: int = 0


def write_generator(path: Path, seed: int = 1234, with_d: bool = True) -> Path:
    """A random 32 px StyleGAN2 in rosinality's layout (g, g_ema, d, args), noise strengths made non-zero."""
    torch.manual_seed(seed)
    g = Generator(SIZE, style_dim=STYLE_DIM, n_mlp=2, channel_max=16)
    d = Discriminator(SIZE, channel_max=16)
    with torch.no_grad():
        for name, param in g.named_parameters():
            if name.endswith("noise.weight"):
                param.fill_(0.1)
    checkpoint = {"g": g.state_dict(), "g_ema": g.state_dict(), "g_optim": {}, "d_optim": {},
                  "args": argparse.Namespace(size=SIZE, latent=STYLE_DIM, n_mlp=2, channel_multiplier=2,
                                             lr_mlp=0.01)}
    if with_d:
        checkpoint["d"] = d.state_dict()
    torch.save(checkpoint, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def attribute_direction(attribute: str) -> np.ndarray:
    """A fixed unit W direction per attribute: the hidden 'boundary normal' of the test pairs."""
    rng = np.random.default_rng(ATTRIBUTES.index(attribute) + 100)
    direction = rng.standard_normal(STYLE_DIM).astype(np.float32)
    return direction / np.linalg.norm(direction)


def region_mask(attribute: str) -> np.ndarray:
    """A fixed soft region per attribute: lower face for the mask, an eye band for glasses."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    if attribute == "face_mask":
        inside = (yy > 0.55) & (np.abs(xx - 0.5) < 0.3)
    else:
        inside = (np.abs(yy - 0.42) < (0.08 if attribute == "sunglasses" else 0.05)) & (np.abs(xx - 0.5) < 0.35)
    return (inside * 255).astype(np.uint8)


def _render(handle: GeneratorHandle, latents: torch.Tensor, mean: torch.Tensor) -> np.ndarray:
    return to_uint8(handle.synthesize(latents, truncation=PSI, truncation_latent=mean, batch_size=64))


def make_pairs_run(workspace: Workspace, generator: Path, n_train: int = 16, n_test: int = 4,
                   attributes: Sequence[str] = ATTRIBUTES, n_true: dict[str, np.ndarray] | None = None,
                   shards: int = 2, seed: int = 0, basis_scale: float = 1.0) -> Manifest:
    """Write and book a completed fusion-pairs run; `n_true[attr]` is a (STYLE_DIM,) or (N_LATENT, STYLE_DIM)
    offset hidden in the GTs (default: none, so GT = G(trunc(w + n_b)))."""
    handle = GeneratorHandle.load(generator)
    mean = handle.mean_w(256, seed=7)
    run_id = new_run_id("fusion-pairs")
    folder = workspace.root / "primary" / "fusion_pairs" / run_id
    (folder / SHARDS_DIR).mkdir(parents=True)
    mean_path = folder / "mean_w.npy"
    np.save(mean_path, mean.numpy().astype(np.float32))
    rng = np.random.default_rng(seed)
    templates = {a: (rng.uniform(0, 255, (SIZE, SIZE, 3)) * (region_mask(a)[..., None] / 255)).astype(np.uint8)
                 for a in attributes}
    index_shards: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    config = PairsStandIn(seed=seed, n_train=n_train, n_test=n_test)
    with stage_run(workspace, "fusion-pairs", config, run_id=run_id) as run:
        for split, n, first_seed in (("train", n_train, seed * 100_000), ("test", n_test, seed * 100_000 + 50_000)):
            if n == 0:
                continue
            z_seeds = list(range(first_seed, first_seed + n))
            w = handle.w_from_seeds(z_seeds)
            origin = _render(handle, w, mean)
            per_attr = {}
            for a in attributes:
                distance = torch.from_numpy(rng.uniform(1.0, 2.0, n).astype(np.float32))[:, None]
                nb = basis_scale * distance * torch.from_numpy(attribute_direction(a))[None]
                edit = (w + nb)[:, None].expand(-1, N_LATENT, -1).clone()
                if n_true is not None and a in n_true:
                    edit = edit + torch.as_tensor(n_true[a], dtype=torch.float32)
                per_attr[a] = (nb.numpy(), _render(handle, edit, mean))
            canonical = rng.uniform(-1, 1, (n, 9, CANONICAL, CANONICAL)).astype(np.float16)
            per_shard = -(-n // shards)
            names = []
            for shard_index in range(shards):
                chunk = range(shard_index * per_shard, min(n, (shard_index + 1) * per_shard))
                if not chunk:
                    break
                writer = _OpenShard(folder / SHARDS_DIR, SHARD_PREFIX, split, shard_index)
                for i in chunk:
                    pair = FusionPair(
                        key=f"{split}_{i:06d}", w=w[i].numpy(), origin=origin[i], canonical=canonical[i],
                        landmarks=np.zeros((68, 2), np.float32),
                        meta={"seed": z_seeds[i], "split": split, "landmark_source": "ffhq_canonical",
                              "truncation": PSI},
                        attributes={a: AttributePair(nb=per_attr[a][0][i], gt=per_attr[a][1][i],
                                                     template=templates[a], region=region_mask(a))
                                    for a in attributes})
                    writer.add(pair.key, 0, encode(pair))
                writer.close()
                names.append(f"{SHARDS_DIR}/{writer.name}")
                run.add_file(writer.name, writer.path)
            index_shards[split] = names
            counts[split] = n
        index = PairsIndex(generator=str(generator.resolve()), generator_sha256=_sha256(generator), truncation=PSI,
                           truncation_mean=str(mean_path), attributes=list(attributes), image_size=SIZE,
                           canonical_size=CANONICAL, w_dim=STYLE_DIM, num_ws=N_LATENT, counts=counts,
                           shards=index_shards, extra={"noise_mode": "const"})
        (folder / INDEX_FILE).write_text(index.to_json(), encoding="utf-8")
        run.add_file(INDEX_FILE, folder / INDEX_FILE)
        run.add_file("mean_w.npy", mean_path)
    return run.manifest


TINY_ARCH = {"widths": [4, 8, 8, 16], "encoder_width": 4, "style_length": 16, "spade_hidden": 8}


def tiny_config(**sections: dict) -> TrainFusionConfig:
    """A tiny network on one CPU thread; `sections` update the config's sections (e.g. optim={"lr": 1e-3})."""
    data: dict = {"arch": dict(TINY_ARCH), "optim": {"batch": 4, "lr": 1e-3},
                  "data": {"num_workers": 0, "shuffle_buffer": 8},
                  "schedule": {"total_kimg": 0.016, "tick_kimg": 0.008, "log_steps": 2, "checkpoint_kimg": 0.008,
                               "sample_kimg": 0.008, "grid_rows": 2, "keep_checkpoints": 2},
                  "eval": {"pairs": 4, "batch": 2}, "runtime": {"device": "cpu", "threads": 1}}
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return TrainFusionConfig.model_validate(data)


def build_trainer(workspace: Workspace, run_id: str, attribute: str, config: TrainFusionConfig,
                  **kwargs: object) -> tuple[FusionTrainer, PairsRun]:
    """A FusionTrainer on a pairs run, assembled from the stage's own pieces."""
    from training.fusion.stage import load_generator, load_loss, truncation_mean

    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    pairs = find_pairs_run(workspace, run_id)
    device = torch.device("cpu")
    handle = load_generator(pairs, device, with_discriminator=config.loss.realism > 0)
    editor = Editor(handle.generator, truncation_mean(pairs, handle), pairs.index.truncation)
    arch = resolve_arch(config.arch, pairs.index, handle)
    trainer = FusionTrainer(config, attribute, arch, editor, load_loss(config, handle, device, True), device,
                            **kwargs)
    return trainer, pairs


def train_batches(pairs: PairsRun, trainer: FusionTrainer, start: int = 0) -> Iterator[dict]:
    shards = pairs.shards("train")
    data = trainer.config.data
    return pair_batches(shards, shard_counts(shards), trainer.attribute, trainer.local_batch, start,
                        shuffle_buffer=data.shuffle_buffer, seed=trainer.config.runtime.seed)

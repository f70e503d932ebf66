"""Checkpoint loading: strict, with readable errors, configs recovered from shapes, nothing executed."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch

from training.stylegan2.checkpoint import (
    CheckpointError,
    discriminator_from_checkpoint,
    generator_from_checkpoint,
    infer_discriminator_kwargs,
    infer_generator_kwargs,
    load_checkpoint,
    save_checkpoint,
)
from training.stylegan2.networks import Discriminator, Generator, channel_table


def test_the_default_channel_table_is_the_public_one() -> None:
    assert channel_table(2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert channel_table(1)[64] == 256 and channel_table(1)[1024] == 16
    assert channel_table(2, channel_max=32)[256] == 32


def test_config_f_256_has_the_public_parameter_count_and_14_latents() -> None:
    generator = Generator(256, 512, 8, channel_multiplier=2)
    assert generator.n_latent == 14
    assert sum(p.numel() for p in generator.parameters()) == 30_034_338  # as counted on rosinality's 256 px config-f G
    assert sum(p.numel() for p in Discriminator(256).parameters()) == 28_864_129  # and its D


@pytest.mark.parametrize("kwargs", [{"size": 256}, {"size": 64, "channel_multiplier": 1},
                                    {"size": 32, "channel_max": 32},
                                    {"size": 128, "channel_max": 64, "channel_base": 4096, "channel_multiplier": 1}])
def test_constructor_arguments_are_recovered_from_shapes(kwargs: dict) -> None:
    g_state = Generator(style_dim=32, n_mlp=3, **kwargs).state_dict()
    g_kwargs = infer_generator_kwargs(g_state)
    assert g_kwargs["style_dim"] == 32 and g_kwargs["n_mlp"] == 3 and g_kwargs["size"] == kwargs["size"]
    Generator(**g_kwargs).load_state_dict(g_state, strict=True)
    d_state = Discriminator(**kwargs).state_dict()
    Discriminator(**infer_discriminator_kwargs(d_state)).load_state_dict(d_state, strict=True)


def _rosinality_file(path: Path) -> Path:
    g, d = Generator(16, 16, 1, channel_max=8), Discriminator(16, channel_max=8)
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(),
                "g_optim": torch.optim.Adam(g.parameters()).state_dict(),
                "d_optim": torch.optim.Adam(d.parameters()).state_dict(),
                "args": argparse.Namespace(size=16, latent=16, n_mlp=1, channel_multiplier=2), "ada_aug_p": 0.3}, path)
    return path


def test_a_rosinality_layout_file_loads_strictly_with_equal_outputs(tmp_path: Path) -> None:
    path = _rosinality_file(tmp_path / "000100.pt")
    checkpoint = load_checkpoint(path)
    generator = generator_from_checkpoint(checkpoint)
    reference = Generator(16, 16, 1, channel_max=8)
    reference.load_state_dict(checkpoint["g_ema"], strict=True)
    z = torch.randn(2, 16)
    torch.testing.assert_close(generator([z], randomize_noise=False)[0], reference([z], randomize_noise=False)[0])
    assert discriminator_from_checkpoint(path)(torch.randn(2, 3, 16, 16)).shape == (2, 1)


def test_wrong_shapes_and_keys_are_named(tmp_path: Path) -> None:
    checkpoint = load_checkpoint(_rosinality_file(tmp_path / "a.pt"))
    with pytest.raises(CheckpointError, match=r"wrong shape.*conv1\.conv\.weight"):
        generator_from_checkpoint(checkpoint, channel_max=16)
    del checkpoint["g_ema"]["input.input"]
    with pytest.raises(CheckpointError, match="input.input"):
        generator_from_checkpoint(checkpoint)
    with pytest.raises(CheckpointError, match="no 'd'"):
        discriminator_from_checkpoint({"g": {}})


def test_truncated_and_hostile_files_are_refused(tmp_path: Path) -> None:
    path = _rosinality_file(tmp_path / "a.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps({"g_ema": Hostile()}))
    with pytest.raises(CheckpointError):
        load_checkpoint(hostile)
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_save_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", {"g_ema": {"w": torch.ones(2)}, "args": argparse.Namespace(size=8)})
    assert load_checkpoint(path)["args"].size == 8
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_the_full_profile_is_sd_gans_config_f() -> None:
    from data_catalog.config import load_config
    from training.stylegan2.config import TrainStyleGAN2Config

    config = load_config(TrainStyleGAN2Config, "full")
    generator = Generator(**config.model.generator_kwargs())
    public = Generator(256, 512, 8, channel_multiplier=2)
    assert generator.n_latent == 14 and config.optim.batch == 64 and config.loss.r1_gamma == 1.0
    assert {k: v.shape for k, v in generator.state_dict().items()} == {k: v.shape for k, v in public.state_dict().items()}

"""`inference.generate`: seeded grids and per-seed PNGs from a tiny rosinality-layout checkpoint."""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.generate import check_seeds, generate, generate_grid
from training.stylegan2.checkpoint import CheckpointError, load_checkpoint
from training.stylegan2.handle import GeneratorHandle
from training.stylegan2.networks import Discriminator, Generator

SIZE = 16


def write_tiny_checkpoint(path: Path, **extra) -> Path:
    """A 16 px generator/discriminator pair saved the way rosinality's train.py saves them."""
    torch.manual_seed(1234)
    g = Generator(SIZE, style_dim=16, n_mlp=1, channel_max=8)
    g_ema = Generator(SIZE, style_dim=16, n_mlp=1, channel_max=8)
    g_ema.load_state_dict(g.state_dict())
    d = Discriminator(SIZE, channel_max=8)
    checkpoint = {"g": g.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict(), "g_optim": {}, "d_optim": {},
                  "args": argparse.Namespace(size=SIZE, latent=16, n_mlp=1, channel_multiplier=2, lr_mlp=0.01),
                  "ada_aug_p": 0.0, **extra}
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt-000001000.pt")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def tiles(path: Path, columns: int) -> list[np.ndarray]:
    grid = pixels(path)
    rows = grid.shape[0] // SIZE
    return [grid[r * SIZE:(r + 1) * SIZE, c * SIZE:(c + 1) * SIZE] for r in range(rows) for c in range(columns)]


@pytest.mark.parametrize(("seeds", "size"),
                         [("0-15", (64, 64)), ("0-4", (48, 32)), ("7", (16, 16)), ("1,2,3", (32, 32))])
def test_grid_is_a_square_ish_layout_of_16_px_tiles(checkpoint: Path, tmp_path: Path, seeds: str, size) -> None:
    out = generate_grid(checkpoint, seeds, out=tmp_path / "grid.png")
    assert out == tmp_path / "grid.png"
    with Image.open(out) as image:
        assert image.size == size and image.mode == "RGB"


def test_same_seeds_give_byte_identical_pngs_and_other_seeds_differ(checkpoint: Path, tmp_path: Path) -> None:
    first = generate_grid(checkpoint, "0-3", truncation=0.7, out=tmp_path / "a.png").read_bytes()
    again = generate_grid(checkpoint, [0, 1, 2, 3], truncation=0.7, out=tmp_path / "b.png").read_bytes()
    other = generate_grid(checkpoint, "4-7", truncation=0.7, out=tmp_path / "c.png").read_bytes()
    assert first == again
    assert first != other
    torch.manual_seed(99)  # the global RNG has no say, neither in z nor in the truncation centre
    assert generate_grid(checkpoint, "0-3", truncation=0.7, out=tmp_path / "d.png").read_bytes() == first


def test_seed_order_is_tile_order_and_a_seed_face_ignores_the_others(checkpoint: Path, tmp_path: Path) -> None:
    forward = tiles(generate_grid(checkpoint, "1,2", out=tmp_path / "f.png", columns=2), 2)
    backward = tiles(generate_grid(checkpoint, "2,1", out=tmp_path / "b.png", columns=2), 2)
    assert np.abs(forward[0] - forward[1]).max() > 0
    assert np.array_equal(forward[0], backward[1]) and np.array_equal(forward[1], backward[0])
    alone = pixels(generate_grid(checkpoint, "2", out=tmp_path / "alone.png"))
    assert np.array_equal(alone, forward[1])


def test_truncation_pulls_faces_towards_the_mean_latent_face(checkpoint: Path) -> None:
    _, centre = generate(checkpoint, "0", truncation=1e-6)  # psi -> 0: the image of the centre itself
    _, free = generate(checkpoint, "0-7", truncation=1.0)
    _, half = generate(checkpoint, "0-7", truncation=0.5)
    free_distance = (free - centre).abs().mean(dim=(1, 2, 3))
    half_distance = (half - centre).abs().mean(dim=(1, 2, 3))
    assert bool((half_distance < free_distance).all()), (half_distance, free_distance)
    _, tiny = generate(checkpoint, "3,5", truncation=1e-6)
    assert torch.allclose(tiny[0], centre[0], atol=1e-4) and torch.allclose(tiny[1], centre[0], atol=1e-4)


def test_latent_avg_of_a_converted_checkpoint_is_the_truncation_centre(tmp_path: Path) -> None:
    torch.manual_seed(0)
    latent_avg = torch.randn(16) * 3
    path = write_tiny_checkpoint(tmp_path / "nvlabs.pt", latent_avg=latent_avg)
    _, images = generate(path, "0,1", truncation=1e-6)
    from training.stylegan2.checkpoint import generator_from_checkpoint

    g = generator_from_checkpoint(path).eval()
    with torch.no_grad():
        expected, _ = g([latent_avg[None]], input_is_latent=True, randomize_noise=False)
    expected = expected.clamp(-1, 1)  # generate's images are clamped to [-1, 1], as the PNGs are
    assert torch.allclose(images[0], expected[0], atol=1e-4) and torch.allclose(images[1], expected[0], atol=1e-4)


def test_outdir_writes_one_png_per_seed_matching_the_grid(checkpoint: Path, tmp_path: Path) -> None:
    grid = generate_grid(checkpoint, "3,10,1", truncation=0.8, out=tmp_path / "grid.png", outdir=tmp_path / "each",
                         columns=3)
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["seed0001.png", "seed0003.png", "seed0010.png"]
    grid_tiles = tiles(grid, 3)
    for tile, seed in zip(grid_tiles, (3, 10, 1)):
        assert np.array_equal(pixels(tmp_path / "each" / f"seed{seed:04d}.png"), tile)
    only = generate_grid(checkpoint, "5", out=None, outdir=tmp_path / "only")
    assert only == tmp_path / "only" and [p.name for p in only.iterdir()] == ["seed0005.png"]


def test_random_noise_is_repeatable_per_seed_and_differs_from_const(checkpoint: Path) -> None:
    _, const = generate(checkpoint, "0,1", noise_mode="const")
    _, noisy = generate(checkpoint, "0,1", noise_mode="random")
    _, again = generate(checkpoint, "1", noise_mode="random")
    assert not torch.equal(const, noisy)
    assert torch.equal(noisy[1], again[0])


def test_a_run_folder_means_its_newest_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "ckpt-000002000.pt").write_bytes(checkpoint.read_bytes())
    (folder / "checkpoints" / "ckpt-000001000.pt").write_bytes(b"older, and broken")
    direct = generate_grid(checkpoint, "0-3", out=tmp_path / "a.png").read_bytes()
    assert generate_grid(folder, "0-3", out=tmp_path / "b.png").read_bytes() == direct


def test_missing_and_wrong_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        generate_grid(tmp_path / "absent.pt", "0", out=tmp_path / "grid.png")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        generate_grid(tmp_path / "empty-run", "0", out=tmp_path / "grid.png")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        generate_grid(tmp_path / "text.pt", "0", out=tmp_path / "grid.png")
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'g_ema'"):
        generate_grid(tmp_path / "other.pt", "0", out=tmp_path / "grid.png")
    torch.save({"g_ema": {"weight": torch.zeros(2)}}, tmp_path / "classifier.pt")
    with pytest.raises(CheckpointError, match="not a StyleGAN2 generator"):
        generate_grid(tmp_path / "classifier.pt", "0", out=tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_non_finite_weights_are_refused_naming_the_tensors(tmp_path: Path) -> None:
    """A diverged run's checkpoint renders an all-black grid without complaint: it must be refused at load."""
    path = write_tiny_checkpoint(tmp_path / "diverged.pt")
    checkpoint = load_checkpoint(path)
    checkpoint["g_ema"]["convs.0.conv.weight"][0, 0, 0, 0, 0] = float("nan")
    checkpoint["g_ema"]["to_rgb1.bias"].fill_(float("inf"))
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError) as error:
        generate_grid(path, "0-3", out=tmp_path / "grid.png")
    message = str(error.value)
    assert str(path) in message and "checkpoint['g_ema'] holds non-finite weights" in message
    assert "convs.0.conv.weight (1 of " in message and "to_rgb1.bias (" in message
    assert not (tmp_path / "grid.png").exists()

    # g stays finite, so the discriminator and latent_avg are what is checked next
    fine = load_checkpoint(write_tiny_checkpoint(tmp_path / "fine.pt", latent_avg=torch.full((16,), float("nan"))))
    with pytest.raises(CheckpointError, match=r"non-finite weights \(NaN or inf\) in latent_avg \(16 of 16\)"):
        generate(fine, "0")
    fine["latent_avg"] = torch.zeros(16)
    fine["d"]["final_linear.0.weight"].fill_(float("-inf"))
    with pytest.raises(CheckpointError, match=r"checkpoint\['d'\] holds non-finite weights"):
        GeneratorHandle.from_checkpoint(fine, with_discriminator=True)
    assert generate(fine, "0")[1].isfinite().all()  # without the discriminator the generator is usable


@pytest.mark.parametrize("seeds", ["", "a-b", "5-2", "-3", [], [1.5], [-1]])
def test_bad_seeds_are_rejected(checkpoint: Path, tmp_path: Path, seeds) -> None:
    with pytest.raises(ValueError, match="seed"):
        generate_grid(checkpoint, seeds, out=tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("truncation", [0, 0.0, -0.5, 1.5, float("nan")])
def test_truncation_outside_0_1_is_rejected(checkpoint: Path, tmp_path: Path, truncation: float) -> None:
    with pytest.raises(ValueError, match=r"truncation must be in \(0, 1\]"):
        generate_grid(checkpoint, "0-3", truncation=truncation, out=tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_other_bad_options(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="noise_mode"):
        generate_grid(checkpoint, "0", noise_mode="fresh", out=tmp_path / "grid.png")
    with pytest.raises(ValueError, match="nothing to write"):
        generate_grid(checkpoint, "0", out=None)
    with pytest.raises(CheckpointError, match="no 'g_x'"):
        generate_grid(checkpoint, "0", key="g_x", out=tmp_path / "grid.png")


def test_seeds_0_15_untruncated_reproduce_the_training_grid(checkpoint: Path, tmp_path: Path) -> None:
    """The trainer's sample grids (fixed seeds 0..N-1, const noise) can be regenerated from a checkpoint."""
    from training.stylegan2.checkpoint import generator_from_checkpoint
    from training.stylegan2.samples import generate_images, save_grid, seeded_z

    g_ema = generator_from_checkpoint(checkpoint).eval()
    training_grid = save_grid(generate_images(g_ema, seeded_z(range(16), g_ema.style_dim), noise_mode="const"),
                              tmp_path / "fakes-000001000.png")
    assert generate_grid(checkpoint, "0-15", out=tmp_path / "grid.png").read_bytes() == training_grid.read_bytes()


def test_png_bytes_are_plain_rgb(checkpoint: Path, tmp_path: Path) -> None:
    data = generate_grid(checkpoint, "0-1", out=tmp_path / "grid.png").read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"


# ----------------------------------------------------------------------------------------------------------------
# `sdgan generate` runs on `GeneratorHandle` since the handle was introduced; its PNGs must not change. The sha256
# below were recorded with the implementation that predates the handle (generate.py calling the Generator
# directly), on this project's pinned torch (2.13, CPU, AVX512), for a tiny generator whose noise strengths are
# non-zero (a fresh Generator's are 0, which would make the noise modes indistinguishable).


def write_recorded_checkpoint(path: Path, latent_avg: bool = False) -> Path:
    """The tiny checkpoint the hashes were recorded on: write_tiny_checkpoint, noise strength 0.3 everywhere."""
    write_tiny_checkpoint(path)
    checkpoint = load_checkpoint(path)
    for name in ("g", "g_ema"):
        for key, value in checkpoint[name].items():
            if key.endswith("noise.weight"):
                checkpoint[name][key] = torch.full_like(value, 0.3)
    if latent_avg:
        checkpoint["latent_avg"] = torch.randn(16, generator=torch.Generator().manual_seed(7)) * 0.5
    torch.save(checkpoint, path)
    return path


RECORDED = [  # (checkpoint, seeds, psi, noise_mode, batch, sha256 of the grid, sha256 of the per-seed PNGs' sha256s)
    ("plain", "0-7", 1.0, "const", 16, "4ecaeb419b5bab9312b6291bec2fee9b2c8729a9b1e43d591e51aefab5e78cb8",
     "9b31efbe9e84d2276da3b7dc50cab967b18253b83084afd8f8b2e61d8514a9ab"),
    ("plain", "0-7", 0.7, "const", 16, "844eb0be7e803d8e1e585d4478515aff318ef5153e3baffae81bda4438aa110a",
     "54da2e07910e87cea5cdbb4dfcbf5184243f0375485dc63f3d441c57f4b2fd08"),
    ("plain", "0-7", 0.7, "random", 16, "d758aa39322e9605e47c7e615a8fe3bd70c612f5dab01a86e4a46e1fa47b3079",
     "766c440d2d274acad1f7af2b43dc8d4feda533275ca65a947d3622c39980be31"),
    ("plain", "5,0,11,3,8", 0.6, "const", 2, "8f581dda26846363aaf767ce213b00892219e1ebfe408382148edf9e9af89062",
     "22aaa4f535d0741e029071c67247ddb2fafda138e57170ec1db9a3b63e28f22a"),
    ("avg", "0-7", 0.5, "const", 16, "670a2a4e10d4c499b2fcf2e22c0fec12048eb8b776bfac2438bf494a8a4a0bcd",
     "036f533da1c0473292b8238b38ba25edd2d86542baf94363e8fa364976f3cad5"),
    ("avg", "1,4", 1.0, "random", 16, "24a080557ccbe1f1e64f436f3dff1137179935e6cec97276a67d63df169a1d29",
     "2638fe03a4bb12a5be3ee794767bc3fbbd0b6bcc2c713c873366c22b4a5cfea1"),
]


@pytest.fixture(scope="module")
def recorded_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recorded")
    return {"plain": write_recorded_checkpoint(folder / "plain.pt"),
            "avg": write_recorded_checkpoint(folder / "avg.pt", latent_avg=True)}


@torch.no_grad()
def pre_handle_images(path: Path, seeds: list[int], psi: float, noise_mode: str, batch: int) -> torch.Tensor:
    """generate() as it was before GeneratorHandle, frozen here: the reference that does not depend on the
    machine the sha256 were recorded on (thread count and CPU kernels can move a pixel by one)."""
    from training.stylegan2.checkpoint import generator_from_checkpoint
    from training.stylegan2.samples import seeded_z

    checkpoint = load_checkpoint(path)
    g = generator_from_checkpoint(checkpoint).eval()
    centre = None
    if psi < 1:
        average = checkpoint.get("latent_avg")
        centre = (average.float().reshape(1, -1) if average is not None
                  else g.mean_latent(4096, generator=torch.Generator().manual_seed(0x5D6A)))
    z = seeded_z(seeds, g.style_dim)
    if noise_mode == "random":
        rows = []
        for seed, row in zip(seeds, z):
            noise = g.make_noise(generator=torch.Generator().manual_seed(seed + 1))
            rows.append(g([row[None]], truncation=psi, truncation_latent=centre, noise=noise)[0])
        return torch.cat(rows)
    return torch.cat([g([chunk], truncation=psi, truncation_latent=centre, randomize_noise=False)[0]
                      for chunk in z.split(batch)])


def digest_of_folder(folder: Path) -> str:
    """sha256 of the per-file sha256s, in file-name order: one value for a folder of per-seed PNGs."""
    digests = b"".join(hashlib.sha256(path.read_bytes()).digest() for path in sorted(folder.iterdir()))
    return hashlib.sha256(digests).hexdigest()


@pytest.mark.parametrize(("which", "seeds", "psi", "noise_mode", "batch", "grid_sha", "each_sha"), RECORDED)
def test_pngs_are_byte_identical_to_those_before_the_generator_handle(
        recorded_checkpoints: dict[str, Path], tmp_path: Path, which: str, seeds: str, psi: float, noise_mode: str,
        batch: int, grid_sha: str, each_sha: str) -> None:
    from training.stylegan2.samples import save_grid

    path = recorded_checkpoints[which]
    grid = generate_grid(path, seeds, psi, out=tmp_path / "grid.png", noise_mode=noise_mode, batch=batch,
                         outdir=tmp_path / "each")
    images = pre_handle_images(path, check_seeds(seeds), psi, noise_mode, batch)
    reference = save_grid(images, tmp_path / "reference.png").read_bytes()
    assert grid.read_bytes() == reference  # on any machine: the same bytes as the code the handle replaced
    if hashlib.sha256(reference).hexdigest() != grid_sha:
        pytest.skip("this machine's float arithmetic (threads, CPU kernels) differs from the recording machine's")
    assert hashlib.sha256(grid.read_bytes()).hexdigest() == grid_sha
    assert digest_of_folder(tmp_path / "each") == each_sha


@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_generate_is_the_handles_synthesize_seeds(recorded_checkpoints: dict[str, Path], noise_mode: str) -> None:
    from training.stylegan2.handle import GeneratorHandle

    _, images = generate(recorded_checkpoints["plain"], "4,0,9", truncation=0.7, noise_mode=noise_mode)
    handle = GeneratorHandle.load(recorded_checkpoints["plain"])
    assert torch.equal(images, handle.synthesize_seeds([4, 0, 9], 0.7, noise_mode))
    assert images.min() >= -1 and images.max() <= 1


def test_a_loaded_checkpoint_dict_gives_the_same_images_as_its_file(recorded_checkpoints: dict[str, Path]) -> None:
    path = recorded_checkpoints["avg"]
    _, from_file = generate(path, "0-3", truncation=0.5)
    _, from_dict = generate(load_checkpoint(path), "0-3", truncation=0.5)
    assert torch.equal(from_file, from_dict)

"""`GeneratorHandle`: every supported checkpoint layout loads, and seeds, truncation and noise mean one thing."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import torch

from training.stylegan2.checkpoint import CheckpointError
from training.stylegan2.handle import DEFAULT_TRUNC_SEED, GeneratorHandle
from training.stylegan2.networks import Discriminator, Generator
from training.stylegan2.samples import seeded_z, to_uint8

SIZE, STYLE = 16, 16
N_LATENT = 2 * int(math.log2(SIZE)) - 2


def tiny_networks() -> tuple[Generator, Generator, Discriminator]:
    """(g, g_ema, d), 16 px and 8 channels; noise strengths 0.3 (a fresh Generator's 0 would hide noise modes)
    and g_ema a little off g, so that loading the wrong one shows."""
    torch.manual_seed(1234)
    g = Generator(SIZE, STYLE, n_mlp=2, channel_max=8)
    g_ema = Generator(SIZE, STYLE, n_mlp=2, channel_max=8)
    with torch.no_grad():
        for source, target in zip(g.parameters(), g_ema.parameters()):
            target.copy_(source + 0.05 * torch.randn_like(source))
        for net in (g, g_ema):
            for name, param in net.named_parameters():
                if name.endswith("noise.weight"):
                    param.fill_(0.3)
    return g, g_ema, Discriminator(SIZE, channel_max=8)


def latent_avg() -> torch.Tensor:
    return torch.randn(STYLE, generator=torch.Generator().manual_seed(7)) * 0.5


def write_checkpoint(folder: Path, layout: str) -> Path:
    """One tiny checkpoint in the layout named: ours / rosinality / sdgan / converted / g_ema_only."""
    g, g_ema, d = tiny_networks()
    nets = {"g": g.state_dict(), "g_ema": g_ema.state_dict(), "d": d.state_dict()}
    namespace = argparse.Namespace(size=SIZE, latent=STYLE, n_mlp=2, channel_multiplier=2, lr_mlp=0.01)
    if layout == "ours":  # what the trainer writes into models/stylegan2/<run-id>/checkpoints/
        checkpoint = {**nets, "g_optim": {}, "d_optim": {}, "ada_aug_p": 0.1,
                      "args": argparse.Namespace(**vars(namespace), channel_max=8, channel_base=16384),
                      "sdgan": {"step": 5, "images_seen": 40, "mean_path_length": 0.0, "ticks": {}, "config": {}}}
        path = folder / "run" / "checkpoints" / "ckpt-000000040.pt"
        path.parent.mkdir(parents=True)
        (path.parent / "ckpt-000000020.pt").write_bytes(b"an older, broken checkpoint")
    elif layout == "rosinality":  # rosinality's train.py
        checkpoint = {**nets, "g_optim": {}, "d_optim": {}, "args": namespace, "ada_aug_p": 0.0}
    elif layout == "sdgan":  # like SD-GAN's network-snapshot-020180.pt: no args, no g
        checkpoint = {"g_ema": nets["g_ema"], "d": nets["d"], "latent_avg": latent_avg()}
    elif layout == "converted":  # training.stylegan2.convert output: args a plain dict, NVlabs' w_avg
        checkpoint = {**nets, "latent_avg": latent_avg(),
                      "args": {"size": SIZE, "latent": STYLE, "n_mlp": 2, "lr_mlp": 0.01, "channel_multiplier": 2,
                               "channel_base": 16384, "channel_max": 8, "blur_kernel": [1, 3, 3, 1],
                               "stddev_group": 2}}
    elif layout == "g_ema_only":  # convert --g-ema-only
        checkpoint = {"g_ema": nets["g_ema"], "latent_avg": latent_avg(), "args": {"size": SIZE}}
    else:
        raise AssertionError(layout)
    if layout != "ours":
        path = folder / f"{layout}.pt"
    torch.save(checkpoint, path)
    return path


LAYOUTS = ("ours", "rosinality", "sdgan", "converted", "g_ema_only")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("handles")
    return {layout: write_checkpoint(folder, layout) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def handle(files: dict[str, Path]) -> GeneratorHandle:
    return GeneratorHandle.load(files["rosinality"])


@pytest.fixture(scope="module")
def w(handle: GeneratorHandle) -> torch.Tensor:
    return handle.w_from_seeds(range(6))


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_frozen_with_the_ema_weights(files: dict[str, Path], layout: str) -> None:
    handle = GeneratorHandle.load(files[layout])
    assert (handle.size, handle.style_dim, handle.n_latent) == (SIZE, STYLE, N_LATENT)
    assert handle.device == torch.device("cpu") and handle.checkpoint_path == files[layout]
    assert handle.discriminator is None
    assert not handle.generator.training
    assert not any(p.requires_grad for p in handle.generator.parameters())
    _, g_ema, _ = tiny_networks()
    torch.testing.assert_close(handle.generator.state_dict(), g_ema.state_dict(), rtol=0, atol=0)
    has_avg = layout in ("sdgan", "converted", "g_ema_only")
    assert (handle.latent_avg is not None) == has_avg
    if has_avg:
        assert torch.equal(handle.latent_avg, latent_avg()[None])
        assert torch.equal(handle.mean_w(), handle.latent_avg)


def test_a_run_folder_means_its_newest_checkpoint(files: dict[str, Path]) -> None:
    run = files["ours"].parents[1]
    handle = GeneratorHandle.load(run, device="auto")
    assert handle.checkpoint_path == files["ours"]
    assert handle.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_key_g_loads_the_training_generator_without_latent_avg(files: dict[str, Path]) -> None:
    g, _, _ = tiny_networks()
    handle = GeneratorHandle.load(files["converted"], key="g")
    torch.testing.assert_close(handle.generator.state_dict(), g.state_dict(), rtol=0, atol=0)
    assert handle.latent_avg is None  # latent_avg belongs to g_ema
    with pytest.raises(CheckpointError, match="no 'g' network"):
        GeneratorHandle.load(files["sdgan"], key="g")


@pytest.mark.parametrize("layout", ["ours", "rosinality", "sdgan", "converted"])
def test_the_discriminator_is_loaded_when_asked(files: dict[str, Path], layout: str) -> None:
    handle = GeneratorHandle.load(files[layout], with_discriminator=True)
    d = handle.discriminator
    assert isinstance(d, Discriminator) and not d.training
    assert not any(p.requires_grad for p in d.parameters())
    assert d.stddev_group == (2 if layout == "converted" else 4)  # convert.py records NVlabs' group in args
    _, _, reference = tiny_networks()
    torch.testing.assert_close(d.state_dict(), reference.state_dict(), rtol=0, atol=0)
    assert d(handle.synthesize(handle.w_from_seeds([0, 1]))).shape == (2, 1)


def test_asking_for_a_missing_discriminator_is_a_clear_error(files: dict[str, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"g_ema_only\.pt.*no 'd' network.*'g_ema', 'latent_avg'"):
        GeneratorHandle.load(files["g_ema_only"], with_discriminator=True)


@pytest.mark.parametrize(("payload", "pattern"), [
    ({"netD": {"w": torch.zeros(1)}, "netA": {"w": torch.zeros(1)}, "netL": {}, "optimizerD": {}},
     r"no 'g_ema' network.*Unsup3d.*'netA', 'netD', 'netL', 'optimizerD'.*expected a StyleGAN2 checkpoint"),
    ({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3},
     r"no 'g_ema' network.*fusion.*\{'epoch', 'model'\}.*expected"),
    ({"g_ema": torch.zeros(3)}, r"checkpoint\['g_ema'\] is a Tensor, not a state dict"),
    ({"g_ema": {"weight": torch.zeros(2)}}, "not a StyleGAN2 generator state dict"),
])
def test_wrong_kinds_of_file_name_what_they_hold(tmp_path: Path, payload: dict, pattern: str) -> None:
    path = tmp_path / "wrong.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=pattern):
        GeneratorHandle.load(path)


def test_a_tensor_file_and_a_missing_file_are_clear_errors(tmp_path: Path) -> None:
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        GeneratorHandle.load(tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a list"):
        GeneratorHandle.from_checkpoint([1, 2])  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        GeneratorHandle.load(tmp_path / "absent.pt")
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        GeneratorHandle.load(tmp_path / "empty-run")


def test_a_wrong_latent_avg_and_a_bad_device_are_refused(tmp_path: Path) -> None:
    _, g_ema, _ = tiny_networks()
    torch.save({"g_ema": g_ema.state_dict(), "latent_avg": torch.zeros(STYLE + 1)}, tmp_path / "avg.pt")
    with pytest.raises(CheckpointError, match=r"latent_avg has 17 values.*style_dim is 16"):
        GeneratorHandle.load(tmp_path / "avg.pt")
    with pytest.raises(ValueError, match="unknown device"):
        GeneratorHandle.load(tmp_path / "avg.pt", device="tpu:banana")


def test_an_in_memory_generator_is_wrapped_and_frozen() -> None:
    generator = Generator(SIZE, STYLE, n_mlp=1, channel_max=8).train()
    handle = GeneratorHandle(generator)
    assert handle.generator is generator and not generator.training and handle.checkpoint_path is None
    assert not any(p.requires_grad for p in generator.parameters())
    assert "size=16" in repr(handle)


# ------------------------------------------------------------------------------------------------ latents


def test_z_is_seeded_z_and_independent_of_the_batch(handle: GeneratorHandle) -> None:
    assert torch.equal(handle.z([3, 1, 2]), seeded_z([3, 1, 2], STYLE))
    assert torch.equal(handle.z([2])[0], handle.z([3, 1, 2])[2])
    assert torch.equal(handle.z("1-3"), handle.z([1, 2, 3]))
    with pytest.raises(ValueError, match="seeds"):
        handle.z([-1])


def test_z_to_w_is_the_mapping_network_in_any_batch_size(handle: GeneratorHandle) -> None:
    z = handle.z(range(10))
    with torch.no_grad():
        expected = handle.generator.style(z)
    for batch_size in (1, 3, 1024):
        torch.testing.assert_close(handle.z_to_w(z, batch_size=batch_size), expected, rtol=0, atol=1e-6)
    assert torch.equal(handle.w_from_seeds(range(10)), handle.z_to_w(z))
    assert not handle.z_to_w(z).requires_grad


def test_mean_w_is_seeded_cached_and_leaves_the_global_rng_alone(handle: GeneratorHandle) -> None:
    state = torch.random.get_rng_state()
    first = handle.mean_w()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert handle.mean_w() is first and first.shape == (1, STYLE)
    expected = handle.generator.mean_latent(4096, generator=torch.Generator().manual_seed(DEFAULT_TRUNC_SEED))
    assert torch.equal(first, expected)
    assert not torch.equal(handle.mean_w(64, seed=1), first)
    with pytest.raises(ValueError, match="n >= 1"):
        handle.mean_w(0)


def test_truncation_in_w_space(handle: GeneratorHandle) -> None:
    z = handle.z(range(8))
    free = handle.z_to_w(z)
    assert torch.equal(handle.z_to_w(z, truncation=1.0), free)
    centre = handle.mean_w()
    torch.testing.assert_close(handle.z_to_w(z, truncation=0.5) - centre, 0.5 * (free - centre))
    custom = torch.zeros(STYLE)
    torch.testing.assert_close(handle.z_to_w(z, 0.25, truncation_latent=custom), 0.25 * free)


# ------------------------------------------------------------------------------------------------ synthesis


def test_w_and_its_w_plus_broadcast_give_equal_images(handle: GeneratorHandle, w: torch.Tensor) -> None:
    images = handle.synthesize(w)
    assert images.shape == (6, 3, SIZE, SIZE) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert torch.equal(handle.synthesize(w[:, None].expand(-1, N_LATENT, -1)), images)
    torch.testing.assert_close(handle.synthesize(w[:, None].repeat(1, N_LATENT, 1)), images, rtol=0, atol=1e-6)
    assert images.min() >= -1 and images.max() <= 1


def test_const_noise_is_the_stored_noise_and_deterministic(handle: GeneratorHandle, w: torch.Tensor) -> None:
    const = handle.synthesize(w, noise_mode="const")
    assert torch.equal(const, handle.synthesize(w, noise_mode="const"))
    with torch.no_grad():
        expected, _ = handle.generator([w], input_is_latent=True, randomize_noise=False)
    assert torch.equal(const, expected.clamp(-1, 1))
    assert not torch.allclose(const, handle.synthesize(w, noise_mode="none"), atol=1e-3)


def test_random_noise_is_seeded_per_sample(handle: GeneratorHandle, w: torch.Tensor) -> None:
    state = torch.random.get_rng_state()
    first = handle.synthesize(w, noise_mode="random", seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, handle.synthesize(w, noise_mode="random", seed=5))
    assert torch.equal(first, handle.synthesize(w, noise_mode="random", seed=list(range(5, 11))))
    other = handle.synthesize(w, noise_mode="random", seed=6)
    assert not torch.allclose(first, other, atol=1e-3)
    # a sample's noise is its own seed's, whatever else is in the batch
    shifted = handle.synthesize(w[1:], noise_mode="random", seed=6)
    torch.testing.assert_close(shifted, first[1:], rtol=0, atol=1e-5)
    alone = handle.synthesize(w[2:3], noise_mode="random", seed=[7])
    torch.testing.assert_close(alone[0], first[2], rtol=0, atol=1e-5)
    for mode in ("const", "none"):
        assert not torch.allclose(first, handle.synthesize(w, noise_mode=mode), atol=1e-3)
    with pytest.raises(ValueError, match="needs seed"):
        handle.synthesize(w, noise_mode="random")
    with pytest.raises(ValueError, match="seed has 2 values for 6"):
        handle.synthesize(w, noise_mode="random", seed=[1, 2])


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
def test_batch_size_does_not_change_the_images(handle: GeneratorHandle, w: torch.Tensor, noise_mode: str) -> None:
    seed = 3 if noise_mode == "random" else None
    reference = handle.synthesize(w, noise_mode=noise_mode, seed=seed, batch_size=6)
    for batch_size in (1, 4, 100):  # only float rounding of the batched convolutions may differ
        images = handle.synthesize(w, noise_mode=noise_mode, seed=seed, batch_size=batch_size)
        torch.testing.assert_close(images, reference, rtol=0, atol=1e-5)


def test_truncation_one_is_none_and_smaller_psi_moves_towards_the_centre(handle: GeneratorHandle) -> None:
    w = handle.w_from_seeds(range(8))
    free = handle.synthesize(w)
    assert torch.equal(handle.synthesize(w, truncation=1.0), free)
    centre_image = handle.synthesize(handle.mean_w())
    half = handle.synthesize(w, truncation=0.5)
    free_distance = (free - centre_image).abs().mean(dim=(1, 2, 3))
    half_distance = (half - centre_image).abs().mean(dim=(1, 2, 3))
    assert bool((half_distance < free_distance).all()), (half_distance, free_distance)
    torch.testing.assert_close(handle.synthesize(w, truncation=1e-6), centre_image.expand_as(free), rtol=0, atol=1e-4)
    # truncating in synthesize is truncating W first
    torch.testing.assert_close(half, handle.synthesize(handle.z_to_w(handle.z(range(8)), 0.5)), rtol=0, atol=1e-5)


def test_uint8_output_is_nhwc_bytes_of_the_tensor_output(handle: GeneratorHandle, w: torch.Tensor) -> None:
    pixels = handle.synthesize(w, output="uint8")
    assert pixels.shape == (6, SIZE, SIZE, 3) and pixels.dtype == torch.uint8
    assert torch.equal(pixels, torch.from_numpy(to_uint8(handle.synthesize(w))))
    assert handle.synthesize_seeds([0, 1], output="uint8").shape == (2, SIZE, SIZE, 3)


def test_synthesize_seeds_is_z_then_w_then_image(handle: GeneratorHandle) -> None:
    seeds = [9, 2, 4]
    images = handle.synthesize_seeds(seeds, truncation=0.7)
    torch.testing.assert_close(images, handle.synthesize(handle.w_from_seeds(seeds), truncation=0.7),
                               rtol=0, atol=1e-5)
    noisy = handle.synthesize_seeds(seeds, 0.7, "random")
    expected = handle.synthesize(handle.w_from_seeds(seeds), truncation=0.7, noise_mode="random",
                                 seed=[s + 1 for s in seeds])  # seed s's noise comes from s + 1, as in generate
    torch.testing.assert_close(noisy, expected, rtol=0, atol=1e-5)
    assert torch.equal(handle.synthesize_seeds([2], 0.7)[0], handle.synthesize_seeds([2], 0.7)[0])


@pytest.mark.parametrize(("latent", "pattern"), [
    (torch.zeros(2, STYLE + 1), "style dim 17, the generator's is 16"),
    (torch.zeros(2, N_LATENT + 1, STYLE), r"n_latent=6"),
    (torch.zeros(2, N_LATENT, STYLE - 1), r"n_latent=6 layers of style dim 16"),
    (torch.zeros(STYLE), r"must have shape \(N, 16\)"),
    (torch.zeros(0, STYLE), "N >= 1"),
    (torch.zeros(2, 1, N_LATENT, STYLE), "must have shape"),
    (torch.zeros(2, STYLE, dtype=torch.int64), "float tensor"),
    (torch.full((2, STYLE), float("nan")), "NaN"),
])
def test_bad_latents_are_value_errors(handle: GeneratorHandle, latent: torch.Tensor, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        handle.synthesize(latent)


def test_bad_options_are_value_errors(handle: GeneratorHandle, w: torch.Tensor) -> None:
    for psi in (0, -0.5, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="truncation must be"):
            handle.synthesize(w, truncation=psi)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="truncation must be"):
            handle.z_to_w(handle.z([0]), truncation=psi)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_mode"):
        handle.synthesize(w, noise_mode="fresh")
    with pytest.raises(ValueError, match="output"):
        handle.synthesize(w, output="png")
    with pytest.raises(ValueError, match="batch_size"):
        handle.synthesize(w, batch_size=0)
    with pytest.raises(ValueError, match="truncation_latent must hold 16"):
        handle.synthesize(w, truncation=0.5, truncation_latent=torch.zeros(3))
    with pytest.raises(ValueError, match=r"z must have shape \(N, 16\) with N >= 1, got \(6, 6, 16\)"):
        handle.z_to_w(w[:, None].expand(-1, N_LATENT, -1))  # z has no W+ form


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_handle_matches_the_cpu_one(files: dict[str, Path]) -> None:
    cpu = GeneratorHandle.load(files["converted"], with_discriminator=True)
    cuda = GeneratorHandle.load(files["converted"], device="cuda", with_discriminator=True)
    assert cuda.device.type == "cuda" and next(cuda.discriminator.parameters()).is_cuda
    assert cuda.z([1, 2]).is_cuda and torch.equal(cuda.z([1, 2]).cpu(), cpu.z([1, 2]))
    for mode in ("const", "random"):
        images = cuda.synthesize_seeds([0, 5, 7], 0.7, mode)
        assert images.device.type == "cpu"
        torch.testing.assert_close(images, cpu.synthesize_seeds([0, 5, 7], 0.7, mode), rtol=0, atol=1e-3)
    no_avg = GeneratorHandle.load(files["rosinality"], device="cuda")
    torch.testing.assert_close(no_avg.mean_w().cpu(), GeneratorHandle.load(files["rosinality"]).mean_w(),
                               rtol=0, atol=1e-4)

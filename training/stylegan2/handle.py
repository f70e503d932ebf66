"""`GeneratorHandle`: the one way the stages after training use a StyleGAN2 generator.

InterfaceGAN boundary fitting, fusion-pair generation, synthesis and `sdgan generate` all need the same few
things: load whatever checkpoint the user has, turn seeds into z and z into W, and render W or W+ with a
given truncation and noise. Doing that in one place is what makes a seed, a truncation psi or a noise mode
mean the same face in every stage (and keeps `sdgan generate`'s PNGs byte-identical to what it always wrote).

Supported files, all in the rosinality layout (`{"g_ema", "g"?, "d"?, "args"?, "latent_avg"?, ...}`): our run
checkpoints (`checkpoints/ckpt-*.pt`, or the run folder meaning its newest one), rosinality's own `.pt`,
SD-GAN's `network-snapshot-020180.pt` (g_ema, d and latent_avg, no args) and NVlabs pickles converted by
`training.stylegan2.convert`. The networks come back frozen (eval mode, no parameter requires grad).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from training.common.device import select_device
from training.common.run_folder import RunFolder
from training.stylegan2.checkpoint import (
    CheckpointError,
    discriminator_from_checkpoint,
    generator_from_checkpoint,
    load_checkpoint,
    require_finite,
)
from training.stylegan2.networks import Discriminator, Generator
from training.stylegan2.samples import parse_seeds, seeded_z, to_uint8

NOISE_MODES = ("const", "random", "none")
OUTPUTS = ("tensor", "uint8")
DEFAULT_MEAN_SAMPLES = 4096
DEFAULT_TRUNC_SEED = 0x5D6A  # any fixed value: it only has to be the same on every run (sdgan generate's centre)
EXPECTED = ("a StyleGAN2 checkpoint in the rosinality layout {'g_ema', 'g', 'd', 'args', ...}: a run folder's "
            "checkpoints/ckpt-*.pt, a rosinality or SD-GAN .pt, or the output of training.stylegan2.convert")


def check_seeds(seeds: str | Iterable[int]) -> list[int]:
    """'0-15' / '1,5,9' / [1, 5, 9] -> a non-empty list of non-negative ints (ValueError otherwise)."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    out = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seeds must be integers in [0, 2**63), got {seed!r}")
        out.append(int(seed))
    if not out:
        raise ValueError("no seeds given")
    return out


def check_truncation(truncation: float) -> float:
    """psi in (0, 1]: 1 is no truncation, smaller pulls every face towards the average one."""
    try:
        value = float(truncation)
    except (TypeError, ValueError):
        raise ValueError(f"truncation must be a number in (0, 1], got {truncation!r}") from None
    if not 0 < value <= 1:  # also rejects NaN
        raise ValueError(f"truncation must be in (0, 1] (1 = none, 0.5-0.7 typical), got {truncation!r}")
    return value


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (`models/stylegan2/<run-id>/`) meaning its newest checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        latest = RunFolder(path).latest_checkpoint()
        if latest is None:
            raise FileNotFoundError(f"no checkpoints/ckpt-*.pt in {path}")
        return latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _top_level_keys(checkpoint: dict[Any, Any]) -> str:
    """The keys a wrong file has, for the error message (sorted as text: keys need not be strings)."""
    keys = sorted(checkpoint, key=str)
    shown = ", ".join(repr(key) for key in keys[:12])
    return "{" + shown + (", ..." if len(keys) > 12 else "") + "}"


def _kind_hint(checkpoint: dict[Any, Any]) -> str:
    """A guess at what the file is instead, so that a user who passed the wrong file sees it at once."""
    keys = {str(key) for key in checkpoint}
    if {"netD", "netA"} & keys or any(key.startswith("net") and key[3:4].isupper() for key in keys):
        return " (this looks like an Unsup3d checkpoint)"
    if "model" in keys or "state_dict" in keys:
        return " (this looks like a generic {'model': state_dict} checkpoint, e.g. the fusion network's)"
    return ""


def _stddev_group(checkpoint: dict[str, Any]) -> dict[str, int]:
    """convert.py records NVlabs' minibatch-std group in `args`; it is not visible in the weights' shapes."""
    args = checkpoint.get("args")
    value = args.get("stddev_group") if isinstance(args, dict) else getattr(args, "stddev_group", None)
    return {"stddev_group": int(value)} if isinstance(value, int) and not isinstance(value, bool) else {}


class GeneratorHandle:
    """A frozen StyleGAN2 generator (and optionally its discriminator) with seeded z, W mapping and synthesis.

    Build it with `GeneratorHandle.load(path)` (files, run folders) or `from_checkpoint(dict)`; the constructor
    wraps an in-memory Generator (it is frozen in place). z, W and the mean W live on the handle's device;
    images come back on the CPU.
    """

    def __init__(self, generator: Generator, *, discriminator: Discriminator | None = None,
                 latent_avg: torch.Tensor | None = None, checkpoint_path: str | Path | None = None) -> None:
        self._generator = generator.eval().requires_grad_(False)
        self._device = generator.input.input.device
        self._discriminator = None
        if discriminator is not None:
            self._discriminator = discriminator.to(self._device).eval().requires_grad_(False)
        self._latent_avg = None
        if latent_avg is not None:
            if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != generator.style_dim:
                found = (f"{latent_avg.numel()} values" if isinstance(latent_avg, torch.Tensor)
                         else f"a {type(latent_avg).__name__}")
                raise CheckpointError(f"latent_avg has {found}, the generator's style_dim is {generator.style_dim}")
            require_finite({"latent_avg": latent_avg}, "the checkpoint")
            self._latent_avg = latent_avg.detach().float().reshape(1, generator.style_dim).to(self._device)
        self._checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self._mean_w: dict[tuple[int, int], torch.Tensor] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", key: str = "g_ema",
             with_discriminator: bool = False) -> GeneratorHandle:
        """Load a checkpoint file or a run folder (its newest `checkpoints/ckpt-*.pt`).

        `key` picks the generator ("g_ema", the one to sample from, or "g"); `device` may be "auto".
        Raises FileNotFoundError, or CheckpointError for anything that is not a loadable StyleGAN2 checkpoint.
        """
        select_device(device)  # a bad device fails before a large file is read
        resolved = resolve_checkpoint(path)
        checkpoint = load_checkpoint(resolved, map_location="cpu")
        return cls.from_checkpoint(checkpoint, device=device, key=key, with_discriminator=with_discriminator,
                                   path=resolved)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], *, device: str | torch.device = "cpu",
                        key: str = "g_ema", with_discriminator: bool = False,
                        path: str | Path | None = None) -> GeneratorHandle:
        """The same as `load`, for a checkpoint dict already in memory (`path` only names it in errors)."""
        target = select_device(device)
        where = str(path) if path is not None else "the checkpoint"
        if not isinstance(checkpoint, dict):
            raise CheckpointError(f"{where} holds a {type(checkpoint).__name__}; expected {EXPECTED}")
        if key not in checkpoint:
            raise CheckpointError(f"{where} has no {key!r} network, so it is not a StyleGAN2 checkpoint of a kind "
                                  f"we load{_kind_hint(checkpoint)}: found top-level keys "
                                  f"{_top_level_keys(checkpoint)}; expected {EXPECTED}")
        if not isinstance(checkpoint[key], dict):
            raise CheckpointError(f"{where}: checkpoint[{key!r}] is a {type(checkpoint[key]).__name__}, "
                                  "not a state dict")
        try:
            generator = generator_from_checkpoint(checkpoint, key=key)
            discriminator = None
            if with_discriminator:
                if not isinstance(checkpoint.get("d"), dict):
                    raise CheckpointError(f"the discriminator was asked for, but there is no 'd' network (top-level "
                                          f"keys {_top_level_keys(checkpoint)}); load without "
                                          "with_discriminator=True, or use a file that has one")
                discriminator = discriminator_from_checkpoint(checkpoint, **_stddev_group(checkpoint))
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from exc
        # latent_avg is tracked for the EMA generator (NVlabs' w_avg, SD-GAN's snapshot): not G's centre.
        latent_avg = checkpoint.get("latent_avg") if key == "g_ema" else None
        try:
            return cls(generator.to(target), discriminator=discriminator, latent_avg=latent_avg, checkpoint_path=path)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc}") from exc

    # ------------------------------------------------------------------ properties
    @property
    def generator(self) -> Generator:
        return self._generator

    @property
    def discriminator(self) -> Discriminator | None:
        """The discriminator when loaded with `with_discriminator=True`, else None."""
        return self._discriminator

    @property
    def size(self) -> int:
        return self._generator.size

    @property
    def style_dim(self) -> int:
        return self._generator.style_dim

    @property
    def n_latent(self) -> int:
        """W+ layers: the number of style vectors one image takes."""
        return self._generator.n_latent

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def checkpoint_path(self) -> Path | None:
        """The file loaded (a run folder resolved to its checkpoint); None when built from memory."""
        return self._checkpoint_path

    @property
    def latent_avg(self) -> torch.Tensor | None:
        """The file's `latent_avg` as (1, style_dim) on the device, or None when it has none."""
        return self._latent_avg

    def __repr__(self) -> str:
        return (f"GeneratorHandle(size={self.size}, style_dim={self.style_dim}, n_latent={self.n_latent}, "
                f"device={self.device}, discriminator={self._discriminator is not None}, "
                f"checkpoint={self._checkpoint_path})")

    # ------------------------------------------------------------------ latents
    def z(self, seeds: str | Iterable[int]) -> torch.Tensor:
        """(N, style_dim) on the device, one z per seed from its own RNG (`seeded_z`): batch-independent."""
        return seeded_z(check_seeds(seeds), self.style_dim, self._device)

    @torch.no_grad()
    def mean_w(self, n: int = DEFAULT_MEAN_SAMPLES, seed: int = DEFAULT_TRUNC_SEED) -> torch.Tensor:
        """(1, style_dim): the truncation centre. The file's `latent_avg` when it has one, else the mean W of
        `n` z drawn from a CPU generator seeded with `seed` (independent of the global RNG and the device);
        computed once per (n, seed)."""
        if self._latent_avg is not None:
            return self._latent_avg
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"mean_w needs n >= 1 samples, got {n!r}")
        cache_key = (n, int(seed))
        if cache_key not in self._mean_w:
            rng = torch.Generator().manual_seed(int(seed))
            self._mean_w[cache_key] = self._generator.mean_latent(n, generator=rng)
        return self._mean_w[cache_key]

    @torch.no_grad()
    def z_to_w(self, z: torch.Tensor, truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
               batch_size: int = 1024) -> torch.Tensor:
        """(N, style_dim) W on the device: the mapping network in batches, then truncation towards
        `truncation_latent` (default `mean_w()`) when psi < 1."""
        psi = check_truncation(truncation)
        z = self._check_latent(z, "z", allow_w_plus=False)
        batch_size = self._check_batch_size(batch_size)
        w = torch.cat([self._generator.style(chunk) for chunk in z.split(batch_size)])
        return self._truncate(w, psi, self._centre(truncation_latent) if psi < 1 else None)

    def w_from_seeds(self, seeds: str | Iterable[int], truncation: float = 1.0) -> torch.Tensor:
        """(N, style_dim) W of the seeds' z (`z` then `z_to_w`)."""
        return self.z_to_w(self.z(seeds), truncation)

    # ------------------------------------------------------------------ synthesis
    @torch.no_grad()
    def synthesize(self, w: torch.Tensor, *, truncation: float = 1.0, truncation_latent: torch.Tensor | None = None,
                   noise_mode: str = "const", seed: int | Sequence[int] | None = None, batch_size: int = 8,
                   output: str = "tensor") -> torch.Tensor:
        """Images of W (N, style_dim; used for every layer) or W+ (N, n_latent, style_dim), on the CPU.

        truncation: psi in (0, 1], applied in W space towards `truncation_latent` (default `mean_w()`); 1 = none.
        noise_mode: "const" (the generator's stored noise maps), "random" (per sample, drawn from a CPU RNG
        seeded by `seed`: an int s gives sample i the seed s + i, a sequence gives one seed per sample) or
        "none" (zero noise). output: "tensor" (N, 3, H, W) float in [-1, 1], or "uint8" (N, H, W, 3).
        Batching changes the result only at float rounding (as any batched convolution does).
        """
        psi = check_truncation(truncation)
        self._check_modes(noise_mode, output)
        w = self._check_latent(w, "w", allow_w_plus=True)
        batch_size = self._check_batch_size(batch_size)
        noise_seeds = self._noise_seeds(seed, len(w)) if noise_mode == "random" else [None] * len(w)
        w = self._truncate(w, psi, self._centre(truncation_latent) if psi < 1 else None)
        images = [self._render(w[start:start + batch_size], noise_mode, noise_seeds[start:start + batch_size])
                  for start in range(0, len(w), batch_size)]
        return self._finish(images, output)

    @torch.no_grad()
    def synthesize_seeds(self, seeds: str | Iterable[int], truncation: float = 1.0, noise_mode: str = "const", *,
                         truncation_latent: torch.Tensor | None = None, batch_size: int = 16,
                         output: str = "tensor") -> torch.Tensor:
        """Seeds -> z -> W -> images: exactly `sdgan generate`'s images for the same seeds, psi and noise mode.

        Random noise of seed s is drawn from seed s + 1 (not z's stream). To stay bit-for-bit what generate has
        always produced, seeds are mapped and rendered in chunks of `batch_size` (default 16, generate's), and
        one at a time with random noise.
        """
        seed_list = check_seeds(seeds)
        psi = check_truncation(truncation)
        self._check_modes(noise_mode, output)
        batch_size = self._check_batch_size(batch_size)
        centre = self._centre(truncation_latent) if psi < 1 else None
        step = 1 if noise_mode == "random" else batch_size
        images = []
        for start in range(0, len(seed_list), step):
            chunk = seed_list[start:start + step]
            w = self._truncate(self._generator.style(self.z(chunk)), psi, centre)
            images.append(self._render(w, noise_mode, [seed + 1 for seed in chunk]))
        return self._finish(images, output)

    # ------------------------------------------------------------------ helpers
    def _check_latent(self, latent: Any, name: str, allow_w_plus: bool) -> torch.Tensor:
        """A float tensor on the device of shape (N, style_dim) (or W+ when allowed), finite; ValueError else."""
        latent = torch.as_tensor(latent)
        if not latent.is_floating_point():
            raise ValueError(f"{name} must be a float tensor, got dtype {latent.dtype}")
        shapes = f"(N, {self.style_dim})" + (f" or (N, {self.n_latent}, {self.style_dim})" if allow_w_plus else "")
        if latent.ndim == 2 and latent.shape[1] != self.style_dim:
            raise ValueError(f"{name} has style dim {latent.shape[1]}, the generator's is {self.style_dim} "
                             f"(expected {shapes})")
        if latent.ndim == 3 and allow_w_plus and latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"{name} has shape {tuple(latent.shape)}: a W+ latent of this {self.size} px generator "
                             f"has n_latent={self.n_latent} layers of style dim {self.style_dim} (expected {shapes})")
        if latent.ndim not in ((2, 3) if allow_w_plus else (2,)) or len(latent) == 0:
            raise ValueError(f"{name} must have shape {shapes} with N >= 1, got {tuple(latent.shape)}")
        if not bool(torch.isfinite(latent).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return latent.to(self._device, torch.float32)

    @staticmethod
    def _check_batch_size(batch_size: int) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        return batch_size

    @staticmethod
    def _check_modes(noise_mode: str, output: str) -> None:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")

    @staticmethod
    def _noise_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
        """One noise seed per sample, so that a sample's noise never depends on the batch it is in."""
        if seed is None:
            raise ValueError("noise_mode='random' needs seed= (an int, or one int per sample) to be repeatable")
        seeds = [seed + index for index in range(count)] if isinstance(seed, int) else list(seed)
        if len(seeds) != count:
            raise ValueError(f"seed has {len(seeds)} values for {count} latents")
        return check_seeds(seeds)

    def _centre(self, truncation_latent: torch.Tensor | None) -> torch.Tensor:
        """(1, style_dim) truncation centre on the device: the one given, else `mean_w()`."""
        if truncation_latent is None:
            return self.mean_w()
        centre = torch.as_tensor(truncation_latent)
        if centre.numel() != self.style_dim or not bool(torch.isfinite(centre).all()):
            raise ValueError(f"truncation_latent must hold {self.style_dim} finite values, "
                             f"got shape {tuple(centre.shape)}")
        return centre.to(self._device, torch.float32).reshape(1, self.style_dim)

    @staticmethod
    def _truncate(w: torch.Tensor, psi: float, centre: torch.Tensor | None) -> torch.Tensor:
        """centre + psi * (w - centre): the expression (and float order) of the Generator's own truncation."""
        return w if centre is None or psi >= 1 else centre + psi * (w - centre)

    def _render(self, w: torch.Tensor, noise_mode: str, noise_seeds: Sequence[int | None]) -> torch.Tensor:
        """One batch of (already truncated) W / W+ -> float CPU images, not yet clamped."""
        g = self._generator
        if noise_mode == "const":
            image, _ = g([w], input_is_latent=True, randomize_noise=False)
        else:
            if noise_mode == "random":
                per_sample = [g.make_noise(generator=torch.Generator().manual_seed(int(s))) for s in noise_seeds]
                noise = [torch.cat(maps) for maps in zip(*per_sample)]  # (B, 1, H, W): each sample its own
            else:
                noise = [torch.zeros_like(getattr(g.noises, f"noise_{i}")) for i in range(g.num_layers)]
            image, _ = g([w], input_is_latent=True, noise=noise)
        return image.float().cpu()

    @staticmethod
    def _finish(images: list[torch.Tensor], output: str) -> torch.Tensor:
        batch = torch.cat(images).clamp_(-1, 1)
        return batch if output == "tensor" else torch.from_numpy(to_uint8(batch))

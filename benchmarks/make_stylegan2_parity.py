"""Record rosinality/stylegan2-pytorch's outputs on seeded weights: the golden file for tests/training/stylegan2/test_parity.py.

Run by hand (CPU, float32; about a minute on 2 cores):
    .venv/bin/python benchmarks/make_stylegan2_parity.py --rosinality /path/to/stylegan2-pytorch \
        [--out tests/fixtures/stylegan2/parity.pt] [--seed 20240601]

Two configs: 32 px (style_dim 64, n_mlp 2, channel_multiplier 1; every case, discriminator batch 8 so the
minibatch-stddev layer forms groups of 4) and 64 px (the channel drop 512 -> 256 and the discriminator's
channel-changing ResBlock; plain, mapping and backward cases only). Weights are not stored: both sides
rebuild them from the seed with tests.training.stylegan2.parity_weights.seeded_state_dict. At 32 px the small outputs
(mapping, logits, dL/dW and per-parameter gradient sums and norms) are recorded again in float64, for a backward check below float32
rounding noise. The file holds only
tensors, ints, floats, strs, lists and dicts, so torch.load(..., weights_only=True) reads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.training.stylegan2.parity_weights import (
    discriminator_cases,
    float64_cases,
    generator_cases,
    import_rosinality,
    load_seeded,
    make_inputs,
)

FORMAT = 1
CONFIGS = {
    "s32": {"generator": {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 1},
            "discriminator": {"size": 32, "channel_multiplier": 1}, "d_batch": 8, "full": True, "float64": True},
    "s64": {"generator": {"size": 64, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 1},
            "discriminator": {"size": 64, "channel_multiplier": 1}, "d_batch": 2, "full": False, "float64": False},
}


def record(rosinality, config: dict, seed: int) -> dict:
    torch.manual_seed(seed)  # construction draws noise buffers and inits; all are overwritten below
    g = load_seeded(rosinality.Generator(**config["generator"]), seed)
    d = load_seeded(rosinality.Discriminator(**config["discriminator"]), seed)
    inputs = make_inputs(g, config["discriminator"]["size"], seed + 1, d_batch=config["d_batch"])
    kernels = {f"g.{k}": v.clone() for k, v in g.state_dict().items() if "kernel" in k}
    kernels.update({f"d.{k}": v.clone() for k, v in d.state_dict().items() if "kernel" in k})
    outputs = {"g": generator_cases(g, inputs, full=config["full"]), "d": discriminator_cases(d, inputs)}
    # casts g and d to float64, so after the float32 cases; one config only (float64 CPU convs are slow)
    outputs64 = float64_cases(g, d, inputs) if config["float64"] else {"g": {}, "d": {}}
    shapes = {"g": {k: list(v.shape) for k, v in g.state_dict().items()},
              "d": {k: list(v.shape) for k, v in d.state_dict().items()}}
    return {"config": dict(config), "inputs": inputs, "kernels": kernels, "state_dict_shapes": shapes,
            "outputs": outputs, "outputs_float64": outputs64,
            "n_latent": int(g.n_latent), "num_layers": int(g.num_layers)}


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} |max| {value.abs().max().item():.4g}"
    if isinstance(value, list):
        return f"list[{len(value)}]"
    return repr(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rosinality", required=True, type=Path, help="checkout of rosinality/stylegan2-pytorch")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "stylegan2" / "parity.pt")
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()

    rosinality = import_rosinality(args.rosinality)
    torch.set_grad_enabled(True)
    fixture = {"format": FORMAT, "seed": args.seed, "dtype": "float32", "torch": str(torch.__version__),
               "reference": "rosinality/stylegan2-pytorch model.py, CPU fallbacks", "configs": {}}
    for name, config in CONFIGS.items():
        fixture["configs"][name] = entry = record(rosinality, config, args.seed)
        for part in ("g", "d"):
            for key, value in entry["outputs"][part].items():
                print(f"{name} {part}.{key:<20} {describe(value)}")
            for key, value in entry["outputs_float64"][part].items():
                print(f"{name} {part}.{key + ' (f64)':<20} {describe(value)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    torch.load(args.out, weights_only=True)  # must stay readable without unpickling arbitrary objects
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

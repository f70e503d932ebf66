"""load_unsup3d / save_unsup3d: official full and networks-only checkpoints, ours, and the wrong kind of file.

The official full checkpoint is built here the way Unsup3d's Trainer writes it (network and optimizer state
dicts, epoch, and a pickled `unsup3d.meters.MetricsTrace`). The MetricsTrace class comes from a throwaway
module whose __setstate__ writes a marker file and calls os.system: loading it in a fresh process without that
module importable must give the networks and the epoch, name the class in `skipped`, and leave no marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from training.common.checkpoint import CheckpointError
from training.unsup3d import Unsup3dNets, load_unsup3d, save_unsup3d
from training.unsup3d.checkpoint import read_torch_file_restricted
from training.unsup3d.networks import NetConfig

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"netD": NetConfig("EDDeconv", 3, 1, nf=16, zdim=32, tanh=False),
         "netA": NetConfig("EDDeconv", 3, 3, nf=16, zdim=32),
         "netL": NetConfig("Encoder", 3, 4, nf=16),
         "netV": NetConfig("Encoder", 3, 6, nf=16),
         "netC": NetConfig("ConfNet", 3, 2, nf=16, zdim=32)}

METERS = '''
import os


class MetricsTrace:
    """Stands for unsup3d.meters.MetricsTrace; unpickling it for real leaves traces."""

    def __init__(self, marker):
        self.data = {"train": [{"loss": 0.5}], "val": [{"loss": 0.75}]}
        self.marker = marker

    def __setstate__(self, state):
        with open(state["marker"], "w") as handle:
            handle.write("executed")
        os.system("touch " + state["marker"] + ".system")
        self.__dict__.update(state)
'''


def small_nets(seed: int = 0) -> dict[str, torch.nn.Module]:
    torch.manual_seed(seed)
    return {name: config.build() for name, config in SMALL.items()}


def adam_states(nets: dict[str, torch.nn.Module]) -> dict[str, dict]:
    """Optimizer state dicts after one step, as the official trainer saves them (optimizerD ...)."""
    states = {}
    for name, net in nets.items():
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=5e-4)
        for param in net.parameters():
            param.grad = torch.ones_like(param) * 1e-3
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        states[name.replace("net", "optimizer")] = optimizer.state_dict()
    return states


def assert_nets_equal(loaded: Unsup3dNets, states: dict[str, dict]) -> None:
    for name, state in states.items():
        net = getattr(loaded, name)
        assert net is not None, name
        got = net.state_dict()
        assert list(got) == list(state), name
        for key, value in state.items():
            assert torch.equal(got[key], value), f"{name}.{key}"


def write_official_full(tmp_path: Path, zip_format: bool) -> tuple[Path, Path, dict[str, dict]]:
    """An official-layout full checkpoint holding a trap MetricsTrace; returns (checkpoint, marker, states)."""
    package = tmp_path / "trap" / "unsup3d"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "meters.py").write_text(METERS)
    marker = tmp_path / "marker.txt"
    nets = small_nets()
    states = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    sys.path.insert(0, str(tmp_path / "trap"))
    try:
        from unsup3d.meters import MetricsTrace  # the throwaway module

        checkpoint = {**states, **adam_states(nets), "metrics_trace": MetricsTrace(str(marker)), "epoch": 30}
        path = tmp_path / "checkpoint030.pth"
        torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    finally:
        sys.path.remove(str(tmp_path / "trap"))
        for module in ("unsup3d.meters", "unsup3d"):
            sys.modules.pop(module, None)
    torch.save(states, tmp_path / "reference.pt")
    return path, marker, states


def run_python(code: str, cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + str(extra_path) if extra_path else "")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_official_full_checkpoint_loads_without_running_pickled_code(tmp_path: Path, zip_format: bool) -> None:
    path, marker, _ = write_official_full(tmp_path, zip_format)
    reference_path = str(tmp_path / "reference.pt")
    code = f"""
        import json, sys, torch
        assert "unsup3d" not in sys.modules
        from training.unsup3d import load_unsup3d
        nets = load_unsup3d({str(path)!r})
        reference = torch.load({reference_path!r}, weights_only=True)
        equal = all(torch.equal(getattr(nets, n).state_dict()[k], v)
                    for n, s in reference.items() for k, v in s.items())
        try:
            import unsup3d.meters
            importable = True
        except ImportError:
            importable = False
        print(json.dumps({{"equal": equal, "epoch": nets.epoch, "skipped": nets.skipped, "kind": nets.kind,
                          "metrics": nets.metrics, "optimizers": sorted(nets.optimizers), "importable": importable,
                          "netC": nets.netC is not None}}))
    """
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["importable"] is False
    assert report["equal"] and report["netC"]
    assert report["epoch"] == 30 and report["kind"] == "official"
    assert "unsup3d.meters.MetricsTrace" in report["skipped"]
    assert report["metrics"]["data"] == {"train": [{"loss": 0.5}], "val": [{"loss": 0.75}]}
    assert report["optimizers"] == ["optimizerA", "optimizerC", "optimizerD", "optimizerL", "optimizerV"]
    assert not marker.exists() and not Path(f"{marker}.system").exists()


def test_trap_really_fires_when_unpickled_unsafely(tmp_path: Path) -> None:
    """Control: the same file loaded the unsafe way, module importable, does run the pickled code."""
    path, marker, _ = write_official_full(tmp_path, zip_format=True)
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"  # unsafe on purpose: the control
    result = run_python(code, cwd=tmp_path, extra_path=tmp_path / "trap")
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "executed"


def test_official_full_in_process_and_optimizer_state_resumes(tmp_path: Path) -> None:
    path, marker, states = write_official_full(tmp_path, zip_format=True)
    loaded = load_unsup3d(path)
    assert_nets_equal(loaded, states)
    assert not marker.exists()
    optimizer = torch.optim.Adam(loaded.netD.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=5e-4)
    optimizer.load_state_dict(loaded.optimizers["optimizerD"])
    assert optimizer.state_dict()["state"][0]["step"] == 1


def test_networks_only_checkpoint(tmp_path: Path) -> None:
    nets = small_nets(1)
    del nets["netC"]  # the demo's model has no confidence network
    states = {name: net.state_dict() for name, net in nets.items()}
    path = tmp_path / "clean.pth"
    torch.save(states, path)  # Trainer.save_clean_checkpoint: the model state only
    loaded = load_unsup3d(path)
    assert_nets_equal(loaded, states)
    assert loaded.netC is None and loaded.epoch is None and loaded.skipped == [] and loaded.kind == "networks"
    assert all(not net.training for net in loaded.networks().values())


def test_ours_round_trip_is_weights_only(tmp_path: Path) -> None:
    nets = small_nets(2)
    states = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in nets.items()}
    optimizers = {name: torch.optim.Adam(net.parameters()) for name, net in nets.items()}
    path = save_unsup3d(tmp_path / "ours.pt", nets, optimizers=optimizers, epoch=7,
                        extra={"run_id": "abc", "image_size": 64}, metrics={"train": [{"loss": 1.0}]})
    raw = torch.load(path, weights_only=True)  # no pickled objects at all
    assert set(raw) >= {"netD", "netA", "netL", "netV", "netC", "optimizerD", "epoch", "metrics_trace", "sdgan"}
    loaded = load_unsup3d(path)
    assert_nets_equal(loaded, states)
    assert loaded.epoch == 7 and loaded.kind == "sdgan" and loaded.skipped == []
    assert loaded.extra["run_id"] == "abc" and loaded.metrics == {"train": [{"loss": 1.0}]}
    again = save_unsup3d(tmp_path / "again.pt", loaded)  # an Unsup3dNets saves back, epoch and metrics kept
    reloaded = load_unsup3d(again)
    assert reloaded.epoch == 7 and reloaded.metrics == loaded.metrics
    assert_nets_equal(reloaded, states)


def test_celeba_configuration_infers_from_shapes(tmp_path: Path) -> None:
    from training.unsup3d.networks import celeba_networks

    nets = celeba_networks()
    path = save_unsup3d(tmp_path / "celeba.pt", nets)
    loaded = load_unsup3d(path)
    assert loaded.netD.network[-1].__class__.__name__ == "Conv2d"  # netD: no activation
    assert loaded.netA.network[-1].__class__.__name__ == "Tanh"
    assert sum(p.numel() for p in loaded.netC.parameters()) == 7_678_208


def test_stylegan2_checkpoint_is_refused_naming_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "stylegan2.pt"
    torch.save({"g": {"w": torch.zeros(1)}, "d": {}, "g_ema": {}, "g_optim": {}, "d_optim": {}}, path)
    with pytest.raises(CheckpointError, match="g_ema") as info:
        load_unsup3d(path)
    assert "not an Unsup3d checkpoint" in str(info.value)


def test_misshapen_network_is_refused(tmp_path: Path) -> None:
    nets = small_nets()
    states = {name: net.state_dict() for name, net in nets.items()}
    states["netA"] = dict(states["netA"])
    states["netA"]["network.4.weight"] = torch.zeros(5)
    torch.save(states, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="netA"):
        load_unsup3d(tmp_path / "bad.pth")


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02 not a checkpoint" * 10)
    with pytest.raises(CheckpointError):
        load_unsup3d(tmp_path / "garbage.pth")
    with pytest.raises(FileNotFoundError):
        load_unsup3d(tmp_path / "absent.pth")


def test_restricted_reader_refuses_nothing_silently(tmp_path: Path) -> None:
    """A pickled function call (os.system) is stubbed and listed, never run."""

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"x": torch.ones(2), "evil": Evil()}, path)
    data, skipped = read_torch_file_restricted(path)
    assert torch.equal(data["x"], torch.ones(2))
    assert any(name.endswith(".system") for name in skipped)
    assert not (tmp_path / "pwned").exists()

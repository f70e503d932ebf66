"""Project-wide rules that are cheap to check statically."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from data_catalog.config import load_config
from data_catalog.stages import STAGES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["data_catalog", "crawling", "alignment", "training", "inference", "flows"]
# DESIGN.md section 2: which of our packages each package may import.
ALLOWED = {
    "data_catalog": set(),
    "crawling": {"data_catalog"},
    "alignment": {"data_catalog"},
    "training": {"data_catalog", "alignment"},
    "inference": {"data_catalog", "alignment", "training"},
    "flows": {"data_catalog", "crawling", "alignment", "training", "inference"},
}


def our_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        illegal = our_imports(path) - ALLOWED[package] - {package}
        assert not illegal, f"{path.relative_to(ROOT)} imports {sorted(illegal)}"


@pytest.mark.parametrize("profile", ["demo", "full"])
@pytest.mark.parametrize("stage", [name for name, spec in STAGES.items() if spec.built])
def test_every_built_stage_has_a_valid_config_per_profile(stage: str, profile: str) -> None:
    config_cls, _ = STAGES[stage].load()
    assert load_config(config_cls, profile).STAGE == stage


def test_torch_load_always_restricts_to_weights() -> None:
    pattern = re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)")
    # A test may load unsafely in a throwaway subprocess to show that its trap is real; it says so on the line.
    control = "# unsafe on purpose: the control"
    offenders = [
        str(p.relative_to(ROOT))
        for package in [*PACKAGES, "tests", "benchmarks"]
        for p in (ROOT / package).rglob("*.py")
        if p != Path(__file__) and any(pattern.search(line) and not (package == "tests" and line.endswith(control))
                                       for line in p.read_text(encoding="utf-8").splitlines())
    ]
    assert not offenders


def test_setup_commands_are_the_readme_ones() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.M)
    constraints = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M)
    assert "torchvision" not in (ROOT / "pyproject.toml").read_text(encoding="utf-8")

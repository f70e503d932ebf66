"""The contract every stage keeps, as a test mixin (diffusers' tester-mixin idea).

A stage's test module subclasses `StageContract`, names the stage and says how to prepare its upstream and
which config change must change its cache key; it then inherits these tests:

- a run writes `config.json` and `manifest.json` into its run folder, books a completed `runs` row and records
  the fingerprint of the code paths its declaration names;
- a rerun with the same config and inputs produces the same content hash;
- a config change changes the cache key (and an equal config keeps it);
- a module added to a sibling folder leaves the code fingerprint alone, an edit of the stage's own code does not;
- `catalog verify` is clean after the run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest

from data_catalog.config import StageConfig
from data_catalog.manifest import PROJECT_ROOT, Manifest, code_fingerprint
from data_catalog.runs import MANIFEST_FILE_NAME
from data_catalog.stages import get as get_stage
from data_catalog.workspace import Workspace


class StageContract:
    stage: ClassVar[str]
    # False for a stage whose output is about the workspace at the time (catalog-verify's report counts the runs
    # before it): such a stage must then be declared not cacheable, since a hit would return a stale report.
    reproducible: ClassVar[bool] = True

    # -- what a stage's test class provides ------------------------------------------------------------------
    def prepare(self, tmp_path: Path) -> tuple[Workspace, list[Manifest]]:
        """A workspace holding what the stage reads, and the upstream manifests to pass it."""
        return Workspace(tmp_path / "ws"), []

    def config(self) -> StageConfig:
        raise NotImplementedError

    def changed_config(self) -> StageConfig:
        """A config whose change must rerun the stage."""
        raise NotImplementedError

    def run_stage(self, config: StageConfig, workspace: Workspace, inputs: list[Manifest]) -> Manifest:
        _, run = get_stage(self.stage).load()
        return run(config, workspace, inputs)

    # -- shared fixtures ---------------------------------------------------------------------------------------
    @pytest.fixture
    def first_run(self, tmp_path: Path) -> tuple[Workspace, list[Manifest], Manifest]:
        workspace, inputs = self.prepare(tmp_path)
        return workspace, inputs, self.run_stage(self.config(), workspace, inputs)

    # -- the contract -----------------------------------------------------------------------------------------
    def test_run_writes_config_manifest_and_a_completed_runs_row(self, first_run: Any) -> None:
        workspace, _, manifest = first_run
        folder = workspace.run_dir(self.stage, manifest.run_id)
        saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert saved["stage"] == self.stage and saved["config_hash"] == self.config().hash == manifest.config_hash
        written = Manifest.from_json((folder / MANIFEST_FILE_NAME).read_text(encoding="utf-8"))
        assert written.status == "completed" and written.content_hash == manifest.content_hash
        booked = workspace.manifest(manifest.run_id)
        assert booked.status == "completed" and booked.content_hash == manifest.content_hash
        assert booked.code_fingerprint == code_fingerprint(get_stage(self.stage).code)
        assert workspace.current(self.stage).run_id == manifest.run_id

    def test_rerun_gives_the_same_content_hash(self, first_run: Any) -> None:
        workspace, inputs, manifest = first_run
        again = self.run_stage(self.config(), workspace, inputs)
        assert again.run_id != manifest.run_id
        if self.reproducible:
            assert again.content_hash == manifest.content_hash
        else:
            assert again.content_hash != manifest.content_hash and not get_stage(self.stage).cacheable

    def test_config_change_changes_the_cache_key(self, tmp_path: Path) -> None:
        from flows.caching import stage_cache_key

        _, inputs = self.prepare(tmp_path)
        refs = [m.model_dump(mode="json") for m in inputs]
        key = stage_cache_key(self.stage, self.config().to_dict(), refs)
        assert stage_cache_key(self.stage, self.config().to_dict(), refs) == key
        assert stage_cache_key(self.stage, self.changed_config().to_dict(), refs) != key

    def test_sibling_code_change_keeps_the_key_own_code_change_does_not(self, tmp_path: Path) -> None:
        code = get_stage(self.stage).code
        root = tmp_path / "project"
        for entry in code:
            source, target = PROJECT_ROOT / entry, root / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
        before = code_fingerprint(code, root)
        own = code[-1]  # the stage's own folder or module is declared last
        sibling = (root / own).parent / "a_new_sibling_stage" / "model.py"
        sibling.parent.mkdir(parents=True)
        sibling.write_text("LAYERS = 3\n")
        (root / "data_catalog" / "stages.py").parent.mkdir(parents=True, exist_ok=True)
        (root / "data_catalog" / "stages.py").write_text("# declarations: never part of a fingerprint\n")
        assert code_fingerprint(code, root) == before
        edited = root / own if (root / own).is_file() else sorted((root / own).rglob("*.py"))[-1]
        edited.write_text(edited.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
        assert code_fingerprint(code, root) != before

    def test_catalog_verify_is_clean_after_the_run(self, first_run: Any) -> None:
        from data_catalog.verify import verify_workspace

        workspace, _, _ = first_run
        report = verify_workspace(workspace, rehash=True)
        assert report.ok, report.problems

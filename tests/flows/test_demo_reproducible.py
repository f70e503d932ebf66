"""Two clean demo builds in two fresh workspaces give the same dataset version, byte for byte.

The crawl's built-in emulator binds a random port each time; it publishes its results under a stable name
(http://search-emulator.invalid) that the crawl's HTTP client maps to the real port, so no URL in the shards'
metadata, and nothing the version id hashes, depends on the port.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from data_catalog import Workspace
from data_catalog.hashing import sha256_file
from tests.conftest import BIN, PROJECT_ROOT

pytestmark = pytest.mark.prefect_server

# A reduced corpus (3 variants per class instead of 72) still crawls all four engine formats.
SMALL_CORPUS = 'crawl.emulator.corpus_options={"variants_per_class": 3}'
ENGINES = {"google", "naver", "google-api", "naver-api"}
STABLE = "http://search-emulator.invalid/"
RUN_SPECIFIC = {"README.md"}  # the card names the upstream run ids and the code version; the data files must not


def build(workspace: Path, prefect_server: str) -> Path:
    """`sdgan run build-megn --profile demo` in a fresh process; returns the version folder."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    done = subprocess.run([str(BIN / "sdgan"), "run", "build-megn", "--workspace", str(workspace), "--profile", "demo",
                           "--set", SMALL_CORPUS], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (version,) = Workspace(workspace, create=False).dataset_versions()
    return workspace / "primary" / "megn" / version


def hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))  # stats/ too
            if p.is_file() and p.name not in RUN_SPECIFIC}


def test_two_clean_demo_builds_give_byte_identical_shards(prefect_server: str, tmp_path: Path) -> None:
    first = build(tmp_path / "one" / "ws", prefect_server)
    second = build(tmp_path / "two" / "ws", prefect_server)
    assert first.name == second.name  # the version id
    assert hashes(first) == hashes(second)
    assert sorted(p.name for p in first.glob("megn-*.tar"))

    engines: set[str] = set()
    for shard in sorted(first.glob("megn-*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    meta = json.loads(archive.extractfile(member).read())
                    engines |= {s["engine"] for s in meta["sources"]}
                    for source in meta["sources"]:
                        assert source["url"].startswith(STABLE), source
                        assert source["page_url"] is None or source["page_url"].startswith(STABLE), source
    assert engines == ENGINES

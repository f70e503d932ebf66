"""Artifacts that render in Prefect's UI: the dataset card without front matter, images embedded as thumbnails."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from PIL import Image

from data_catalog.card import write_card
from data_catalog.stages import StageOutputs
from flows.artifacts import THUMBNAIL_SIDE, artifact_markdown
from tests.data_catalog.test_card import card_inputs

DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)")


def embedded_images(markdown: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in DATA_URI.findall(markdown)]


def card_outputs(folder: Path) -> dict:
    card, _ = write_card(folder, card_inputs())
    return StageOutputs(title="dataset version v", items={"card": str(card)}, markdown=str(card),
                        artifact_key="megn-dataset-card").to_json()


def test_the_card_loses_its_front_matter_and_embeds_its_grid(tmp_path: Path) -> None:
    outputs = card_outputs(tmp_path / "v")
    assert (tmp_path / "v" / "README.md").read_text(encoding="utf-8").startswith("---\n")  # the file keeps it
    markdown = artifact_markdown(outputs)
    assert markdown is not None and markdown.startswith("# MEGN dataset, version")
    assert "pretty_name:" not in markdown and "](grid.png)" not in markdown
    (grid,) = embedded_images(markdown)
    with Image.open(tmp_path / "v" / "grid.png") as original:
        assert max(grid.size) <= THUMBNAIL_SIDE and grid.size[0] / grid.size[1] == pytest.approx(
            original.size[0] / original.size[1], rel=0.02)


def test_image_outputs_are_embedded_and_other_links_left_alone(tmp_path: Path) -> None:
    Image.new("RGB", (2000, 500), (10, 200, 30)).save(tmp_path / "grid.png")
    report = tmp_path / "report.md"
    report.write_text("# report\n\n![far](https://example.org/x.png) ![gone](missing.png)\n", encoding="utf-8")
    described = StageOutputs(title="model", items={"grid": str(tmp_path / "grid.png"), "kimg": "0.048"},
                             markdown=str(report)).to_json()
    markdown = artifact_markdown(described)
    assert "![far](https://example.org/x.png)" in markdown and "![gone](missing.png)" in markdown
    (grid,) = embedded_images(markdown)
    assert grid.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 4)
    assert grid.getpixel((10, 10)) == pytest.approx((10, 200, 30), abs=6)
    assert artifact_markdown(StageOutputs(title="nothing to show", items={"kimg": "1"}).to_json()) is None


@pytest.mark.prefect_server
def test_published_card_artifact_renders(prefect_server: str, tmp_path: Path) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    from flows.pipeline import publish_outputs

    outputs = {"shard": card_outputs(tmp_path / "v")}

    @flow(name="publish-card")
    def publish() -> None:
        publish_outputs(outputs)

    state = publish(return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["megn-dataset-card"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert artifact.type == "markdown" and not artifact.data.startswith("---")
    assert artifact.data.startswith("# MEGN dataset") and len(embedded_images(artifact.data)) == 1

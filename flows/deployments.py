"""`prefect.yaml`, generated from the stage declarations: every flow gets one deployment per profile.

A flow's profiles are those with a config file for each of its built stages (`configs/<profile>/<stage>.yaml`),
so adding a stage and its two YAML files is all it takes to deploy it; `sdgan deployments --write` rewrites
the file and a test fails while the committed one differs.
"""

from __future__ import annotations

from typing import Any

import yaml

from data_catalog.config import config_path
from data_catalog.manifest import PROJECT_ROOT
from data_catalog.stages import PIPELINES, STAGES, flow_names, flow_stages

DEFAULT_FILE = PROJECT_ROOT / "prefect.yaml"
PROFILES = {
    "demo": "the embedded demo corpus and CPU-sized models",
    "full": "the real engines (API keys from the environment) and full-size models",
}
HEADER = """\
# GENERATED from the stage declarations (data_catalog/stages.py) by `sdgan deployments --write`; do not edit.
# Deployments of sdgan-pipeline. Two ways to run them:
#   sdgan serve                      one process serves them all (reads this file), no work pool needed
#   prefect deploy --all             register them on a process work pool, then `prefect worker start --pool sdgan`
# Then: prefect deployment run 'reproduce/demo' --param workspace=$PWD/workspace/demo --watch
"""


def flow_profiles(name: str) -> list[str]:
    built = [stage for stage in flow_stages(name) if STAGES[stage].built]
    return [profile for profile in PROFILES if all(config_path(stage, profile).is_file() for stage in built)]


def deployment_entries() -> list[dict[str, Any]]:
    entries = []
    for name in flow_names():
        summary = PIPELINES[name].summary if name in PIPELINES else STAGES[name].summary
        attribute = name.replace("-", "_") + "_flow"
        for profile in flow_profiles(name):
            entries.append({
                "name": profile,
                "entrypoint": f"flows/dag.py:{attribute}",
                "description": f"{summary[0].upper()}{summary[1:]}; profile {profile}: {PROFILES[profile]}.",
                "tags": ["sdgan", name, profile],
                "parameters": {"workspace": f"workspace/{profile}", "profile": profile},
                "work_pool": {"name": "sdgan"},
            })
    return entries


def render_prefect_yaml() -> str:
    document = {
        "name": "sdgan-pipeline",
        "prefect-version": "3.9.1",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $SDGAN_PROJECT_DIR }}"}}],
        "deployments": deployment_entries(),
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=1000)

"""Deployable flows by name. `prefect.yaml` declares their deployments; a test keeps the two in step."""

from __future__ import annotations

import importlib

from prefect import Flow

FLOWS: dict[str, str] = {
    "reproduce": "flows.reproduce:reproduce_flow",
    "catalog-verify": "flows.catalog_verify:catalog_verify_flow",
    "crawl": "flows.crawl:crawl_flow",
    "align": "flows.align:align_flow",
    "shard": "flows.shard:shard_flow",
    "build-megn": "flows.build_megn:build_megn_flow",
    "train-stylegan2": "flows.train_stylegan2:train_stylegan2_flow",
}


def load_flow(name_or_entrypoint: str) -> Flow:
    """A flow by name (`reproduce`) or by entrypoint (`flows/reproduce.py:reproduce_flow`)."""
    target = FLOWS.get(name_or_entrypoint, name_or_entrypoint)
    module_part, sep, attr = target.partition(":")
    if not sep:
        raise KeyError(f"unknown flow {name_or_entrypoint!r}; flows: {', '.join(FLOWS)}")
    module_name = module_part.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module_name), attr)

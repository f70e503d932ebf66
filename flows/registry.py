"""Deployable flows by name (`reproduce`) or entrypoint (`flows/dag.py:reproduce_flow`)."""

from __future__ import annotations

import importlib

from prefect import Flow

from data_catalog.stages import flow_names


def load_flow(name_or_entrypoint: str) -> Flow:
    if name_or_entrypoint in flow_names():
        from flows import dag

        return dag.FLOWS.get(name_or_entrypoint) or dag.make_flow(name_or_entrypoint)
    module_part, sep, attr = name_or_entrypoint.partition(":")
    if not sep:
        raise KeyError(f"unknown flow {name_or_entrypoint!r}; flows: {', '.join(flow_names())}")
    module_name = module_part.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module_name), attr)

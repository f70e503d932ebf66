"""Every deployable flow, made from the declarations in `data_catalog.stages` by one factory.

One flow per built stage (`crawl_flow`, `train_stylegan2_flow`, ...) and per pipeline (`build_megn_flow`,
`reproduce_flow`), all with the same parameters (workspace, profile, overrides, force, task_runner, workers,
lock_wait) plus the shortcuts their stages declare (crawl: sources, plan, ...; train-stylegan2: dataset, resume).
They are attributes of this module, which is what `prefect.yaml`'s entrypoints name (`flows/dag.py:crawl_flow`).
A flow returns `{"stages": [outcome per stage], "outputs": {stage: what its current run left}}`.
"""

from __future__ import annotations

import inspect
from typing import Any

from prefect import Flow, flow

from data_catalog.stages import PIPELINES, STAGES, Option, StageSpec, flow_names, flow_stages
from flows.pipeline import outcomes_to_json, publish_outputs, run_stages, stage_outputs
from flows.preflight import shortcut_overrides

_KW = inspect.Parameter.KEYWORD_ONLY
COMMON_PARAMETERS = (
    inspect.Parameter("workspace", _KW, annotation=str),
    inspect.Parameter("profile", _KW, default="demo", annotation=str),
    inspect.Parameter("overrides", _KW, default=None, annotation=list[str] | None),
    inspect.Parameter("force", _KW, default=None, annotation=list[str] | None),
    inspect.Parameter("task_runner", _KW, default="thread", annotation=str),
    inspect.Parameter("workers", _KW, default=4, annotation=int),
    # seconds (or "forever") to queue behind another run holding the workspace; None: $SDGAN_LOCK_WAIT, else 0
    inspect.Parameter("lock_wait", _KW, default=None, annotation=str | None),
)


def flow_options(names: tuple[str, ...]) -> list[tuple[StageSpec, Option]]:
    """The shortcuts of a flow: those of its stages (a pipeline's stages each keep their own)."""
    found, seen = [], set()
    for name in names:
        spec = STAGES[name]
        for option in spec.options:
            if option.name in seen:
                raise ValueError(f"option {option.name!r} is declared by two stages of one flow")
            seen.add(option.name)
            found.append((spec, option))
    return found


def make_flow(name: str) -> Flow:
    """The Prefect flow named `name` (a built stage or a pipeline)."""
    names = flow_stages(name)
    options = flow_options(names) if name not in PIPELINES else []
    summary = PIPELINES[name].summary if name in PIPELINES else STAGES[name].summary

    def body(**kwargs: Any) -> dict[str, Any]:
        extra, forced = shortcut_overrides(name, {o.name: kwargs[o.name] for _, o in options if o.name in kwargs})
        forced = list(kwargs.get("force") or []) + forced
        outcomes = run_stages(list(names), kwargs["workspace"], kwargs.get("profile", "demo"),
                              list(kwargs.get("overrides") or []) + extra, forced,
                              task_runner=kwargs.get("task_runner", "thread"), workers=kwargs.get("workers", 4),
                              lock_wait=kwargs.get("lock_wait"))
        outputs = stage_outputs(kwargs["workspace"], names)
        publish_outputs(outputs)
        return {"stages": outcomes_to_json(outcomes), "outputs": outputs}

    parameters = list(COMMON_PARAMETERS) + [
        inspect.Parameter(o.name, _KW, default=o.default, annotation=o.type) for _, o in options
    ]
    body.__signature__ = inspect.Signature(parameters, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    body.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": dict[str, Any]}
    body.__name__ = body.__qualname__ = name.replace("-", "_") + "_flow"
    body.__module__ = __name__
    body.__doc__ = f"{summary[0].upper()}{summary[1:]}."
    return flow(name=name, description=body.__doc__, persist_result=True, result_serializer="json")(body)


FLOWS: dict[str, Flow] = {name: make_flow(name) for name in flow_names()}
globals().update({flow_.fn.__name__: flow_ for flow_ in FLOWS.values()})


def __getattr__(attribute: str) -> Flow:
    """Entry points like `flows/dag.py:crawl_flow` (also stages declared after import, e.g. in tests)."""
    for name in flow_names():
        if name.replace("-", "_") + "_flow" == attribute:
            return FLOWS.setdefault(name, make_flow(name))
    raise AttributeError(f"module {__name__!r} has no flow {attribute!r}; flows: {', '.join(flow_names())}")

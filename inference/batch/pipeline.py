"""A pipeline's graph over the rows of a chunk: the batch side of inference/pipelines.

An endpoint whose primary route is a pipeline can be a batch job's target. Each chunk
runs the pipeline version's compiled graph (inference.pipelines.graph) once over all its
rows: feature lookups read the chunk's keys in one round trip, model steps run on this
worker's batch sessions (executor.model_for), `MODELHUB_BATCH_INFER_ROWS` rows per ONNX
Runtime call with the lease renewed between calls. Routers (a bandit deciding per
request) have no meaning for a table and are refused when the job is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inference.batch import executor
from inference.pipelines import features
from inference.pipelines.graph import CompiledPipeline, FeatureLookup, ModelRef, Router, Step, SubPipeline
from inference.runtime.signature import Signature

# A whole chunk's keys are read at once: the online step's timeout (milliseconds, sized
# for one request) does not apply.
LOOKUP_TIMEOUT_S = 30.0


class PipelineRefused(ValueError):
    """The pipeline cannot run as a batch job (the message says why)."""


def routers(graph: CompiledPipeline) -> list[str]:
    """The names of the router steps anywhere in the graph (arms' sub-pipelines included)."""
    found: list[str] = []
    for step in graph.steps.values():
        if isinstance(step, Router):
            found.append(step.name)
        elif isinstance(step, SubPipeline) and step.graph is not None:
            found += routers(step.graph)
    return found


def batch_check(graph: CompiledPipeline) -> None:
    """PipelineRefused when the graph has a step that has no meaning over a table."""
    names = routers(graph)
    if names:
        raise PipelineRefused(
            f"pipeline {graph.name}:{graph.version} has a router step ({', '.join(names)}): a bandit decides per "
            "request, which has no meaning for a table; run a pipeline without routers, or a model version"
        )


def lineage(graph: CompiledPipeline) -> list[dict[str, Any]]:
    """The model versions the graph's steps resolved to, in step order (each once)."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for ref in graph.models():
        seen.setdefault(
            (ref.model, ref.version),
            {"model": ref.model, "version": ref.version, "stage": ref.stage, "sha256": ref.artifact_sha256},
        )
    return list(seen.values())


def lineage_mismatch(graph: CompiledPipeline, recorded: Sequence[dict[str, Any]]) -> str:
    """Why the graph compiled now is not the one the job recorded ("" when it is)."""
    now = {(m["model"], m["sha256"]): m for m in lineage(graph)}
    then = {(m["model"], m["sha256"]): m for m in recorded}
    if now.keys() == then.keys():
        return ""
    gone = [f"{m['model']} v{m['version']}" for key, m in then.items() if key not in now]
    new = [f"{m['model']} v{m['version']}" for key, m in now.items() if key not in then]
    return (
        f"pipeline {graph.name}:{graph.version} now resolves to {', '.join(new) or 'other versions'} instead of "
        f"{', '.join(gone) or 'the recorded ones'} (a stage alias moved since the job was created); start a new job"
    )


def signature(graph: CompiledPipeline) -> Signature:
    return Signature.from_dict(graph.signature_dict())


class TableRun:
    """graph.Runner for the rows of one chunk (no deadline: the lease bounds a chunk)."""

    def __init__(self, graph: CompiledPipeline, *, device: str, infer_rows: int, between: Callable[[], None]) -> None:
        self.graph = graph
        self.device = device
        self.infer_rows = infer_rows
        self.between = between  # run before every model call: renews the lease, stops a cancelled job
        self.deadline = float("inf")
        self.providers: set[str] = set()

    def child(self, graph: CompiledPipeline, *, prefix: str) -> TableRun:
        return TableRun(graph, device=self.device, infer_rows=self.infer_rows, between=self.between)

    def predict(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = executor.model_for(
            sha256=ref.artifact_sha256, name=ref.model, version=str(ref.version), device=self.device
        )
        self.providers.add(model.provider)
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, rows, self.infer_rows):
            self.between()
            part = model.predict({name: values[start : start + self.infer_rows] for name, values in inputs.items()})
            for name, values in part.items():
                pieces.setdefault(name, []).append(values)
        return {name: np.concatenate(values) for name, values in pieces.items()}

    def submit(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # An ensemble's members run one after the other: a batch worker has one core's thread.
        return self.predict(ref, inputs)

    def result(self, ref: ModelRef, future: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return future

    def features(self, step: FeatureLookup, keys: np.ndarray) -> np.ndarray:
        return features.fetch(step, keys, timeout_s=LOOKUP_TIMEOUT_S, strict=True)

    def decide(self, step: Router) -> str:
        raise PipelineRefused(f'router step "{step.name}" cannot run in a batch job')  # refused at creation

    def step_done(self, step: Step, seconds: float, out: Any, exc: Any) -> None:
        return None  # per-step serving metrics and traces are for online requests


def run(
    graph: CompiledPipeline, feeds: dict[str, np.ndarray], *, device: str, infer_rows: int, between: Callable[[], None]
) -> tuple[dict[str, np.ndarray], str]:
    """The graph's outputs for `feeds` (all the chunk's good rows) and the providers used."""
    runner = TableRun(graph, device=device, infer_rows=infer_rows, between=between)
    outputs = graph.run(runner, feeds)
    return outputs, ",".join(sorted(runner.providers))

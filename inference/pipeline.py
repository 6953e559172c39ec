"""Declarative pre/post-processing around a model: no code, no eval, checked up front.

The schema (docs/serving.md, "Pre/post-processing") in short:

    preprocessing = {
      "features": {"input": "X", "names": ["a", "b", "c"], "defaults": {"c": 0.0}},
      "scale": {"X": {"mean": [..] | number, "std": [..] | number}},
    }
    postprocessing = {"steps": [
      {"op": "clip", "output": "y", "min": 0, "max": 1},
      {"op": "threshold", "output": "probabilities", "column": 1, "value": 0.5,
       "name": "decision", "labels": ["no", "yes"]},
      {"op": "labels", "output": "label", "name": "label_name", "class_names": [...]},
    ]}

`features` lets simple-JSON instances be objects of named features (filled from
`defaults` when missing) instead of raw rows; `scale` standardises float inputs after
they were validated; post-processing steps add or rewrite outputs. `labels` takes its
class names from the version's metadata (`class_names`) unless given. Everything is
checked against the model's signature when a table is built, so a bad setting is a
clear error when it is saved, never a 500 on a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.runtime.errors import InputError

POST_OPS = ("clip", "threshold", "labels")


class PipelineConfigError(ValueError):
    """A pre/post-processing setting that cannot work; the message names the key."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise PipelineConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _numbers(value: Any, where: str) -> np.ndarray:
    if isinstance(value, list):
        if not value:
            raise PipelineConfigError(f"{where}: expected a number or a non-empty list of numbers")
        return np.array([_number(v, f"{where}[{i}]") for i, v in enumerate(value)], dtype=np.float64)
    return np.array(_number(value, where), dtype=np.float64)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PipelineConfigError(f"{where}: expected a non-empty list of strings")
    return list(value)


def config_check(preprocessing: Any, postprocessing: Any) -> None:
    """Structure only (no model needed): what endpoint_create/update check on save."""
    pipeline_compile(preprocessing, postprocessing, signature=None, metadata={})


@dataclass(frozen=True)
class _Scale:
    input: str
    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class Pipeline:
    feature_input: str = ""
    feature_names: tuple[str, ...] = ()
    feature_defaults: Mapping[str, float] = field(default_factory=dict)
    scales: tuple[_Scale, ...] = ()
    steps: tuple[Mapping[str, Any], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.feature_names or self.scales or self.steps)

    def prepare_body(self, body: Any) -> Any:
        """Named-feature instances -> rows of the feature input (before the codec)."""
        if not self.feature_names or not isinstance(body, dict):
            return body
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            return body
        if self.feature_input in instances[0]:
            return body  # already by input name
        known = set(self.feature_names)
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InputError(f"instance {i} must be an object of feature name -> value")
            unknown = [name for name in instance if name not in known]
            if unknown:
                raise InputError(
                    f'instance {i}: unknown feature "{unknown[0]}"; features are '
                    + ", ".join(f'"{n}"' for n in self.feature_names)
                )
            row = []
            for name in self.feature_names:
                if name in instance:
                    row.append(instance[name])
                elif name in self.feature_defaults:
                    row.append(self.feature_defaults[name])
                else:
                    raise InputError(f'instance {i}: missing feature "{name}" (it has no default)')
            rows.append(row)
        return {"inputs": {self.feature_input: rows}}

    def prepare_inputs(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.scales:
            return inputs
        out = dict(inputs)
        for scale in self.scales:
            arr = out[scale.input]
            out[scale.input] = ((arr - scale.mean) / scale.std).astype(arr.dtype, copy=False)
        return out

    def finish(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(outputs)
        for step in self.steps:
            arr = out[step["output"]]
            op = step["op"]
            if op == "clip":
                out[step["output"]] = np.clip(arr, step.get("min"), step.get("max"))
            elif op == "threshold":
                scores = arr[:, step["column"]] if arr.ndim == 2 else arr
                decision = (scores >= step["value"]).astype(np.int64)
                labels = step.get("labels")
                out[step["name"]] = np.array(labels, dtype=object)[decision] if labels else decision
            elif op == "labels":
                names = np.array(step["class_names"] + ["<unknown>"], dtype=object)
                index = arr.astype(np.int64)
                index = np.where((index >= 0) & (index < len(step["class_names"])), index, len(step["class_names"]))
                out[step["name"]] = names[index]
        return out


def pipeline_compile(
    preprocessing: Any, postprocessing: Any, *, signature: Any, metadata: Mapping[str, Any]
) -> Pipeline:
    """A checked Pipeline; PipelineConfigError naming the bad key. `signature` may be None
    (structure-only check) or an inference.runtime.signature.Signature."""
    pre = preprocessing or {}
    post = postprocessing or {}
    if not isinstance(pre, dict):
        raise PipelineConfigError("preprocessing: expected a JSON object")
    if not isinstance(post, dict):
        raise PipelineConfigError("postprocessing: expected a JSON object")
    unknown = set(pre) - {"features", "scale"}
    if unknown:
        raise PipelineConfigError(f"preprocessing: unknown key {sorted(unknown)[0]!r}; known: features, scale")
    unknown = set(post) - {"steps"}
    if unknown:
        raise PipelineConfigError(f"postprocessing: unknown key {sorted(unknown)[0]!r}; known: steps")

    def check_input(name: str, where: str, *, need_float: bool = False) -> Any:
        if signature is None:
            return None
        if not signature.has_input(name):
            raise PipelineConfigError(
                f"{where}: the model has no input {name!r} (inputs: {', '.join(signature.input_names)})"
            )
        spec = signature.input(name)
        if need_float and spec.datatype not in ("FP16", "FP32", "FP64"):
            raise PipelineConfigError(f"{where}: input {name!r} is {spec.datatype}; only float inputs can be scaled")
        return spec

    feature_input, feature_names, defaults = "", (), {}
    features = pre.get("features")
    if features is not None:
        if not isinstance(features, dict):
            raise PipelineConfigError("preprocessing.features: expected an object with names (and input, defaults)")
        feature_names = tuple(_strings(features.get("names"), "preprocessing.features.names"))
        if len(set(feature_names)) != len(feature_names):
            raise PipelineConfigError("preprocessing.features.names: a name appears twice")
        feature_input = features.get("input", "")
        if not isinstance(feature_input, str):
            raise PipelineConfigError("preprocessing.features.input: expected an input name")
        if not feature_input and signature is not None:
            if len(signature.inputs) != 1:
                raise PipelineConfigError("preprocessing.features.input: the model has several inputs; name one")
            feature_input = signature.inputs[0].name
        spec = check_input(feature_input, "preprocessing.features.input") if feature_input else None
        if spec is not None and (spec.rank != 2 or spec.shape[1] not in (-1, len(feature_names))):
            raise PipelineConfigError(
                f"preprocessing.features: input {feature_input!r} is {spec.describe()}, "
                f"which does not take rows of {len(feature_names)} features"
            )
        raw_defaults = features.get("defaults", {})
        if not isinstance(raw_defaults, dict):
            raise PipelineConfigError("preprocessing.features.defaults: expected an object of feature -> value")
        for name, value in raw_defaults.items():
            if name not in feature_names:
                raise PipelineConfigError(f"preprocessing.features.defaults: {name!r} is not one of the names")
            defaults[name] = _number(value, f"preprocessing.features.defaults.{name}")

    scales = []
    scale = pre.get("scale", {})
    if not isinstance(scale, dict):
        raise PipelineConfigError("preprocessing.scale: expected an object of input name -> {mean, std}")
    for name, setting in scale.items():
        where = f"preprocessing.scale.{name}"
        if not isinstance(setting, dict) or set(setting) - {"mean", "std"}:
            raise PipelineConfigError(f'{where}: expected {{"mean": ..., "std": ...}}')
        mean = _numbers(setting.get("mean", 0.0), f"{where}.mean")
        std = _numbers(setting.get("std", 1.0), f"{where}.std")
        if np.any(std == 0):
            raise PipelineConfigError(f"{where}.std: must not be zero")
        spec = check_input(name, where, need_float=True)
        if spec is not None:
            width = spec.shape[-1] if spec.rank else 1
            for arr, key in ((mean, "mean"), (std, "std")):
                if arr.ndim and width != -1 and arr.shape[0] != width:
                    raise PipelineConfigError(f"{where}.{key}: {arr.shape[0]} values for {spec.describe()}")
        scales.append(_Scale(name, mean, std))

    steps = []
    raw_steps = post.get("steps", [])
    if not isinstance(raw_steps, list):
        raise PipelineConfigError("postprocessing.steps: expected a list of steps")
    produced: set[str] = set()
    for i, step in enumerate(raw_steps):
        where = f"postprocessing.steps[{i}]"
        if not isinstance(step, dict) or step.get("op") not in POST_OPS:
            raise PipelineConfigError(f"{where}: expected an object with op one of {', '.join(POST_OPS)}")
        output = step.get("output")
        if not isinstance(output, str):
            raise PipelineConfigError(f"{where}.output: expected an output name")
        if signature is not None and not signature.has_output(output) and output not in produced:
            raise PipelineConfigError(
                f"{where}.output: the model has no output {output!r} (outputs: {', '.join(signature.output_names)})"
            )
        op = step["op"]
        clean: dict[str, Any] = {"op": op, "output": output}
        if op == "clip":
            if "min" not in step and "max" not in step:
                raise PipelineConfigError(f"{where}: clip needs min, max or both")
            clean["min"] = _number(step["min"], f"{where}.min") if "min" in step else None
            clean["max"] = _number(step["max"], f"{where}.max") if "max" in step else None
        else:
            name = step.get("name", f"{output}_{'decision' if op == 'threshold' else 'name'}")
            if not isinstance(name, str) or not name:
                raise PipelineConfigError(f"{where}.name: expected the name of the new output")
            clean["name"] = name
            produced.add(name)
        if op == "threshold":
            clean["value"] = _number(step.get("value"), f"{where}.value")
            column = step.get("column", 1)
            if isinstance(column, bool) or not isinstance(column, int) or column < 0:
                raise PipelineConfigError(f"{where}.column: expected a column index")
            clean["column"] = column
            if "labels" in step:
                labels = _strings(step["labels"], f"{where}.labels")
                if len(labels) != 2:
                    raise PipelineConfigError(f"{where}.labels: expected two labels (below, at or above)")
                clean["labels"] = labels
        if op == "labels":
            names = step.get("class_names")
            if names is None:
                names = metadata.get("class_names")
                if names is None and signature is not None:
                    raise PipelineConfigError(f"{where}.class_names: not given and the version's metadata has none")
            clean["class_names"] = _strings(names, f"{where}.class_names") if names is not None else []
        steps.append(clean)
    return Pipeline(
        feature_input=feature_input,
        feature_names=feature_names,
        feature_defaults=defaults,
        scales=tuple(scales),
        steps=tuple(steps),
    )

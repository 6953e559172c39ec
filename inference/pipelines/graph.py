"""A pipeline's graph: checked when saved, then run per request. No Django, no I/O of its own.

`pipeline_compile(spec, resolve=..., router_check=...)` turns the saved JSON into a
`CompiledPipeline` or raises `GraphError` (400) naming the step, the tensor and both types.
Tensors are wired by name: every tensor has exactly one producer (a pipeline input or a
step), a step reads tensors by name (`inputs` renames: {"step's name": "graph's name"})
and writes them (`outputs` renames: {"step's name": "graph's name"}). Dependencies follow
from the names, so the order of `steps` does not matter; a cycle, a name nobody
produces, an unknown step and a step whose outputs reach no pipeline output are refused.

Types flow from the declared inputs through each step: a model step takes its ONNX
signature (the registry's), a feature lookup yields FP32 columns, a transform's ops and
rules say what they make, an ensemble combines like-typed outputs, a switch or a router
yields what all of its branches agree on.

`switch` and `router` own the steps they name (branches, arms): those run only through
their owner, on the rows (switch) or the request (router) sent to them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np

from common.errors import ModelhubError
from inference.pipelines import expr
from inference.runtime.signature import TensorSpec, numpy_dtype

KINDS = ("feature_lookup", "transform", "model", "ensemble", "switch", "router")
COMBINE = ("mean", "weighted_mean", "majority_vote", "max", "concat")
ON_MISSING = ("default", "impute", "refuse")
SOURCES = ("store", "feast")  # a lookup's source: the built-in store (Redis / database), a Feast feature server
FLOATS = ("FP16", "FP32", "FP64")
INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL")
MAX_STEPS = 64


class GraphError(ModelhubError):
    """A pipeline that cannot work: refused when saved (400), naming step and tensor."""

    status = 400
    code = "invalid_pipeline"


@dataclass(frozen=True)
class ModelRef:
    """A model step's version, resolved by the caller (the registry) from "name" + version
    or a stage alias "name@production"."""

    ref: str  # as written: "fraud:2" or "fraud@production"
    model: str
    version: int
    stage: str
    signature: Any  # inference.runtime.signature.Signature
    artifact_sha256: str = ""
    artifact_path: str = ""
    version_id: int = 0
    # Where the step runs: "in_process", "worker_pool", or "" (the pipeline route's placement).
    placement: str = ""

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


Resolver = Callable[[str, Any], ModelRef]  # (step name, {"model": ..., "version": ...}) -> ModelRef


class Runner(Protocol):
    """What steps need from the request: the model calls, the feature store, the bandit."""

    deadline: float

    def submit(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> Any: ...

    def result(self, ref: ModelRef, future: Any) -> dict[str, np.ndarray]: ...

    def features(self, step: FeatureLookup, keys: np.ndarray) -> np.ndarray: ...

    def decide(self, step: Router) -> str: ...


def _spec(name: str, datatype: str, shape: Any) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, shape=tuple(int(d) for d in shape))


def _names_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise GraphError(f"{where}: expected an object of name -> name")
    return dict(value)


def _fits(want: TensorSpec, have: TensorSpec) -> bool:
    if want.datatype != have.datatype or want.rank != have.rank:
        return False
    return all(w == -1 or h == -1 or w == h for w, h in zip(want.shape, have.shape, strict=True))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise GraphError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


Types = dict[str, TensorSpec]


@dataclass
class Step:
    name: str
    kind: str
    raw: Mapping[str, Any]
    owner: str | None = None
    reads: tuple[str, ...] = ()  # graph names it reads
    writes: dict[str, TensorSpec] = field(default_factory=dict)  # graph name -> type
    checked: bool = False

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        """Fill `writes` from the types of what it reads; GraphError on a mismatch."""

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def where(self) -> str:
        return f'step "{self.name}"'

    def need(self, types: Types, name: str, role: str) -> TensorSpec:
        spec = types.get(name)
        if spec is None:
            raise GraphError(f'{self.where()}: {role} tensor "{name}" is produced by no input or step before it')
        return spec


# ------------------------------------------------------------------ feature lookup

FEAST_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
FEAST_KEYS = ("kind", "url", "feature_service", "feature_refs", "entity_key")


@dataclass(frozen=True)
class FeastSource:
    """Where a lookup reads from a Feast feature server: POST {url}/get-online-features
    with `feature_service` or `feature_refs` ("view:feature"), the batch's keys sent as
    the join key `entity_key`. The step's `features` are Feast's feature names (without
    the view: the answer's names when full_feature_names is off)."""

    url: str  # scheme://host[:port][/path], no trailing "/"
    entity_key: str
    feature_service: str = ""
    feature_refs: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str, features: tuple[str, ...], key: str) -> FeastSource:
        unknown = sorted(set(raw) - set(FEAST_KEYS))
        if unknown:
            raise GraphError(f"{where}: unknown field(s) {', '.join(unknown)} (expected {', '.join(FEAST_KEYS)})")
        url = raw.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username
            or parts.password
            or parts.query
            or parts.fragment
        ):
            raise GraphError(f"{where}.url: expected the feature server's http(s)://host:port, got {url!r}")
        try:
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError:
            raise GraphError(f"{where}.url: bad port in {url!r}") from None
        entity_key = raw.get("entity_key", key)
        if not isinstance(entity_key, str) or not FEAST_NAME.fullmatch(entity_key):
            raise GraphError(f"{where}.entity_key: expected Feast's join key name (letters, digits, _)")
        service, refs = raw.get("feature_service"), raw.get("feature_refs")
        if (service is None) == (refs is None):
            raise GraphError(f"{where}: name either feature_service or feature_refs")
        if service is not None:
            if not isinstance(service, str) or not FEAST_NAME.fullmatch(service):
                raise GraphError(f"{where}.feature_service: expected a Feast feature service name")
            return cls(url=url.rstrip("/"), entity_key=entity_key, feature_service=service)
        if not isinstance(refs, list) or not refs:
            raise GraphError(f'{where}.feature_refs: expected a non-empty list of "view:feature"')
        names: dict[str, str] = {}
        for ref in refs:
            view, _, name = ref.partition(":") if isinstance(ref, str) else ("", "", "")
            if not FEAST_NAME.fullmatch(view) or not FEAST_NAME.fullmatch(name):
                raise GraphError(f'{where}.feature_refs: expected "view:feature", got {ref!r}')
            if name in names:
                raise GraphError(f'{where}.feature_refs: "{name}" is in both {names[name]!r} and {ref!r}')
            names[name] = ref
        missing = [f for f in features if f not in names]
        if missing:
            raise GraphError(f"{where}.feature_refs: no ref names the feature(s) {', '.join(missing)}")
        return cls(url=url.rstrip("/"), entity_key=entity_key, feature_refs=tuple(names[f] for f in features))


@dataclass
class FeatureLookup(Step):
    key: str = ""
    feature_set: str = ""
    features: tuple[str, ...] = ()
    renames: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 0.05
    max_age_s: float | None = None
    on_missing: str = "default"
    defaults: dict[str, float] = field(default_factory=dict)
    # "store" (the built-in Redis hashes / database rows) or "feast" (a Feast feature
    # server over HTTP, `feast` below; docs/pipelines.md "Feast feature servers").
    source: str = "store"
    feast: FeastSource | None = None
    # False when the set belongs to a team the pipeline's may not read (set by
    # services.compile_version): the lookup then reads nothing, as from an empty set.
    readable: bool = True

    def parse(self) -> None:
        raw = self.raw
        self.key = raw.get("key", "")
        if not isinstance(self.key, str) or not self.key:
            raise GraphError(f"{self.where()}.key: expected the name of the entity-key tensor")
        self.feature_set = raw.get("feature_set", "")
        if not isinstance(self.feature_set, str) or not self.feature_set:
            raise GraphError(f"{self.where()}.feature_set: expected a feature set name")
        features = raw.get("features")
        if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
            raise GraphError(f"{self.where()}.features: expected a non-empty list of feature names")
        self.features = tuple(features)
        self.renames = _names_map(raw.get("outputs"), f"{self.where()}.outputs")
        timeout = _number(raw.get("timeout_ms", 50), f"{self.where()}.timeout_ms")
        if not 1 <= timeout <= 10_000:
            raise GraphError(f"{self.where()}.timeout_ms: expected 1 to 10000")
        self.timeout_s = timeout / 1000.0
        if raw.get("max_age_s") is not None:
            self.max_age_s = _number(raw["max_age_s"], f"{self.where()}.max_age_s")
        self.on_missing = raw.get("on_missing", "default")
        if self.on_missing not in ON_MISSING:
            raise GraphError(f"{self.where()}.on_missing: expected one of {', '.join(ON_MISSING)}")
        defaults = raw.get("defaults", {})
        if not isinstance(defaults, dict):
            raise GraphError(f"{self.where()}.defaults: expected an object of feature -> number")
        for name, value in defaults.items():
            if name not in self.features:
                raise GraphError(f'{self.where()}.defaults: "{name}" is not one of the features')
            self.defaults[name] = _number(value, f"{self.where()}.defaults.{name}")
        if self.on_missing == "default":
            missing = [f for f in self.features if f not in self.defaults]
            if missing:
                raise GraphError(f'{self.where()}: on_missing "default" needs defaults for {", ".join(missing)}')
        self.parse_source(raw.get("source"))
        self.reads = (self.key,)

    def parse_source(self, raw: Any) -> None:
        where = f"{self.where()}.source"
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise GraphError(f"{where}: expected an object with a kind ({', '.join(SOURCES)})")
        self.source = raw.get("kind", "store")
        if self.source not in SOURCES:
            raise GraphError(f"{where}.kind: expected one of {', '.join(SOURCES)}")
        if self.source == "store":
            extra = sorted(set(raw) - {"kind"})
            if extra:
                raise GraphError(f"{where}: the built-in store takes no settings (got {', '.join(extra)})")
            return
        if self.on_missing == "impute":
            raise GraphError(
                f'{where}: on_missing "impute" needs the reference statistics of the built-in store; '
                'a Feast source takes "default" or "refuse"'
            )
        self.feast = FeastSource.parse(raw, where, self.features, self.key)

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        key = self.need(types, self.key, "key")
        if key.datatype not in ("INT64", "INT32", "BYTES") or key.rank not in (1, 2):
            raise GraphError(
                f'{self.where()}: key tensor "{self.key}" must be INT64, INT32 or BYTES [-1], got {key.describe()}'
            )
        self.writes = {self.renames.get(f, f): _spec(self.renames.get(f, f), "FP32", [-1]) for f in self.features}

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        keys = env[self.key].reshape(rows)
        values = runner.features(self, keys)  # [rows, len(features)] float32
        return {self.renames.get(f, f): values[:, i] for i, f in enumerate(self.features)}


# ------------------------------------------------------------------ transform


@dataclass
class Transform(Step):
    ops: list[dict[str, Any]] = field(default_factory=list)

    def parse(self) -> None:
        raw = self.raw
        ops = raw.get("ops", [])
        rules = raw.get("rules", [])
        if not isinstance(ops, list) or not isinstance(rules, list):
            raise GraphError(f"{self.where()}: ops and rules are lists")
        # Rules first (derived fields), then ops (stack, scale ...); a {"op": "rule"} inside
        # ops runs where it stands.
        self.ops = [{"op": "rule", "rule": rule} for rule in rules]
        self.ops += [dict(op) if isinstance(op, dict) else {"op": None} for op in ops]
        if not self.ops:
            raise GraphError(f"{self.where()}: a transform needs ops or rules")

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        local: Types = {}
        reads: list[str] = []

        def get(name: Any, where: str) -> TensorSpec:
            if not isinstance(name, str):
                raise GraphError(f"{where}: expected a tensor name")
            if name in local:
                return local[name]
            spec = self.need(types, name, "input")
            reads.append(name)
            return spec

        def field_kinds() -> dict[str, tuple[str, int]]:
            out: dict[str, tuple[str, int]] = {}
            for name, spec in {**types, **local}.items():
                if spec.rank == 1 or (spec.rank == 2 and spec.shape[1] == 1):
                    out[name] = (expr.datatype_kind(spec.datatype), 0)
                elif spec.rank == 2:
                    out[name] = (expr.datatype_kind(spec.datatype), spec.shape[1] if spec.shape[1] > 0 else 0)
            return out

        for i, op in enumerate(self.ops):
            where = f"{self.where()}.ops[{i}]"
            kind = op.get("op")
            if kind == "rule":
                try:
                    rule = expr.compile_rule(op.get("rule"), field_kinds())
                except expr.RuleError as exc:
                    raise GraphError(f"{where} ({op.get('rule')!r}): {exc.message}") from None
                for name in rule.reads():
                    get(name, where)
                datatype = {expr.BOOL: "BOOL", expr.STR: "BYTES"}.get(rule.kind, "INT64" if rule.integer else "FP32")
                if rule.target in local or rule.target in types:
                    get(rule.target, where)
                local[rule.target] = _spec(rule.target, datatype, [-1])
                op["_rule"] = rule
            elif kind == "stack":
                fields = op.get("fields")
                if not isinstance(fields, list) or not fields:
                    raise GraphError(f"{where}.fields: expected a list of tensor names")
                width = 0
                for name in fields:
                    spec = get(name, where)
                    if spec.datatype not in FLOATS + INTS:
                        raise GraphError(f'{where}: cannot stack "{name}", it is {spec.describe()}')
                    if spec.rank == 1:
                        width += 1
                    elif spec.rank == 2 and spec.shape[1] > 0:
                        width += spec.shape[1]
                    else:
                        raise GraphError(f'{where}: cannot stack "{name}" of shape {list(spec.shape)}')
                datatype = op.get("datatype", "FP32")
                if datatype not in FLOATS + INTS:
                    raise GraphError(f"{where}.datatype: expected a numeric datatype")
                output = op.get("output")
                if not isinstance(output, str):
                    raise GraphError(f"{where}.output: expected the new tensor's name")
                local[output] = _spec(output, datatype, [-1, width])
            elif kind in ("scale", "clip", "fill"):
                spec = get(op.get("field"), where)
                if spec.datatype not in FLOATS:
                    raise GraphError(f'{where}: "{op.get("field")}" is {spec.describe()}; {kind} takes a float tensor')
                if kind == "scale":
                    std = np.asarray(op.get("std", 1.0), dtype=np.float64)
                    if np.any(std == 0):
                        raise GraphError(f"{where}.std: must not be zero")
                    op["_mean"] = np.asarray(op.get("mean", 0.0), dtype=np.float64)
                    op["_std"] = std
                    width = spec.shape[-1] if spec.rank == 2 else 1
                    for key in ("_mean", "_std"):
                        if op[key].ndim and width != -1 and op[key].shape[0] != width:
                            raise GraphError(f"{where}.{key[1:]}: {op[key].shape[0]} values for {spec.describe()}")
                elif kind == "clip":
                    if "min" not in op and "max" not in op:
                        raise GraphError(f"{where}: clip needs min, max or both")
                    for key in ("min", "max"):
                        if key in op:
                            _number(op[key], f"{where}.{key}")
                else:
                    _number(op.get("value"), f"{where}.value")
                local[op["field"]] = spec
            elif kind == "one_hot":
                spec = get(op.get("field"), where)
                values = op.get("values")
                if not isinstance(values, list) or not values:
                    raise GraphError(f"{where}.values: expected the list of categories")
                output = op.get("output", f"{op['field']}_onehot")
                local[output] = _spec(output, "FP32", [-1, len(values)])
                op["output"] = output
            elif kind == "label_map":
                spec = get(op.get("field"), where)
                mapping = op.get("map")
                if not isinstance(mapping, dict) or not mapping:
                    raise GraphError(f"{where}.map: expected an object of value -> label")
                output = op.get("output", f"{op['field']}_label")
                kinds = {type(v) for v in mapping.values()}
                datatype = "BYTES" if str in kinds else "FP32"
                local[output] = _spec(output, datatype, [-1])
                op["output"] = output
            elif kind == "threshold":
                spec = get(op.get("field"), where)
                if spec.datatype not in FLOATS:
                    raise GraphError(f'{where}: "{op.get("field")}" is {spec.describe()}; threshold takes floats')
                _number(op.get("value"), f"{where}.value")
                output = op.get("output", f"{op['field']}_decision")
                labels = op.get("labels")
                local[output] = _spec(output, "BYTES" if labels else "INT64", [-1])
                op["output"] = output
            else:
                raise GraphError(
                    f"{where}.op: expected one of rule, stack, scale, clip, fill, one_hot, label_map, threshold"
                )
        self.reads = tuple(dict.fromkeys(reads))
        self.writes = local

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        local: dict[str, np.ndarray] = {}

        def get(name: str) -> np.ndarray:
            return local[name] if name in local else env[name]

        for op in self.ops:
            kind = op["op"]
            if kind == "rule":
                rule: expr.Rule = op["_rule"]
                view = _Overlay(env, local)
                value = rule.run(view, rows)  # type: ignore[arg-type]
                spec = self.writes[rule.target]
                local[rule.target] = (
                    value.astype(object) if spec.datatype == "BYTES" else value.astype(numpy_dtype(spec.datatype))
                )
            elif kind == "stack":
                parts = [get(n).reshape(rows, -1) for n in op["fields"]]
                local[op["output"]] = np.concatenate(parts, axis=1).astype(
                    numpy_dtype(self.writes[op["output"]].datatype)
                )
            elif kind == "scale":
                arr = get(op["field"])
                local[op["field"]] = ((arr - op["_mean"]) / op["_std"]).astype(arr.dtype, copy=False)
            elif kind == "clip":
                local[op["field"]] = np.clip(get(op["field"]), op.get("min"), op.get("max"))
            elif kind == "fill":
                arr = get(op["field"])
                local[op["field"]] = np.where(np.isnan(arr), np.asarray(op["value"], dtype=arr.dtype), arr)
            elif kind == "one_hot":
                arr = get(op["field"]).reshape(rows)
                values = op["values"]
                cells = arr.astype(object) if arr.dtype.kind in "OSU" else arr
                local[op["output"]] = np.stack(
                    [np.asarray(cells == v, dtype=np.float32) for v in values], axis=1
                ).reshape(rows, len(values))
            elif kind == "label_map":
                arr = get(op["field"]).reshape(rows)
                mapping = {str(k): v for k, v in op["map"].items()}
                default = op.get("default", "" if self.writes[op["output"]].datatype == "BYTES" else float("nan"))
                out = [mapping.get(_key(v), default) for v in arr.tolist()]
                datatype = self.writes[op["output"]].datatype
                local[op["output"]] = np.array(out, dtype=object if datatype == "BYTES" else np.float32)
            elif kind == "threshold":
                arr = get(op["field"])
                scores = arr[:, int(op.get("column", 1))] if arr.ndim == 2 else arr
                decision = (scores >= op["value"]).astype(np.int64)
                labels = op.get("labels")
                local[op["output"]] = np.array(labels, dtype=object)[decision] if labels else decision
        return local


def _key(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Overlay(dict):  # type: ignore[type-arg]
    """The graph's tensors with a transform's own on top, without copying the graph's."""

    def __init__(self, base: Mapping[str, np.ndarray], top: Mapping[str, np.ndarray]) -> None:
        super().__init__()
        self.base, self.top = base, top

    def __getitem__(self, name: str) -> np.ndarray:
        return self.top[name] if name in self.top else self.base[name]

    def __contains__(self, name: object) -> bool:
        return name in self.top or name in self.base


# ------------------------------------------------------------------ model and ensemble


def _ref_of(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise GraphError(f'{where}.model: expected a model name, "name@stage" or "name:version"')
    version = raw.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise GraphError(f"{where}.version: expected a version number")
    return {"model": model, "version": version}


PLACEMENTS = ("in_process", "worker_pool")


def _placement_of(raw: dict[str, Any], where: str) -> str:
    """A model or ensemble step's `placement`: "" (absent) follows the pipeline's route."""
    placement = raw.get("placement", "")
    if placement != "" and placement not in PLACEMENTS:
        raise GraphError(f"{where}.placement: expected one of {', '.join(PLACEMENTS)} (got {placement!r})")
    return str(placement)


@dataclass
class Model(Step):
    ref: ModelRef | None = None
    inputs_map: dict[str, str] = field(default_factory=dict)
    outputs_map: dict[str, str] = field(default_factory=dict)
    # Filled by parse(), read per request: (the model's tensor, the graph's name) pairs.
    in_pairs: tuple[tuple[str, str], ...] = ()
    out_pairs: tuple[tuple[str, str], ...] = ()

    def parse(self, resolve: Resolver) -> None:
        raw = self.raw
        placement = _placement_of(raw, self.where())
        self.ref = replace(resolve(self.name, _ref_of(raw, self.where())), placement=placement)
        self.inputs_map = _names_map(raw.get("inputs"), f"{self.where()}.inputs")
        self.outputs_map = _names_map(raw.get("outputs"), f"{self.where()}.outputs")
        signature = self.ref.signature
        for name in self.inputs_map:
            if not signature.has_input(name):
                raise GraphError(f'{self.where()}.inputs: {self.ref.label} has no input "{name}"')
        for name in self.outputs_map:
            if not signature.has_output(name):
                raise GraphError(f'{self.where()}.outputs: {self.ref.label} has no output "{name}"')
        self.reads = tuple(self.inputs_map.get(s.name, s.name) for s in signature.inputs)
        self.in_pairs = tuple(zip((s.name for s in signature.inputs), self.reads, strict=True))
        exposed = self.outputs_map or {s.name: s.name for s in signature.outputs}
        self.out_pairs = tuple(exposed.items())

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        assert self.ref is not None
        self.writes = check_model_io(self, self.ref, self.inputs_map, self.outputs_map, types)

    def model_inputs(self, env: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's inputs by its own names, from the graph's tensors."""
        return {own: env[graph_name] for own, graph_name in self.in_pairs}

    def model_outputs(self, result: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs as the graph names them."""
        return {graph_name: result[own] for own, graph_name in self.out_pairs}

    def calls(self, env: dict[str, np.ndarray]) -> list[tuple[ModelRef, dict[str, np.ndarray]]]:
        assert self.ref is not None
        return [(self.ref, self.model_inputs(env))]

    def finish(self, results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return self.model_outputs(results[0])

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        return call_models(self, runner, env)


def check_model_io(
    step: Step, ref: ModelRef, inputs_map: Mapping[str, str], outputs_map: Mapping[str, str], types: Types
) -> dict[str, TensorSpec]:
    """The model's inputs against the graph's tensors (400 naming step, tensor, both types);
    its outputs (renamed) as the graph will see them."""
    for want in ref.signature.inputs:
        name = inputs_map.get(want.name, want.name)
        have = step.need(types, name, f'{ref.label}\'s input "{want.name}":')
        if not _fits(want, have):
            raise GraphError(
                f'{step.where()}: tensor "{name}" is {have.describe()} but {ref.label} input "{want.name}" '
                f"expects {want.describe()}",
                details={"step": step.name, "tensor": name, "expected": want.describe(), "got": have.describe()},
            )
    exposed = outputs_map or {s.name: s.name for s in ref.signature.outputs}
    return {
        graph: _spec(graph, ref.signature.output(own).datatype, ref.signature.output(own).shape)
        for own, graph in exposed.items()
    }


@dataclass
class Ensemble(Step):
    members: list[tuple[ModelRef, float]] = field(default_factory=list)
    combine: str = "mean"
    inputs_map: dict[str, str] = field(default_factory=dict)
    outputs_map: dict[str, str] = field(default_factory=dict)

    def parse(self, resolve: Resolver) -> None:
        raw = self.raw
        members = raw.get("members")
        if not isinstance(members, list) or len(members) < 2:
            raise GraphError(f"{self.where()}.members: expected two or more model references")
        self.combine = raw.get("combine", "mean")
        if self.combine not in COMBINE:
            raise GraphError(f"{self.where()}.combine: expected one of {', '.join(COMBINE)}")
        for i, member in enumerate(members):
            where = f"{self.where()}.members[{i}]"
            if not isinstance(member, dict):
                raise GraphError(f"{where}: expected {{model, version, weight}}")
            weight = _number(member.get("weight", 1.0), f"{where}.weight")
            if weight <= 0:
                raise GraphError(f"{where}.weight: must be above 0")
            ref = resolve(self.name, _ref_of(member, where))
            self.members.append((replace(ref, placement=_placement_of(raw, self.where())), weight))
        self.inputs_map = _names_map(raw.get("inputs"), f"{self.where()}.inputs")
        self.outputs_map = _names_map(raw.get("outputs"), f"{self.where()}.outputs")
        if not self.outputs_map:
            raise GraphError(f'{self.where()}.outputs: name the outputs to combine, e.g. {{"probabilities": "score"}}')
        first = self.members[0][0].signature
        self.reads = tuple(self.inputs_map.get(s.name, s.name) for s in first.inputs)

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        writes: dict[str, TensorSpec] = {}
        for ref, _ in self.members:
            for own in self.outputs_map:
                if not ref.signature.has_output(own):
                    raise GraphError(f'{self.where()}: member {ref.label} has no output "{own}"')
            mine = check_model_io(self, ref, self.inputs_map, self.outputs_map, types)
            for name, spec in mine.items():
                if self.combine in ("mean", "weighted_mean", "max") and spec.datatype not in FLOATS:
                    raise GraphError(
                        f'{self.where()}: {self.combine} combines float tensors; "{name}" of {ref.label} is '
                        f"{spec.describe()}"
                    )
                if self.combine == "majority_vote" and (spec.datatype not in INTS or spec.rank != 1):
                    raise GraphError(
                        f'{self.where()}: majority_vote takes class labels (INT [-1]); "{name}" of {ref.label} is '
                        f"{spec.describe()}"
                    )
                seen = writes.get(name)
                if seen is None:
                    writes[name] = spec
                elif self.combine == "concat":
                    if seen.datatype != spec.datatype or seen.rank != 2:
                        raise GraphError(
                            f'{self.where()}: cannot concat "{name}": {seen.describe()} and {spec.describe()}'
                        )
                    width = -1 if -1 in (seen.shape[1], spec.shape[1]) else seen.shape[1] + spec.shape[1]
                    writes[name] = _spec(name, spec.datatype, [-1, width])
                elif seen.datatype != spec.datatype or not _fits(seen, spec):
                    raise GraphError(
                        f'{self.where()}: members disagree on "{name}": {seen.describe()} vs {spec.describe()} '
                        f"({ref.label})",
                        details={
                            "step": self.name,
                            "tensor": name,
                            "expected": seen.describe(),
                            "got": spec.describe(),
                        },
                    )
        self.writes = writes

    def calls(self, env: dict[str, np.ndarray]) -> list[tuple[ModelRef, dict[str, np.ndarray]]]:
        return [
            (ref, {s.name: env[self.inputs_map.get(s.name, s.name)] for s in ref.signature.inputs})
            for ref, _ in self.members
        ]

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        return call_models(self, runner, env)

    def finish(self, results: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        weights = np.array([w for _, w in self.members], dtype=np.float64)
        out: dict[str, np.ndarray] = {}
        for own, name in self.outputs_map.items():
            arrays = [r[own] for r in results]
            dtype = arrays[0].dtype
            if self.combine == "mean":
                out[name] = np.mean(arrays, axis=0).astype(dtype)
            elif self.combine == "weighted_mean":
                out[name] = np.tensordot(weights / weights.sum(), np.stack(arrays), axes=1).astype(dtype)
            elif self.combine == "max":
                out[name] = np.max(arrays, axis=0)
            elif self.combine == "concat":
                out[name] = np.concatenate(arrays, axis=-1)
            else:
                out[name] = _vote(np.stack(arrays), weights)
        return out


def call_models(step: Model | Ensemble, runner: Runner, env: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Submit every model call of a step before waiting on any (an ensemble's members run
    in parallel), then combine."""
    calls = step.calls(env)
    if len(calls) == 1:  # one model: wait in this thread as a direct route does (no Future)
        return step.finish([runner.predict(*calls[0])])  # type: ignore[attr-defined]
    futures = [runner.submit(ref, inputs) for ref, inputs in calls]
    return step.finish([runner.result(ref, f) for (ref, _), f in zip(calls, futures, strict=True)])


def _vote(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row, the label with the most (weighted) votes; a tie goes to the smallest label."""
    classes = np.unique(labels)
    tally = np.stack([((labels == c) * weights[:, None]).sum(axis=0) for c in classes])
    return classes[np.argmax(tally, axis=0)].astype(labels.dtype)


# ------------------------------------------------------------------ switch and router


def _branch_writes(step: Step, branches: list[Step]) -> dict[str, TensorSpec]:
    first = branches[0]
    for other in branches[1:]:
        if set(other.writes) != set(first.writes):
            raise GraphError(
                f'{step.where()}: branches "{first.name}" and "{other.name}" must write the same tensors '
                f"({', '.join(sorted(first.writes))} vs {', '.join(sorted(other.writes))})"
            )
        for name, spec in other.writes.items():
            if not _fits(first.writes[name], spec):
                raise GraphError(
                    f'{step.where()}: tensor "{name}" is {first.writes[name].describe()} in "{first.name}" but '
                    f'{spec.describe()} in "{other.name}"',
                    details={
                        "step": step.name,
                        "tensor": name,
                        "expected": first.writes[name].describe(),
                        "got": spec.describe(),
                    },
                )
    return dict(first.writes)


@dataclass
class Switch(Step):
    cases: list[tuple[Any, str]] = field(default_factory=list)  # (expr.Rule holder, step)
    default: str = ""
    texts: list[str] = field(default_factory=list)

    def parse(self) -> None:
        cases = self.raw.get("cases")
        if not isinstance(cases, list) or not cases:
            raise GraphError(f'{self.where()}.cases: expected [{{"when": "...", "step": "..."}}, ...]')
        for i, case in enumerate(cases):
            if not isinstance(case, dict) or not isinstance(case.get("step"), str):
                raise GraphError(f"{self.where()}.cases[{i}]: expected {{when, step}}")
            self.cases.append((case.get("when"), case["step"]))
        self.default = self.raw.get("default", "")
        if not isinstance(self.default, str) or not self.default:
            raise GraphError(f"{self.where()}.default: expected the default branch's step name")

    def branches(self) -> list[str]:
        return list(dict.fromkeys([s for _, s in self.cases] + [self.default]))

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        fields = {n: (expr.datatype_kind(s.datatype), 0) for n, s in types.items() if s.rank == 1}
        reads: list[str] = []
        compiled = []
        for i, (text, branch) in enumerate(self.cases):
            try:
                rule = expr.compile_rule(f"_switch = {text}" if isinstance(text, str) else None, fields)
            except expr.RuleError as exc:
                raise GraphError(f"{self.where()}.cases[{i}].when ({text!r}): {exc.message}") from None
            if rule.kind != expr.BOOL:
                raise GraphError(f"{self.where()}.cases[{i}].when: {text!r} is not a condition")
            reads += sorted(rule.reads())
            compiled.append((rule, branch))
        self.cases = compiled
        branch_steps = [graph.steps[b] for b in self.branches()]
        for b in branch_steps:
            reads += list(b.reads)
        self.reads = tuple(dict.fromkeys(reads))
        self.writes = _branch_writes(self, branch_steps)

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        taken = np.zeros(rows, dtype=bool)
        chosen: dict[str, np.ndarray] = {}
        for rule, branch in self.cases:
            holds = np.asarray(rule.run(env, rows), dtype=bool) & ~taken
            taken |= holds
            chosen[branch] = chosen.get(branch, np.zeros(rows, dtype=bool)) | holds
        chosen[self.default] = chosen.get(self.default, np.zeros(rows, dtype=bool)) | ~taken
        out: dict[str, np.ndarray] = {}
        for branch, mask in chosen.items():
            if not mask.any():
                continue
            step = runner_graph(runner).steps[branch]
            if mask.all():
                part = run_step(runner, step, env, rows)
                return part
            index = np.flatnonzero(mask)
            sub = {
                k: v[index] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == rows else v
                for k, v in env.items()
            }
            part = run_step(runner, step, sub, len(index))
            for name, arr in part.items():
                if name not in out:
                    out[name] = np.empty((rows, *arr.shape[1:]), dtype=arr.dtype)
                out[name][index] = arr
        return out


@dataclass
class Router(Step):
    arms: dict[str, str] = field(default_factory=dict)  # arm name -> step
    config: dict[str, Any] = field(default_factory=dict)
    key: str = ""

    def parse(
        self, router_check: Callable[[dict[str, Any]], None], resolve_pipeline: PipelineResolver | None
    ) -> list[Step]:
        """Parse the arms; returns the sub-pipeline steps made for arms that name a pipeline."""
        arms = self.raw.get("arms")
        if not isinstance(arms, list) or len(arms) < 2:
            raise GraphError(
                f'{self.where()}.arms: expected two or more {{"name": ..., "step": ...}} or '
                '{"name": ..., "pipeline": ..., "version": N}'
            )
        made: list[Step] = []
        for i, arm in enumerate(arms):
            where = f"{self.where()}.arms[{i}]"
            if not isinstance(arm, dict) or not (isinstance(arm.get("step"), str) or arm.get("pipeline")):
                raise GraphError(f"{where}: expected {{name, step}} or {{name, pipeline, version}}")
            name = arm.get("name", arm.get("step") or arm.get("pipeline"))
            if not isinstance(name, str) or not name or name in self.arms:
                raise GraphError(f"{where}.name: expected a unique arm name")
            if arm.get("pipeline"):
                if resolve_pipeline is None:
                    raise GraphError(f"{where}: pipelines cannot be arms here")
                sub = SubPipeline(f"{self.name}/{name}", "pipeline", arm)
                sub.graph = resolve_pipeline(self.name, arm)
                sub.reads = tuple(t.name for t in sub.graph.inputs)
                made.append(sub)
                self.arms[name] = sub.name
            else:
                self.arms[name] = arm["step"]
        # What the bandit library takes: its settings and the arm names (the steps stay here).
        self.config = {k: v for k, v in self.raw.items() if k not in ("name", "kind", "arms")}
        self.config["arms"] = list(self.arms)
        router_check(self.config)
        return made

    def branches(self) -> list[str]:
        return list(dict.fromkeys(self.arms.values()))

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        branch_steps = [graph.steps[b] for b in self.branches()]
        self.reads = tuple(dict.fromkeys(r for b in branch_steps for r in b.reads))
        self.writes = _branch_writes(self, branch_steps)

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        arm = runner.decide(self)
        return run_step(runner, runner_graph(runner).steps[self.arms[arm]], env, rows)


@dataclass
class SubPipeline(Step):
    """Another saved pipeline as a router's arm: reads its inputs by name, writes its outputs."""

    graph: CompiledPipeline | None = None

    def check(self, types: Types, graph: CompiledPipeline) -> None:
        assert self.graph is not None
        for want in self.graph.inputs:
            have = self.need(types, want.name, f"pipeline {self.graph.name}:{self.graph.version}'s input")
            if not _fits(want, have):
                raise GraphError(
                    f'{self.where()}: tensor "{want.name}" is {have.describe()} but pipeline '
                    f"{self.graph.name}:{self.graph.version} expects {want.describe()}",
                    details={
                        "step": self.name,
                        "tensor": want.name,
                        "expected": want.describe(),
                        "got": have.describe(),
                    },
                )
        self.reads = tuple(t.name for t in self.graph.inputs)
        self.writes = {t.name: t for t in self.graph.outputs}

    def run(self, runner: Runner, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        assert self.graph is not None
        child = runner.child(self.graph, prefix=self.name)  # type: ignore[attr-defined]
        return self.graph.run(child, {t.name: env[t.name] for t in self.graph.inputs})


PipelineResolver = Callable[[str, Any], "CompiledPipeline"]  # (step, {"pipeline", "version"}) -> graph


# ------------------------------------------------------------------ the compiled graph


@dataclass
class CompiledPipeline:
    name: str
    version: int
    pipeline_id: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    steps: dict[str, Step] = field(default_factory=dict)
    order: tuple[str, ...] = ()  # top-level steps, dependencies first

    def models(self) -> list[ModelRef]:
        refs: list[ModelRef] = []
        for step in self.steps.values():
            if isinstance(step, Model) and step.ref is not None:
                refs.append(step.ref)
            elif isinstance(step, Ensemble):
                refs += [ref for ref, _ in step.members]
            elif isinstance(step, SubPipeline) and step.graph is not None:
                refs += step.graph.models()
        return refs

    def signature_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    def run(self, runner: Runner, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = dict(inputs)
        rows = rows_of(inputs)
        for name in self.order:
            env.update(run_step(runner, self.steps[name], env, rows))
        return {spec.name: env[spec.name] for spec in self.outputs}

    @property
    def loop_safe(self) -> bool:
        """Whether `run_async` may run it on an event loop: only model, ensemble and transform
        steps. A switch or router blocks on model calls inside a step, and a feature lookup
        on a Redis round trip: on the loop those round trips queue behind each other (the
        fraud graph measured 143 req/s there against 392 in the thread pool, c=16)."""
        return all(isinstance(self.steps[n], (Model, Ensemble, Transform)) for n in self.order)

    async def run_async(self, runner: Runner, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`run` on an event loop: model calls are awaited (the batcher's futures), no thread."""
        env = dict(inputs)
        rows = rows_of(inputs)
        for name in self.order:
            step = self.steps[name]
            if not isinstance(step, (Model, Ensemble)):
                env.update(run_step(runner, step, env, rows))
                continue
            started = time.perf_counter()
            try:
                calls = step.calls(env)
                futures = [runner.submit(ref, call) for ref, call in calls]
                results = [await runner.result_async(ref, f) for (ref, _), f in zip(calls, futures, strict=True)]  # type: ignore[attr-defined]
                out = step.finish(results)
            except Exception as exc:
                runner.step_done(step, time.perf_counter() - started, None, exc)  # type: ignore[attr-defined]
                raise
            runner.step_done(step, time.perf_counter() - started, out, None)  # type: ignore[attr-defined]
            env.update(out)
        return {spec.name: env[spec.name] for spec in self.outputs}


def rows_of(inputs: Mapping[str, np.ndarray]) -> int:
    for arr in inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 0


def runner_graph(runner: Runner) -> CompiledPipeline:
    return runner.graph  # type: ignore[attr-defined,no-any-return]


def run_step(runner: Runner, step: Step, env: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """One step, timed and traced by the runner (its `step_done`)."""
    started = time.perf_counter()
    try:
        out = step.run(runner, env, rows)
    except Exception as exc:
        runner.step_done(step, time.perf_counter() - started, None, exc)  # type: ignore[attr-defined]
        raise
    runner.step_done(step, time.perf_counter() - started, out, None)  # type: ignore[attr-defined]
    return out


def pipeline_compile(
    spec: Any,
    *,
    name: str = "",
    version: int = 0,
    pipeline_id: int = 0,
    resolve: Resolver,
    router_check: Callable[[dict[str, Any]], None],
    resolve_pipeline: PipelineResolver | None = None,
) -> CompiledPipeline:
    """The checked graph; GraphError (400) naming what is wrong."""
    if not isinstance(spec, dict):
        raise GraphError("a pipeline spec is an object with inputs, outputs and steps")
    unknown = set(spec) - {"inputs", "outputs", "steps"}
    if unknown:
        raise GraphError(f"unknown key {sorted(unknown)[0]!r}; a spec has inputs, outputs and steps")
    raw_inputs = spec.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise GraphError('inputs: expected [{"name": ..., "datatype": ..., "shape": [-1, ...]}, ...]')
    inputs = []
    for i, raw in enumerate(raw_inputs):
        try:
            tensor = TensorSpec.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(f"inputs[{i}]: expected {{name, datatype, shape}} ({exc})") from None
        if not tensor.shape or tensor.shape[0] != -1:
            raise GraphError(f'inputs[{i}]: "{tensor.name}" must be batched (shape starting with -1)')
        inputs.append(tensor)
    raw_steps = spec.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps or len(raw_steps) > MAX_STEPS:
        raise GraphError(f"steps: expected a list of 1 to {MAX_STEPS} steps")
    graph = CompiledPipeline(name=name, version=version, pipeline_id=pipeline_id, inputs=tuple(inputs))
    for i, raw in enumerate(raw_steps):
        if not isinstance(raw, dict):
            raise GraphError(f"steps[{i}]: expected an object with name and kind")
        step_name, kind = raw.get("name"), raw.get("kind")
        if not isinstance(step_name, str) or not step_name or len(step_name) > 64:
            raise GraphError(f"steps[{i}].name: expected a name")
        if step_name in graph.steps:
            raise GraphError(f'steps[{i}]: two steps are named "{step_name}"')
        if kind not in KINDS:
            raise GraphError(f'step "{step_name}".kind: expected one of {", ".join(KINDS)}, got {kind!r}')
        step: Step
        if kind == "feature_lookup":
            step = FeatureLookup(step_name, kind, raw)
            step.parse()
        elif kind == "transform":
            step = Transform(step_name, kind, raw)
            step.parse()
        elif kind == "model":
            step = Model(step_name, kind, raw)
            step.parse(resolve)
        elif kind == "ensemble":
            step = Ensemble(step_name, kind, raw)
            step.parse(resolve)
        elif kind == "switch":
            step = Switch(step_name, kind, raw)
            step.parse()
        else:
            step = Router(step_name, kind, raw)
            for sub in step.parse(router_check, resolve_pipeline):
                graph.steps[sub.name] = sub
        graph.steps[step_name] = step
    # Owners (switch, router) and the steps they own.
    for step in graph.steps.values():
        if isinstance(step, (Switch, Router)):
            for branch in step.branches():
                if branch not in graph.steps:
                    raise GraphError(f'{step.where()}: unknown step "{branch}"')
                owned = graph.steps[branch]
                if isinstance(owned, (Switch, Router)):
                    raise GraphError(f'{step.where()}: branch "{branch}" is a {owned.kind}; branches are other kinds')
                if owned.owner not in (None, step.name):
                    raise GraphError(f'step "{branch}" is a branch of both "{owned.owner}" and "{step.name}"')
                owned.owner = step.name
    top = [s for s in graph.steps.values() if s.owner is None]
    # Every step reads by name; produce the order by resolving names step by step.
    types: Types = {t.name: t for t in inputs}
    producer: dict[str, str] = {t.name: "" for t in inputs}
    pending = {s.name: s for s in top}
    order: list[str] = []
    owners_first = {s.name: s for s in graph.steps.values() if s.owner is not None}
    sources: dict[str, dict[str, str]] = {}  # step -> the step each tensor it reads came from
    rewrites = _rewrites(top, graph)
    position = {s.name: i for i, s in enumerate(top)}
    early: set[str] = set()  # steps a rewriter depends on: they read the value before it
    while pending:
        progressed = False
        for step_name in list(pending):
            step = pending[step_name]
            needs = _needs(step, graph)
            if any(n not in types for n in needs):
                continue
            if step_name not in early and _waits_for_rewrite(step_name, needs, pending, rewrites, position):
                continue
            if isinstance(step, (Switch, Router)):
                for branch in step.branches():
                    owned = owners_first[branch]
                    owned.check(types, graph)
                    owned.checked = True
            step.check(types, graph)
            step.checked = True
            sources[step_name] = {t: producer.get(t, "") for t in _needs(step, graph)}
            for tensor, tensor_type in step.writes.items():
                # A transform may rewrite a tensor it reads (scale, clip, a rule on it).
                if tensor in producer and not (isinstance(step, Transform) and tensor in step.reads):
                    first = producer[tensor] or "the pipeline's inputs"
                    raise GraphError(
                        f'tensor "{tensor}" is written by {step.where()} and by {first}; rename one (outputs)'
                    )
                producer[tensor] = step.name
                types[tensor] = tensor_type
            order.append(step_name)
            del pending[step_name]
            progressed = True
        if not progressed:
            # Ready but for a rewrite that itself needs what they lead to: they run first.
            ready = {n for n, st in pending.items() if all(t in types for t in _needs(st, graph))}
            waiting = ready & _feeding_rewriters(pending, graph, rewrites, types)
            if waiting - early:
                early |= waiting
                continue
            _explain_stuck(pending, graph, types)
    graph.order = tuple(order)
    raw_outputs = spec.get("outputs")
    if not isinstance(raw_outputs, list) or not raw_outputs or not all(isinstance(o, str) for o in raw_outputs):
        raise GraphError("outputs: expected the list of tensor names the pipeline returns")
    for out in raw_outputs:
        if out not in types:
            raise GraphError(f'outputs: no input or step produces "{out}"')
    graph.outputs = tuple(_spec(o, types[o].datatype, types[o].shape) for o in raw_outputs)
    _reachable_check(graph, producer, sources, raw_outputs)
    return graph


def _needs(step: Step, graph: CompiledPipeline) -> tuple[str, ...]:
    if step.checked:
        return step.reads
    if isinstance(step, (Switch, Router)):
        needs = []
        for branch in step.branches():
            needs += list(graph.steps[branch].reads)
        if isinstance(step, Switch):
            for text, _ in step.cases:
                if isinstance(text, str):
                    needs += [n for n in _words(text) if n in _all_writes(graph) or n in {i.name for i in graph.inputs}]
        return tuple(needs)
    if isinstance(step, Transform):
        return tuple(
            n for n in _transform_reads(step) if n in _all_writes(graph) or n in {i.name for i in graph.inputs}
        )
    return step.reads


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)


def _all_writes(graph: CompiledPipeline) -> set[str]:
    """Names a top-level step could write (before types are known): a transform's targets and
    outputs, a lookup's features, a model's (renamed) outputs."""
    names: set[str] = set()
    for step in graph.steps.values():
        if step.owner is not None:
            continue
        names |= _declared_writes(step, graph)
    return names


def _rule_target(text: str) -> str:
    """The name a rule assigns ("x = ..." or "if ... then x = ..."), read before it is parsed."""
    body = text.split(" then ", 1)[1] if text.strip().startswith("if ") and " then " in text else text
    return body.split("=", 1)[0].strip()


def _declared_writes(step: Step, graph: CompiledPipeline) -> set[str]:
    if isinstance(step, FeatureLookup):
        return {step.renames.get(f, f) for f in step.features}
    if isinstance(step, Transform):
        out = set()
        for op in step.ops:
            if op.get("op") == "rule" and isinstance(op.get("rule"), str):
                out.add(_rule_target(op["rule"]))
            elif isinstance(op.get("output"), str):
                out.add(op["output"])
        return out
    if isinstance(step, Model) and step.ref is not None:
        return set(step.outputs_map.values()) if step.outputs_map else set(step.ref.signature.output_names)
    if isinstance(step, Ensemble):
        return set(step.outputs_map.values())
    if isinstance(step, SubPipeline) and step.graph is not None:
        return {t.name for t in step.graph.outputs}
    if isinstance(step, (Switch, Router)):
        out = set()
        for branch in step.branches():
            if branch in graph.steps:
                out |= _declared_writes(graph.steps[branch], graph)
        return out
    return set()


def _transform_reads(step: Transform) -> list[str]:
    names: list[str] = []
    produced: set[str] = set()
    for op in step.ops:
        if op.get("op") == "rule" and isinstance(op.get("rule"), str):
            text = op["rule"]
            target = None
            body = text
            if text.strip().startswith("if ") and " then " in text:
                cond, _, rest = text.partition(" then ")
                names += [w for w in _words(cond) if w not in produced]
                body = rest
            target, _, value = body.partition("=")
            for part in value.split(" else "):
                part = part.split("=", 1)[-1]
                names += [w for w in _words(part) if w not in produced]
            produced.add(target.strip())
        else:
            for key in ("field",):
                if isinstance(op.get(key), str) and op[key] not in produced:
                    names.append(op[key])
            if isinstance(op.get("fields"), list):
                names += [f for f in op["fields"] if isinstance(f, str) and f not in produced]
            if isinstance(op.get("output"), str):
                produced.add(op["output"])
    return names


def _rewrites(top: list[Step], graph: CompiledPipeline) -> dict[str, set[str]]:
    """Tensors each top-level transform rewrites in place (scale, clip or fill of a field, a
    rule assigning to a name an input or another step provides): every other reader of such
    a tensor reads it rewritten, so it runs after the transform, whatever the steps' order,
    unless the transform needs what that reader leads to (then the reader runs first)."""
    provided = {i.name for i in graph.inputs}
    declared = {s.name: _declared_writes(s, graph) for s in top}
    found: dict[str, set[str]] = {}
    for step in top:
        if not isinstance(step, Transform):
            continue
        others = provided.union(*(w for name, w in declared.items() if name != step.name))
        targets: set[str] = set()
        for op in step.ops:
            if op.get("op") in ("scale", "clip", "fill") and isinstance(op.get("field"), str):
                targets.add(op["field"])
            elif op.get("op") == "rule" and isinstance(op.get("rule"), str):
                targets.add(_rule_target(op["rule"]))
        if targets & others:
            found[step.name] = targets & others
    return found


def _waits_for_rewrite(
    name: str, needs: tuple[str, ...], pending: dict[str, Step], rewrites: dict[str, set[str]], position: dict[str, int]
) -> bool:
    """Does a step that still has to run rewrite a tensor this one reads? Two transforms that
    rewrite the same tensor run in the order they are listed."""
    for other, tensors in rewrites.items():
        if other == name or other not in pending or not tensors.intersection(needs):
            continue
        if tensors & rewrites.get(name, set()) and position[other] > position[name]:
            continue
        return True
    return False


def _feeding_rewriters(
    pending: dict[str, Step], graph: CompiledPipeline, rewrites: dict[str, set[str]], types: Types
) -> set[str]:
    """Pending steps that a pending in-place rewrite needs, directly or through other steps."""
    writer = {t: name for name, st in pending.items() for t in _declared_writes(st, graph) if t not in types}
    stack = [r for r in rewrites if r in pending]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        for tensor in _needs(pending[name], graph):
            source = writer.get(tensor)
            if source and source != name and source not in seen:
                seen.add(source)
                stack.append(source)
    return seen


def _explain_stuck(pending: dict[str, Step], graph: CompiledPipeline, types: Types) -> None:
    """Nothing more can run: a tensor nobody produces, or a cycle."""
    every = _all_writes(graph) | {i.name for i in graph.inputs}
    for step in pending.values():
        for name in _needs(step, graph):
            if name not in every:
                raise GraphError(f'{step.where()}: reads tensor "{name}", which no input or step produces')
    # All names exist, so the pending steps wait on each other.
    writer = {n: s.name for s in pending.values() for n in _declared_writes(s, graph)}
    start = next(iter(pending))
    path = [start]
    while True:
        nxt = next((writer[n] for n in _needs(pending[path[-1]], graph) if n in writer and n not in types), None)
        if nxt is None or nxt in path:
            cycle = path[path.index(nxt) :] + [nxt] if nxt in path else path
            raise GraphError("the steps form a cycle: " + " -> ".join(f'"{s}"' for s in cycle))
        path.append(nxt)


def _reachable_check(
    graph: CompiledPipeline, producer: dict[str, str], sources: dict[str, dict[str, str]], outputs: list[str]
) -> None:
    """Every top-level step must feed the outputs (else it is unreachable, dead weight);
    `sources` says where each step's reads came from when it ran (a rewrite in place reads
    the tensor of the step before it)."""
    needed: set[str] = set()
    stack = [producer[o] for o in outputs if producer.get(o)]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        for source in sources.get(name, {}).values():
            if source:
                stack.append(source)
    for name in graph.order:
        if name not in needed:
            raise GraphError(f'step "{name}" is unreachable: nothing it writes reaches the pipeline\'s outputs')

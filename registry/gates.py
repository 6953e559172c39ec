"""Promotion gates: the automated checks a version must pass to move stage, the model's gate
settings, and the side-by-side comparison with the production version that reviewers read.

Read-only: nothing here changes a row. The workflow (requests, decisions) is in promotions.py."""

from __future__ import annotations

from typing import Any

from config.errors import DomainError
from registry.models import ModelVersion, PromotionRequest, RegisteredModel

Stage = ModelVersion.Stage

PREVIOUS_PRODUCTION_POLICIES = ("archive", "staging")


def gate_settings_check(value: Any) -> dict[str, Any]:
    """Validate RegisteredModel.gate_settings.

    {"metric": "accuracy", "min": 0.8, "max_drop": 0.01, "higher_is_better": true,
     "previous_production": "archive" | "staging"}; or "metrics": [{...}, ...] for several.
    """
    if not isinstance(value, dict):
        raise DomainError("gate_settings: expected a JSON object")
    unknown = set(value) - {"metric", "min", "max_drop", "higher_is_better", "metrics", "previous_production"}
    if unknown:
        raise DomainError(f"gate_settings: unknown keys {sorted(unknown)}")
    policy = value.get("previous_production", "archive")
    if policy not in PREVIOUS_PRODUCTION_POLICIES:
        raise DomainError(f"gate_settings.previous_production: expected 'archive' or 'staging', got {policy!r}")
    for rule in _metric_rules(value):
        if not isinstance(rule.get("metric"), str) or not rule["metric"]:
            raise DomainError("gate_settings: each metric rule needs a 'metric' name")
        for key in ("min", "max_drop"):
            if key in rule and (not isinstance(rule[key], (int, float)) or isinstance(rule[key], bool)):
                raise DomainError(f"gate_settings.{key}: expected a number, got {rule[key]!r}")
        if "max_drop" in rule and rule["max_drop"] < 0:
            raise DomainError("gate_settings.max_drop: expected a number >= 0")
        if not isinstance(rule.get("higher_is_better", True), bool):
            raise DomainError("gate_settings.higher_is_better: expected true or false")
    return value


def _metric_rules(settings: dict[str, Any]) -> list[dict[str, Any]]:
    rules = settings.get("metrics")
    if rules is not None:
        if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
            raise DomainError("gate_settings.metrics: expected a list of objects")
        return list(rules)
    return [settings] if "metric" in settings else []


def production_version(model: RegisteredModel) -> ModelVersion | None:
    return model.versions.filter(stage=Stage.PRODUCTION).first()


def gates_evaluate(*, version: ModelVersion, to_stage: str) -> list[dict[str, Any]]:
    """The automated gates for moving `version` to `to_stage`: [{"name", "ok", "detail"}].

    Archiving has no gates. Staging and Production need a passed validation and a passed
    smoke inference; Production also checks the model's metric thresholds against the
    current production version.
    """
    if to_stage == Stage.ARCHIVED:
        return []
    report = version.validation_report or {}
    ready = version.status == ModelVersion.Status.READY and bool(report.get("ok", True))
    gates = [
        {
            "name": "validation",
            "ok": ready,
            "detail": "validation passed"
            if ready
            else f"version status is {version.status}: {report.get('error', '')}",
        }
    ]
    smoke = [c for c in report.get("checks", []) if isinstance(c, dict) and "smoke" in str(c.get("name", ""))]
    if not smoke:
        gates.append({"name": "smoke_inference", "ok": False, "detail": "the validation report has no smoke inference"})
    else:
        ok = all(bool(c.get("ok")) for c in smoke)
        detail = "; ".join(str(c.get("detail") or c.get("name")) for c in smoke)
        gates.append({"name": "smoke_inference", "ok": ok, "detail": detail if ok else f"failed: {detail}"})
    if to_stage == Stage.PRODUCTION:
        current = production_version(version.model)
        if current is not None and current.pk == version.pk:
            current = None
        for rule in _metric_rules(version.model.gate_settings or {}):
            gates.extend(_metric_gates(rule, version, current))
    return gates


def _metric_gates(rule: dict[str, Any], version: ModelVersion, current: ModelVersion | None) -> list[dict[str, Any]]:
    metric = rule["metric"]
    higher = rule.get("higher_is_better", True)
    value = (version.metadata or {}).get("metrics", {}).get(metric)
    gates: list[dict[str, Any]] = []
    if value is None:
        return [
            {"name": f"metric:{metric}", "ok": False, "detail": f"the version carries no metadata.metrics.{metric}"}
        ]
    if "min" in rule:
        threshold = rule["min"]
        ok = value >= threshold if higher else value <= threshold
        word = "at least" if higher else "at most"
        gates.append(
            {
                "name": f"metric:{metric}:threshold",
                "ok": ok,
                "detail": f"{metric} = {value}, expected {word} {threshold}",
            }
        )
    if "max_drop" in rule:
        baseline = (current.metadata or {}).get("metrics", {}).get(metric) if current is not None else None
        if baseline is None:
            detail = (
                "no production version to compare with"
                if current is None
                else (f"production v{current.version} carries no {metric}")
            )
            gates.append({"name": f"metric:{metric}:drop", "ok": True, "detail": detail})
        else:
            drop = (baseline - value) if higher else (value - baseline)
            ok = drop <= rule["max_drop"] + 1e-12
            gates.append(
                {
                    "name": f"metric:{metric}:drop",
                    "ok": ok,
                    "detail": f"{metric} {value} vs production v{current.version} {baseline}: "
                    f"worse by {max(drop, 0):.6g}, allowed {rule['max_drop']}",
                }
            )
    return gates


# --- comparison with production --------------------------------------------------------


def promotion_comparison(*, request: PromotionRequest) -> dict[str, Any]:
    """Side by side: the candidate and the current production version (metadata, metric
    deltas, signature compatibility)."""
    candidate = request.version
    current = production_version(candidate.model)
    if current is not None and current.pk == candidate.pk:
        current = None
    cand_metrics = (candidate.metadata or {}).get("metrics", {})
    prod_metrics = (current.metadata or {}).get("metrics", {}) if current else {}
    metrics = {}
    for name in sorted(set(cand_metrics) | set(prod_metrics)):
        a, b = cand_metrics.get(name), prod_metrics.get(name)
        delta = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
        metrics[name] = {"candidate": a, "production": b, "delta": delta}
    return {
        "candidate": _version_side(candidate),
        "production": _version_side(current),
        "metrics": metrics,
        "signature": signature_compatibility(candidate.signature, current.signature if current else None),
    }


def _version_side(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {
        "version": version.version,
        "stage": version.stage,
        "status": version.status,
        "artifact_sha256": version.artifact_sha256,
        "producer": version.producer,
        "opset": version.opset,
        "metadata": version.metadata,
        "signature": version.signature,
        "created_at": version.created_at,
    }


def _shapes_compatible(a: list[Any], b: list[Any]) -> bool:
    if len(a) != len(b):
        return False
    return all(x == y or x in (-1, None) or y in (-1, None) for x, y in zip(a, b, strict=True))


def signature_compatibility(candidate: dict[str, Any] | None, production: dict[str, Any] | None) -> dict[str, Any]:
    """Can callers of the production version call the candidate unchanged? Same input names
    and datatypes, compatible shapes (-1 matches any size); outputs they read still there."""
    if production is None:
        return {"compatible": None, "problems": [], "detail": "no production version to compare with"}
    problems: list[str] = []
    cand_inputs = {i.get("name"): i for i in (candidate or {}).get("inputs", [])}
    prod_inputs = {i.get("name"): i for i in (production or {}).get("inputs", [])}
    for name, prod in prod_inputs.items():
        cand = cand_inputs.get(name)
        if cand is None:
            problems.append(f"input {name!r} is missing from the candidate")
            continue
        if cand.get("datatype") != prod.get("datatype"):
            problems.append(f"input {name!r}: production {prod.get('datatype')}, candidate {cand.get('datatype')}")
        if not _shapes_compatible(list(cand.get("shape", [])), list(prod.get("shape", []))):
            problems.append(
                f"input {name!r}: shape {prod.get('shape')} in production, {cand.get('shape')} in candidate"
            )
    for name in set(cand_inputs) - set(prod_inputs):
        problems.append(f"input {name!r} is new in the candidate (callers do not send it)")
    cand_outputs = {o.get("name"): o for o in (candidate or {}).get("outputs", [])}
    for output in (production or {}).get("outputs", []):
        name = output.get("name")
        if name not in cand_outputs:
            problems.append(f"output {name!r} is missing from the candidate")
        elif cand_outputs[name].get("datatype") != output.get("datatype"):
            problems.append(
                f"output {name!r}: production {output.get('datatype')}, candidate {cand_outputs[name].get('datatype')}"
            )
    return {
        "compatible": not problems,
        "problems": problems,
        "detail": "compatible" if not problems else "incompatible",
    }

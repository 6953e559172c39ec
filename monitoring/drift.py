"""Reference statistics and drift: PSI and KS of recent inputs (and PSI of outputs) against a version's reference."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from config.errors import DomainError, NotFound
from inference.routing_cache import changed as routing_changed
from inference.runtime.outliers import covariance
from monitoring.models import DriftScore, InputSample, MetricRollup
from monitoring.stats import (
    bin_counts,
    categorical_psi,
    ks_two_sample,
    merge_output_summaries,
    psi,
    reference_statistics,
    summary_distribution,
)
from registry.models import ModelVersion

User = AbstractBaseUser | AnonymousUser | None

DRIFT_MIN_VALUES = 20


# --- reference statistics ----------------------------------------------------------------------------
def _version_for(deployment: str) -> Any:
    model, _, version = deployment.rpartition(":")
    if not model or not version.isdigit():
        return None
    return ModelVersion.objects.filter(model__name=model, version=int(version)).first()


@transaction.atomic
def reference_stats_set(
    *,
    model: str,
    version: int,
    features: Mapping[str, np.ndarray],
    outputs: Mapping[str, dict[str, Any]] | None = None,
    source: str,
    user: User,
    source_ip: str | None = None,
) -> dict[str, Any]:
    """Store a version's reference statistics (quantile bins, counts, a capped sample)."""
    row = ModelVersion.objects.select_for_update().filter(model__name=model, version=version).first()
    if row is None:
        raise NotFound(f"no version {version} of model {model!r}")
    stats = reference_statistics(features)
    if not stats:
        raise DomainError("the reference data has no numeric values")
    rows = max(int(v["n"]) for v in stats.values())
    reference = {
        "source": source,
        "computed_at": timezone.now().isoformat(),
        "rows": rows,
        "features": stats,
        "outputs": dict(outputs or {}),
        # For outlier scores (inference/runtime/outliers.py); None when the columns are
        # not rows of one table (different lengths).
        "covariance": covariance({k: v for k, v in features.items() if k in stats}),
    }
    before = {"reference_stats": _reference_brief(row.reference_stats)}
    row.reference_stats = reference
    row.save(update_fields=["reference_stats"])
    routing_changed()  # endpoints that score outliers rebuild their scorers from it
    audit_record(
        actor=user,
        action="model_version.reference_set",
        obj=row,
        before=before,
        after={"reference_stats": _reference_brief(reference)},
        source_ip=source_ip,
    )
    return reference


def _reference_brief(reference: Mapping[str, Any] | None) -> dict[str, Any]:
    if not reference:
        return {}
    return {
        "source": reference.get("source"),
        "rows": reference.get("rows"),
        "features": sorted((reference.get("features") or {}).keys()),
    }


def reference_from_traffic(*, now: datetime | None = None) -> int:
    """Give versions without reference statistics one from their first N hours of traffic."""
    now = now or timezone.now()
    hours = settings.MONITORING_REFERENCE_FROM_TRAFFIC_HOURS
    done = 0
    for deployment in InputSample.objects.values_list("deployment", flat=True).distinct():
        version = _version_for(deployment)
        if version is None or version.reference_stats:
            continue
        first = InputSample.objects.filter(deployment=deployment).order_by("minute").values_list("minute", flat=True)[0]
        if first + timedelta(hours=hours) > now:
            continue
        end = first + timedelta(hours=hours)
        columns: dict[str, list[float]] = defaultdict(list)
        for features in InputSample.objects.filter(deployment=deployment, minute__lt=end).values_list(
            "features", flat=True
        ):
            for name, values in features.items():
                columns[name].extend(values)
        if not columns:
            continue
        outputs: dict[str, dict[str, Any]] = {}
        for part in MetricRollup.objects.filter(deployment=deployment, minute__lt=end).values_list(
            "outputs", flat=True
        ):
            merge_output_summaries(outputs, part or {})
        reference_stats_set(
            model=version.model.name,
            version=version.version,
            features={k: np.asarray(v, dtype=float) for k, v in columns.items()},
            outputs=outputs,
            source="traffic",
            user=None,
        )
        done += 1
    return done


# --- drift -------------------------------------------------------------------------------------------
def drift_compute(*, now: datetime | None = None, window_minutes: int | None = None) -> int:
    """Per-feature PSI and KS of recent inputs (and PSI of outputs) against each version's reference."""
    now = now or timezone.now()
    window = window_minutes or settings.MONITORING_DRIFT_WINDOW_MINUTES
    end = now.replace(second=0, microsecond=0)
    start = end - timedelta(minutes=window)
    columns: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for endpoint, deployment, features in InputSample.objects.filter(minute__gte=start, minute__lt=end).values_list(
        "endpoint", "deployment", "features"
    ):
        for name, values in features.items():
            columns[(endpoint, deployment)][name].extend(values)
    outputs: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for endpoint, deployment, part in (
        MetricRollup.objects.filter(granularity=MetricRollup.Granularity.MINUTE, minute__gte=start, minute__lt=end)
        .exclude(outputs={})
        .values_list("endpoint", "deployment", "outputs")
    ):
        merge_output_summaries(outputs[(endpoint, deployment)], part or {})
    written = 0
    for pair in set(columns) | set(outputs):
        endpoint, deployment = pair
        version = _version_for(deployment)
        reference = (version.reference_stats if version is not None else None) or {}
        if not reference:
            continue
        scores: dict[str, dict[str, Any]] = {}
        for name, values in columns.get(pair, {}).items():
            ref = (reference.get("features") or {}).get(name)
            if ref is None or len(values) < DRIFT_MIN_VALUES:
                continue
            current = np.asarray(values, dtype=float)
            score = psi(ref["counts"], bin_counts(current, ref["edges"]))
            d, p = ks_two_sample(ref["sample"], current) if ref.get("sample") else (None, None)
            DriftScore.objects.update_or_create(
                endpoint=endpoint,
                deployment=deployment,
                kind=DriftScore.Kind.INPUT,
                feature=name,
                window_end=end,
                defaults={"window_minutes": window, "psi": score, "ks_statistic": d, "ks_p_value": p, "n": len(values)},
            )
            scores[name] = {"psi": round(score, 6), "ks": d, "p_value": p, "n": len(values)}
            written += 1
        for name, part in outputs.get(pair, {}).items():
            ref_part = (reference.get("outputs") or {}).get(name)
            cur = summary_distribution(part)
            if not ref_part or sum(cur.values()) < DRIFT_MIN_VALUES:
                continue
            score = categorical_psi(summary_distribution(ref_part), cur)
            DriftScore.objects.update_or_create(
                endpoint=endpoint,
                deployment=deployment,
                kind=DriftScore.Kind.OUTPUT,
                feature=name,
                window_end=end,
                defaults={"window_minutes": window, "psi": score, "n": sum(cur.values())},
            )
            scores[f"output:{name}"] = {"psi": round(score, 6), "n": sum(cur.values())}
            written += 1
        if scores:
            # The latest minute of the window carries the scores too (the dashboard's table).
            latest = (
                MetricRollup.objects.filter(
                    endpoint=endpoint,
                    deployment=deployment,
                    granularity=MetricRollup.Granularity.MINUTE,
                    minute__gte=start,
                    minute__lt=end,
                )
                .order_by("-minute")
                .values_list("pk", flat=True)[:1]
            )
            MetricRollup.objects.filter(pk__in=list(latest)).update(drift_scores=scores)
    return written

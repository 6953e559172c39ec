"""The worker wiring: `celery -A workers.celery` runs this app with its beat schedule.

The app itself (settings from Django's CELERY_*, tasks from each app's tasks.py, the queue
routes) is created in config/queue.py, below the apps, which enqueue through it by task name.
"""

from __future__ import annotations

from django.conf import settings

from config.env import env_float, env_str
from config.queue import app

__all__ = ["app"]

# --- Monitoring beat schedule (docs/monitoring.md). Intervals in seconds, from the
# environment so that tests can run a real beat on a short schedule.
_ALERTS_EVERY = settings.MONITORING_ALERT_EVAL_INTERVAL_S
_ROLLOUTS_EVERY = env_float("MODELHUB_ROLLOUT_EVAL_INTERVAL_S", 10.0)
# Tests point beat at their worker's own queue; normally the default queue.
_BEAT_QUEUE = env_str("MODELHUB_MONITORING_BEAT_QUEUE")
_BEAT_OPTIONS = {"queue": _BEAT_QUEUE} if _BEAT_QUEUE else {}
app.conf.beat_schedule = {
    **(app.conf.beat_schedule or {}),
    "monitoring-rollup-minutes": {
        "task": "monitoring.rollup_minutes",
        "schedule": env_float("MODELHUB_MONITORING_ROLLUP_INTERVAL_S", 60.0),
        "options": _BEAT_OPTIONS,
    },
    "monitoring-persist-samples": {"task": "monitoring.persist_samples", "schedule": 60.0},
    "monitoring-evaluate-alerts": {
        "task": "monitoring.evaluate_alerts",
        "schedule": _ALERTS_EVERY,
        "options": {"expires": _ALERTS_EVERY, **_BEAT_OPTIONS},
    },
    "monitoring-compute-drift": {
        "task": "monitoring.compute_drift",
        "schedule": settings.MONITORING_DRIFT_INTERVAL_S,
    },
    "monitoring-compact-rollups": {"task": "monitoring.compact_rollups", "schedule": 3600.0},
    # Says the periodic jobs run at all (beat and a worker, or the embedded scheduler): the
    # Alerts page warns when it is stale (monitoring.selectors.scheduler_status).
    "monitoring-scheduler-heartbeat": {
        "task": "monitoring.scheduler_heartbeat",
        "schedule": settings.MONITORING_SCHEDULER_HEARTBEAT_S,
        "options": {"expires": settings.MONITORING_SCHEDULER_HEARTBEAT_S, **_BEAT_OPTIONS},
    },
    "monitoring-reference-from-traffic": {"task": "monitoring.reference_from_traffic", "schedule": 3600.0},
    # A validation whose worker died comes back within about a lease + an interval.
    "registry-validation-sweep": {
        "task": "registry.validation_sweep",
        "schedule": settings.VALIDATION_SWEEP_INTERVAL_S,
        "options": {"expires": settings.VALIDATION_SWEEP_INTERVAL_S, **_BEAT_OPTIONS},
    },
    # Progressive rollouts (rollouts/services.py): a failed check rolls back within one interval.
    "inference-rollouts-advance": {
        "task": "inference.rollouts_advance",
        "schedule": _ROLLOUTS_EVERY,
        "options": {"expires": _ROLLOUTS_EVERY, **_BEAT_OPTIONS},
    },
}

# --- The worker pool's reconciler (inference/reconcile.py): re-assigns worker-pool deployments
# from the database after Redis or a worker lost them, and records which are really warm.
_RECONCILE_EVERY = env_float("MODELHUB_POOL_RECONCILE_INTERVAL_S", 10.0)
app.conf.beat_schedule["inference-pool-reconcile"] = {
    "task": "inference.pool_reconcile",
    "schedule": _RECONCILE_EVERY,
    "options": {"expires": _RECONCILE_EVERY, **_BEAT_OPTIONS},
}

# --- Batch jobs (docs/batch.md; their queue routes are in config/queue.py): the sweep
# re-queues chunks whose lease expired and enforces retention and the disk budget.
app.conf.beat_schedule["batch-sweep"] = {
    "task": "batch.sweep",
    "schedule": settings.BATCH_SWEEP_INTERVAL_S,
}

# --- Bandit routers (docs/pipelines.md): the feedback ledger's retention, and the arm
# statistics snapshotted from Redis to the database (so a Redis flush loses little).
app.conf.beat_schedule["bandits-sweep"] = {
    "task": "bandits.sweep",
    "schedule": settings.BANDIT_SWEEP_INTERVAL_S,
    "options": {"expires": settings.BANDIT_SWEEP_INTERVAL_S, **_BEAT_OPTIONS},
}

"""The Celery app: settings come from Django's (CELERY_*), tasks from each app's tasks.py."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# --- Monitoring beat schedule (docs/monitoring.md). Intervals in seconds, from the
# environment so that tests can run a real beat on a short schedule.
from config.env import env_float, env_str  # noqa: E402

_ALERTS_EVERY = env_float("MODELHUB_ALERT_EVAL_INTERVAL_S", 60.0)
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
        "schedule": env_float("MODELHUB_MONITORING_DRIFT_INTERVAL_S", 300.0),
    },
    "monitoring-compact-rollups": {"task": "monitoring.compact_rollups", "schedule": 3600.0},
    # Says the periodic jobs run at all (beat and a worker, or the embedded scheduler): the
    # Alerts page warns when it is stale (monitoring.selectors.scheduler_status).
    "monitoring-scheduler-heartbeat": {
        "task": "monitoring.scheduler_heartbeat",
        "schedule": min(30.0, _ALERTS_EVERY),
        "options": {"expires": min(30.0, _ALERTS_EVERY), **_BEAT_OPTIONS},
    },
    "monitoring-reference-from-traffic": {"task": "monitoring.reference_from_traffic", "schedule": 3600.0},
}

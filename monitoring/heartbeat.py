"""The scheduler's heartbeat: a row that says the periodic jobs are running."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from monitoring.models import SchedulerHeartbeat

SCHEDULER_HEARTBEAT = "scheduler"


def scheduler_heartbeat(*, now: datetime | None = None) -> datetime:
    """Record that the periodic jobs are running (the `monitoring.scheduler_heartbeat` job)."""
    import os
    import socket

    now = now or timezone.now()
    SchedulerHeartbeat.objects.update_or_create(
        name=SCHEDULER_HEARTBEAT, defaults={"last_run_at": now, "runner": f"{socket.gethostname()}:{os.getpid()}"}
    )
    return now

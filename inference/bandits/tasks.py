"""The bandit sweep (beat, and the embedded scheduler): idempotent, short."""

from __future__ import annotations

from celery import shared_task

from inference.bandits.store import store


@shared_task(name="bandits.sweep")
def sweep() -> dict[str, int]:
    """Drop ledger entries and log lines past MODELHUB_BANDIT_LEDGER_RETENTION_S; with
    Redis, copy every router's statistics to the database."""
    return store().sweep()

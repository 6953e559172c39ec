"""Serving telemetry counted in-process on the hot path (no Django, no ORM, no network);
monitoring (above inference) drains it into Redis and roll-ups."""

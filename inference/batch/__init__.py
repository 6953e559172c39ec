"""Batch inference jobs: a table scored by a ready model version, chunk by chunk (docs/batch.md)."""

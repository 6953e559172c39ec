"""retry_if_locked runs a whole transaction again when SQLite lost the race, nothing else."""

from __future__ import annotations

import pytest
from django.db import OperationalError, transaction

from config.db import retry_if_locked


def flaky(failures: list[str]):
    calls = []

    def write() -> str:
        calls.append(1)
        if failures:
            raise OperationalError(failures.pop(0))
        return "written"

    return write, calls


def test_a_write_that_lost_the_race_for_the_lock_is_run_again() -> None:
    write, calls = flaky(["database is locked", "database is locked"])
    assert retry_if_locked(write, first_wait_s=0.001) == "written"
    assert len(calls) == 3


def test_other_database_errors_are_not_retried() -> None:
    write, calls = flaky(["no such table: x"])
    with pytest.raises(OperationalError, match="no such table"):
        retry_if_locked(write, first_wait_s=0.001)
    assert len(calls) == 1


def test_it_gives_up_after_its_attempts() -> None:
    write, calls = flaky(["database is locked"] * 10)
    with pytest.raises(OperationalError, match="locked"):
        retry_if_locked(write, attempts=3, first_wait_s=0.001)
    assert len(calls) == 3


@pytest.mark.django_db
def test_inside_an_outer_transaction_nothing_is_retried() -> None:
    write, calls = flaky(["database is locked"])
    with transaction.atomic(), pytest.raises(OperationalError):
        retry_if_locked(write, first_wait_s=0.001)
    assert len(calls) == 1

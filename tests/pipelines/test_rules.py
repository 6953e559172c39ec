"""The rule language: parsed by our own parser (no eval), checked when saved, vectorised."""

from __future__ import annotations

import numpy as np
import pytest

from inference.pipelines.expr import NUM, STR, RuleError, compile_rule

FIELDS = {"amount": (NUM, 0), "n": (NUM, 0), "country": (STR, 0), "proba": (NUM, 2)}
ENV = {
    "amount": np.array([10.0, 2000.0, 500.0]),
    "n": np.array([0, 4, 5]),
    "country": np.array(["FR", "DE", "FR"], dtype=object),
    "proba": np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=np.float32),
}


def run(text: str) -> list[object]:
    return compile_rule(text, FIELDS).run(ENV, 3).tolist()


def test_precedence_and_arithmetic() -> None:
    assert run("x = 1 + 2 * 3 - 4 / 2") == [5.0, 5.0, 5.0]
    assert run("x = -(amount - 10) % 7 + abs(-1)") == [1.0, 6.0, 1.0]  # % is a modulo (sign of the divisor)
    assert run("x = max(amount / 100, 1, min(n, 4))") == [1.0, 20.0, 5.0]


def test_conditions_strings_and_columns() -> None:
    rule = "if proba[1] > 0.6 or country == 'DE' and not amount < 1000 then flag = 'review' else flag = 'ok'"
    assert run(rule) == ["ok", "review", "ok"]


def test_a_guard_keeps_a_division_by_zero_from_the_rows_it_excludes() -> None:
    assert run("if n > 0 then avg = amount / n else avg = 0") == [0.0, 500.0, 100.0]
    assert run("ok = n == 0 or amount / n > 50") == [True, True, True]


def test_a_division_by_a_zero_value_names_the_rule_and_row() -> None:
    with pytest.raises(RuleError) as info:
        run("avg = amount / n")
    assert "division by zero in row 0" in info.value.message and info.value.status == 400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = amount / 0", "division by zero"),
        ("x = amount +", "ends early"),
        ("x = amount ** 2", "unexpected '*'"),
        ("x = open('f')", "unknown field 'open'"),
        ("x = amount; y = 1", "cannot read"),
        ("x = country + 1", "'+' takes numbers"),
        ("if amount then x = 1 else x = 2", "not a condition"),
        ("if amount > 1 then x = 1 else y = 2", "assign the same field"),
        ("x = proba[2]", "proba has 2 columns"),
        ("x = " + "(" * 60 + "1" + ")" * 60, "nests too deeply"),
    ],
)
def test_what_the_language_refuses_when_saved(text: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        compile_rule(text, FIELDS)
    assert message in info.value.message

"""Compare jobs: two versions score the same rows; per chunk statistics, summed into a report.

No Django here. Per output tensor a chunk records how many rows agree (every value of the
row within `tolerance` in absolute terms; exact equality for integer, boolean and text
outputs), the sum and the maximum of the absolute deltas, and for classification outputs
(integer labels, or a float score vector [n, k>1] whose argmax is the label) how many rows
get the same label. A row agrees when all of its outputs agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.runtime.signature import Signature, TensorSpec


def _width(spec: TensorSpec) -> tuple[int, ...]:
    return tuple(spec.shape[1:])


def signatures_check(a: Signature, b: Signature, mapping: Mapping[str, Sequence[str]]) -> None:
    """ValueError unless b takes the same mapped inputs and gives the same outputs as a."""
    for name in mapping:
        if not b.has_input(name):
            raise ValueError(f'the second version has no input "{name}" (its inputs: {list(b.input_names)})')
        if _width(a.input(name)) != _width(b.input(name)):
            raise ValueError(
                f'input "{name}" is {a.input(name).describe()} in the first version and '
                f"{b.input(name).describe()} in the second"
            )
    if set(b.input_names) - set(mapping):
        extra = sorted(set(b.input_names) - set(mapping))
        raise ValueError(f"the second version needs inputs the first does not: {extra}")
    if list(a.output_names) != list(b.output_names):
        raise ValueError(
            f"the versions' outputs differ: {list(a.output_names)} against {list(b.output_names)}; "
            "only versions with the same outputs can be compared"
        )
    for name in a.output_names:
        if _width(a.output(name)) != _width(b.output(name)):
            raise ValueError(
                f'output "{name}" is {a.output(name).describe()} in the first version and '
                f"{b.output(name).describe()} in the second"
            )


def side_by_side(a: Mapping[str, np.ndarray[Any, Any]], b: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    """Both versions' outputs for the result file: `a.<output>` then `b.<output>`."""
    columns: dict[str, Any] = {}
    for name in a:
        columns[f"a.{name}"] = a[name]
        columns[f"b.{name}"] = b[name]
    return columns


def _labels(values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """The class label per row, for classification outputs; None for anything else."""
    if values.dtype.kind in "iub" and (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        return values.reshape(-1)
    if values.dtype.kind == "f" and values.ndim == 2 and values.shape[1] > 1:
        return np.argmax(values, axis=1)
    return None


def chunk_stats(
    a: Mapping[str, np.ndarray[Any, Any]], b: Mapping[str, np.ndarray[Any, Any]], *, tolerance: float
) -> dict[str, Any]:
    """The statistics of one chunk (JSON-ready), summed by `report`."""
    rows = 0
    all_agree: np.ndarray[Any, Any] | None = None
    outputs: dict[str, Any] = {}
    for name, left in a.items():
        right = b[name]
        n = int(left.shape[0])
        rows = n
        flat_a, flat_b = left.reshape(n, -1), right.reshape(n, -1)
        entry: dict[str, Any] = {"rows": n}
        if left.dtype.kind in "fiub" and right.dtype.kind in "fiub":
            delta = np.abs(flat_a.astype(np.float64) - flat_b.astype(np.float64))
            limit = tolerance if left.dtype.kind == "f" or right.dtype.kind == "f" else 0.0
            # NaN on both sides agrees; NaN on one side does not.
            same_nan = np.isnan(delta) & np.isnan(flat_a.astype(np.float64)) & np.isnan(flat_b.astype(np.float64))
            row_agree = np.all((delta <= limit) | same_nan, axis=1) if n else np.zeros(0, bool)
            finite = np.where(np.isnan(delta), 0.0, delta)
            entry.update(values=int(delta.size), sum_abs=float(finite.sum()), max_abs=float(finite.max(initial=0.0)))
        else:
            row_agree = np.all(flat_a == flat_b, axis=1) if n else np.zeros(0, bool)
        entry["rows_agree"] = int(row_agree.sum())
        labels_a, labels_b = _labels(left), _labels(right)
        if labels_a is not None and labels_b is not None:
            entry["label_rows_agree"] = int((labels_a == labels_b).sum())
        outputs[name] = entry
        all_agree = row_agree if all_agree is None else all_agree & row_agree
    return {"rows": rows, "rows_agree": int(all_agree.sum()) if all_agree is not None else 0, "outputs": outputs}


def report(chunks: Sequence[Mapping[str, Any]], *, tolerance: float) -> dict[str, Any]:
    """The diff report: agreement overall and per output, mean and max |delta|, label agreement."""
    rows = sum(int(c.get("rows", 0)) for c in chunks)
    agree = sum(int(c.get("rows_agree", 0)) for c in chunks)
    totals: dict[str, dict[str, float]] = {}
    for chunk in chunks:
        for name, entry in chunk.get("outputs", {}).items():
            into = totals.setdefault(name, {"rows": 0, "rows_agree": 0})
            into["rows"] += entry["rows"]
            into["rows_agree"] += entry["rows_agree"]
            if "values" in entry:
                into["values"] = into.get("values", 0) + entry["values"]
                into["sum_abs"] = into.get("sum_abs", 0.0) + entry["sum_abs"]
                into["max_abs"] = max(into.get("max_abs", 0.0), entry["max_abs"])
            if "label_rows_agree" in entry:
                into["label_rows_agree"] = into.get("label_rows_agree", 0) + entry["label_rows_agree"]
    outputs: dict[str, Any] = {}
    for name, t in totals.items():
        out: dict[str, Any] = {"agreement": _ratio(t["rows_agree"], t["rows"])}
        if "values" in t:
            out["mean_abs_delta"] = t["sum_abs"] / t["values"] if t["values"] else 0.0
            out["max_abs_delta"] = t["max_abs"]
        if "label_rows_agree" in t:
            out["label_agreement"] = _ratio(t["label_rows_agree"], t["rows"])
        outputs[name] = out
    return {"rows_compared": rows, "agreement": _ratio(agree, rows), "tolerance": tolerance, "outputs": outputs}


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def summary(report: Mapping[str, Any]) -> str:
    """One line for an approver: "1000 rows: 98.2 % agree; y: max |delta| 0.031, labels 99.1 %"."""
    if not report.get("rows_compared"):
        return "no rows compared"
    parts = [f"{report['rows_compared']} rows: {_pct(report.get('agreement'))} agree"]
    for name, out in report.get("outputs", {}).items():
        bits = []
        if "max_abs_delta" in out:
            bits.append(f"max |delta| {out['max_abs_delta']:.3g}, mean {out['mean_abs_delta']:.3g}")
        if "label_agreement" in out:
            bits.append(f"labels {_pct(out['label_agreement'])} agree")
        if bits:
            parts.append(f"{name}: {', '.join(bits)}")
    return "; ".join(parts)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.2f} %"

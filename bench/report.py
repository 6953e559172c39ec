#!/usr/bin/env python3
"""Tables from bench/harness.py results (JSONL): medians over rounds, Modelhub ratios, raw-ORT limit.

Usage: python3 bench/report.py bench/results/latest/results.jsonl [more.jsonl ...]
Stdlib only. Prints markdown.
"""

import json
import statistics as st
import sys
from collections import defaultdict

MH, RAW = "modelhub", "raw-ort"
PEERS_FOR_RATIO = [
    ("fastapi", "FastAPI"),
    ("pytriton", "PyTriton"),
    ("mlserver", "MLServer"),
    ("bentoml", "BentoML"),
    # as shipped vs tuned (issue #13: within 10 %, i.e. a ratio of at most 1.11)
    ("modelhub-make-run", "Modelhub as shipped, make run"),
    ("modelhub-compose", "Modelhub as shipped, docker-compose"),
]


def med(xs):
    return st.median(xs) if xs else None


def spread(xs):
    """half the min-max range, % of the median (how much rounds disagree)"""
    if len(xs) < 2:
        return None
    m = st.median(xs)
    return 100 * (max(xs) - min(xs)) / 2 / m if m else None


def pct(v, lim):
    x = 100 * v / lim
    return f"{x:.1f}%" if x >= 1 else f"{x:.3f}%"


def main(paths):
    recs = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    metas = [r for r in recs if r.get("kind") == "meta"]
    meta = metas[-1] if metas else {}
    order = list(meta.get("targets", []))
    titles = meta.get("titles", {})
    srv = defaultdict(list)  # (model, target, conc) -> [rec]
    raw = defaultdict(list)  # (model, batch) -> [rec]
    problems = []
    models = list(meta.get("models", []))
    for r in recs:
        if r.get("kind") == "meta":
            continue
        if r.get("model") and r["model"] not in models:
            models.append(r["model"])
        if r.get("target") and r["target"] not in order:
            order.append(r["target"])
        if r.get("status") != "ok":
            problems.append(r)
        elif r["kind"] == "raw":
            raw[(r["model"], r["batch"])].append(r)
        else:
            srv[(r["model"], r["target"], r["concurrency"])].append(r)
    concs = meta.get("concurrency") or sorted({k[2] for k in srv})

    print(f"# Modelhub side-by-side benchmark, run {meta.get('run_id', '?')}\n")
    if meta:
        print(
            f"{meta.get('rounds')} rounds x {meta.get('duration_s')} s per concurrency point, "
            f"targets interleaved (order rotated each round), one server at a time; "
            f"{meta.get('nproc')} CPUs, load average at start {' '.join(meta.get('loadavg', []))}; "
            f"repo {meta.get('repo_commit') or '(no commit)'}, peers kit {meta.get('peers_kit')}.\n"
        )
    print(
        "Cells: requests/s / p50 ms / p99 ms, median over rounds (1 row per request, so rps = rows/s); "
        "(±x%) = half the min-max rps range across rounds, as % of the median.\n"
    )

    for model in models:
        print(f"## {model}\n")
        b1, b64 = (
            [r["rows_per_s"] for r in raw.get((model, 1), [])],
            [r["rows_per_s"] for r in raw.get((model, 64), [])],
        )
        if b1 or b64:
            p1 = med([r["p50_ms"] for r in raw.get((model, 1), [])])
            p64 = med([r["p50_ms"] for r in raw.get((model, 64), [])])
            print(
                f"Raw ORT limit (in-process, no HTTP, intra_op=2): batch 1 {med(b1) or 0:,.0f} rows/s "
                f"(p50 {p1 or 0:.3f} ms/call), batch 64 {med(b64) or 0:,.0f} rows/s (p50 {p64 or 0:.2f} ms/call); "
                f"batch-64 per round: {' / '.join(f'{x:,.0f}' for x in b64)}"
                + (f" (±{spread(b64):.0f}%)" if spread(b64) is not None else "")
                + "\n"
            )
        print("| target | " + " | ".join(f"c={c} rps / p50 / p99" for c in concs) + " | avg batch | errors | n |")
        print("|---|" + "---|" * len(concs) + "---|---|---|")
        for t in order:
            if t == RAW or not any((model, t, c) in srv for c in concs):
                continue
            cells, errs, ns, ab = [], 0, [], []
            for c in concs:
                rs = srv.get((model, t, c), [])
                if not rs:
                    cells.append("-")
                    continue
                rps = [r["rps"] for r in rs]
                sp = spread(rps)
                cells.append(
                    f"{med(rps):,.0f}{f' (±{sp:.0f}%)' if sp is not None else ''} / "
                    f"{med([r['p50_ms'] for r in rs]):.1f} / {med([r['p99_ms'] for r in rs]):.0f}"
                )
                errs += sum(r.get("errors", 0) for r in rs)
                ns.append(len(rs))
                ab += [r["avg_batch"] for r in rs if r.get("avg_batch") is not None]
            abs_ = f"{med(ab):.1f}" if ab else "-"
            print(f"| {titles.get(t, t)} | " + " | ".join(cells) + f" | {abs_} | {errs} | {'/'.join(map(str, ns))} |")
        print()

        # ---- Modelhub ratios
        if any((model, MH, c) in srv for c in concs):
            print(
                "Modelhub / peer (rps: higher is better for Modelhub; p99: lower is better). "
                "Ratio of medians; in brackets the per-round paired ratios.\n"
            )
            print(
                "| Modelhub vs | "
                + " | ".join(f"c={c} rps" for c in concs)
                + " | "
                + " | ".join(f"c={c} p99" for c in concs)
                + " |"
            )
            print("|---|" + "---|" * (2 * len(concs)))
            for peer, name in PEERS_FOR_RATIO:
                if not any((model, peer, c) in srv for c in concs):
                    continue
                cells = {"rps": [], "p99_ms": []}
                for key in ("rps", "p99_ms"):
                    for c in concs:
                        a, b = srv.get((model, MH, c), []), srv.get((model, peer, c), [])
                        if not a or not b:
                            cells[key].append("-")
                            continue
                        ratio = med([r[key] for r in a]) / med([r[key] for r in b])
                        rb = {r["round"]: r[key] for r in b}
                        paired = [
                            r[key] / rb[r["round"]]
                            for r in sorted(a, key=lambda r: r["round"])
                            if r["round"] in rb and rb[r["round"]]
                        ]
                        cells[key].append(
                            f"{ratio:.2f}x" + (f" [{', '.join(f'{x:.2f}' for x in paired)}]" if len(paired) > 1 else "")
                        )
                print(f"| {name} | " + " | ".join(cells["rps"]) + " | " + " | ".join(cells["p99_ms"]) + " |")
            print()
        else:
            skip = [p for p in problems if p.get("target") == MH]
            why = skip[0].get("reason") if skip else "not in TARGETS"
            print(f"Modelhub: not measured for {model} ({why}).\n")

        # ---- % of the hardware limit
        if b64:
            lim = med(b64)
            print(f"Share of the raw ORT batch-64 limit ({lim:,.0f} rows/s) reached over HTTP:\n")
            print("| target | " + " | ".join(f"c={c}" for c in concs) + " | best |")
            print("|---|" + "---|" * (len(concs) + 1))
            for t in order:
                if t == RAW or not any((model, t, c) in srv for c in concs):
                    continue
                vals = [med([r["rps"] for r in srv[(model, t, c)]]) if (model, t, c) in srv else None for c in concs]
                best = max(v for v in vals if v is not None)
                print(
                    f"| {titles.get(t, t)} | "
                    + " | ".join("-" if v is None else pct(v, lim) for v in vals)
                    + f" | {best:,.0f} rows/s = {pct(best, lim)} |"
                )
            print()

        # ---- noise
        bgs = [
            r["bg_busy_pct"]
            for r in recs
            if r.get("model") == model and "bg_busy_pct" in r and not (r.get("kind") == "raw" and r.get("batch") != 1)
        ]  # one per measurement
        if bgs:
            print(
                f"Machine busy before each measurement (no server of ours up): median {med(bgs):.0f}%, "
                f"max {max(bgs):.0f}%."
                + (" Neighbours were busy: treat these numbers as noisy." if max(bgs) > 25 else "")
                + "\n"
            )

    if problems:
        print("## Not measured / failures\n")
        seen = set()
        for p in problems:
            key = (p.get("target"), p.get("status"), p.get("reason"))
            if p.get("status") == "skipped" and key in seen:
                continue
            seen.add(key)
            print(
                f"- {p.get('model')} round {p.get('round')} {p.get('target')}: {p.get('status')}"
                + (f" ({p.get('reason')})" if p.get("reason") else "")
                + (f", log {p['log']}" if p.get("log") else "")
            )
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])

"""bench/run's table: each row's median ratio (min-max) against its target.

rows are bench/run's ROWS: (id, measure, kind, target), kind one of "rate"
(ours/baseline, higher is better), "cost" (ours/baseline, lower is better) and
"limit" (ours against an absolute bound). results map an id to (ours, baseline,
unit), the measurements of the A,B pairs.
"""

import statistics


def ratio_of(kind, ours, base):
    if base is None:
        return None
    return [o / b for o, b in zip(ours, base) if b]


def verdict(kind, target, value):
    if target is None:
        return "—", "info"
    if kind == "rate":
        return f"≥ {target}", "pass" if value >= target else "FAIL"
    if kind == "cost":
        return f"≤ {target}", "pass" if value <= target else "FAIL"
    return f"≤ {target}", "pass" if value <= target else "FAIL"


def fmt(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def table(rows, results):
    lines = ["| id | measure | ours (median) | baseline (median) | ratio median (min–max) | target | result |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rid, measure, kind, target in rows:
        if rid not in results:
            continue
        ours, base, unit = results[rid]
        o = statistics.median(ours)
        b = statistics.median(base) if base else None
        ratios = ratio_of(kind, ours, base)
        if kind == "limit":
            shown_ratio = f"{o / b:.2f}× baseline" if b else "—"
            tgt, res = verdict(kind, target, o)
        else:
            r = statistics.median(ratios)
            shown_ratio = f"{r:.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
            tgt, res = verdict(kind, target, r)
        lines.append(f"| {rid} | {measure} | {fmt(o)} {unit} | {fmt(b) + ' ' + unit if b is not None else '—'} | "
                     f"{shown_ratio} | {tgt} | {res} |")
    return "\n".join(lines)

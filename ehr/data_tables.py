"""Plain-text tables for the data CLI: samples per task, code coverage, unmapped codes, rows
skipped by reason. Pure functions over dicts / polars frames (no I/O)."""

from __future__ import annotations

import polars as pl

SPLIT_ORDER = ("train", "tuning", "held_out")


def format_table(rows: list[dict], columns: list[str], title: str | None = None) -> str:
    """Fixed-width table; numbers right-aligned."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) and rows
               for c in columns]
    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()
    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if not rows:
        out.append("(none)")
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def prevalence_text(prev: dict | None, max_items: int = 10) -> str:
    if not prev:
        return ""
    items = list(prev.items())
    text = " ".join(f"{k}={v:.3f}" for k, v in items[:max_items])
    return text + (f" (+{len(items) - max_items})" if len(items) > max_items else "")


def task_rows(stats: list[dict]) -> list[dict]:
    """One row per task build (skipped builds carry their reason)."""
    rows = []
    for s in stats:
        if s.get("skipped"):
            rows.append({"task": s["task"], "preset": s["preset"], "samples": None,
                         "prevalence": "skipped: " + s["skipped"]})
            continue
        sp = s.get("samples_per_split", {})
        rows.append({"task": s["task"], "preset": s["preset"], "samples": s.get("samples", 0),
                     **{k: sp.get(k, 0) for k in SPLIT_ORDER},
                     "events/sample": (s.get("events_per_sample") or {}).get("mean"),
                     "codes/sample": (s.get("codes_per_sample") or {}).get("mean"),
                     "prevalence": prevalence_text(s.get("prevalence"))})
    return rows


def task_table(stats: list[dict]) -> str:
    return format_table(task_rows(stats), ["task", "preset", "samples", *SPLIT_ORDER, "events/sample",
                                           "codes/sample", "prevalence"], title="samples per task")


def coverage_table(coverage: pl.DataFrame) -> str:
    rows = [{"family": f, "events": e, "resolved": r, "coverage": c}
            for f, e, r, c in coverage.select("family", "events", "resolved", "coverage").iter_rows()]
    return format_table(rows, ["family", "events", "resolved", "coverage"],
                        title="code coverage per family (events whose code resolves to a vocabulary id)")


def unmapped_table(unmapped: pl.DataFrame, top_n: int = 15) -> str:
    rows = [{"family": f, "code": c, "events": int(e)}
            for f, c, e in unmapped.head(top_n).select("family", "code", "events").iter_rows()]
    more = unmapped.height - len(rows)
    title = f"unmapped codes (kept in the data), top {len(rows)} of {unmapped.height}"
    return format_table(rows, ["family", "code", "events"], title=title) + (f"\n... {more} more" if more > 0 else "")


def ledger_table(ledger: pl.DataFrame) -> str:
    cols = ["table", "reason", "rows", "action"]
    rows = [dict(zip(cols, r)) for r in ledger.select(cols).iter_rows()]
    return format_table(rows, ["table", "reason", "rows", "action"], title="source rows skipped / kept, by reason")

"""One results format for every accuracy table.

Accuracy cells and paired comparisons come from `qa.metrics` (`accuracy_with_ci`,
`paired_comparison`) and are printed here, in one style, by the QA harness
(`qa.harness.format_table`) and the fine-tuning job (`llm_adapter.finetune_results.format_table`):

    system       overall               split:test
    -----------  --------------------  ----------------------
    always-C     60.0 [30.0, 90.0] n=10  100.0 [100.0, 100.0] n=5

    always-A vs always-C (accuracy difference in points, paired bootstrap 95% CI, McNemar p)
      overall  -20.0 [-60.0, +20.0]  p=0.754  n=10  (only always-A right 4, only always-C right 6)

What every results.json records so that it can be reproduced (`provenance`, fingerprints) lives
in the base layer, `medbase.provenance`.
"""

from __future__ import annotations



# ---- table cells ------------------------------------------------------------------------
def accuracy_cell(a: dict | None) -> str:
    """"34.3 [29.0, 39.7] n=300": accuracy and its 95% CI in percent."""
    if not a:
        return "-"
    return f"{100 * a['accuracy']:.1f} [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] n={a['n']}"


def difference_cell(p: dict) -> str:
    """"+17.0 [+12.7, +21.3]  p=1.56e-11  n=300": b - a in points, paired CI, McNemar p."""
    return (f"{100 * p['diff']:+.1f} [{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}]"
            f"  p={p['mcnemar_p']:.3g}  n={p['n']}")


def accuracy_table(rows: dict[str, dict[str, dict]], columns: list[str] | None = None,
                   row_label: str = "system") -> str:
    """rows: name -> {column -> accuracy dict}; an aligned table with one header rule."""
    cols = columns if columns is not None else list(dict.fromkeys(c for r in rows.values() for c in r))
    table = [[row_label] + cols] + [[name] + [accuracy_cell(r.get(c)) for c in cols] for name, r in rows.items()]
    widths = [max(len(row[j]) for row in table) for j in range(len(cols) + 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def comparison_block(name_b: str, name_a: str, per_column: dict[str, dict]) -> str:
    """Paired comparisons of system b against system a, one line per column."""
    if not per_column:
        return ""
    width = max(len(c) for c in per_column)
    lines = [f"{name_b} vs {name_a} (accuracy difference in points, paired bootstrap 95% CI, McNemar p)"]
    for col, p in per_column.items():
        lines.append(f"  {col:<{width}}  {difference_cell(p)}  (only {name_b} right {p['b_only']}, "
                     f"only {name_a} right {p['a_only']})")
    return "\n".join(lines)

"""`paper_report.md` (+ `level_ablation_paper.png`) of a grid: the hierarchical-ICD paper's view
(issue 22) from the cells and `paper_stats.paper_summary` rows, binary tasks only.

1. per task and slice, every arm: AUPRC, AUROC and F1-macro (seed means; F1 at each seed's
   tuning-split threshold), and against its reference (flat in the same model; `behrt-mlm`
   against `behrt`): the DeLong difference of AUROC with its 95% CI and p, and the paired
   bootstrap differences of AUPRC and F1-macro with their 95% CIs;
2. "k of n comparisons with a CI above 0" per metric (the paper's 26 of 28);
3. the level ablation (G0 / G1 / G2 on/off) of the graph model (`graph-XYZ` in `hicd`) and of
   the token models (`hier-XYZ`, e.g. `behrt-mlm`), as a table and a plot, where those cells exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ehr.benchmark.paper_stats import count_above_zero
from medbase.atomic import atomic_write_text

_LEVELS = re.compile(r"^(?:graph|hier)-([01]{3})$")


def _f(x, nd=3):
    return "–" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _seed_means(records: list[dict]) -> dict:
    by: dict = {}
    for r in records:
        if r.get("kind") != "binary":
            continue
        m = r["metrics"]
        by.setdefault((r["dataset"], r["task"], r["preset"], r["model"], r["tokenizer"]), []).append(
            (m.get("auprc", np.nan), m.get("auroc", np.nan), m.get("f1_macro", np.nan)))
    return {k: np.nanmean(np.array(v, dtype=float), 0) if len(v) else np.full(3, np.nan) for k, v in by.items()}


def paper_report_text(records: list[dict], rows: list[dict]) -> str:
    means = _seed_means(records)
    comp = {(r["dataset"], r["task"], r["preset"], r["slice"], r["model"], r["tokenizer"], r["comparison"].split(" - ")[1]): r
            for r in rows if r.get("comparison")}
    arms = [r for r in rows if not r.get("comparison")]
    out = ["# The hierarchical-ICD paper's metrics (issue 22)", "",
           "AUPRC / AUROC / F1-macro: seed means (slice `all`; other slices: AUROC of the seed-mean probabilities "
           "and F1); F1-macro at each seed's threshold chosen on the tuning split. Δ: against the reference arm "
           "(flat in the same model; behrt-mlm against behrt): DeLong for AUROC (seed-mean probabilities), paired "
           "patient-level bootstrap for AUPRC and F1-macro (95% CIs).", ""]
    keys = sorted({(r["dataset"], r["task"], r["preset"], r["slice"]) for r in arms})
    for ds, task, preset, sl in keys:
        out += [f"## {ds} · {task}:{preset} · slice {sl}", "",
                "| model | tokenizer | AUPRC | AUROC | F1-macro | vs | Δ AUROC (DeLong) [95% CI], p | Δ AUPRC [95% CI] | Δ F1 [95% CI] |",
                "|---|---|---|---|---|---|---|---|---|"]
        for a in sorted((r for r in arms if (r["dataset"], r["task"], r["preset"], r["slice"]) == (ds, task, preset, sl)),
                        key=lambda r: (r["model"], r["tokenizer"])):
            m = means.get((ds, task, preset, a["model"], a["tokenizer"]), np.full(3, np.nan))
            auprc = m[0] if sl == "all" else np.nan
            auroc = m[1] if sl == "all" else a.get("auroc_seed_mean_probs", np.nan)
            line = f"| {a['model']} | {a['tokenizer']} | {_f(auprc)} | {_f(auroc)} | {_f(a.get('f1_mean'))} |"
            cs = [c for k, c in comp.items() if k[:6] == (ds, task, preset, sl, a["model"], a["tokenizer"])]
            if not cs:
                out.append(line + " | | | |")
            for c in cs:
                out.append(line + f" {c['comparison'].split(' - ')[1]} | {_f(c['delong_diff'])} [{_f(c['delong_lo'])}, "
                           f"{_f(c['delong_hi'])}], p={_f(c['delong_p'])} | {_f(c['auprc_diff'])} "
                           f"[{_f(c['auprc_diff_lo'])}, {_f(c['auprc_diff_hi'])}] | {_f(c.get('f1_diff'))} "
                           f"[{_f(c.get('f1_diff_lo'))}, {_f(c.get('f1_diff_hi'))}] |")
        out.append("")
    out += ["## Comparisons with a 95% CI above 0 (all tasks and slices)", ""]
    for metric in ("delong", "auprc_diff", "f1_diff"):
        c = count_above_zero(rows, metric)
        out.append(f"- {metric}: {c['k']} of {c['n']}")
    out.append("")
    abl = _ablation(means)
    if abl:
        out += ["## Level ablation (G0 chapter, G1 block, G2 category)", "",
                "| dataset · task | model | G0 | G1 | G2 | tokenizer | AUPRC | AUROC | F1-macro |", "|---|---|---|---|---|---|---|---|---|"]
        for (ds, task, model), items in sorted(abl.items()):
            for lv, tok, m in items:
                tick = ["✓" if c == "1" else "" for c in lv]
                out.append(f"| {ds} · {task} | {model} | {tick[0]} | {tick[1]} | {tick[2]} | {tok} | {_f(m[0])} | "
                           f"{_f(m[1])} | {_f(m[2])} |")
        out.append("")
    return "\n".join(out)


def _ablation(means: dict) -> dict:
    """{(dataset, task:preset, model): [(levels, tokenizer, (auprc, auroc, f1))]} for models with >= 4
    level combinations (flat counts as 000)."""
    out: dict = {}
    for (ds, task, preset, model, tok), m in means.items():
        mm = _LEVELS.match(tok)
        lv = mm.group(1) if mm else ("000" if tok == "flat" else None)
        if lv is not None:
            out.setdefault((ds, f"{task}:{preset}", model), []).append((lv, tok, m))
    return {k: sorted(v) for k, v in out.items() if len({x[0] for x in v}) >= 4}


def write_paper_report(records: list[dict], rows: list[dict], out: Path) -> dict:
    out = Path(out)
    atomic_write_text(out / "paper_report.md", paper_report_text(records, rows) + "\n")
    paths = {"paper_report": str(out / "paper_report.md")}
    abl = _ablation(_seed_means(records))
    if abl:
        import matplotlib  # plotting: only where an ablation exists

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        width = 0.8 / len(abl)
        combos = [f"{a}{b}{c}" for a in "01" for b in "01" for c in "01"]
        for i, ((ds, task, model), items) in enumerate(sorted(abl.items())):
            val = {x[0]: x[2][1] for x in items}
            ax.bar(np.arange(8) + i * width, [val.get(c, np.nan) for c in combos], width, label=f"{model} ({task}, {ds})")
        ax.set_xticks(np.arange(8) + 0.4 - width / 2)
        ax.set_xticklabels(combos)
        ax.set_xlabel("levels G0 G1 G2 (1 = on)")
        ax.set_ylabel("AUROC (seed mean)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "level_ablation_paper.png", dpi=120)
        plt.close(fig)
        paths["paper_ablation_plot"] = str(out / "level_ablation_paper.png")
    return paths

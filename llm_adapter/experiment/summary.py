"""The prefix experiment's tables from its finished cells (results_dir/*.json).

One markdown table: arm x setting x scoring, accuracy mean ± sd over seeds, the paired
difference to the no-prefix arm and to the text-baseline arm (mean ± sd over seeds, then per
seed: points [paired bootstrap 95% CI], McNemar p, `qa.metrics.paired_comparison` on the same
questions); a budget table (steps, examples, tokens, soft prefix positions, read off the
training curves); and per question type when the cells hold more than one type.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llm_adapter.experiment.grid import ARMS, ExperimentConfig, cell_name, shared_across_settings
from medbase.atomic import atomic_write_text
from qa.metrics import paired_comparison

REFERENCES = ("no_prefix", "text_baseline")


def load_cells(results_dir: str | Path) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if "cell" in rec:
            out[rec["cell"]] = rec
    return out


def _cell(cells: dict, arm: str, setting: str, seed: int) -> dict | None:
    return cells.get(cell_name(arm, setting, seed))


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = f" ± {100 * np.std(xs, ddof=1):.1f}" if len(xs) > 1 else ""
    return f"{100 * np.mean(xs):.1f}{sd} (n={len(xs)})"


def paired(a: dict, b: dict, scoring: str, split: str = "test", mask=None) -> dict | None:
    """b versus a on the same questions (None when they were not the same questions)."""
    sa, sb = a["scores"].get(scoring, {}).get(split), b["scores"].get(scoring, {}).get(split)
    if sa is None or sb is None or sa["ids"] != sb["ids"]:
        return None
    ca, cb = np.array(sa["correct"], bool), np.array(sb["correct"], bool)
    if mask is not None:
        ca, cb = ca[mask], cb[mask]
    return paired_comparison(ca, cb, seed=b["seed"])


def _diff_cell(ps: list[dict]) -> str:
    if not ps:
        return "–"
    diffs = [p["diff"] for p in ps]
    sd = f" ± {100 * np.std(diffs, ddof=1):.1f}" if len(diffs) > 1 else ""
    per = "; ".join(f"{100 * p['diff']:+.1f} [{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] p={p['mcnemar_p']:.2g}"
                    for p in ps)
    return f"{100 * np.mean(diffs):+.1f}{sd} ({per})"


def main_table(cfg: ExperimentConfig, cells: dict, split: str = "test") -> str:
    lines = ["| arm | setting | scoring | accuracy % (mean ± sd over seeds) | vs no_prefix, points | vs text_baseline, points |",
             "|---|---|---|---|---|---|"]
    scorings = sorted({sc for c in cells.values() for sc in c["scores"]}, key=lambda s: s != "option")
    for setting in cfg.settings:
        for arm in cfg.arms:
            for sc in scorings:
                accs, vs = [], {r: [] for r in REFERENCES}
                for seed in cfg.seeds:
                    c = _cell(cells, arm, setting, seed)
                    if c is None or sc not in c["scores"] or split not in c["scores"][sc]:
                        continue
                    accs.append(c["scores"][sc][split]["accuracy"])
                    for ref in REFERENCES:
                        r = _cell(cells, ref, setting, seed)
                        if r is not None and ref != arm:
                            p = paired(r, c, sc, split)
                            if p is not None:
                                vs[ref].append(p)
                if accs:
                    shown = "shared" if shared_across_settings(arm) else setting
                    lines.append(f"| {arm} | {setting}{' (same cells)' if shown == 'shared' else ''} | {sc} | "
                                 f"{_mean_sd(accs)} | {_diff_cell(vs['no_prefix'])} | {_diff_cell(vs['text_baseline'])} |")
    return "\n".join(lines)


def budget_table(cfg: ExperimentConfig, cells: dict) -> str:
    lines = ["| arm | stages (steps x examples) | optimizer steps | examples | tokens | soft prefix positions | tokens incl. prefix |",
             "|---|---|---|---|---|---|---|"]
    for arm in cfg.arms:
        recs = [c for c in cells.values() if c["arm"] == arm]
        if not recs:
            continue
        b = recs[0]["budget"]
        stages = " + ".join(f"{k} {v['steps']} x {v['examples'] // max(v['steps'], 1)}" for k, v in b["stages"].items())
        t = {k: np.mean([r["budget"]["total"][k] for r in recs]) for k in b["total"]}
        lines.append(f"| {arm} | {stages} | {t['steps']:.0f} | {t['examples']:.0f} | {t['tokens']:.0f} | "
                     f"{t['prefix_tokens']:.0f} | {t['tokens_with_prefix']:.0f} |")
    return "\n".join(lines)


def _qtypes(cells: dict, scoring: str, split: str) -> list[str]:
    """The question types the cells were scored on (one column each in the per-type tables)."""
    return sorted({t for c in cells.values() for t in c["scores"].get(scoring, {}).get(split, {}).get("qtype", [])})


def _qtype_header(types: list[str]) -> list[str]:
    return [f"| arm | setting | {' | '.join(types)} |", "|---|---|" + "---|" * len(types)]


def qtype_table(cfg: ExperimentConfig, cells: dict, scoring: str = "option", split: str = "test") -> str:
    types = _qtypes(cells, scoring, split)
    if len(types) < 2:
        return ""
    lines = _qtype_header(types)
    for setting in cfg.settings:
        for arm in cfg.arms:
            row = []
            for t in types:
                accs = []
                for seed in cfg.seeds:
                    c = _cell(cells, arm, setting, seed)
                    s = c and c["scores"].get(scoring, {}).get(split)
                    if s:
                        m = np.array(s["qtype"]) == t
                        accs.append(float(np.array(s["correct"])[m].mean()) if m.any() else np.nan)
                row.append(_mean_sd([a for a in accs if a == a]))
            lines.append(f"| {arm} | {setting} | {' | '.join(row)} |")
    return "\n".join(lines)


def qtype_diff_table(cfg: ExperimentConfig, cells: dict, ref: str, scoring: str = "option", split: str = "test") -> str:
    """Per question type: each arm minus `ref`, points, on the same questions, pooled over the
    seeds (pairs stay within a seed) with a paired bootstrap 95% CI and McNemar p."""
    types = _qtypes(cells, scoring, split)
    if len(types) < 2:
        return ""
    lines = _qtype_header(types)
    for setting in cfg.settings:
        for arm in cfg.arms:
            if arm == ref:
                continue
            row = []
            for t in types:
                pairs = []
                for seed in cfg.seeds:
                    a, b = _cell(cells, ref, setting, seed), _cell(cells, arm, setting, seed)
                    sa = a and a["scores"].get(scoring, {}).get(split)
                    sb = b and b["scores"].get(scoring, {}).get(split)
                    if sa and sb and sa["ids"] == sb["ids"]:
                        m = np.array(sb["qtype"]) == t
                        pairs.append((np.array(sa["correct"], bool)[m], np.array(sb["correct"], bool)[m]))
                if not pairs or not sum(len(x) for x, _ in pairs):
                    row.append("–")
                    continue
                p = paired_comparison(np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]), seed=0)
                row.append(f"{100 * p['diff']:+.1f} [{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] "
                           f"p={p['mcnemar_p']:.2g} (seeds={len(pairs)})")
            lines.append(f"| {arm} | {setting} | {' | '.join(row)} |")
    return "\n".join(lines)


def time_line(cells: dict) -> str:
    """Compute time of the finished cells: each cell's wall time (MedTok stage included) summed,
    i.e. the wall time of one runner doing them all on one core."""
    if not cells:
        return ""
    total = sum(float(c.get("wall_s", 0)) for c in cells.values())
    medtok = sum(float((c.get("medtok") or {}).get("train_s") or 0) for c in cells.values())
    return (f"Compute: {len(cells)} cells, {total / 3600:.2f} h summed cell wall time (one runner, one thread each; "
            f"MedTok training {medtok / 3600:.2f} h of it, counted where a cell trained its MedTok).")


def plot_accuracy(cfg: ExperimentConfig, cells: dict, out: str | Path, scoring: str = "option", split: str = "test"):
    """Bars: test accuracy per arm (mean over seeds, sd as error bar, each seed a dot), one bar
    per setting; chance for 4 options dashed. Returns the path, or None without cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {(arm, st): [c["scores"][scoring][split]["accuracy"] for seed in cfg.seeds
                        if (c := _cell(cells, arm, st, seed)) and split in c["scores"].get(scoring, {})]
            for arm in cfg.arms for st in cfg.settings}
    if not any(rows.values()):
        return None
    width = 0.8 / len(cfg.settings)
    fig, ax = plt.subplots(figsize=(1.3 * len(cfg.arms) + 2, 3.8))
    for j, st in enumerate(cfg.settings):
        xs = np.arange(len(cfg.arms)) + (j - (len(cfg.settings) - 1) / 2) * width
        for x, arm in zip(xs, cfg.arms):
            accs = rows[(arm, st)]
            if not accs:
                continue
            ax.bar(x, np.mean(accs), width, color=f"C{j}", alpha=0.7, label=st if arm == next(
                a for a in cfg.arms if rows[(a, st)]) else None,
                yerr=np.std(accs, ddof=1) if len(accs) > 1 else None, capsize=3)
            ax.scatter([x] * len(accs), accs, color="k", s=8, zorder=3)
    ax.axhline(0.25, color="grey", ls="--", lw=1)
    ax.set_xticks(np.arange(len(cfg.arms)), [a.replace("prefix_", "") for a in cfg.arms], rotation=30, ha="right")
    ax.set_ylabel(f"test accuracy ({scoring})")
    ax.legend(title="setting (shared arms repeat)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def alignment_line(cells: dict, scoring: str = "option", split: str = "test") -> str:
    """How a prefix arm's final caption-alignment loss (mean of its last 10 steps) goes with its
    test accuracy over the finished prefix cells (Spearman)."""
    from scipy.stats import spearmanr

    pairs = [(c["final_loss"]["align"], c["scores"][scoring][split]["accuracy"]) for c in cells.values()
             if c["arm"].startswith("prefix_") and "align" in c.get("final_loss", {}) and split in c["scores"].get(scoring, {})]
    if len(pairs) < 3:
        return ""
    rho, p = spearmanr(*zip(*pairs))
    return (f"Alignment loss vs test accuracy ({scoring}) over {len(pairs)} prefix cells: Spearman rho = {rho:.2f}, "
            f"p = {p:.2g}.")


def summarize(cfg: ExperimentConfig, out: str | Path | None = None) -> str:
    cells = load_cells(cfg.results_dir)
    n_seeds = len(cfg.seeds)
    parts = [f"# Prefix experiment ({len(cells)} finished cells, {n_seeds} seeds configured)", "",
             f"Budget rule: every arm {cfg.budget_examples()} examples in total (alignment stage + QA stage); "
             f"no-prefix arm: alignment budget spent on extra QA steps ({cfg.no_prefix_budget}).", "",
             "## Accuracy (test), mean ± sd over seeds; differences: mean ± sd, then per seed "
             "points [paired bootstrap 95% CI] McNemar p", "", main_table(cfg, cells), "",
             "## Training budget read off the recorded curves (mean over cells)", "", budget_table(cfg, cells),
             "", time_line(cells), "", alignment_line(cells)]
    qt = qtype_table(cfg, cells)
    if qt:
        parts += ["", "## Per question type (option likelihood), accuracy % mean ± sd over seeds", "", qt]
        for ref in ("no_prefix", "text_baseline"):
            if ref in cfg.arms:
                parts += ["", f"### Per question type: minus {ref}, points, pooled over seeds "
                          "[paired bootstrap 95% CI] McNemar p", "", qtype_diff_table(cfg, cells, ref)]
    text = "\n".join(parts) + "\n"
    path = Path(out) if out else Path(cfg.results_dir) / "SUMMARY.md"
    atomic_write_text(path, text)
    plot_accuracy(cfg, cells, path.with_name("accuracy.png"))
    return text


__all__ = ["ARMS", "load_cells", "main_table", "budget_table", "qtype_table", "qtype_diff_table", "plot_accuracy", "summarize",
           "paired"]

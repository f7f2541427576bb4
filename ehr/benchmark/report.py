"""Markdown tables and plots from a grid's records and seed summary.

`report.md` holds, per dataset:
1. the MedTok paper's Table 3 layout: columns = tasks (headline AUPRC: binary AUPRC, macro
   AUPRC for multi-class / multi-label; the prevalence row is a random ranking's AUPRC), per
   model a base row (flat codes), a "+ MedTok" row, an "improvement" row (paired bootstrap
   difference to flat with its 95% CI) and the hierarchical rows, then the other tokenizers;
   cells are mean +- sd over seeds;
2. the full table per task (every model x tokenizer: AUPRC with the CI of the seed mean,
   AUROC, n, positives, skipped replicates, paired difference to flat);
3. the level ablation (8 combinations of G0/G1/G2) when those cells exist;
4. throughput (samples/s training and inference per model) and embedding-table memory.
Plots: `auprc_<task>.png` (bars with CIs per tokenizer and model, prevalence line) and
`level_ablation.png`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ehr.benchmark.hierarchy import default_hierarchy
from ehr.benchmark.tokenizers import ABLATION_TOKENIZERS, full_vocab_footprint, parse_spec
from medbase.atomic import atomic_write_text
from medbase.paths import cache_dir, default_vocab_dir

MODEL_NAMES = {"transformer": "Transformer (TransformEHR-style)", "behrt": "BEHRT", "gbt": "GBT (bag of codes)",
               "logreg": "Logistic regression (bag of codes)"}
TOK_ROWS = {"medtok": "+ MedTok", "hier-111": "+ hierarchical (G0+G1+G2)", "hier-100": "+ hierarchical (G0)",
            "hier-010": "+ hierarchical (G1)", "hier-001": "+ hierarchical (G2)", "text": "+ text (MiniLM)",
            "medtok-text": "+ MedTok text-only", "medtok-graph": "+ MedTok graph-only",
            "medtok-ids": "+ MedTok token ids (learned codebook)", "medtok-n3000": "+ MedTok (N = 3,000)"}


def _f(x, nd=3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _ms(r) -> str:
    return f"{_f(r['auprc_mean'])} ± {_f(r['auprc_sd'])}" if r["seeds"] > 1 else _f(r["auprc_mean"])


def _tok_label(t: str) -> str:
    if t in TOK_ROWS:
        return TOK_ROWS[t]
    p = parse_spec(t)
    if p["family"] == "hier":
        on = "+".join(f"G{j}" for j in range(3) if p["levels"][j]) or "none"
        return f"+ hierarchical ({on}{', tokens' if p['mode'] == 'tokens' else ''})"
    return f"+ {t}"


def table3(summary: list[dict], dataset: str, slice_name: str = "all") -> str:
    rows = [r for r in summary if r["dataset"] == dataset and r["slice"] == slice_name]
    tasks = sorted({(r["task"], r["preset"]) for r in rows})
    models = [m for m in MODEL_NAMES if any(r["model"] == m for r in rows)]
    if not tasks or not models:
        return ""
    by = {(r["task"], r["preset"], r["model"], r["tokenizer"]): r for r in rows}
    head = "| model | " + " | ".join(f"{t}<br>{p}" for t, p in tasks) + " |"
    lines = [head, "|---" * (len(tasks) + 1) + "|"]
    prev = []
    for t, p in tasks:
        r = next((x for x in rows if (x["task"], x["preset"]) == (t, p)), None)
        prev.append(_f(r["prevalence"]) if r else "–")
    lines.append("| prevalence (random AUPRC) | " + " | ".join(prev) + " |")
    toks = sorted({r["tokenizer"] for r in rows}, key=_tok_order)
    for m in models:
        def line(label, tok, diff=False):
            cells = []
            for t, p in tasks:
                r = by.get((t, p, m, tok))
                if r is None:
                    cells.append("–")
                elif diff:
                    cells.append(f"{'+' if r.get('diff_vs_flat', 0) >= 0 else ''}{_f(r.get('diff_vs_flat'))} "
                                 f"[{_f(r.get('diff_lo'))}, {_f(r.get('diff_hi'))}]" if "diff_vs_flat" in r else "–")
                else:
                    cells.append(_ms(r))
            return f"| {label} | " + " | ".join(cells) + " |"

        lines.append(line(f"**{MODEL_NAMES[m]}** (flat codes)", "flat"))
        if "medtok" in toks:
            lines.append(line("+ MedTok", "medtok"))
            lines.append(line("improvement (MedTok − flat, paired 95% CI)", "medtok", diff=True))
        for tok in toks:
            if tok in ("flat", "medtok"):
                continue
            lines.append(line(_tok_label(tok), tok))
    return "\n".join(lines)


def _tok_order(t: str):
    order = ["flat", "medtok", "hier-111", "hier-100", "hier-010", "hier-001", "text", "medtok-text", "medtok-graph",
             "medtok-ids", "medtok-n3000"]
    return (order.index(t) if t in order else len(order), t)


def full_tables(summary: list[dict], dataset: str) -> str:
    out = []
    rows = [r for r in summary if r["dataset"] == dataset]
    for (task, preset) in sorted({(r["task"], r["preset"]) for r in rows}):
        sub = [r for r in rows if (r["task"], r["preset"]) == (task, preset)]
        for sl in sorted({r["slice"] for r in sub}):
            rr = sorted([r for r in sub if r["slice"] == sl], key=lambda r: (r["model"], _tok_order(r["tokenizer"])))
            r0 = rr[0]
            pos = json.loads(r0["positives"]) if isinstance(r0["positives"], str) else r0["positives"]
            most = max(pos.values()) if isinstance(pos, dict) else int(pos)
            warn = (f" **Warning: at most {most} positive test samples per label: the intervals, differences and "
                    f"p-values below cannot support any conclusion.**" if most < 10 else "")
            out.append(f"\n#### {task} / {preset} — {r0['kind']}, slice: {sl}; test n = {r0['n_test']} samples "
                       f"({r0['n_test_subjects']} patients), prevalence {_f(r0['prevalence'])}, "
                       f"positives {r0['positives']}"
                       + (f", macro over {r0['labels_evaluated']} labels with both classes in test"
                          if r0["kind"] != "binary" else "") + "." + warn + "\n")
            out.append("| model | tokenizer | AUPRC mean ± sd | 95% CI (seed mean) | AUROC mean ± sd | Δ vs flat [95% CI], p | skipped replicates |")
            out.append("|---|---|---|---|---|---|---|")
            for r in rr:
                d = (f"{_f(r['diff_vs_flat'])} [{_f(r['diff_lo'])}, {_f(r['diff_hi'])}], p={_f(r['diff_p'], 3)}"
                     if "diff_vs_flat" in r else "–")
                out.append(f"| {r['model']} | {r['tokenizer']} | {_ms(r)} | [{_f(r['auprc_lo'])}, {_f(r['auprc_hi'])}] | "
                           f"{_f(r['auroc_mean'])} ± {_f(r['auroc_sd'])} | {d} | {r['skipped_replicates']} |")
    return "\n".join(out)


def ablation_table(summary: list[dict], dataset: str, model: str = "transformer") -> str:
    rows = [r for r in summary if r["dataset"] == dataset and r["model"] == model and r["slice"] == "all"
            and (r["tokenizer"] in ABLATION_TOKENIZERS or r["tokenizer"] == "flat")]
    if len({r["tokenizer"] for r in rows} - {"flat"}) < 2:
        return ""
    tasks = sorted({(r["task"], r["preset"]) for r in rows})
    lines = ["| G0 | G1 | G2 | " + " | ".join(f"{t}/{p}" for t, p in tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
    by = {(r["task"], r["preset"], r["tokenizer"]): r for r in rows}
    for tok in ABLATION_TOKENIZERS:
        t2 = "flat" if tok == "hier-000" and (tasks and (tasks[0][0], tasks[0][1], "hier-000") not in by) else tok
        lv = parse_spec(tok)["levels"]
        cells = []
        for t, p in tasks:
            r = by.get((t, p, t2))
            cells.append("–" if r is None else f"{_ms(r)} [{_f(r['auprc_lo'])}, {_f(r['auprc_hi'])}]"
                         + (f"; Δ {_f(r['diff_vs_flat'])} [{_f(r['diff_lo'])}, {_f(r['diff_hi'])}]" if "diff_vs_flat" in r else ""))
        lines.append(f"| {'✓' if lv[0] else ''} | {'✓' if lv[1] else ''} | {'✓' if lv[2] else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def throughput_table(records: list[dict]) -> str:
    lines = ["| model | cells | median train samples/s | median inference samples/s | total train samples | total train s |",
             "|---|---|---|---|---|---|"]
    for m in ("transformer", "behrt"):
        th = [r["throughput"] for r in records if r["model"] == m and r.get("throughput")]
        if not th:
            continue
        lines.append(f"| {m} | {len(th)} | {np.median([t['train_samples_per_s'] for t in th]):.0f} | "
                     f"{np.median([t['infer_samples_per_s'] for t in th]):.0f} | "
                     f"{sum(t['train_samples_seen'] for t in th)} | {sum(t['train_seconds'] for t in th):.0f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def memory_table(records: list[dict], tokenizers: list[str], d: int = 64, n_codes: int = 217_848,
                 level_rows: dict | None = None, compute_levels: bool = True) -> str:
    level_rows = level_rows or vocab_level_rows(compute_levels)
    lines = [f"| tokenizer | trainable params, this grid (median over cells) | full {n_codes:,}-code vocabulary: trainable params | learned MiB | frozen MiB | how unseen codes are handled |",
             "|---|---|---|---|---|---|"]
    for t in sorted(set(tokenizers), key=_tok_order):
        fp = full_vocab_footprint(t, d, n_codes, level_rows)
        info = [r["tokenizer_info"] for r in records if r["tokenizer"] == t and "trainable_params" in r.get("tokenizer_info", {})]
        here = int(np.median([i["trainable_params"] for i in info])) if info else "–"
        rule = info[0]["unseen_rule"] if info else ""
        lines.append(f"| {t} | {here} | {fp['trainable_params']:,} | {fp['learned_bytes'] / 2**20:.1f} | "
                     f"{fp['frozen_bytes'] / 2**20:.1f} | {rule} |")
    return "\n".join(lines)


def vocab_level_rows(compute: bool = True) -> dict:
    """Distinct level keys over every assignable code of the built vocabulary (the rows a
    hierarchical tokenizer adds for the full vocabulary). Cached in a small JSON keyed by the
    vocabulary file; computed (about 20 s) only when `compute`; zeros when unavailable."""
    import json


    src = default_vocab_dir() / "codes.parquet"
    if not src.exists():
        return {"G0": 0, "G1": 0, "G2": 0}
    key = f"{src.stat().st_size}-{int(src.stat().st_mtime)}"
    path = cache_dir() / "ehr_bench" / "vocab_level_rows.json"
    if path.exists():
        rec = json.loads(path.read_text())
        if rec.get("key") == key:
            return rec["rows"]
    if not compute:
        return {"G0": 0, "G1": 0, "G2": 0}

    h = default_hierarchy()
    codes = [c for c in h._parent if c.split(":", 1)[0] in ("ICD10CM", "ICD9CM", "ICD10PCS", "ICD9PCS", "ATC")]
    lv = h.levels(codes)
    rows = {f"G{j}": len({k for k in lv[:, j] if k is not None}) for j in range(3)}
    atomic_write_text(path, json.dumps({"key": key, "rows": rows}) + "\n")
    return rows


def plot_bars(summary: list[dict], out: Path, dataset: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    rows = [r for r in summary if r["dataset"] == dataset and r["slice"] == "all"]
    for task, preset in sorted({(r["task"], r["preset"]) for r in rows}):
        sub = [r for r in rows if (r["task"], r["preset"]) == (task, preset)]
        toks = sorted({r["tokenizer"] for r in sub}, key=_tok_order)
        models = sorted({r["model"] for r in sub})
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(toks) * len(models) / 1.5), 3.6))
        w = 0.8 / max(len(models), 1)
        for i, m in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for j, t in enumerate(toks):
                r = next((x for x in sub if x["model"] == m and x["tokenizer"] == t), None)
                if r is None or not np.isfinite(r["auprc_mean"]):
                    continue
                xs.append(j + (i - (len(models) - 1) / 2) * w)
                ys.append(r["auprc_mean"])
                lo.append(max(0.0, r["auprc_mean"] - r["auprc_lo"]) if np.isfinite(r["auprc_lo"]) else 0)
                hi.append(max(0.0, r["auprc_hi"] - r["auprc_mean"]) if np.isfinite(r["auprc_hi"]) else 0)
            ax.bar(xs, ys, w, yerr=[lo, hi], capsize=2, label=m)
        ax.axhline(sub[0]["prevalence"], color="k", ls="--", lw=0.8, label="prevalence")
        ax.set_xticks(range(len(toks)))
        ax.set_xticklabels(toks, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("AUPRC" if sub[0]["kind"] == "binary" else "macro AUPRC")
        ax.set_title(f"{dataset}: {task}/{preset} (n={sub[0]['n_test']}, 95% CI)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        f = out / f"auprc_{task}_{preset}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(str(f))
    return files


def plot_ablation(summary: list[dict], out: Path, dataset: str, model: str = "transformer") -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["dataset"] == dataset and r["model"] == model and r["slice"] == "all"
            and r["tokenizer"] in ABLATION_TOKENIZERS + ["flat"]]
    if len({r["tokenizer"] for r in rows} - {"flat"}) < 2:
        return None
    tasks = sorted({(r["task"], r["preset"]) for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, (t, p) in zip(axes[0], tasks):
        names, ys, lo, hi = [], [], [], []
        for tok in ABLATION_TOKENIZERS:
            r = next((x for x in rows if (x["task"], x["preset"]) == (t, p)
                      and x["tokenizer"] == (tok if tok != "hier-000" or any(y["tokenizer"] == "hier-000" for y in rows) else "flat")), None)
            if r is None:
                continue
            names.append(tok.replace("hier-", ""))
            ys.append(r["auprc_mean"])
            lo.append(max(0.0, r["auprc_mean"] - r["auprc_lo"]))
            hi.append(max(0.0, r["auprc_hi"] - r["auprc_mean"]))
        ax.bar(range(len(ys)), ys, yerr=[lo, hi], capsize=2)
        ax.set_xticks(range(len(ys)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_xlabel("levels on (G0 G1 G2)")
        ax.set_title(f"{t}/{p}", fontsize=9)
    axes[0][0].set_ylabel("AUPRC")
    fig.tight_layout()
    f = out / "level_ablation.png"
    fig.savefig(f, dpi=110)
    plt.close(fig)
    return str(f)


def write_report(records: list[dict], summary: list[dict], out: Path, meta: dict, full_vocab: bool = True) -> dict:
    """`full_vocab`: compute the full vocabulary's level rows for the memory table if not cached."""
    out = Path(out)
    datasets = sorted({r["dataset"] for r in records})
    tokenizers = sorted({r["tokenizer"] for r in records}, key=_tok_order)
    parts = [f"# EHR benchmark report\n\ndata fingerprint(s): {meta.get('data_fingerprint')}; "
             f"cells {meta.get('cells')} ({meta.get('cells_reused')} reused from earlier runs). "
             f"Headline metric: AUPRC = average precision over the pooled test predictions (binary) or its macro "
             f"mean over labels with both classes in the test split (one-vs-rest; multi-class and multi-label); "
             f"mean ± sd over seeds; 95% CIs from {meta.get('bench_config', {}).get('n_boot')} patient-level "
             f"bootstrap replicates of the seed-mean; Δ = paired bootstrap difference to the flat tokenizer on "
             f"the same replicates.\n"]
    skipped = [t for t in meta.get("tasks", []) if t.get("skipped")]
    if skipped:
        parts.append("Tasks not run: " + "; ".join(
            t["skipped"] if t["skipped"].startswith(f"{t['task']}/{t['preset']}") else f"{t['task']}/{t['preset']}: {t['skipped']}"
            for t in skipped) + "\n")
    plots = []
    for ds in datasets:
        parts.append(f"\n## {ds}: the paper's Table 3 layout (AUPRC)\n\n" + table3(summary, ds))
        for sl in sorted({r["slice"] for r in summary if r["dataset"] == ds} - {"all"}):
            parts.append(f"\n### slice: {sl}\n\n" + table3(summary, ds, sl))
        abl = ablation_table(summary, ds)
        if abl:
            parts.append(f"\n## {ds}: hierarchy level ablation (transformer)\n\n" + abl)
            p = plot_ablation(summary, out, ds)
            if p:
                plots.append(p)
        parts.append(f"\n## {ds}: all results\n" + full_tables(summary, ds))
        plots += plot_bars(summary, out, ds)
    th = throughput_table(records)
    if th:
        parts.append("\n## Throughput (samples = prediction windows; one process)\n\n" + th)
    parts.append("\n## Embedding tables per tokenizer\n\n" + memory_table(records, tokenizers, compute_levels=full_vocab))
    text = "\n".join(parts) + "\n"
    (out / "report.md").write_text(text)
    return {"report_md": str(out / "report.md"), "plots": plots}

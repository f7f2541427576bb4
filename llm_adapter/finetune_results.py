"""Results of the fine-tuning job: accuracies with CIs, the paired difference, a table
(the `qa.report` format shared with the QA harness), a plot, and the summary over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medbase.atomic import atomic_path
from qa.metrics import accuracy_with_ci, paired_comparison
from qa.results_format import accuracy_table, comparison_block


def summarize(results: dict, cfg) -> dict:
    """Per arm and split: accuracy with bootstrap CI; per split: prefix arm minus no-prefix arm
    (paired bootstrap CI, McNemar p) on the same questions."""
    out = {"accuracy": {}, "paired": {}}
    arms = results["arms"]
    for arm, r in arms.items():
        out["accuracy"][arm] = {sc: {s: accuracy_with_ci(np.array(v["correct"]), seed=cfg.seed) for s, v in per.items()}
                                for sc, per in r.get("scores", {}).items()}
    if "lora" in arms and len(arms) > 1:
        for arm in arms:
            if arm == "lora":
                continue
            for sc, per in arms[arm].get("scores", {}).items():
                for s, v in per.items():
                    base = arms["lora"].get("scores", {}).get(sc, {}).get(s)
                    if base is not None and base["ids"] == v["ids"]:
                        out["paired"].setdefault(arm, {}).setdefault(sc, {})[s] = paired_comparison(
                            np.array(base["correct"]), np.array(v["correct"]), seed=cfg.seed)
    out["throughput"] = {}
    for arm, r in arms.items():
        for stage, curve in r.get("curves", {}).items():
            if curve:
                toks = sum(c["tokens"] for c in curve)
                out["throughput"][f"{arm}/{stage}"] = {"steps": len(curve), "tokens": toks,
                                                       "seconds": curve[-1]["elapsed_s"],
                                                       "tokens_per_s": toks / max(curve[-1]["elapsed_s"], 1e-9),
                                                       "final_loss_mean10": float(np.mean([c["loss"] for c in curve[-10:]]))}
    return out


SCORING_NAMES = {"letter": "letter log-likelihood (QA harness), after QA training",
                 "option": "option likelihood, after QA training",
                 "option@pre_qa": "option likelihood, before QA training (after alignment for the prefix arm)"}


def format_table(results: dict) -> str:
    """Per scoring: accuracy (%) with 95% CI per arm and split, then the prefix arm against the
    no-prefix arm (`qa.report` format); then throughput per stage."""
    s = results["summary"]
    lines = []
    scorings = list(dict.fromkeys(sc for a in s["accuracy"].values() for sc in a))
    for sc in scorings:
        splits = sorted({sp for a in s["accuracy"].values() for sp in a.get(sc, {})})
        rows = {arm: accs.get(sc, {}) for arm, accs in s["accuracy"].items()}
        lines += [f"scoring: {SCORING_NAMES.get(sc, sc)}", accuracy_table(rows, splits, row_label="arm")]
        for arm, per in s["paired"].items():
            if per.get(sc):
                lines += ["", comparison_block(arm, "lora", per[sc])]
        lines.append("")
    for k, t in s["throughput"].items():
        lines.append(f"{k}: {t['steps']} steps, {t['tokens']} tokens in {t['seconds']:.0f} s = "
                     f"{t['tokens_per_s']:.0f} tokens/s, last-10 loss {t['final_loss_mean10']:.3f}")
    if "wall_s" in results:
        lines.append(f"wall time {results['wall_s']:.0f} s, peak RSS {results.get('peak_rss_mib', float('nan')):.0f} MiB")
    return "\n".join(lines)


def plot_curves(results: dict, path: str | Path) -> Path:
    """Three panels: training loss per stage and arm, training-set accuracy during QA training
    (the learning curve), final accuracy per split and arm with 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for arm, r in results["arms"].items():
        offset = 0
        for stage in ("align", "qa"):
            curve = r.get("curves", {}).get(stage) or []
            if not curve:
                continue
            x = np.array([offset + c["step"] for c in curve])
            loss = np.array([c["loss"] for c in curve])
            k = max(1, len(loss) // 20)  # moving average: single batches are noisy
            ax1.plot(x[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"{arm} {stage}")
            if stage == "qa":
                pts = [(0, r["train_acc_start"])] if r.get("train_acc_start") is not None else []
                pts += [(c["step"], c["train_acc"]) for c in curve if "train_acc" in c]
                final = r.get("scores", {}).get("letter", {}).get("train_probe")
                if final and (not pts or pts[-1][0] != curve[-1]["step"]):
                    pts.append((curve[-1]["step"], float(np.mean(final["correct"]))))
                if pts:
                    ax2.plot(*zip(*pts), marker="o", label=arm)
            offset = int(x[-1])
    ax1.set(xlabel="optimizer step (align, then qa)", ylabel="loss on answer tokens", title="training loss")
    ax1.legend(fontsize=7)
    ax2.set(xlabel="qa step", ylabel="accuracy", title="training-question accuracy", ylim=(0, 1))
    ax2.legend(fontsize=7)
    accs = {f"{arm} {sc}": per for arm, by_sc in results.get("summary", {}).get("accuracy", {}).items()
            for sc, per in by_sc.items() if sc in ("letter", "option")}
    splits = sorted({s for per in accs.values() for s in per})
    width = 0.8 / max(1, len(accs))
    for i, (arm, per) in enumerate(accs.items()):
        xs = np.arange(len(splits)) + i * width
        y = [per[s]["accuracy"] if s in per else np.nan for s in splits]
        lo = [per[s]["accuracy"] - per[s]["ci_low"] if s in per else 0 for s in splits]
        hi = [per[s]["ci_high"] - per[s]["accuracy"] if s in per else 0 for s in splits]
        ax3.bar(xs, y, width, yerr=[lo, hi], capsize=3, label=arm)
    ax3.set_xticks(np.arange(len(splits)) + width * (len(accs) - 1) / 2, splits)
    ax3.set(ylabel="accuracy", title="final accuracy (letter / option scoring), 95% CI", ylim=(0, 1))
    ax3.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def summarize_seeds(runs: list[dict]) -> dict:
    """Mean and sample standard deviation over runs that differ only in their seed (each a
    `finetune` results dict): per arm, scoring and split the accuracy, and per split the
    prefix-minus-lora difference. Seed-to-seed spread is the honest error bar for one
    configuration (README: same seed reproduces on one machine; other thread counts do not)."""
    def stats(values):
        v = np.asarray(values, dtype=float)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                "n_seeds": int(len(v)), "values": [float(x) for x in v]}

    seeds = [r["config"]["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"runs repeat a seed: {seeds}")
    first = runs[0]["summary"]
    out = {"seeds": seeds, "accuracy": {}, "paired": {}}
    for arm, per_sc in first["accuracy"].items():
        for sc, per_split in per_sc.items():
            for sp in per_split:
                out["accuracy"].setdefault(arm, {}).setdefault(sc, {})[sp] = stats(
                    [r["summary"]["accuracy"][arm][sc][sp]["accuracy"] for r in runs])
    for arm, per_sc in first["paired"].items():
        for sc, per_split in per_sc.items():
            for sp in per_split:
                out["paired"].setdefault(arm, {}).setdefault(sc, {})[sp] = stats(
                    [r["summary"]["paired"][arm][sc][sp]["diff"] for r in runs])
    return out


def format_seed_summary(summary: dict) -> str:
    """"lora+prefix  option  test  51.3 ± 1.9 (n=3 seeds)" lines, then the differences."""
    lines = [f"over seeds {summary['seeds']} (mean ± sd, percent)"]
    for arm, per_sc in summary["accuracy"].items():
        for sc, per_split in per_sc.items():
            for sp, st in per_split.items():
                lines.append(f"  {arm:<12} {sc:<14} {sp:<10} {100 * st['mean']:.1f} ± {100 * st['sd']:.1f}")
    for arm, per_sc in summary["paired"].items():
        for sc, per_split in per_sc.items():
            for sp, st in per_split.items():
                lines.append(f"  {arm} - lora  {sc:<14} {sp:<10} {100 * st['mean']:+.1f} ± {100 * st['sd']:.1f} points")
    return "\n".join(lines)

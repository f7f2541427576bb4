"""Results of the fine-tuning job: accuracies with CIs, the paired difference, a table, a plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def summarize(results: dict, cfg) -> dict:
    """Per arm and split: accuracy with bootstrap CI; per split: prefix arm minus no-prefix arm
    (paired bootstrap CI, McNemar p) on the same questions."""
    from qa.metrics import accuracy_with_ci, paired_comparison

    out = {"accuracy": {}, "paired": {}}
    arms = results["arms"]
    for arm, r in arms.items():
        out["accuracy"][arm] = {s: accuracy_with_ci(np.array(v["correct"]), seed=cfg.seed)
                                for s, v in r.get("scores", {}).items()}
    if "lora" in arms and len(arms) > 1:
        for arm in arms:
            if arm == "lora":
                continue
            for s, v in arms[arm].get("scores", {}).items():
                base = arms["lora"]["scores"].get(s)
                if base is not None and base["ids"] == v["ids"]:
                    out["paired"].setdefault(arm, {})[s] = paired_comparison(
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


def format_table(results: dict) -> str:
    s = results["summary"]
    splits = sorted({sp for a in s["accuracy"].values() for sp in a})
    lines = ["scoring: option-letter log-likelihood at the answer position (qa.scoring)",
             f"{'arm':<16}" + "".join(f"{sp:>28}" for sp in splits)]
    for arm, accs in s["accuracy"].items():
        cells = []
        for sp in splits:
            a = accs.get(sp)
            cells.append(f"{a['accuracy']:.3f} [{a['ci_low']:.3f},{a['ci_high']:.3f}] n={a['n']}" if a else "-")
        lines.append(f"{arm:<16}" + "".join(f"{c:>28}" for c in cells))
    for arm, per in s["paired"].items():
        for sp, p in per.items():
            lines.append(f"{arm} - lora on {sp}: {p['diff']:+.3f} [{p['ci_low']:+.3f},{p['ci_high']:+.3f}] "
                         f"McNemar p={p['mcnemar_p']:.3g} (only-prefix right {p['b_only']}, only-lora right {p['a_only']})")
    for k, t in s["throughput"].items():
        lines.append(f"{k}: {t['steps']} steps, {t['tokens']} tokens in {t['seconds']:.0f} s = "
                     f"{t['tokens_per_s']:.0f} tokens/s, last-10 loss {t['final_loss_mean10']:.3f}")
    if "wall_s" in results:
        lines.append(f"wall time {results['wall_s']:.0f} s, peak RSS {results.get('peak_rss_mib', float('nan')):.0f} MiB")
    return "\n".join(lines)


def plot_curves(results: dict, path: str | Path) -> Path:
    """Training loss per stage and arm (left), accuracy per split and arm (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm, r in results["arms"].items():
        offset = 0
        for stage in ("align", "qa"):
            curve = r.get("curves", {}).get(stage) or []
            if not curve:
                continue
            x = [offset + c["step"] for c in curve]
            loss = np.array([c["loss"] for c in curve])
            k = max(1, len(loss) // 20)
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax1.plot(x[k - 1:], smooth, label=f"{arm} {stage}")
            pts = [(offset + c["step"], c["train_acc"]) for c in curve if "train_acc" in c]
            if pts:
                ax2.plot(*zip(*pts), marker=".", label=f"{arm} train acc")
            offset = x[-1]
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("loss (answer tokens)")
    ax1.legend(fontsize=7)
    accs = results.get("summary", {}).get("accuracy", {})
    for i, (arm, per) in enumerate(accs.items()):
        sps = sorted(per)
        y = [per[s]["accuracy"] for s in sps]
        err = [[per[s]["accuracy"] - per[s]["ci_low"] for s in sps], [per[s]["ci_high"] - per[s]["accuracy"] for s in sps]]
        ax2.errorbar(np.arange(len(sps)) * 0 + 0, [], fmt="none") if not sps else None
        ax2.errorbar([f"{s}" for s in sps], y, yerr=err, fmt="o", capsize=3, label=f"{arm} final")
    ax2.set_ylabel("accuracy")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

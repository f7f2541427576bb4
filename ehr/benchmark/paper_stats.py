"""The hierarchical-ICD paper's statistics over a grid's cells (issue 22), binary tasks only:
F1-macro and AUROC beside AUPRC, with DeLong's paired test for AUROC and the paired
patient-level bootstrap for AUPRC and F1-macro, and the "k of n comparisons with a CI above 0"
count (the paper's 26 of 28).

Per (dataset, task, model, tokenizer, slice) over its seeds:
- `f1_mean`: mean over seeds of F1-macro at each seed's own threshold, chosen on the tuning
  split (`metrics.choose_threshold`, stored in the cell as `metrics.f1_threshold`; cells
  written before issue 22 have none: NaN, rerun them with `GridConfig.require_tuning_predictions`);
- comparisons (`comparisons`): every arm against `flat` in the same model; `behrt-mlm` against
  `behrt` with the same tokenizer (with vs without pretraining, equal fine-tuning budget):
  - `delong_*`: DeLong on the seed-mean probabilities of the two arms (one score per sample);
  - `auprc_diff*`: `bootstrap.paired_difference` (the seed-mean metric per replicate);
  - `f1_diff*`: `metrics.paired_bootstrap_f1`-style: per replicate, the mean over seeds of each
    seed's F1 at its threshold, A - B, on the same replicates.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

from ehr.benchmark.bootstrap import interval, paired_difference, subject_counts
from ehr.benchmark.metrics import delong_test, f1_macro, replicate_f1


def _arm(records: list[dict], subjects: set | None):
    """(y, {seed: p}, subj, sample ids, {seed: threshold}) of one arm's cells on a slice."""
    recs = sorted(records, key=lambda r: r["seed"])
    out_p, thr = {}, {}
    y = subj = sid = None
    for r in recs:
        df = pl.read_parquet(r["predictions_file"]).sort("sample_id")
        if subjects is not None:
            df = df.filter(pl.col("subject_id").is_in(list(subjects)))
        y = df["boolean_value"].to_numpy().astype(np.int64)
        subj, sid = df["subject_id"].to_numpy(), df["sample_id"].to_numpy()
        out_p[r["seed"]] = df["predicted_boolean_probability"].to_numpy().astype(np.float64)
        thr[r["seed"]] = (r.get("metrics") or {}).get("f1_threshold", float("nan"))
    return y, out_p, subj, sid, thr


def comparisons(arms: list[tuple[str, str]], baseline: str = "flat") -> list[tuple[tuple, tuple]]:
    """(A, B) pairs of (model, tokenizer): A vs flat in its model; behrt-mlm vs behrt per tokenizer."""
    have = set(arms)
    out = [((m, t), (m, baseline)) for m, t in arms if t != baseline and (m, baseline) in have]
    out += [(("behrt-mlm", t), ("behrt", t)) for m, t in arms if m == "behrt-mlm" and ("behrt", t) in have]
    return out


def _f1_reps(y, p_by_seed, thr, counts, inv):
    reps = [replicate_f1(y, p_by_seed[s] >= thr[s], counts, inv) for s in sorted(p_by_seed)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(reps), 0)


def paper_summary(records: list[dict], slices: dict | None = None, n_boot: int = 1000, boot_seed: int = 0,
                  baseline: str = "flat") -> list[dict]:
    slices = slices or {"all": None}
    groups: dict = {}
    for r in records:
        if r.get("kind") != "binary":
            continue
        groups.setdefault((r["dataset"], r["task"], r["preset"]), {}).setdefault((r["model"], r["tokenizer"]), []).append(r)
    rows = []
    for (ds, task, preset), by_arm in groups.items():
        for sname, subjects in slices.items():
            arms = {a: _arm(recs, subjects) for a, recs in by_arm.items()}
            base_row = {"dataset": ds, "task": task, "preset": preset, "slice": sname}
            for (model, tok), (y, ps, subj, sid, thr) in arms.items():
                if y is None or not len(y):
                    continue
                f1s = [f1_macro(y, ps[s] >= thr[s]) if np.isfinite(thr[s]) else float("nan") for s in sorted(ps)]
                mean_p = np.mean([ps[s] for s in sorted(ps)], 0)
                rows.append({**base_row, "model": model, "tokenizer": tok, "comparison": "", "seeds": len(ps),
                             "n_test": int(len(y)), "positives": int(y.sum()),
                             "f1_mean": float(np.nanmean(f1s)) if np.isfinite(f1s).any() else float("nan"),
                             "thresholds": [float(thr[s]) for s in sorted(ps)],
                             "auroc_seed_mean_probs": delong_test(y, mean_p, mean_p)["auroc_a"]})
            for a, b in comparisons(list(arms), baseline):
                ya, pa, subj, sid, ta = arms[a]
                yb, pb, _, sidb, tb = arms[b]
                if ya is None or not np.array_equal(sid, sidb) or not (0 < ya.sum() < len(ya)):
                    continue
                ma, mb = np.mean([pa[s] for s in sorted(pa)], 0), np.mean([pb[s] for s in sorted(pb)], 0)
                dl = delong_test(ya, ma, mb)
                ap = paired_difference("binary", ya, [pa[s] for s in sorted(pa)], [pb[s] for s in sorted(pb)], subj,
                                       "auprc", n_boot, boot_seed)
                row = {**base_row, "model": a[0], "tokenizer": a[1], "comparison": f"{a[0]}:{a[1]} - {b[0]}:{b[1]}",
                       "delong_diff": dl["diff"], "delong_lo": dl["ci_lo"], "delong_hi": dl["ci_hi"],
                       "delong_z": dl["z"], "delong_p": dl["p_value"],
                       "auprc_diff": ap["diff"], "auprc_diff_lo": ap["lo"], "auprc_diff_hi": ap["hi"],
                       "auprc_diff_p": ap["p_value"]}
                if all(np.isfinite(list(ta.values()))) and all(np.isfinite(list(tb.values()))):
                    counts, inv = subject_counts(subj, n_boot, boot_seed)
                    d = _f1_reps(ya, pa, ta, counts, inv) - _f1_reps(ya, pb, tb, counts, inv)
                    full = (np.ones((1, counts.shape[1]), np.int32), inv)
                    point = float(_f1_reps(ya, pa, ta, *full)[0] - _f1_reps(ya, pb, tb, *full)[0])
                    ci = interval(d)
                    ok = d[~np.isnan(d)]
                    row.update(f1_diff=point, f1_diff_lo=ci["lo"], f1_diff_hi=ci["hi"],
                               f1_diff_p=float(min(1.0, 2 * min((ok <= 0).mean(), (ok >= 0).mean()))) if len(ok)
                               else float("nan"))
                rows.append(row)
    return rows


def count_above_zero(rows: list[dict], metric: str = "delong") -> dict:
    """{k, n}: comparisons whose 95% interval of `metric` ("delong", "auprc_diff", "f1_diff") lies above 0."""
    lo = {"delong": "delong_lo", "auprc_diff": "auprc_diff_lo", "f1_diff": "f1_diff_lo"}[metric]
    vals = [r[lo] for r in rows if r.get("comparison") and np.isfinite(r.get(lo, float("nan")))]
    return {"metric": metric, "k": int(sum(v > 0 for v in vals)), "n": len(vals)}

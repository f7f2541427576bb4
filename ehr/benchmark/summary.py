"""Cell records -> result rows (one per dataset x task x model x tokenizer x seed) and the seed
summary (one per dataset x task x model x tokenizer): mean +- sd over seeds, a patient-level
bootstrap CI of the seed-mean metric, and the paired difference to the flat tokenizer of the
same model on the same replicates. Optional test slices (e.g. the synthetic cohort's patients
whose informative codes are rare in training) are scored from the saved predictions.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from ehr.benchmark.bootstrap import DEFAULT_REPLICATES, paired_difference, replicate_metrics, subject_counts, interval
from ehr.benchmark.metrics import compute_metrics

BASELINE = "flat"


def result_row(rec: dict) -> dict:
    m, ci = rec["metrics"], rec["ci"]
    binary = rec["kind"] == "binary"
    key_ap, key_auc = ("auprc", "auroc") if binary else ("auprc_macro", "auroc_macro")
    row = {
        "dataset": rec["dataset"], "task": rec["task"], "preset": rec["preset"], "kind": rec["kind"],
        "model": rec["model"], "tokenizer": rec["tokenizer"], "seed": rec["seed"],
        "n_test": rec["n_test"], "n_test_subjects": rec["n_test_subjects"],
        "positives": json.dumps(m["positives"]) if not binary else str(m["positives"]),
        "prevalence": m["headline_prevalence"],
        "auprc": m["headline_auprc"], "auprc_lo": ci[key_ap]["lo"], "auprc_hi": ci[key_ap]["hi"],
        "auroc": m["headline_auroc"], "auroc_lo": ci[key_auc]["lo"], "auroc_hi": ci[key_auc]["hi"],
        "averaging": "binary" if binary else "macro over labels with both classes in test (one-vs-rest)",
        "skipped_replicates": ci[key_ap]["skipped"], "replicates": ci["replicates"],
        "brier": m.get("brier", float("nan")),
        "auprc_micro": m.get("auprc_micro", float("nan")), "auroc_micro": m.get("auroc_micro", float("nan")),
        "prevalence_micro": m.get("prevalence_micro", float("nan")),
        "labels_evaluated": m.get("labels_evaluated", 1), "labels_total": m.get("labels_total", 1),
        "label_replicates_skipped": ci.get("label_skips", 0),
        "seconds": rec["seconds"],
        "train_samples_per_s": (rec.get("throughput") or {}).get("train_samples_per_s", float("nan")),
        "infer_samples_per_s": (rec.get("throughput") or {}).get("infer_samples_per_s", float("nan")),
        "epochs": (rec.get("training") or {}).get("epochs", float("nan")),
        "trainable_params": rec.get("model_trainable_params", float("nan")),
        "tokenizer_trainable_params": (rec.get("tokenizer_info") or {}).get("trainable_params", float("nan")),
        "unseen_to_unk": (rec.get("tokenizer_info") or {}).get("unseen_to_unk", float("nan")),
        "out_of_system": (rec.get("tokenizer_info") or {}).get("out_of_system", float("nan")),
        "data_fingerprint": rec["data_fingerprint"], "cell": rec["cell"], "predictions_file": rec["predictions_file"],
    }
    if "accuracy" in m:
        row["accuracy"] = m["accuracy"]
    return row


def _load_preds(path: str) -> pl.DataFrame:
    return pl.read_parquet(path)


def _arrays(kind: str, pred: pl.DataFrame, classes: list):
    """(y, p, subject_ids) in sample order from a long-format predictions frame."""
    pred = pred.sort("sample_id", "label")
    if kind == "binary":
        return (pred["boolean_value"].cast(pl.Int64).to_numpy(), pred["predicted_boolean_probability"].to_numpy(),
                pred["subject_id"].to_numpy(), pred["sample_id"].to_numpy())
    K = len(classes)
    order = {c: i for i, c in enumerate(classes)}
    pred = pred.with_columns(pl.col("label").replace_strict(order, return_dtype=pl.Int64).alias("_j")).sort("sample_id", "_j")
    Y = pred["boolean_value"].cast(pl.Int64).to_numpy().reshape(-1, K)
    P = pred["predicted_boolean_probability"].to_numpy().reshape(-1, K)
    sid = pred["sample_id"].to_numpy()[::K]
    subj = pred["subject_id"].to_numpy()[::K]
    y = Y.argmax(1) if kind == "multiclass" else Y
    return y, P, subj, sid


def summarize(records: list[dict], slices: dict | None = None, n_boot: int = DEFAULT_REPLICATES,
              boot_seed: int = 0, baseline: str = BASELINE) -> list[dict]:
    """One row per (dataset, task, model, tokenizer[, slice]) over its seeds."""
    slices = slices or {"all": None}
    groups: dict = {}
    for r in records:
        groups.setdefault((r["dataset"], r["task"], r["preset"], r["model"]), {}).setdefault(r["tokenizer"], []).append(r)
    out = []
    for (ds, task, preset, model), by_tok in groups.items():
        any_rec = next(iter(by_tok.values()))[0]
        kind, classes = any_rec["kind"], any_rec["classes"]
        metric = "auprc" if kind == "binary" else "auprc_macro"
        arrays = {}
        for tok, recs in by_tok.items():
            recs = sorted(recs, key=lambda r: r["seed"])
            arrays[tok] = [(_arrays(kind, _load_preds(r["predictions_file"]), classes), r["seed"]) for r in recs]
        for sname, subjects in slices.items():
            for tok, arrs in arrays.items():
                (y, _, subj, sid), _ = arrs[0]
                keep = np.ones(len(subj), bool) if subjects is None else np.isin(subj, list(subjects))
                if not keep.any():
                    continue
                ys = y[keep]
                preds = [a[1][keep] for a, _ in arrs]
                per_seed = [compute_metrics(kind, ys, p, classes) for p in preds]
                ap = np.array([m["headline_auprc"] for m in per_seed])
                auc = np.array([m["headline_auroc"] for m in per_seed])
                counts, inv = subject_counts(subj[keep], n_boot, boot_seed)
                reps = [replicate_metrics(kind, ys, p, counts, inv)[metric] for p in preds]
                with np.errstate(all="ignore"):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        mean_rep = np.nanmean(np.stack(reps), 0)
                ci = interval(mean_rep)
                row = {"dataset": ds, "task": task, "preset": preset, "kind": kind, "model": model, "tokenizer": tok,
                       "slice": sname, "seeds": len(preds), "n_test": int(keep.sum()),
                       "n_test_subjects": int(len(np.unique(subj[keep]))),
                       "prevalence": per_seed[0]["headline_prevalence"],
                       "positives": json.dumps(per_seed[0]["positives"]),
                       "labels_evaluated": per_seed[0].get("labels_evaluated", 1),
                       "auprc_mean": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
                       "auprc_sd": float(np.nanstd(ap, ddof=1)) if np.isfinite(ap).sum() > 1 else 0.0,
                       "auprc_lo": ci["lo"], "auprc_hi": ci["hi"], "skipped_replicates": ci["skipped"],
                       "auroc_mean": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
                       "auroc_sd": float(np.nanstd(auc, ddof=1)) if np.isfinite(auc).sum() > 1 else 0.0}
                if tok != baseline and baseline in arrays:
                    base = arrays[baseline]
                    (yb, _, _, sidb), _ = base[0]
                    if np.array_equal(sidb, sid):
                        d = paired_difference(kind, ys, preds, [a[1][keep] for a, _ in base], subj[keep], metric,
                                              n_boot, boot_seed)
                        row.update({"diff_vs_flat": d["diff"], "diff_lo": d["lo"], "diff_hi": d["hi"],
                                    "diff_p": d["p_value"]})
                out.append(row)
    return out

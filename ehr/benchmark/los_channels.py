"""What a length-of-stay-at-discharge sample gives away, channel by channel (issue 20).

`length_of_stay/pyhealth_10class` is predicted at the discharge of the stay whose length it
labels. Its input follows the paper's definition (the current visit's codes) and nothing
more: the current stay's events carry the admission time and its discharge marker is
dropped (`ehr.tasks.length_of_stay.hide_stay_length`). This check fits two deliberately
narrow models on the task's own inputs and scores them on the held-out split with the
benchmark's patient-level bootstrap (macro one-vs-rest AUROC over the classes present):

- **times only**: features of the current stay's event *times* alone (hours from the stay's
  start of its latest event, mean hours, number of distinct times, whether a discharge marker
  is present); no code, no history. With the rule in place every feature is constant, so the
  model must be at chance (its CI contains 0.5). Run on the raw window (`hide=False`, the
  input before the fix) the same model reads the label off the times.
- **counts only**: numbers of diagnosis, procedure, drug and other events of the current
  stay: the part of the length information the paper's definition itself carries.

    python scripts/ehr_synthetic.py los-channels --patients 10000     # the figure in docs/ehr-data.md
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ehr.benchmark.bootstrap import bootstrap_ci
from ehr.benchmark.metrics import compute_metrics
from ehr.schema import CODE, DISCHARGE_PREFIX, ICU_DISCHARGE_PREFIX, SUBJECT_ID, TIME
from ehr.synthetic.cohort import SyntheticConfig, generate
from ehr.tasks.build import build_task
from ehr.tasks.inputs import window_inputs
from ehr.tasks.registry import get_task
from ehr.tasks.stays import is_diagnosis, is_drug, is_procedure

TIME_FEATURES = ["max_hours", "mean_hours", "distinct_times", "has_discharge_marker"]
COUNT_FEATURES = ["n_dx", "n_px", "n_drug", "n_other"]


def channel_features(labels: pl.DataFrame, inputs: pl.DataFrame) -> pl.DataFrame:
    """Per sample (label order): the time-only and count-only features of its current stay's
    input events (time >= stay_start)."""
    j = inputs.join(labels.select("sample_id", "stay_start"), on="sample_id", how="inner").filter(
        pl.col(TIME).is_not_null() & (pl.col(TIME) >= pl.col("stay_start")))
    hours = (pl.col(TIME) - pl.col("stay_start")).dt.total_seconds() / 3600.0
    marker = pl.col(CODE).str.starts_with(DISCHARGE_PREFIX) | pl.col(CODE).str.starts_with(ICU_DISCHARGE_PREFIX)
    f = j.group_by("sample_id").agg(
        hours.max().alias("max_hours"), hours.mean().alias("mean_hours"),
        pl.col(TIME).n_unique().cast(pl.Float64).alias("distinct_times"),
        marker.any().cast(pl.Float64).alias("has_discharge_marker"),
        is_diagnosis().sum().cast(pl.Float64).alias("n_dx"), is_procedure().sum().cast(pl.Float64).alias("n_px"),
        is_drug().sum().cast(pl.Float64).alias("n_drug"),
        (~(is_diagnosis() | is_procedure() | is_drug())).sum().cast(pl.Float64).alias("n_other"))
    return labels.select("sample_id").join(f, on="sample_id", how="left").fill_null(0.0)


def fit_and_score(X_train, y_train, X_test, y_test, subjects_test, n_classes: int, n_boot: int, seed: int) -> dict:
    """Multinomial logistic regression (standardised features) -> macro AUROC with a patient
    bootstrap CI on the test split. Constant features give constant (prior) predictions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    P = np.zeros((len(y_test), n_classes))
    present = np.unique(y_train)
    if X_train.std(axis=0).max() == 0:     # nothing to learn from: the training prior
        prior = np.bincount(y_train, minlength=n_classes) / len(y_train)
        P[:] = prior
    else:
        m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        m.fit(X_train, y_train)
        P[:, present] = m.predict_proba(X_test)
    point = compute_metrics("multiclass", y_test, P)
    ci = bootstrap_ci("multiclass", y_test, P, subjects_test, n_boot=n_boot, seed=seed)
    key = "auroc_macro" if "auroc_macro" in point else "auroc"
    return {"auroc_macro": float(point[key]), "ci": [ci[key]["lo"], ci[key]["hi"]],
            "labels_evaluated": ci.get("labels_evaluated"), "n_test": int(len(y_test))}


def los_channel_check(events: pl.DataFrame, splits: pl.DataFrame, meta: dict | None = None,
                      preset: str = "pyhealth_10class", n_boot: int = 1000, seed: int = 0,
                      with_raw_window: bool = True) -> dict:
    """Times-only and counts-only models on `length_of_stay/<preset>` (fit on train, scored on
    held_out). `with_raw_window` also scores the times-only model on the window before the
    rule (the input the task gave before issue 20), to show the check can see a leak."""
    task = get_task("length_of_stay", preset)
    b = build_task(task, events, splits=splits, meta=meta)
    labels, inputs = b.labels, b.inputs
    n_classes = len(task.classes)
    y = labels["integer_value"].to_numpy()
    split = labels["split"].to_numpy()
    subj = labels[SUBJECT_ID].to_numpy()
    tr, te = split == "train", split == "held_out"
    out = {"task": f"length_of_stay/{preset}", "samples": int(labels.height), "train": int(tr.sum()),
           "held_out": int(te.sum()), "guards": b.guards}
    feats = {"hidden": channel_features(labels, inputs)}
    if with_raw_window:
        feats["raw"] = channel_features(labels, window_inputs(events, labels))
    for name, cols, which in (("times_only", TIME_FEATURES, "hidden"), ("counts_only", COUNT_FEATURES, "hidden"),
                              ("times_only_raw_window", TIME_FEATURES, "raw")):
        if which not in feats:
            continue
        X = feats[which].select(cols).to_numpy().astype(np.float64)
        out[name] = fit_and_score(X[tr], y[tr], X[te], y[te], subj[te], n_classes, n_boot, seed)
    out["times_only_features_constant"] = bool(feats["hidden"].select(TIME_FEATURES).to_numpy().std(axis=0).max() == 0)
    return out


def synthetic_los_check(n_patients: int = 10_000, seed: int = 0, scenario: str = "hierarchy", n_boot: int = 1000) -> dict:
    """The check on a generated cohort (no vocabulary needed beyond the generator's)."""
    c = generate(SyntheticConfig(n_patients=n_patients, seed=seed, scenario=scenario))
    rep = los_channel_check(c.events, c.splits, c.meta, n_boot=n_boot, seed=seed)
    rep["cohort"] = {"patients": n_patients, "seed": seed, "scenario": scenario, "synthetic": True}
    return rep


__all__ = ["channel_features", "los_channel_check", "synthetic_los_check"]

"""Throughput benchmark: a MIMIC-IV-sized synthetic cohort generated, written as MEDS and
labelled for every task, shard by shard, then the ACES-expressible tasks timed against ACES.

How a MEDS dataset of that size is processed (the same path serves a real MIMIC-IV MEDS export):
each shard (10,000 subjects, ~2 M events) is read alone, every task is labelled on it with
vectorised polars operations over the whole shard (stays from the markers, events matched to
stays by as-of joins, per-stay flags by group-bys, regexes over the distinct codes only), the
leakage guards run on the label table and on each sample's input window as row ranges of the
sorted shard (no per-sample copies), and the shard's labels are appended; memory is bounded
by one shard plus the label tables. Shards are independent, so they can go to several
processes (one per core) with the same result: sample ids are `subject_id * 4096 + k`.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import polars as pl

from ehr import meds_io
from ehr.aces import TASKS, apply_project_rules, compare, run_aces
from ehr.schema import EVENT_SCHEMA
from ehr.synthetic.cohort import SyntheticConfig, write_synthetic_meds
from ehr.synthetic.cohort import generate
from ehr.synthetic.world import SCENARIOS, get_world
from ehr.tasks.build import build_task
from ehr.tasks.inputs import ensure_sorted
from ehr.tasks.registry import all_tasks, get_task

MIMIC_IV_LIKE = dict(mean_extra_stays=1.5, mean_dx=12.0, mean_px=2.0, mean_drugs=22.0, mean_labs=34.0)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def read_sorted_shard(path: str | Path) -> pl.DataFrame:
    """A MEDS shard as an event frame, trusting MEDS's order (each subject contiguous and sorted
    by time) after a linear check; sorts only when the check fails."""
    lf = pl.scan_parquet(path)
    have = lf.collect_schema().names()
    df = lf.select([pl.col(c).cast(t) if c in have else pl.lit(None, dtype=t).alias(c)
                    for c, t in EVENT_SCHEMA.items()]).collect()
    return ensure_sorted(df)


def label_meds_dir(meds_dir: str | Path, out_dir: str | Path, tasks=None, with_inputs: str = "ranges",
                   progress: bool = False) -> dict:
    """Label every task on every shard of a MEDS directory; write one MEDS label file and one
    full label table (sample ids, splits, preset) per task. Returns counts and timings."""
    meds_dir, out = Path(meds_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = tasks or all_tasks()
    splits = meds_io.read_splits(meds_dir)
    meta = meds_io.read_dataset_json(meds_dir)
    shards = meds_io.shard_paths(meds_dir)
    collected: dict[str, list] = {t.key(): [] for t in tasks}
    per_task_s = {t.key(): 0.0 for t in tasks}
    skipped, n_events = {}, 0
    t0 = time.perf_counter()
    it = shards
    if progress:
        from tqdm import tqdm
        it = tqdm(shards, desc="labelling shards")
    for path in it:
        ev = read_sorted_shard(path)
        n_events += ev.height
        sub = splits.filter(pl.col("subject_id").is_in(ev["subject_id"].unique().implode())) if splits is not None else None
        for task in tasks:
            ts = time.perf_counter()
            b = build_task(task, ev, splits=sub, meta=meta, with_inputs=with_inputs)
            per_task_s[task.key()] += time.perf_counter() - ts
            if b.skipped:
                skipped[task.key()] = b.skipped
                continue
            collected[task.key()].append(b.labels)
        del ev
    summary = {}
    for task in tasks:
        key = task.key()
        if not collected[key]:
            continue
        labels = pl.concat(collected[key])
        labels.write_parquet(out / f"{key}.labels.parquet")
        meds_io.write_labels(labels, out / f"{key}.meds.parquet")
        vc = task.value_column
        prev = (float(labels[vc].cast(pl.Float64).mean()) if task.kind == "binary" else None)
        summary[key] = {"samples": labels.height, "prevalence": prev, "seconds": round(per_task_s[key], 2)}
    return {"events": n_events, "shards": len(shards), "seconds": time.perf_counter() - t0,
            "tasks": summary, "skipped": skipped}


def aces_comparison(meds_dir: str | Path) -> dict:
    """For each ACES-expressible task, on every shard: the project (read the shard + label)
    and ACES (its predicates from the shard file + query); times, and row-level agreement."""
    shards = meds_io.shard_paths(meds_dir)
    out = {}
    for key in TASKS:
        name, preset = key.split("/")
        task = get_task(name, preset)
        ours_s = aces_s = 0.0
        ours_all, theirs_all = [], []
        for path in shards:
            t = time.perf_counter()
            ev = read_sorted_shard(path)
            ours_all.append(task.label(ev))
            ours_s += time.perf_counter() - t
            t = time.perf_counter()
            theirs = run_aces(key, path)   # includes loading its YAML config (~0.05 s)
            aces_s += time.perf_counter() - t
            theirs_all.append(apply_project_rules(key, theirs, ev))   # minors rule, not timed
            del ev
        c = compare(pl.concat(ours_all), pl.concat(theirs_all))
        out[key] = {"ours_s": round(ours_s, 2), "aces_s": round(aces_s, 2),
                    "aces_over_ours": round(aces_s / max(ours_s, 1e-9), 2), **c}
    tot_o = sum(v["ours_s"] for v in out.values())
    tot_a = sum(v["aces_s"] for v in out.values())
    out["total"] = {"ours_s": round(tot_o, 2), "aces_s": round(tot_a, 2), "aces_over_ours": round(tot_a / max(tot_o, 1e-9), 2)}
    return out


def run_throughput(out_dir: str | Path, n_patients: int = 100_000, seed: int = 0, scenario: str = "hierarchy",
                   subjects_per_shard: int = 10_000, aces: bool = True, progress: bool = False) -> dict:
    """Generate + write MEDS + label all tasks (timed together), then the ACES comparison."""
    import os
    out = Path(out_dir)
    cfg = SyntheticConfig(n_patients=n_patients, seed=seed, scenario=scenario,
                          subjects_per_shard=subjects_per_shard, **MIMIC_IV_LIKE)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    gen = write_synthetic_meds(cfg, out / "meds", progress=progress)
    t1 = time.perf_counter()
    lab = label_meds_dir(out / "meds", out / "labels", progress=progress)
    t2 = time.perf_counter()
    report = {
        "patients": n_patients, "events": gen["events"], "shards": len(gen["shards"]),
        "generate_write_s": round(t1 - t0, 1), "label_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
        "events_per_s_total": round(gen["events"] / (t2 - t0)),
        "events_per_s_labelling": round(gen["events"] / (t2 - t1)),
        "peak_rss_gib_until_labelled": round(peak_rss_gib(), 2),
        "tasks": lab["tasks"], "skipped": lab["skipped"],
        "loadavg_at_start": [round(x, 2) for x in load0], "loadavg_after_labelling": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    if aces:
        report["aces"] = aces_comparison(out / "meds")
        report["peak_rss_gib_with_aces"] = round(peak_rss_gib(), 2)
    (out / "throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


SIGNAL_TASKS = [("mortality", "in_hospital_early"), ("mortality", "paper"), ("readmission", "pyhealth_15d_discharge"),
                ("length_of_stay", "ehrshot_long_los"), ("new_diagnosis_hypertension", "ehrshot_365d")]


def signal_check(n_patients: int = 8000, seed: int = 0, scenarios=None, tasks=None, effect_scale: float | None = None) -> list[dict]:
    """How much of each planted scenario a model can recover, per binary task: prevalence,
    the oracle AUROC of the true code score of each sample's input diagnoses (sum of beta over
    its distinct ICD-10-CM codes), and the held-out AUROC of a logistic regression on a bag of
    the input's ICD-10-CM categories (3 characters) trained on the train split. Under `null`
    both must sit at 0.5. A sanity check of the generator, not a tokenizer benchmark."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rows = []
    for sc in scenarios or SCENARIOS:
        extra = {} if effect_scale is None else {"effect_scale": effect_scale}
        coh = generate(SyntheticConfig(n_patients=n_patients, seed=seed, scenario=sc, **extra))
        w = get_world(seed, sc)
        beta = pl.DataFrame({"code": w.dx_codes, "beta": w.dx_effect})
        for name, preset in tasks or SIGNAL_TASKS:
            task = get_task(name, preset)
            lab = task.label(coh.events).join(coh.splits, on="subject_id")
            dx = (task.inputs(coh.events, lab).filter(pl.col("code").str.starts_with("ICD10CM:"))
                  .select("sample_id", "code").unique())
            score = dx.join(beta, on="code").group_by("sample_id").agg(pl.col("beta").sum().alias("score"))
            d = lab.select("sample_id", "split", "boolean_value").join(score, on="sample_id", how="left").fill_null(0.0)
            y = d["boolean_value"].to_numpy()
            cat = dx.with_columns(pl.col("code").str.slice(0, 11)).unique()
            vocab = {c: i for i, c in enumerate(cat["code"].unique().sort().to_list())}
            pos = {s: i for i, s in enumerate(d["sample_id"].to_list())}
            X = sp.csr_matrix((np.ones(cat.height), ([pos[s] for s in cat["sample_id"]], [vocab[c] for c in cat["code"]])),
                              shape=(d.height, max(len(vocab), 1)))
            tr = (d["split"] == "train").to_numpy()
            te = ~tr
            lr = float("nan")
            if 0 < y[tr].sum() < tr.sum() and 0 < y[te].sum() < te.sum():
                m = LogisticRegression(C=0.1, max_iter=500).fit(X[tr], y[tr])
                lr = roc_auc_score(y[te], m.predict_proba(X[te])[:, 1])
            oracle = roc_auc_score(y, d["score"].to_numpy()) if 0 < y.sum() < len(y) else float("nan")
            rows.append({"scenario": sc, "task": f"{name}/{preset}", "samples": d.height, "prevalence": round(float(y.mean()), 3),
                         "oracle_auroc": round(float(oracle), 3), "lr_category_auroc": round(float(lr), 3)})
    return rows

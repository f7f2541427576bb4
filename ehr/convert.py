"""The data job: convert a source to MEDS, label the tasks, print and save the tables.

    run_ehr_data(EhrDataConfig(dataset="mimic3", root="../shared/data/ehr/mimic3-demo",
                               out="runs/ehr/mimic3", tasks=["all"]))

writes `out/` as a MEDS directory (data/, metadata/), the labels of every task build under
`out/labels/` (`<task>.<preset>.parquet` in the MEDS label schema; `.samples.parquet` with
sample ids, splits, input windows and multi-label vectors) and `out/report.json`.
Labelling runs shard by shard (a subject is whole in one shard, task sample ids do not depend
on the shard), so memory stays at one shard whatever the dataset size; the leakage guards run
on every shard of every task build.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from ehr import meds_io
from ehr.data_tables import coverage_table, ledger_table, task_table, unmapped_table
from ehr.schema import SUBJECT_ID
from ehr.sources import SOURCE_DATASETS, SourceConfig, convert_source
from ehr.splits import DEFAULT_FRACTIONS, check_disjoint
from ehr.synthetic.cohort import SyntheticConfig, write_synthetic_meds
from ehr.tasks.base import TaskNotSupported
from ehr.tasks.build import build_task, summarize
from ehr.tasks.registry import DEFAULT_SUITE, TASKS, get_task
from ehr.tasks.stays import stay_stats
from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig

DATASETS = SOURCE_DATASETS + ("synthetic",)


@dataclass
class EhrDataConfig(JsonConfig):
    """`tasks`: task names (every preset), `name:preset`, `all` (the default suite) or
    `none` (convert only). `synthetic`: `ehr.synthetic.SyntheticConfig` fields."""

    dataset: str = "mimic3"
    root: str = ""
    out: str = "runs/ehr/out"
    tasks: list = field(default_factory=lambda: ["all"])
    seed: int = 0
    split_fractions: dict = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    subjects_per_shard: int = 20_000
    vocab_dir: str | None = None
    ndc_atc: str | None = None
    eicu_icd: str = "both"
    synthetic: dict = field(default_factory=dict)
    top_n: int = 15
    workers: int = 1                 # label shards in this many processes
    progress: bool = True
    print_tables: bool = True

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"--root is required for dataset {self.dataset!r}")
        if isinstance(self.tasks, str):
            self.tasks = [self.tasks]
        if self.workers < 1:
            raise ValueError("workers must be >= 1")


def resolve_tasks(spec: list[str]):
    """Task objects for a spec."""
    if not spec or spec == ["none"]:
        return []
    pairs: list[tuple[str, str]] = []
    for s in spec:
        if s == "all":
            pairs += DEFAULT_SUITE
        elif ":" in s:
            name, preset = s.split(":", 1)
            pairs.append((name, preset))
        elif s in TASKS:
            pairs += [(s, p) for p in TASKS[s]]
        else:
            raise KeyError(f"unknown task {s!r}; tasks: {sorted(TASKS)} (or name:preset, all, none)")
    seen, out = set(), []
    for p in pairs:
        if p not in seen:
            seen.add(p), out.append(get_task(*p))
    return out


def _label_shard(job) -> list[tuple]:
    """All tasks on one shard: per task (labels, per-sample input counts, guards, skip reason).
    The inputs themselves are reduced to counts here, so they never leave the worker."""
    path, tasks, splits, meta = job
    events = meds_io.read_shard(path)
    out = []
    for task in tasks:
        b = build_task(task, events, splits=splits, meta=meta, with_inputs=True)
        if b.skipped:
            out.append((None, None, None, b.skipped))
            continue
        per = None
        if b.inputs is not None and b.inputs.height:
            per = b.inputs.group_by("sample_id").agg(pl.len().alias("n"), pl.col("code").n_unique().alias("codes"))
        out.append((b.labels, per, b.guards, None))
    return out


def label_meds_dir(meds_dir: str | Path, tasks: list, progress: bool = True, workers: int = 1) -> list[dict]:
    """Label every task on a MEDS directory shard by shard (`workers` processes); write the
    label tables; return one stats dict per task build (`skipped` set when the data cannot
    support it). The leakage guards run on every shard of every build."""
    meds_dir = Path(meds_dir)
    meta = meds_io.read_dataset_json(meds_dir)
    splits = meds_io.read_splits(meds_dir)
    check_disjoint(splits)
    labels: dict[int, list] = {i: [] for i in range(len(tasks))}
    per_sample: dict[int, list] = {i: [] for i in range(len(tasks))}
    skipped: dict[int, str] = {}
    guards: dict[int, dict] = {}
    shards_skipped: dict[int, int] = {}
    paths = meds_io.shard_paths(meds_dir)
    # support is decided on the whole dataset's codes, not on one shard that may lack them
    all_codes = pl.concat([pl.scan_parquet(p).select("code").unique() for p in paths]).unique().collect()
    probe = all_codes.with_columns(pl.lit(0, dtype=pl.Int64).alias(SUBJECT_ID),
                                   pl.lit(None, dtype=pl.Datetime("us")).alias("time"))
    for i, task in enumerate(tasks):
        try:
            task.check_support(probe, meta)
        except TaskNotSupported as e:
            skipped[i] = str(e)
    active = [i for i in range(len(tasks)) if i not in skipped]
    jobs = [(path, [tasks[i] for i in active], splits, meta) for path in paths]
    if workers > 1 and len(paths) > 1:
        # one process per shard (spawned: polars must not be forked); shards are independent
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=min(workers, len(paths)), mp_context=mp.get_context("spawn")) as ex:
            results = ex.map(_label_shard, jobs)
            results = list(tqdm(results, total=len(jobs), desc="label shards", disable=not progress))
    else:
        results = (_label_shard(j) for j in tqdm(jobs, desc="label shards", disable=not progress or len(jobs) < 2))
    for shard_result in results:
        for i, (lab, per, guard, why) in zip(active, shard_result):
            if why:           # this shard lacks what the task needs (the dataset as a whole has it)
                shards_skipped[i] = shards_skipped.get(i, 0) + 1
                continue
            guards[i] = guard
            labels[i].append(lab)
            if per is not None:
                per_sample[i].append(per)
    stats = []
    (meds_dir / "labels").mkdir(exist_ok=True)
    for i, task in enumerate(tasks):
        if i in skipped:
            stats.append({"task": task.name, "preset": task.preset, "skipped": skipped[i]})
            continue
        lab = pl.concat(labels[i]) if labels[i] else task.empty_labels()
        s = summarize(task, lab, None)
        if lab.height:
            per = lab.select("sample_id").join(pl.concat(per_sample[i]) if per_sample[i] else
                                               pl.DataFrame(schema={"sample_id": pl.Int64, "n": pl.UInt32,
                                                                    "codes": pl.UInt32}),
                                               on="sample_id", how="left").fill_null(0)
            s["events_per_sample"] = {"mean": float(per["n"].mean()), "median": float(per["n"].median())}
            s["codes_per_sample"] = {"mean": float(per["codes"].mean()), "median": float(per["codes"].median())}
        s["guards"] = guards.get(i, {})
        if shards_skipped.get(i):
            s["shards_without_support"] = shards_skipped[i]
        s["describe"] = task.describe()
        stem = meds_dir / "labels" / f"{task.name}.{task.preset}"
        meds_io.write_labels(lab, f"{stem}.parquet")
        lab.write_parquet(f"{stem}.samples.parquet")
        s["labels_file"] = f"{stem}.parquet"
        stats.append(s)
    return stats


def run_ehr_data(cfg: EhrDataConfig) -> dict:
    """Convert (or generate), label, print the tables, write `out/report.json`.

    Everything is written into a staging directory beside `out` (`.<name>.staging-*`) that is
    renamed into place only when the whole run succeeds; a failed run leaves `out` as it was
    (an earlier output stays whole) and removes the staging directory."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        report = _run_into(cfg, stage, out)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(old / "prev")
        stage.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return report


def _run_into(cfg: EhrDataConfig, stage: Path, final: Path) -> dict:
    out = stage
    t0 = time.perf_counter()
    report: dict = {"config": cfg.to_dict()}
    if cfg.dataset == "synthetic":
        scfg = SyntheticConfig.from_dict({"seed": cfg.seed, **cfg.synthetic})
        info = write_synthetic_meds(scfg, out, progress=cfg.progress)
        report["convert"] = {"events": info["events"], "subjects": info["subjects"], "seconds": info["seconds"]}
        coverage = unmapped = ledger = None
    else:
        res = convert_source(SourceConfig(
            dataset=cfg.dataset, root=cfg.root, out=str(out), seed=cfg.seed, split_fractions=cfg.split_fractions,
            subjects_per_shard=cfg.subjects_per_shard, vocab_dir=cfg.vocab_dir, ndc_atc=cfg.ndc_atc,
            eicu_icd=cfg.eicu_icd, progress=cfg.progress))
        coverage, unmapped, ledger = res.coverage, res.unmapped, res.ledger.frame()
        report["convert"] = {"events": res.assembled.events, "subjects": res.assembled.subjects,
                             "shards": res.assembled.shards, "codes": res.assembled.codes,
                             "seconds": round(res.seconds, 3)}
        report["coverage"] = coverage.to_dicts()
        report["unmapped_top"] = unmapped.head(cfg.top_n).to_dicts()
        report["unmapped_codes"] = unmapped.height
        report["rows"] = ledger.to_dicts()
    report["splits"] = meds_io.validate_meds_dir(out)["splits"]
    report["stays"] = stay_report(out)
    t1 = time.perf_counter()
    tasks = resolve_tasks(cfg.tasks)
    stats = label_meds_dir(out, tasks, progress=cfg.progress, workers=cfg.workers) if tasks else []
    for st in stats:     # name the files where they will be once the run is renamed into place
        if "labels_file" in st:
            st["labels_file"] = str(final / Path(st["labels_file"]).relative_to(out))
    report["tasks"] = stats
    report["seconds"] = {"convert": round(t1 - t0, 3), "label": round(time.perf_counter() - t1, 3),
                         "total": round(time.perf_counter() - t0, 3)}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    report["config"]["out"] = str(final)
    if cfg.print_tables:
        print(render(report, stats, coverage, unmapped, ledger, cfg.top_n))
    return report


def stay_report(meds_dir: Path) -> dict:
    """Stay pairing over the dataset (summed over shards; a subject is whole in one shard):
    admissions, stays, pairs made by admission id, admissions dropped, orphan discharges,
    overlapping stays, and source rows dated outside the stay their admission id names."""
    total: dict[str, int] = {}
    for path in meds_io.shard_paths(meds_dir):
        for k, v in stay_stats(meds_io.read_shard(path)).items():
            total[k] = total.get(k, 0) + int(v)
    total["rule_rows_outside_their_stay"] = ("kept at their own time; they belong to the stay their admission id "
                                             "names (stay code flags, drug labels, phenotypes, exclusions)")
    return total


def render(report, stats, coverage, unmapped, ledger, top_n: int) -> str:
    c = report["convert"]
    parts = [f"{report['config']['dataset']}: {c['events']:,} events, {c['subjects']:,} subjects -> "
             f"{report['config']['out']}  (convert {report['seconds']['convert']:.1f} s, "
             f"label {report['seconds']['label']:.1f} s)",
             "splits: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items())]
    if report.get("stays"):
        st = report["stays"]
        parts.append(f"stays: {st['stays']:,} of {st['admissions']:,} admissions ({st['paired_by_admission_id']:,} paired "
                     f"by admission id); {st['overlapping_stays']} overlapping; rows dated outside their stay "
                     f"(kept, assigned by id): dx {st['dx_rows_dated_outside_their_stay']}, "
                     f"px {st['px_rows_dated_outside_their_stay']}, drug {st['drug_rows_dated_outside_their_stay']}")
    if stats:
        parts.append(task_table(stats))
    elif isinstance(report.get("tasks"), str):
        parts.append(report["tasks"])
    if coverage is not None:
        parts += [coverage_table(coverage), unmapped_table(unmapped, top_n), ledger_table(ledger)]
    return "\n\n".join(parts)


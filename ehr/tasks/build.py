"""One task build: support check -> labels -> patient split -> inputs -> leakage guards -> stats.

`build_task` is what every caller uses (the data CLI, the benchmark, the throughput run), so
the guards run on every build. A task the data cannot support comes back with `skipped` set
to the reason instead of raising.

Dataset metadata (`dataset.json`, top level or under its `medtok` key) read here:
`relative_times` (true: offsets only, no absolute dates, e.g. eICU) and
`discharge_stamped_pattern` (regex over codes the source stamps at discharge; default the
diagnosis families; "" when the source stamps none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from ehr.schema import SUBJECT_ID
from ehr.splits import assign_splits
from ehr.tasks.base import Task, TaskNotSupported
from ehr.tasks.guards import run_guards
from ehr.tasks.inputs import input_ranges
from ehr.tasks.stays import DISCHARGE_STAMPED_PATTERN


@dataclass
class TaskBuild:
    task: Task
    labels: pl.DataFrame | None = None
    inputs: pl.DataFrame | None = None
    guards: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    skipped: str | None = None


def build_task(task: Task, events: pl.DataFrame, splits: pl.DataFrame | None = None, meta: dict | None = None,
               with_inputs: bool | str = True, split_seed: int = 0) -> TaskBuild:
    """`with_inputs`: True / "full" materialises every sample's input events and guards them;
    "ranges" (large cohorts) guards each sample's input window as row ranges of the sorted
    frame without materialising it (tasks overriding `inputs` are materialised anyway);
    False skips the input guards (labels and splits are still guarded)."""
    meta = meta or {}
    mode = {True: "full", False: "none"}.get(with_inputs, with_inputs)
    if mode not in ("full", "ranges", "none"):
        raise ValueError(f"with_inputs must be True, False, 'full' or 'ranges'; got {with_inputs!r}")
    if mode == "ranges" and type(task).inputs is not Task.inputs:
        mode = "full"
    try:
        task.check_support(events, meta)
    except TaskNotSupported as e:
        return TaskBuild(task=task, skipped=str(e))
    if splits is None:   # made from subject ids alone, before any sample exists
        splits = assign_splits(events[SUBJECT_ID].unique(), seed=split_seed)
    labels = task.label(events)
    labels = labels.join(splits.select(SUBJECT_ID, "split"), on=SUBJECT_ID, how="left")
    inputs = task.inputs(events, labels) if mode == "full" else None
    ranges = input_ranges(events, labels) if mode == "ranges" else None
    flags = {**meta, **(meta.get("medtok") or {})}
    pattern = flags.get("discharge_stamped_pattern", DISCHARGE_STAMPED_PATTERN)
    guards = run_guards(task, events, labels, inputs, splits, discharge_stamped=pattern, ranges=ranges)
    stats = summarize(task, labels, inputs)
    if ranges is not None and labels.height:
        n = (ranges[0]["n_static"] + ranges[0]["n_timed"])
        stats["events_per_sample_window"] = {"mean": float(n.mean()), "median": float(n.median())}
        stats["input_events_window"] = int(n.sum())
    return TaskBuild(task=task, labels=labels, inputs=inputs, guards=guards, stats=stats)


def summarize(task: Task, labels: pl.DataFrame, inputs: pl.DataFrame | None = None) -> dict:
    """Samples per split, prevalence per class/label, events and distinct codes per sample."""
    out: dict = {"task": task.name, "preset": task.preset, "kind": task.kind, "samples": labels.height,
                 "subjects": labels[SUBJECT_ID].n_unique()}
    if "split" in labels.columns:
        out["samples_per_split"] = dict(labels.group_by("split").len().sort("split").iter_rows())
    vc = task.value_column
    if labels.height:
        if task.kind == "binary":
            out["prevalence"] = {task.classes[1]: float(labels[vc].cast(pl.Float64).mean())}
        elif task.kind == "multiclass":
            counts = labels.group_by(vc).len()
            n = dict(counts.iter_rows())
            out["prevalence"] = {c: n.get(i, 0) / labels.height for i, c in enumerate(task.classes)}
        else:
            m = labels.select(pl.col(vc).list.to_struct(fields=task.classes)).unnest(vc).mean()
            out["prevalence"] = {c: float(m[c][0]) for c in task.classes}
    if inputs is not None and labels.height:
        per = inputs.group_by("sample_id").agg(pl.len().alias("n"), pl.col("code").n_unique().alias("codes"))
        per = labels.select("sample_id").join(per, on="sample_id", how="left").fill_null(0)
        out["events_per_sample"] = {"mean": float(per["n"].mean()), "median": float(per["n"].median())}
        out["codes_per_sample"] = {"mean": float(per["codes"].mean()), "median": float(per["codes"].median())}
        out["input_events"] = inputs.height
    return out

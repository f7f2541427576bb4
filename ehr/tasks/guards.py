"""Leakage guards: run on every task build, fail loudly (LeakageError) with counts and examples.

1. `check_inputs`: no input event after its sample's prediction time (nor before its
   input_start), and no input for an unknown sample.
2. `check_discharge_stamped`: for tasks predicted during a stay (`task.in_stay`), no code of a
   family the source stamps at discharge (diagnoses, by default) that belongs to the current
   stay is in the input. With MIMIC-style time stamps (2.) follows from (1.); it catches a
   loader that stamps diagnoses at admission (PyHealth 1.x puts a visit's codes at its
   encounter time), which (1.) cannot see.
3. `check_stay_length_hidden`: for tasks predicted at the end of the stay whose length they
   label (length of stay at discharge), no input event of that stay timed after its
   admission and no discharge marker of it in the input.
4. `check_splits`: splits are patient-level (every subject in exactly one split, split names
   valid) and no subject's samples fall in two splits.
Splits are made before samples exist (`ehr.splits.assign_splits`: a hash of the subject id and
a seed), so a subject's split never depends on its labels.
"""

from __future__ import annotations

import polars as pl

from ehr.schema import (CODE, DISCHARGE_PREFIX, ICU_DISCHARGE_PREFIX, PREDICTION_TIME, SPLITS, SUBJECT_ID,
                        TIME)
from ehr.tasks.stays import DISCHARGE_STAMPED_PATTERN, assign_stay, stays
from ehr.tasks.stays import family_events


class LeakageError(Exception):
    """A task build broke a leakage rule; the message says which, how often, and examples."""


def _fail(rule: str, bad: pl.DataFrame, n: int | None = None) -> None:
    n = bad.height if n is None else n
    raise LeakageError(f"{rule}: {n} violation(s); e.g.\n{bad.head(5)}")


def check_labels(task, labels: pl.DataFrame) -> None:
    """The label table follows the contract (ehr.tasks.base)."""
    need = ["sample_id", SUBJECT_ID, PREDICTION_TIME, "input_start", task.value_column, "task", "preset"]
    missing = [c for c in need if c not in labels.columns]
    if missing:
        raise LeakageError(f"{task.name}/{task.preset}: label table lacks {missing}")
    if labels["sample_id"].n_unique() != labels.height:
        _fail("duplicate sample_id", labels.filter(pl.col("sample_id").is_duplicated()))
    bad = labels.filter(pl.col(PREDICTION_TIME).is_null()
                        | (pl.col("input_start") > pl.col(PREDICTION_TIME)).fill_null(False))
    if bad.height:
        _fail("null prediction_time or input_start after prediction_time", bad)
    if (labels["preset"] != task.preset).any():
        _fail("preset column differs from the task's preset", labels.filter(pl.col("preset") != task.preset))
    v = labels[task.value_column]
    if v.null_count():
        _fail("null label", labels.filter(pl.col(task.value_column).is_null()))
    if task.kind == "multiclass" and labels.height and (v.min() < 0 or v.max() >= len(task.classes)):
        _fail("class index out of range", labels.filter((pl.col(task.value_column) < 0)
                                                        | (pl.col(task.value_column) >= len(task.classes))))
    if task.kind == "multilabel":
        bad = labels.filter(pl.col("labels").list.len() != len(task.classes))
        if bad.height:
            _fail(f"multi-label vector not of length {len(task.classes)}", bad)


def check_inputs(labels: pl.DataFrame, inputs: pl.DataFrame) -> None:
    """No input event after prediction_time or before input_start; no unknown sample."""
    j = inputs.select("sample_id", TIME, CODE).join(
        labels.select("sample_id", PREDICTION_TIME, "input_start"), on="sample_id", how="left")
    unknown = j.filter(pl.col(PREDICTION_TIME).is_null())
    if unknown.height:
        _fail("input rows for samples not in the label table", unknown)
    after = j.filter((pl.col(TIME) > pl.col(PREDICTION_TIME)).fill_null(False))
    if after.height:
        _fail("input event after the prediction time", after)
    before = j.filter((pl.col(TIME) < pl.col("input_start")).fill_null(False))
    if before.height:
        _fail("input event before input_start", before)


def check_input_ranges(labels: pl.DataFrame, ranges: pl.DataFrame, events_sorted: pl.DataFrame) -> None:
    """The range form of `check_inputs` (for large builds that do not materialise inputs): each
    sample's timed rows [lo_row, lo_row + n_timed) of the sorted frame lie within its subject
    and within [input_start, prediction_time]; its static rows are its subject's."""
    import numpy as np
    r = ranges.select("sample_id", "first_row", "n_static", "lo_row", "n_timed").join(
        labels.select("sample_id", SUBJECT_ID, PREDICTION_TIME, "input_start"), on="sample_id", how="left")
    if r[PREDICTION_TIME].null_count():
        _fail("input ranges for samples not in the label table", r.filter(pl.col(PREDICTION_TIME).is_null()))
    t = events_sorted[TIME].cast(pl.Int64).fill_null(-(1 << 62)).to_numpy()
    subj = events_sorted[SUBJECT_ID].to_numpy()
    n_timed, lo = r["n_timed"].to_numpy(), r["lo_row"].to_numpy()
    hi = lo + np.maximum(n_timed, 1) - 1
    m = n_timed > 0
    sid = r[SUBJECT_ID].to_numpy()
    pred = r[PREDICTION_TIME].cast(pl.Int64).to_numpy()
    start = r["input_start"].cast(pl.Int64).fill_null(-(1 << 62)).to_numpy()
    bad = m & ((t[hi] > pred) | (subj[hi] != sid) | (subj[lo] != sid))
    if bad.any():
        _fail("input event after the prediction time (or outside the subject)", r.filter(pl.Series(bad)))
    bad = m & (t[lo] < start)
    if bad.any():
        _fail("input event before input_start", r.filter(pl.Series(bad)))
    st = r["n_static"].to_numpy() > 0
    first = r["first_row"].to_numpy()
    bad = st & (subj[first] != sid)
    if bad.any():
        _fail("static rows of another subject in the input", r.filter(pl.Series(bad)))


def check_discharge_stamped_windows(labels: pl.DataFrame, events: pl.DataFrame, exclude: pl.Expr | None = None) -> None:
    """The window form of `check_discharge_stamped` for the default input window and the
    default (diagnosis) families: no diagnosis of a sample's current stay falls in
    [input_start, prediction_time] unless the task's `exclude` drops it from the input."""
    s = stays(events)
    cur = (labels.select("sample_id", SUBJECT_ID, PREDICTION_TIME, "input_start").sort(PREDICTION_TIME)
           .join_asof(s.select(SUBJECT_ID, "stay", "admit", "discharge").sort("admit"),
                      left_on=PREDICTION_TIME, right_on="admit", by=SUBJECT_ID, strategy="backward",
                      check_sortedness=False)
           .filter(pl.col(PREDICTION_TIME) < pl.col("discharge")))
    if not cur.height:
        return
    dx = family_events(events).filter(pl.col("fam") == "dx").select(SUBJECT_ID, TIME, CODE, "admission_id")
    owned = (assign_stay(dx, s, by="discharge").filter(pl.col("stay").is_not_null())
             .select(SUBJECT_ID, "stay", TIME, CODE, "admission_id"))
    cols = ["sample_id", SUBJECT_ID, "stay", PREDICTION_TIME, "input_start"]
    bad = (cur.select(cols).join(owned, on=[SUBJECT_ID, "stay"], how="inner")
           .filter((pl.col(TIME) <= pl.col(PREDICTION_TIME))
                   & (pl.col("input_start").is_null() | (pl.col(TIME) >= pl.col("input_start")))))
    if exclude is not None and bad.height:
        carry = [c for c in ("stay_start", "stay_admission_id") if c in labels.columns]
        if carry:
            bad = bad.join(labels.select("sample_id", *carry), on="sample_id", how="left")
        bad = bad.filter(~exclude.fill_null(False))
    if bad.height:
        _fail("discharge-stamped code of the current stay in the input window of an in-stay task", bad)


def check_discharge_stamped(labels: pl.DataFrame, inputs: pl.DataFrame, events: pl.DataFrame,
                            pattern: str | None = DISCHARGE_STAMPED_PATTERN) -> None:
    """For in-stay samples: no discharge-stamped code of the current stay in the input."""
    if not pattern:
        return
    s = stays(events)
    cur = (labels.select("sample_id", SUBJECT_ID, PREDICTION_TIME).sort(PREDICTION_TIME)
           .join_asof(s.select(SUBJECT_ID, "stay", "admit", "discharge").sort("admit"),
                      left_on=PREDICTION_TIME, right_on="admit", by=SUBJECT_ID, strategy="backward",
                      check_sortedness=False)
           .filter(pl.col(PREDICTION_TIME) < pl.col("discharge"))
           .select("sample_id", pl.col("stay").alias("current_stay")))
    stamped = inputs.filter(pl.col(TIME).is_not_null() & pl.col(CODE).str.contains(pattern))
    if not stamped.height or not cur.height:
        return
    owned = assign_stay(stamped.select("sample_id", SUBJECT_ID, TIME, CODE), s, by="discharge")
    bad = owned.join(cur, on="sample_id", how="inner").filter(pl.col("stay") == pl.col("current_stay"))
    if bad.height:
        _fail(f"discharge-stamped code of the current stay in the input of an in-stay task (codes ~ {pattern!r})",
              bad.select("sample_id", SUBJECT_ID, TIME, CODE))


def check_stay_length_hidden(labels: pl.DataFrame, inputs: pl.DataFrame) -> None:
    """For tasks predicted at the end of the stay whose length they label (`task.hides_stay_length`):
    no input event of the current stay keeps a time after the stay's start (every one carries
    the admission time), and no discharge marker of the stay that ends at the prediction time
    is in the input. Otherwise event times, or the discharge marker's time, give the label away."""
    j = inputs.select("sample_id", TIME, CODE).join(
        labels.select("sample_id", PREDICTION_TIME, "stay_start"), on="sample_id", how="left")
    if labels.height and labels["stay_start"].null_count() == labels.height:
        _fail("stay_start missing on a task that hides the stay's length", labels.head(5))
    late = j.filter((pl.col(TIME) > pl.col("stay_start")).fill_null(False))
    if late.height:
        _fail("input event of the current stay timed after its admission (the stay's length is readable "
              "from event times)", late)
    marker = j.filter((pl.col(CODE).str.contains(f"^({DISCHARGE_PREFIX}|{ICU_DISCHARGE_PREFIX})")
                       & (pl.col(TIME) >= pl.col("stay_start"))).fill_null(False))
    if marker.height:
        _fail("discharge marker of the current stay in the input", marker)


def check_splits(splits: pl.DataFrame, labels: pl.DataFrame | None = None,
                 names: tuple[str, ...] = SPLITS) -> None:
    """Every subject in exactly one split with a valid name; samples follow their subject."""
    dup = splits.filter(pl.col(SUBJECT_ID).is_duplicated())
    if dup.height:
        _fail("subject in more than one split", dup.sort(SUBJECT_ID))
    bad = splits.filter(~pl.col("split").is_in(list(names)))
    if bad.height:
        _fail(f"split name not in {names}", bad)
    if labels is None:
        return
    j = labels.select("sample_id", SUBJECT_ID, *(["split"] if "split" in labels.columns else [])).join(
        splits.rename({"split": "subject_split"}), on=SUBJECT_ID, how="left")
    missing = j.filter(pl.col("subject_split").is_null())
    if missing.height:
        _fail("labelled subject with no split", missing)
    if "split" in j.columns:
        moved = j.filter(pl.col("split") != pl.col("subject_split"))
        if moved.height:
            _fail("sample in a different split from its subject", moved)
        multi = j.group_by(SUBJECT_ID).agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1)
        if multi.height:
            _fail("subject with samples in two splits", multi)


def run_guards(task, events: pl.DataFrame, labels: pl.DataFrame, inputs: pl.DataFrame | None = None,
               splits: pl.DataFrame | None = None,
               discharge_stamped: str | None = DISCHARGE_STAMPED_PATTERN,
               ranges: tuple | None = None) -> dict[str, str]:
    """All guards for one task build; returns what was checked (raises on any violation).
    `inputs` (materialised) or `ranges` (`ehr.tasks.inputs.input_ranges` output, for tasks
    using the default window) is what the input guards inspect."""
    done = {}
    check_labels(task, labels)
    done["labels"] = "ok"
    if inputs is None and ranges is not None:
        check_input_ranges(labels, ranges[0], ranges[1]["events"])
        done["inputs_before_prediction_time"] = "ok (window ranges)"
        if task.in_stay:
            if discharge_stamped == DISCHARGE_STAMPED_PATTERN:
                check_discharge_stamped_windows(labels, events, task.input_exclusion())
                done["no_discharge_stamped_codes_in_stay"] = "ok (window ranges)"
            elif discharge_stamped:
                check_discharge_stamped(labels, task.inputs(events, labels), events, discharge_stamped)
                done["no_discharge_stamped_codes_in_stay"] = "ok"
            else:
                done["no_discharge_stamped_codes_in_stay"] = "skipped (source stamps none)"
    if inputs is not None:
        check_inputs(labels, inputs)
        done["inputs_before_prediction_time"] = "ok"
        if getattr(task, "hides_stay_length", False):
            check_stay_length_hidden(labels, inputs)
            done["stay_length_hidden"] = "ok"
        if task.in_stay:
            check_discharge_stamped(labels, inputs, events, discharge_stamped)
            done["no_discharge_stamped_codes_in_stay"] = "ok" if discharge_stamped else "skipped (source stamps none)"
    if splits is not None:
        check_splits(splits, labels)
        done["patient_level_splits"] = "ok"
    return done

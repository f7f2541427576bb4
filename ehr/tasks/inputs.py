"""Input windows as row ranges over the sorted event frame (vectorised, O(output)).

A sample sees its subject's static rows plus the timed rows with input_start <= time <=
prediction_time. Because a subject's events are contiguous and sorted by time, that is one
range of rows per sample, found with two as-of joins against the first/last row of each
(subject, time) group; the rows are then gathered with one numpy index array, never one
Python iteration per sample or subject.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ehr.schema import ADMISSION_ID, CODE, PREDICTION_TIME, SUBJECT_ID, TIME
from ehr.tasks.stays import memo

INPUT_COLUMNS = ["sample_id", SUBJECT_ID, TIME, CODE]


def ensure_sorted(events: pl.DataFrame) -> pl.DataFrame:
    """Events sorted by subject, then time with static (null) rows first; sorts only if needed."""
    s, t = events[SUBJECT_ID], events[TIME]
    if events.height < 2:
        return events
    same = s[1:] == s[:-1]
    ok = bool((s[1:] >= s[:-1]).all())
    if ok:
        t0, t1 = t[:-1], t[1:]
        # within a subject: not (t1 < t0) and no null after a non-null
        bad = same & ((t1 < t0).fill_null(False) | (t1.is_null() & t0.is_not_null()))
        ok = not bool(bad.any())
    if ok:
        return events
    return events.sort([SUBJECT_ID, TIME], nulls_last=False, maintain_order=True)


def _row_groups(ev: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per subject: first row, number of static rows), (per (subject, time): first, last row)."""
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    base = ev.select(SUBJECT_ID, TIME).with_columns(idx.alias("row"))
    subj = base.group_by(SUBJECT_ID).agg(pl.col("row").min().alias("first_row"),
                                         pl.col(TIME).is_null().sum().alias("n_static"))
    timed = base.filter(pl.col(TIME).is_not_null())
    new = (pl.col(SUBJECT_ID) != pl.col(SUBJECT_ID).shift()) | (pl.col(TIME) != pl.col(TIME).shift())
    starts = timed.filter(new.fill_null(True))
    groups = starts.with_columns(pl.col("row").shift(-1).alias("next_start"))
    # last row of a group: one before the next group's first row (or the last timed row)
    last_timed = timed.group_by(SUBJECT_ID).agg(pl.col("row").max().alias("last_row"))
    groups = groups.join(last_timed, on=SUBJECT_ID, how="left").with_columns(
        pl.when(pl.col("next_start").is_not_null() & (pl.col("next_start") <= pl.col("last_row")))
        .then(pl.col("next_start") - 1).otherwise(pl.col("last_row")).alias("hi_row"),
        pl.col("row").alias("lo_row"))
    return subj, groups.select(SUBJECT_ID, TIME, "lo_row", "hi_row").sort(TIME)


def _indexed(events: pl.DataFrame):
    """(sorted frame, per-subject rows, per-(subject, time) rows), computed once per event
    frame and shared by every task labelled on it."""
    m = memo(events)
    if "row_index" not in m:
        ev = ensure_sorted(events)
        m["row_index"] = (ev, *_row_groups(ev))
    return m["row_index"]


def input_ranges(events: pl.DataFrame, labels: pl.DataFrame, carry: tuple[str, ...] = ()) -> tuple[pl.DataFrame, dict]:
    """Per sample (in sample_id order): `first_row` / `n_static` (its subject's static rows)
    and `lo_row` / `n_timed` (the timed rows with input_start <= time <= prediction_time),
    as row numbers of the sorted event frame; returns (ranges, arrays) where `arrays` holds
    the sorted frame and numpy copies of the four columns."""
    ev, subj, groups = _indexed(events)
    lab = labels.select("sample_id", SUBJECT_ID, PREDICTION_TIME, "input_start", *carry)
    lab = lab.join(subj, on=SUBJECT_ID, how="left")
    hi = (lab.select("sample_id", SUBJECT_ID, PREDICTION_TIME).sort(PREDICTION_TIME)
          .join_asof(groups.select(SUBJECT_ID, TIME, "hi_row"), left_on=PREDICTION_TIME, right_on=TIME,
                     by=SUBJECT_ID, strategy="backward", check_sortedness=False)
          .select("sample_id", "hi_row"))
    lo = (lab.filter(pl.col("input_start").is_not_null()).select("sample_id", SUBJECT_ID, "input_start")
          .sort("input_start")
          .join_asof(groups.select(SUBJECT_ID, TIME, "lo_row"), left_on="input_start", right_on=TIME,
                     by=SUBJECT_ID, strategy="forward", check_sortedness=False)
          .select("sample_id", "lo_row"))
    lab = (lab.join(hi, on="sample_id", how="left").join(lo, on="sample_id", how="left")
           .sort("sample_id"))
    known = lab["first_row"].is_not_null().to_numpy()
    first = lab["first_row"].fill_null(0).to_numpy().astype(np.int64)
    n_static = np.where(known, lab["n_static"].fill_null(0).to_numpy().astype(np.int64), 0)
    has_start = lab["input_start"].is_not_null().to_numpy()
    lo_raw = lab["lo_row"].to_numpy().astype(np.float64)     # NaN: no event at/after input_start
    lo_row = np.where(has_start, lo_raw, first + n_static)
    hi_row = np.nan_to_num(lab["hi_row"].to_numpy().astype(np.float64), nan=-1.0)
    valid = known & np.isfinite(lo_row)
    lo_row = np.where(valid, lo_row, 0).astype(np.int64)
    n_timed = np.where(valid, np.maximum(hi_row - lo_row + 1, 0), 0).astype(np.int64)
    ranges = lab.with_columns(pl.Series("first_row", first), pl.Series("n_static", n_static),
                              pl.Series("lo_row", lo_row), pl.Series("n_timed", n_timed)).drop("hi_row")
    return ranges, {"events": ev}


def gather_ranges(ranges: pl.DataFrame, ev: pl.DataFrame, carry: tuple[str, ...] = ()) -> pl.DataFrame:
    """The rows of each sample's two ranges (static, then timed), with sample_id (+ carry)."""
    first, n_static = ranges["first_row"].to_numpy(), ranges["n_static"].to_numpy()
    lo_row, n_timed = ranges["lo_row"].to_numpy(), ranges["n_timed"].to_numpy()
    starts = np.stack([first, lo_row], axis=1).ravel()
    lens = np.stack([n_static, n_timed], axis=1).ravel()
    owner = np.repeat(np.arange(ranges.height), 2)
    offs = np.cumsum(lens) - lens
    rows = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(offs - starts, lens)
    sample_pos = np.repeat(owner, lens)
    out = ev.select(SUBJECT_ID, TIME, CODE, *([ADMISSION_ID] if ADMISSION_ID in ev.columns else []))[rows]
    out = out.with_columns(pl.Series("sample_id", ranges["sample_id"].to_numpy()[sample_pos]))
    for c in carry:
        out = out.with_columns(ranges[c].gather(pl.Series(sample_pos)).alias(c))
    return out


def window_inputs(events: pl.DataFrame, labels: pl.DataFrame, exclude: pl.Expr | None = None,
                  carry: tuple[str, ...] = ()) -> pl.DataFrame:
    """Events each sample may see: static rows + input_start <= time <= prediction_time,
    minus rows where `exclude` (evaluated on the gathered rows, their `admission_id` when the
    events have one, plus the `carry` label columns) is true. Returns sample_id, subject_id, time, code sorted by sample then time."""
    ranges, arrays = input_ranges(events, labels, carry)
    out = gather_ranges(ranges, arrays["events"], carry)
    if exclude is not None:
        if ADMISSION_ID not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Int64).alias(ADMISSION_ID))
        out = out.filter(~exclude.fill_null(False))
    return out.select(INPUT_COLUMNS)

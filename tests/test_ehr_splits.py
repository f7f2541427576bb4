"""Patient-level splits: disjoint, deterministic, independent of order and of other subjects."""

from __future__ import annotations

import polars as pl
import pytest

from ehr.splits import SplitLeakError, assign_splits, check_disjoint, complete_splits, split_counts
from medbase.hashing import split_of


def test_disjoint_deterministic_and_order_free():
    ids = list(range(1, 5001))
    a = assign_splits(ids, seed=3)
    b = assign_splits(list(reversed(ids)) + ids[:100], seed=3)     # other order, duplicates
    assert a.equals(b)
    assert a["subject_id"].n_unique() == a.height == 5000
    check_disjoint(a)
    counts = split_counts(a)
    assert set(counts) == {"train", "tuning", "held_out"}
    assert abs(counts["train"] / 5000 - 0.8) < 0.03 and abs(counts["held_out"] / 5000 - 0.1) < 0.02
    # the documented rule, for one subject
    assert a.filter(pl.col("subject_id") == 42)["split"].item() == split_of(
        "42", {"train": 0.8, "tuning": 0.1, "held_out": 0.1}, salt="ehr-splits-3")


def test_seed_changes_assignment_and_growth_keeps_it():
    a = assign_splits(range(1, 2001), seed=0)
    other_seed = assign_splits(range(1, 2001), seed=1)
    assert (a["split"] != other_seed["split"]).sum() > 200
    grown = assign_splits(range(1, 4001), seed=0)
    assert grown.filter(pl.col("subject_id") <= 2000).equals(a)      # more subjects: nobody moves


def test_source_splits_kept_rest_hashed():
    given = pl.DataFrame({"subject_id": [1, 2, 3], "split": ["held_out", "held_out", "train"]})
    out, n = complete_splits(given, [1, 2, 3, 4, 5], seed=0)
    assert n == 2
    assert dict(out.iter_rows())[1] == "held_out" and dict(out.iter_rows())[2] == "held_out"
    assert out.filter(pl.col("subject_id") >= 4).equals(assign_splits([4, 5], seed=0))


def test_leak_detected():
    bad = pl.DataFrame({"subject_id": [1, 1, 2], "split": ["train", "held_out", "train"]})
    with pytest.raises(SplitLeakError, match="1 subjects in more than one split"):
        check_disjoint(bad)
    with pytest.raises(SplitLeakError):
        complete_splits(bad, [1, 2])

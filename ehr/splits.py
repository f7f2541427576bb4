"""Patient-level splits, made once per dataset before any sample exists.

Rule: a subject's split is `medbase.hashing.split_of(str(subject_id), fractions,
salt=f"ehr-splits-{seed}")` (blake2b of salt and id): it depends only on the subject id and
the seed, never on the record order, the task, the labels or which other subjects exist, so
a subject keeps its split when the cohort grows and no task can move it. A MEDS directory
that brings its own `subject_splits.parquet` (EHRSHOT's official split, MIMIC-IV MEDS) keeps
it; only subjects it does not list are hashed, and they are counted.
"""

from __future__ import annotations

import polars as pl

from ehr.schema import SPLITS, SUBJECT_ID
from medbase.hashing import split_of

DEFAULT_FRACTIONS = {"train": 0.8, "tuning": 0.1, "held_out": 0.1}


class SplitLeakError(Exception):
    """A subject sits in two splits (a patient-level leak)."""


def split_salt(seed: int) -> str:
    return f"ehr-splits-{seed}"


def assign_splits(subject_ids, seed: int = 0, fractions: dict[str, float] | None = None) -> pl.DataFrame:
    """`subject_id`, `split` for the distinct ids (sorted). One hash per subject: ~1 s per
    million subjects; the events never enter."""
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    ids = pl.Series(SUBJECT_ID, subject_ids, dtype=pl.Int64).unique().sort()
    salt = split_salt(seed)
    return pl.DataFrame({SUBJECT_ID: ids,
                         "split": [split_of(str(i), fractions, salt=salt) for i in ids.to_list()]},
                        schema={SUBJECT_ID: pl.Int64, "split": pl.String})


def complete_splits(given: pl.DataFrame | None, subject_ids, seed: int = 0,
                    fractions: dict[str, float] | None = None) -> tuple[pl.DataFrame, int]:
    """A source's own splits for the subjects it lists, hashed splits for the others.
    Returns (splits, number of subjects that had to be hashed)."""
    ids = pl.Series(SUBJECT_ID, subject_ids, dtype=pl.Int64).unique()
    if given is None or given.height == 0:
        return assign_splits(ids, seed, fractions), len(ids)
    check_disjoint(given)
    known = given.filter(pl.col(SUBJECT_ID).is_in(ids.implode()))
    rest = ids.filter(~ids.is_in(known[SUBJECT_ID].implode()))
    hashed = assign_splits(rest, seed, fractions)
    return pl.concat([known.select(SUBJECT_ID, "split"), hashed]).sort(SUBJECT_ID), len(rest)


def check_disjoint(splits: pl.DataFrame) -> None:
    """Raise SplitLeakError when a subject is listed in more than one split."""
    multi = (splits.group_by(SUBJECT_ID).agg(pl.col("split").n_unique().alias("n"))
             .filter(pl.col("n") > 1))
    if multi.height:
        raise SplitLeakError(f"{multi.height} subjects in more than one split, e.g. "
                             f"{multi[SUBJECT_ID].head(5).to_list()}")


def split_counts(splits: pl.DataFrame) -> dict[str, int]:
    counts = dict(splits.group_by("split").len().iter_rows())
    return {s: counts.get(s, 0) for s in list(SPLITS) + sorted(set(counts) - set(SPLITS))}

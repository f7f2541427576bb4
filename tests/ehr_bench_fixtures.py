"""A small fixture cohort in the task contract's form, for tests and smoke runs (no data,
no vocabulary cache, no MedTok checkpoint needed).

- vocabulary: `medtok.toy.toy_vocabulary()` (ICD-10-CM-like chapters -> categories -> leaves);
- patients: 1-3 stays each (`tests.handmade_patients`), 3 diagnoses per stay drawn from the
  toy leaves; the label of the one sample per patient (predicted at the discharge of the last
  stay, input = all history) is 1 when any input diagnosis falls in the "risk" chapter (toy
  chapter 0, 24 of 192 leaves; prevalence about 50%), flipped with probability `noise`;
- `FixtureTask` follows `ehr.tasks.base.Task` (binary; default input window);
- `fixture_vectors(vocab)`: random but fixed "text" and "MedTok" vectors over the toy codes
  (one code left out, to exercise the out-of-system path) and the toy hierarchy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from ehr.benchmark.code_vectors import CodeVectors
from ehr.benchmark.hierarchy import Hierarchy
from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.base import Task


@dataclass
class FixtureTask(Task):
    name: str = "fixture_risk"
    preset: str = "test"
    kind: str = "binary"
    classes: list = field(default_factory=lambda: ["no", "risk"])
    truth: dict = field(default_factory=dict, repr=False, compare=False)   # subject_id -> label

    def label(self, events: pl.DataFrame) -> pl.DataFrame:
        dis = (events.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//"))
               .group_by(SUBJECT_ID).agg(pl.col("time").max().alias(PREDICTION_TIME)))
        ids = dis[SUBJECT_ID].to_list()
        df = dis.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("input_start"),
                              pl.Series("boolean_value", [bool(self.truth.get(i, 0)) for i in ids]))
        return self.finish(df)

    def describe(self) -> dict:
        return {"prediction_time": "discharge of the last stay", "input_window": "all history",
                "exclusions": "none", "label": "a diagnosis in a risk category (fixture)"}

    def params(self) -> dict:
        return {"name": self.name, "preset": self.preset}


def risk_codes(vocab) -> set[str]:
    """Leaves of the toy chapter ICD10CM:CH00 (its six categories A00-A05)."""
    c = vocab.codes
    cats = set(c.loc[c["parents"].map(lambda p: "ICD10CM:CH00" in p), "code_id"])
    return set(c.loc[c["parents"].map(lambda p: any(x in cats for x in p)), "code_id"])


def fixture_cohort(n_patients: int = 240, seed: int = 0, noise: float = 0.0, vocab=None):
    """(events, splits, task, vocab) of a fixture cohort."""
    from ehr.splits import assign_splits
    from tests.handmade_patients import events_frame, patient_events, stay
    from medtok.toy import toy_vocabulary

    if vocab is None:
        vocab, _ = toy_vocabulary()
    rng = np.random.default_rng(seed)
    leaves = vocab.codes.loc[(vocab.codes["system"] == "ICD10CM") & (vocab.codes["kind"] == "code"), "code_id"].to_numpy()
    risky = risk_codes(vocab)
    rows, truth = [], {}
    for s in range(1, n_patients + 1):
        t = datetime(2150, 1, 1) + timedelta(days=int(rng.integers(0, 2000)))
        stays, has = [], False
        for _ in range(int(rng.integers(1, 4))):
            dx = list(rng.choice(leaves, 3, replace=False))
            has |= any(d in risky for d in dx)
            stays.append(stay(t, t + timedelta(days=int(rng.integers(1, 8))), dx=dx, px=[], drugs=["aspirin"]))
            t = t + timedelta(days=int(rng.integers(20, 300)))
        y = int(has) ^ int(rng.random() < noise)
        truth[s] = y
        rows += patient_events(s, stays, birth="2100-01-01", sex="F" if s % 2 else "M")
    events = events_frame(rows)
    splits = assign_splits(events[SUBJECT_ID].unique(), seed=seed)
    return events, splits, FixtureTask(truth=truth), vocab


def fixture_vectors(vocab, dim_text: int = 16, dim_medtok: int = 8, k: int = 2, codebook: int = 32,
                    seed: int = 0, leave_out: str | None = "ICD10CM:H05.3") -> dict:
    """{'hierarchy', 'text', 'both-n12000', ...}: fixed random vectors for every toy code."""
    rng = np.random.default_rng(seed)
    ids = vocab.codes["code_id"].to_numpy().astype(object)
    text = CodeVectors(ids, rng.normal(size=(len(ids), 1, dim_text)).astype(np.float32), source="fixture:text")
    keep = ids != leave_out
    out = {"hierarchy": Hierarchy(vocab), "text": text}
    for variant in ("both-n12000", "text-n12000", "graph-n12000", "both-n3000"):
        out[variant] = CodeVectors(ids[keep], rng.normal(size=(int(keep.sum()), 4, dim_medtok)).astype(np.float32),
                                   rng.integers(0, codebook, size=(int(keep.sum()), 4, k)),
                                   rng.random(size=(int(keep.sum()), 4, k)).astype(np.float32) + 0.1, f"fixture:{variant}")
    return out

"""Everything a grid needs, built once per dataset: the task samples as sequences / bags, the
code space and the frozen resources (hierarchy levels, text and MedTok vectors) aligned to it.

Tasks are given as "name" (default preset) or "name:preset". A task is skipped, with the
reason recorded, when the data cannot support it (`TaskNotSupported`), when a split it needs
is empty, or when the training or test labels have a single class (nothing to learn / an
undefined AUPRC).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ehr.benchmark.code_vectors import medtok_vectors, systems_in, text_vectors
from ehr.benchmark.data import Cohort
from ehr.benchmark.features import SequenceData, birth_times, build_sequences, train_seen
from ehr.benchmark.hierarchy import default_hierarchy
from ehr.benchmark.tokenizers import CodeSpace, Resources, parse_spec
from ehr.schema import BIRTH
from ehr.tasks.build import build_task
from ehr.tasks.registry import DEFAULT_SUITE, get_task

log = logging.getLogger(__name__)


@dataclass
class TaskBundle:
    name: str
    preset: str
    key: str
    kind: str
    classes: list
    describe: dict
    data: SequenceData | None = None
    seen: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    skipped: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.preset}"


@dataclass
class Prepared:
    cohort: Cohort
    space: CodeSpace
    resources: Resources
    bundles: list[TaskBundle]
    info: dict


def parse_task(spec: str):

    name, _, preset = spec.partition(":")
    return get_task(name, preset or None)


def default_task_specs() -> list[str]:

    return [f"{n}:{p}" for n, p in DEFAULT_SUITE]


def _why_skip(data: SequenceData) -> str | None:
    tr, te = data.rows("train"), data.rows("held_out")
    if len(tr) == 0:
        return "no training samples"
    if len(te) == 0:
        return "no test (held_out) samples"
    y = data.y
    if data.kind == "binary":
        if y[tr].min() == y[tr].max():
            return "a single class in the training samples"
        if y[te].min() == y[te].max():
            return "a single class in the test samples (AUPRC undefined)"
        return None
    Y = np.eye(len(data.classes), dtype=np.int64)[y] if data.kind == "multiclass" else y
    ok = [(0 < Y[te, j].sum() < len(te)) and Y[tr, j].sum() > 0 for j in range(Y.shape[1])]
    return None if any(ok) else "no class/label with both classes in test and positives in training"


def build_resources(space: CodeSpace, tokenizers: list[str], medtok_steps: int = 600, progress: bool = False,
                    build_medtok: bool = True, vectors: dict | None = None) -> tuple[Resources, dict]:
    """Resources for the requested tokenizers. `vectors` may supply ready CodeVectors per
    "text" / MedTok variant (tests); otherwise they come from the caches (built on first use)."""

    fams = [parse_spec(t) for t in tokenizers]
    res, info = Resources(), {}
    codes = space.codes
    need_vocab = any(f["family"] != "flat" for f in fams)
    if need_vocab:
        hier = default_hierarchy() if not (vectors and "hierarchy" in vectors) else vectors["hierarchy"]
        res.in_vocab = np.array([c in hier._parent for c in codes], dtype=bool)
        res.in_vocab[0] = False
        res.levels = hier.levels(codes)
        res.levels[0] = (None, None, None)
        info["vocabulary_codes"] = int(res.in_vocab.sum())
    if any(f["family"] == "text" for f in fams):
        if vectors and "text" in vectors:
            cv, found = vectors["text"].take(codes)
        else:
            cv, found = text_vectors(codes, progress=progress)
        found[0] = False
        res.text, res.text_found = cv.vectors, found
        info["text_vectors"] = int(found.sum())
    systems = systems_in(codes)
    for variant in sorted({f["variant"] for f in fams if f["family"] in ("medtok", "medtok-ids")}):
        if vectors and variant in vectors:
            full = vectors[variant]
        else:
            if not systems:
                raise ValueError("MedTok tokenizers need ICD-9/10 diagnosis or procedure codes in the data")
            full = medtok_vectors(systems, variant, medtok_steps, progress=progress, build=build_medtok)
        cv, found = full.take(codes)
        found[0] = False
        res.medtok[variant] = (cv.vectors, cv.ids, cv.weights, found)
        info[f"medtok:{variant}"] = {"systems": systems, "codes_with_vectors": int(found.sum()), "source": full.source}
    return res, info


def prepare(cohort: Cohort, task_specs: list, tokenizers: list[str], max_len: int = 256,
            medtok_steps: int = 600, progress: bool = False, vectors: dict | None = None,
            build_medtok: bool = True, space: CodeSpace | None = None, keep_codes: str | None = None) -> Prepared:
    """`task_specs`: "name[:preset]" strings or Task objects. `space`: a code space to share
    with another cohort (cross-dataset transfer); default: this cohort's codes. `keep_codes`: a
    regex; only input events whose code matches it become tokens / bag counts (MEDS_BIRTH is
    always kept for the age), e.g. diagnoses and procedures only on the synthetic cohort, whose
    lab and drug events are many and carry no code-level signal."""

    t0 = time.perf_counter()
    births = birth_times(cohort.events)
    space = space or CodeSpace(cohort.events["code"].unique().to_list())
    bundles = []
    for spec in task_specs:
        task = parse_task(spec) if isinstance(spec, str) else spec
        b = TaskBundle(task.name, task.preset, task.key(), task.kind, list(task.classes), task.describe())
        built = build_task(task, cohort.events, cohort.splits, cohort.meta)
        if built.skipped:
            b.skipped = built.skipped
        else:
            b.stats = built.stats
            labels = built.labels.with_columns(pl.col("split").fill_null(""))
            inputs = built.inputs
            if keep_codes:

                inputs = inputs.filter(pl.col("code").str.contains(keep_codes) | (pl.col("code") == BIRTH))
            b.data = build_sequences(labels, inputs, births, space, task.kind, task.classes, max_len)
            b.seen = train_seen(b.data, len(space))
            b.skipped = _why_skip(b.data)
            b.stats["tokens_truncated_samples"] = int((b.data.truncated > 0).sum())
        bundles.append(b)
    res, info = build_resources(space, tokenizers, medtok_steps, progress, build_medtok, vectors)
    info.update(codes=len(space) - 1, prepare_seconds=time.perf_counter() - t0, keep_codes=keep_codes,
                max_len=max_len)
    return Prepared(cohort, space, res, bundles, info)

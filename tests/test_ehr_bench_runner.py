"""EHR benchmark grid on a fixture cohort: the test set is scored whole and never resampled,
finished cells are never recomputed, and a tiny end-to-end run beats a shuffled-label control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from ehr.benchmark.cells import BenchConfig
from ehr.benchmark.data import cohort_from_frames
from ehr.benchmark.prepare import prepare
from ehr.benchmark.runner import GridConfig, run_grid
from ehr.benchmark.train import LengthBuckets, HeldOutIntegrityError, TrainConfig, eval_chunks, predict
from tests.ehr_bench_fixtures import FixtureTask, fixture_cohort, fixture_vectors

FAST = BenchConfig(train=TrainConfig(max_epochs=12, patience=3).to_dict(), n_boot=200).to_dict()


@pytest.fixture(scope="module")
def cohort():
    events, splits, task, vocab = fixture_cohort(n_patients=240, seed=0)
    return cohort_from_frames("fixture", events, splits), task, fixture_vectors(vocab)


@pytest.fixture(scope="module")
def prepared(cohort):
    c, task, vectors = cohort
    return prepare(c, [task], ["flat", "hier-111", "medtok"], vectors=vectors)


def test_eval_chunks_cover_every_sample_once():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 64, 257):
        lengths = np.sort(rng.integers(1, 300, n))
        for bs in (1, 5, 64, 256):
            for chunks in (eval_chunks(n, bs), eval_chunks(n, bs, lengths, max_tokens=512)):
                idx = np.concatenate(chunks) if n else np.zeros(0, int)
                assert idx.tolist() == list(range(n)) and all(len(c) <= bs for c in chunks)


class _Echo(torch.nn.Module):
    """Returns each sample's first code as its logit (so outputs can be matched to inputs)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, b):
        return b["codes"][:, :1].float() + self.w


class _Dropper(_Echo):
    def forward(self, b):             # a model/loader that loses the last row of a batch
        return super().forward(b)[:-1] if len(b["codes"]) > 1 else super().forward(b)


def test_predict_scores_the_test_set_whole_in_order(prepared):
    d = prepared.bundles[0].data
    test = d.rows("held_out")
    assert len(test) > 0 and len(test) % 7 != 0
    p = predict(_Echo(), d, test, batch_size=7)
    # one output per requested sample, in the requested order, although chunks are length-sorted
    assert p.shape == (len(test),)
    assert np.allclose(p, torch.sigmoid(torch.from_numpy(d.codes[test, 0]).float()).numpy())
    with pytest.raises(HeldOutIntegrityError):
        predict(_Dropper(), d, test, batch_size=7)


def test_training_batches_use_every_sample_once_per_epoch():
    lengths = np.random.default_rng(0).integers(1, 300, 101)
    s = LengthBuckets(lengths, 8, seed=0)
    for _ in range(2):
        batches = list(s)
        assert sorted(i for b in batches for i in b) == list(range(101)) and len(batches) == len(s)


def test_cells_predict_exactly_the_held_out_samples(prepared, tmp_path):
    res = run_grid(GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["flat"], models=["logreg"],
                              seeds=[0], bench=FAST, progress=False, report=False), prepared=prepared)
    rec = res["records"][0]
    pred = pl.read_parquet(rec["predictions_file"])
    d = prepared.bundles[0].data
    test = d.rows("held_out")
    assert sorted(pred["sample_id"].to_list()) == sorted(d.sample_id[test].tolist())
    assert rec["n_test"] == len(test) == pred.height
    # the reported prevalence is the test split's, not a rebalanced one
    assert rec["metrics"]["prevalence"] == pytest.approx(d.y[test].mean())
    assert set(pred.columns) >= {"subject_id", "prediction_time", "label", "boolean_value",
                                 "predicted_boolean_probability"}
    row = pl.read_csv(Path(tmp_path) / "results.csv").row(0, named=True)
    assert row["n_test"] == len(test) and row["replicates"] == 200


def test_resume_skips_finished_cells(prepared, tmp_path):
    cfg = GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["flat", "hier-111"], models=["logreg"],
                     seeds=[0], bench=FAST, progress=False, report=False)
    first = run_grid(cfg, prepared=prepared)
    assert first["cells"] == 2 and first["cells_run"] == 2
    files = sorted(Path(tmp_path, "cells").rglob("*.json"))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    again = run_grid(cfg, prepared=prepared)
    assert again["cells_reused"] == 2 and again["cells_run"] == 0
    assert {f: f.stat().st_mtime_ns for f in files} == stamps              # not rewritten
    files[0].unlink()                                                       # an interrupted cell
    third = run_grid(cfg, prepared=prepared)
    assert third["cells_reused"] == 1 and third["cells_run"] == 1 and files[0].exists()
    rec = json.loads(files[1].read_text())
    assert rec["data_fingerprint"] == prepared.cohort.fingerprint and rec["preset"] == "test" and rec["config"]


def test_end_to_end_beats_shuffled_labels(cohort, tmp_path):
    c, task, vectors = cohort
    rng = np.random.default_rng(0)
    ids = sorted(task.truth)
    shuffled = FixtureTask(truth=dict(zip(ids, rng.permutation([task.truth[i] for i in ids]))), preset="shuffled")
    prep = prepare(c, [task, shuffled], ["flat", "hier-111"], vectors=vectors)
    res = run_grid(GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["flat", "hier-111"],
                              models=["transformer", "logreg"], seeds=[0], bench=FAST, progress=False, report=True),
                   prepared=prep)
    by = {(r["preset"], r["model"], r["tokenizer"]): r["metrics"] for r in res["records"]}
    for model in ("transformer", "logreg"):
        for tok in ("flat", "hier-111"):
            real, ctrl = by[("test", model, tok)], by[("shuffled", model, tok)]
            assert real["auroc"] > 0.8, (model, tok, real)
            assert real["auroc"] > ctrl["auroc"] + 0.2 and real["auprc"] > ctrl["auprc"], (model, tok)
    assert Path(res["outputs"]["report_md"]).read_text().count("Table 3") >= 1
    summary = {(r["preset"], r["model"], r["tokenizer"]): r for r in res["summary"]}
    assert "diff_vs_flat" in summary[("test", "transformer", "hier-111")]


def test_transfer_probe_on_a_second_cohort(cohort, tmp_path):
    from ehr.benchmark.transfer import TransferConfig, run_transfer

    a, task_a, vectors = cohort
    ev_b, sp_b, task_b, _ = fixture_cohort(n_patients=300, seed=1)
    b = cohort_from_frames("fixture-b", ev_b, sp_b)
    res = run_transfer(TransferConfig(out=str(tmp_path), tokenizers=["flat"], seeds=[0], progress=False,
                                      bench=BenchConfig(n_boot=100, train=TrainConfig(max_epochs=8).to_dict()).to_dict()),
                       source=a, target=b, tasks_source=[task_a], tasks_target=[task_b], vectors=vectors)
    probe, direct = ([r for r in res["rows"] if r["mode"] == m][0] for m in ("probe", "direct"))
    # the frozen encoder's [CLS] features carry the risk chapter into the other cohort
    assert probe["auroc"] > 0.7 and direct["auroc"] > 0.7, (probe, direct)
    assert probe["n_test"] == len(b.splits.filter(pl.col("split") == "held_out"))
    assert Path(tmp_path, "transfer_report.md").exists()


def test_predictions_rescore_with_meds_evaluation_schema(prepared, tmp_path):
    from meds_evaluation.schema import PredictionSchema
    from sklearn.metrics import average_precision_score

    from ehr.benchmark.cells import meds_predictions

    res = run_grid(GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["flat"], models=["logreg"], seeds=[0],
                              bench=FAST, progress=False, report=False), prepared=prepared)
    rec = res["records"][0]
    df = meds_predictions(rec["predictions_file"])
    PredictionSchema.validate(df.to_arrow())
    assert average_precision_score(df["boolean_value"], df["predicted_boolean_probability"]) == \
        pytest.approx(rec["metrics"]["auprc"])

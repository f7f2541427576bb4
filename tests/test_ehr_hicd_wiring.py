"""Issue 22 arms through the existing grid runner on the fixture cohort: the new models (`hicd`,
`behrt-mlm`) and tokenizers (`graph-*`, `X+flat`, `X-init`) run as cells, their pretraining is
cached and reused on resume, F1-macro / DeLong outputs are written, and today's cell keys and
tree predictions are unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ehr.benchmark.cells import MODELS, BenchConfig, run_cell
from ehr.benchmark.data import cohort_from_frames
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.gbt import TreeConfig, bag_features, fit_predict
from ehr.benchmark.prepare import prepare
from ehr.benchmark.runner import GridConfig, run_grid
from ehr.benchmark.tokenizers import DEFAULT_TOKENIZERS
from ehr.benchmark.train import TrainConfig
from tests.ehr_bench_fixtures import fixture_cohort, fixture_vectors

TINY = BenchConfig(model=ModelConfig(d_model=16, heads=2, ff=32, layers=1).to_dict(),
                   train=TrainConfig(max_epochs=2, patience=1).to_dict(), n_boot=50,
                   gcn={"hidden": 16, "epochs": 10, "lr": 0.01, "negatives_per_edge": 1, "pmi_min_count": 2},
                   mlm={"epochs": 1, "mask_prob": 0.15, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 32,
                        "grad_clip": 1.0}).to_dict()


@pytest.fixture(scope="module")
def setup():
    events, splits, task, vocab = fixture_cohort(n_patients=120, seed=0)
    vectors = fixture_vectors(vocab)
    c = cohort_from_frames("fixture", events, splits)
    from medtok.toy import toy_vocabulary

    _, graph = toy_vocabulary()
    prep = prepare(c, [task], ["flat", "graph-111", "graph-kg", "medtok+flat", "text-init"], vectors=vectors)
    prep.resources.vocab_graph = (vocab.codes, graph)
    return prep


def test_old_cell_keys_unchanged():
    """The key formula of today's cells (as before issue 22) gives the same keys."""
    b = BenchConfig()
    for model in ("transformer", "behrt", "gbt", "logreg"):
        part = {"fp": "fp", "task": "t", "n_boot": b.n_boot, "boot_seed": b.boot_seed, "medtok_steps": b.medtok_steps,
                "cfg": b.trees if model in ("gbt", "logreg") else {"model": b.model, "train": b.train}}
        old = hashlib.blake2b(json.dumps(part, sort_keys=True).encode(), digest_size=5).hexdigest()
        for tok in DEFAULT_TOKENIZERS + ["hier-101", "medtok-n3000", None]:
            assert b.key("fp", "t", model, tok) == old
    assert b.key("fp", "t", "behrt-mlm", "flat") != b.key("fp", "t", "behrt", "flat")
    assert b.key("fp", "t", "hicd", "graph-111") != b.key("fp", "t", "hicd", "flat")
    assert {"hicd", "behrt-mlm"} <= set(MODELS)


def test_tree_test_predictions_unchanged_by_tuning_rows(setup):
    b = setup.bundles[0]
    d = b.data
    X, _ = bag_features("flat", d.bag, b.seen, setup.resources)
    for model in ("gbt", "logreg"):
        alone = fit_predict(model, d.kind, X, d.y, d.rows("train"), d.rows("held_out"), TreeConfig(), 0, 2)
        _, _, p, _, _ = run_cell(b, setup.space, setup.resources, model, "flat", 0, BenchConfig(), with_tuning=True)
        assert np.array_equal(alone, p)


def test_new_arms_through_the_grid_runner_resume(setup, tmp_path):
    cfg = GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["flat", "graph-111", "graph-kg", "medtok+flat",
                                                                       "text-init"],
                     models=["hicd", "behrt-mlm"], seeds=[0], bench=TINY, progress=False, report=False)
    cfg.tokenizers = ["flat", "graph-111", "graph-kg"]
    out = run_grid(cfg, prepared=setup)
    assert out["cells_run"] == 6
    rec = {(r["model"], r["tokenizer"]): r for r in out["records"]}
    assert rec[("hicd", "graph-111")]["tokenizer_info"]["pretraining"]["graph"]["source"] == "pmi+ancestors"
    assert rec[("hicd", "graph-kg")]["tokenizer_info"]["pretraining"]["graph"]["source"] == "vocabulary KG"
    assert rec[("behrt-mlm", "flat")]["pretraining"]["cached"] is False
    for r in out["records"]:
        assert 0 <= r["metrics"]["f1_macro"] <= 1 and Path(r["tuning_predictions_file"]).exists()
    pre = sorted(p.name.split("__")[0] for p in (tmp_path / "pretrain").rglob("*.json"))
    # gcn: one per graph x seed, shared by both models; mlm: one per tokenizer
    assert pre.count("gcn") == 2 and pre.count("mlm") == 3
    paper = json.loads((tmp_path / "paper_metrics.json").read_text())
    comps = [r for r in paper["rows"] if r["comparison"]]
    assert {r["comparison"] for r in comps} >= {"hicd:graph-111 - hicd:flat", "behrt-mlm:graph-kg - behrt-mlm:flat"}
    assert all(np.isfinite(r["delong_p"]) and "f1_diff" in r for r in comps)
    assert paper["above_zero"]["delong"]["n"] == len(comps)
    md = (tmp_path / "paper_report.md").read_text()
    assert "hicd | graph-111" in md and f"delong: {paper['above_zero']['delong']['k']} of {len(comps)}" in md
    # resume: nothing is recomputed; a cleared MLM cell reuses its cached pretraining
    again = run_grid(cfg, prepared=setup)
    assert again["cells_run"] == 0
    cell = Path(rec[("behrt-mlm", "flat")]["predictions_file"]).with_suffix("").with_suffix(".json")
    cell.unlink()
    third = run_grid(cfg, prepared=setup)
    assert third["cells_run"] == 1
    r3 = {(r["model"], r["tokenizer"]): r for r in third["records"]}[("behrt-mlm", "flat")]
    assert r3["pretraining"]["cached"] is True


def test_integration_arms_run_in_todays_models(setup, tmp_path):
    cfg = GridConfig(dataset="fixture", out=str(tmp_path), tokenizers=["medtok+flat", "text-init"],
                     models=["transformer", "gbt"], seeds=[0], bench=TINY, progress=False, report=False)
    out = run_grid(cfg, prepared=setup)
    assert out["cells_run"] == 2                                    # no tree cell repeats the frozen arm
    assert {r["model"] for r in out["records"]} == {"transformer"}


def test_level_ablation_table_and_plot(tmp_path):
    from ehr.benchmark.paper_report import _ablation, write_paper_report

    recs = [{"kind": "binary", "dataset": "d", "task": "t", "preset": "p", "model": "hicd", "tokenizer": tok, "seed": 0,
             "metrics": {"auprc": 0.1 + i / 100, "auroc": 0.6 + i / 100, "f1_macro": 0.5}}
            for i, tok in enumerate(["flat"] + [f"graph-{a}{b}{c}" for a in "01" for b in "01" for c in "01"][1:])]
    abl = _ablation({(r["dataset"], r["task"], r["preset"], r["model"], r["tokenizer"]): np.array([0.1, 0.6, 0.5])
                     for r in recs})
    assert [x[0] for x in abl[("d", "t:p", "hicd")]] == [f"{a}{b}{c}" for a in "01" for b in "01" for c in "01"]
    paths = write_paper_report(recs, [], tmp_path)
    assert Path(paths["paper_ablation_plot"]).exists()
    assert "| d · t:p | hicd | ✓ | ✓ | ✓ | graph-111 |" in (tmp_path / "paper_report.md").read_text()

"""The subset ablation command on the toy vocabulary: cells, kappa by step, resume cell by cell."""

from __future__ import annotations

import json

import numpy as np
import pytest

import medtok.subset_ablation as S
from medtok.subset_ablation import (SubsetAblationConfig, cell_name, expand_change, run_subset_ablation,
                                    subset_vocabulary)
from medtok.toy import toy_vocabulary

ROOTS = ["ICD10CM:CH00", "ICD10CM:CH01", "ICD9CM:100-199", "ICD9CM:200-299"]
TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, top_k=3, attn_heads=2, max_neighbors=6)


def test_the_subset_keeps_the_chapters_and_their_gem_edges():
    v, g = toy_vocabulary()
    sv, sg, rows = subset_vocabulary(v, g, ROOTS, S.DEFAULT_EDGE_TYPES)
    assert len(sv) == 4 * (1 + 6 + 24)  # 2 chapters x 2 systems: chapter, 6 categories, 24 leaves each
    assert set(sv.codes["code_id"]) == set(v.codes["code_id"].iloc[rows])
    counts = sg.edge_counts()
    assert counts["gem_icd9_icd10"] == counts["gem_icd10_icd9"] == 2 * 24 and counts["is_a"] == 4 * 30
    with pytest.raises(KeyError):
        subset_vocabulary(v, g, ["ICD10CM:NOPE"])


def test_changes_and_names():
    assert expand_change({"nce_temperature": 0.5}) == {"shared_nce_temperature": 0.5, "specific_nce_temperature": 0.5}
    assert cell_name({}, 0) == "default-s0" and cell_name({"kl_weight": 0.0}, 1) == "kl_weight=0.0-s1"
    with pytest.raises(ValueError):
        expand_change({"not_a_setting": 1})
    for cells in S.SWEEPS.values():
        for c in cells:
            expand_change(c)


def test_a_tiny_sweep_writes_kappa_by_step_per_cell_and_resumes(tmp_path, monkeypatch):
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    cfg = SubsetAblationConfig(out_root=str(tmp_path), roots=ROOTS, steps=4, batch_size=16, codebook_size=60,
                               eval_every=2, save_every=2, val_fraction=0.3, val_pairs=100, n_pairs=500, model=TINY,
                               train={"heldout_fraction": 0.1, "restart_every": 2, "restart_idle": 2})
    cells = [{}, {"nce_temperature": 0.5}, {"nce_weight": 0.0, "codebook_init": "unit"}]
    res, summary = run_subset_ablation(cfg, cells, progress=False, vocab=v, graph=g, text_embeddings=emb)
    assert set(res) == {"default-s0", "nce_temperature=0.5-s0", "codebook_init=unit+nce_weight=0.0-s0"}
    for name, r in res.items():
        assert (tmp_path / "cells" / f"{name}.json").exists()
        assert [p["step"] for p in r["curve"]] == [2, 4]
        i = r["final"]["intrinsic"]
        assert -1 <= i["siblings"] <= 1 and -1 <= i["gem"] <= 1 and r["final"]["kappa_siblings"] is not None
    assert res["default-s0"]["curve"] != res["nce_temperature=0.5-s0"]["curve"]
    assert "default-s0" in summary.read_text()

    # a rerun trains nothing for finished cells; a removed cell file is recomputed identically
    first = json.loads((tmp_path / "cells" / "default-s0.json").read_text())
    (tmp_path / "cells" / "default-s0.json").unlink()
    import shutil
    shutil.rmtree(tmp_path / "runs" / "default-s0")
    calls = []
    real = S.train
    monkeypatch.setattr(S, "train", lambda *a, **k: (calls.append(a[0].out_dir), real(*a, **k))[1])
    res2, _ = run_subset_ablation(cfg, cells, progress=False, vocab=v, graph=g, text_embeddings=emb)
    assert len(calls) == 1 and calls[0].endswith("default-s0")
    assert res2["default-s0"]["curve"] == first["curve"]

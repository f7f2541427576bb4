"""Issue 13, MedTok side: explicit held-out codes, graph edits recorded in the checkpoint and
replayed by the tokenizer, the no-restart ablation, chance-corrected overlap, the kNN / untrained
baselines and the intrinsic table runner (toy vocabulary, tiny model)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medtok.ablations import ABLATIONS, GEM_EDGES, split_change
from medtok.baselines import knn_token_table, nearest_centroids, neighbour_mean_features, spherical_kmeans
from medtok.evaluate import GEM_TYPES, auc, evaluate, evaluate_tokens, kappa, random_token_ids
from medtok.graph.graph import CodeGraph
from medtok.graph_edits import drop_edges, edge_drop_mask, normalize_edge_specs
from medtok.intrinsic import IntrinsicConfig, format_intrinsic_table, run_intrinsic
from medtok.model import GROUPS, MedTokConfig
from medtok.model.config import GROUP_REGION
from medtok.splits import heldout_mask, read_code_list
from medtok.tokenizer import TOKEN_TABLE, MedTokTokenizer, table_key
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, train, training_rows
from medtok.train_cli import add_training_arguments, training_configs

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def _emb(v):
    # siblings share their lesion's direction (as tests/test_medtok_model.py)
    rng = np.random.default_rng(0)
    base = {c: rng.normal(size=24) for c in v.codes["description"].str.lower().str.split(" of ").str[0].unique()}
    emb = np.stack([base[d.lower().split(" of ")[0]] + 0.3 * rng.normal(size=24) for d in v.codes["description"]])
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    v, g = toy_vocabulary()
    return v, g, _emb(v)


def _edges(v, g):
    ids = v.codes["code_id"].to_numpy()
    return sorted(zip(ids[g.src], ids[g.dst], np.array(g.edge_type_names)[g.etype]))


# ---- explicit held-out codes -----------------------------------------------------------------
def test_heldout_codes_are_never_training_centres(toy, tmp_path):
    v, g, emb = toy
    leaves = v.codes.loc[v.codes["kind"] == "code", "code_id"].tolist()
    listed = leaves[::5] + ["ICD10CM:CH00", "ICD10CM:NOT.A.CODE"]  # a group node and an unknown id too
    path = tmp_path / "heldout.txt"
    path.write_text("# test codes\n" + "\n".join(listed) + "\n\n")
    tc = TrainConfig(out_dir=str(tmp_path / "run"), steps=12, batch_size=48, save_every=100, heldout_fraction=0.0,
                     heldout_codes=str(path))
    assert tc.heldout_codes == sorted(set(listed))  # the file is read: the config carries the list itself
    rows = set(training_rows(v, tc).tolist())
    held_rows = set(np.flatnonzero(v.codes["code_id"].isin(listed)).tolist())
    assert len(held_rows) == len(listed) - 1 and not rows & held_rows and len(rows) == len(v) - len(held_rows)

    centres = []
    original = g.subgraph_batch

    def recording(c, *a, **kw):
        centres.extend(int(x) for x in c)
        return original(c, *a, **kw)

    g.subgraph_batch = recording  # the real sampler, recording the centres each step draws
    try:
        out = train(tc, MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb, progress=False)
    finally:
        del g.subgraph_batch
    assert len(centres) == 12 * 48 and not set(centres) & held_rows
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["heldout_codes"] == sorted(set(listed))
    tok = MedTokTokenizer.from_pretrained(out, vocab=v, graph=g, text_embeddings=emb, progress=False)
    assert set(np.flatnonzero(tok.heldout_mask()).tolist()) == held_rows
    assert evaluate(tok, n_pairs=200, progress=False)["heldout_codes"] == len(held_rows)
    # the description-retrieval probe queries exactly the listed ICD-10-CM leaf codes by default
    from medtok.probe import ProbeConfig, probe_tokenizer

    c = v.codes
    want = int((c["code_id"].isin(listed) & (c["kind"] == "code") & (c["system"] == "ICD10CM")).sum())
    assert probe_tokenizer(tok, ProbeConfig(n_candidates=10, max_train=0))["test_codes"] == want > 0


def test_heldout_mask_union_and_code_list_reader(tmp_path):
    ids, kinds = ["A:1", "A:2", "A:3", "G:1"], ["code", "code", "code", "group"]
    np.testing.assert_array_equal(heldout_mask(ids, kinds, 0.0, ["A:2", "G:1"]), [False, True, False, True])
    np.testing.assert_array_equal(heldout_mask(ids, kinds, 0.0), [False] * 4)
    hashed = heldout_mask(ids, kinds, 0.5)
    assert (heldout_mask(ids, kinds, 0.5, ["A:3"]) == (hashed | np.array([0, 0, 1, 0], bool))).all()
    assert read_code_list(["b", "a", "b"]) == ["a", "b"] and read_code_list(None) is None
    with pytest.raises(TypeError):
        read_code_list([1, 2])


# ---- graph edits -----------------------------------------------------------------------------
def test_drop_edge_types_removes_exactly_those_edges(toy):
    v, g, _ = toy
    before = _edges(v, g)
    g2 = drop_edges(v, g, ["gem_icd9_icd10:ICD9CM:ICD10CM"])
    after = _edges(v, g2)
    removed = [e for e in before if e[2] == "gem_icd9_icd10"]
    assert len(removed) == 192 and sorted(set(before) - set(after)) == removed and len(after) == len(before) - 192
    assert g2.edge_type_names == g.edge_type_names and g2.num_nodes == g.num_nodes
    # system filters: ICD10CM -> ICD9CM GEM edges are not ICD9CM -> ICD10CM ones
    assert drop_edges(v, g, [["gem_icd10_icd9", "ICD9CM", None]]) is g
    # a filter: editing again changes nothing; an edge type the graph lacks matches nothing
    assert _edges(v, drop_edges(v, g2, ["gem_icd9_icd10"])) == after
    assert drop_edges(v, g, ["kg_relation"]) is g
    # only edges touching given codes
    leaf = "ICD10CM:A00.0"
    g3 = drop_edges(v, g, ["is_a", "gem_icd10_icd9", "gem_icd9_icd10"], touching=[leaf])
    gone = set(before) - set(_edges(v, g3))
    assert gone == {e for e in before if leaf in e[:2]} and len(gone) == 3  # parent + both GEM directions
    # every GEM type at once, as the no_gem_edges ablation
    assert not set(np.array(g.edge_type_names)[drop_edges(v, g, GEM_EDGES).etype]) & set(GEM_TYPES)


def test_edge_specs_match_the_relational_qa_helper(toy):
    """medtok takes the relational types' relied edges as plain data and removes the same edges as
    qa.datasets.relational.checks.graph_without_relied_edges."""
    rc = pytest.importorskip("qa.datasets.relational.checks")
    v, g, _ = toy
    for qtype in ("gem_icd9", "parent_title", "sibling"):
        specs = normalize_edge_specs(rc.relied_edges(qtype))
        assert _edges(v, drop_edges(v, g, specs)) == _edges(v, rc.graph_without_relied_edges(v, g, [qtype]))
        some = v.codes["code_id"].tolist()[::7]
        np.testing.assert_array_equal(edge_drop_mask(v, g, specs, touching=some),
                                      rc.relied_edge_mask(v, g, [qtype], touching=some))


def test_edge_spec_spellings():
    assert normalize_edge_specs(["is_a", "in_group:ICD10CM:*", ("gem_icd9_icd10", "ICD9CM", None), "is_a"]) == [
        ["is_a", None, None], ["in_group", "ICD10CM", None], ["gem_icd9_icd10", "ICD9CM", None]]
    assert normalize_edge_specs(None) is None and normalize_edge_specs("is_a") == [["is_a", None, None]]
    for bad in (["is_a:ICD10CM"], [("is_a", None)], [":A:B"]):
        with pytest.raises(ValueError):
            normalize_edge_specs(bad)
    with pytest.raises(ValueError, match="drop_edges_touching"):
        TrainConfig(drop_edges_touching=["X:1"])


def test_dropped_edges_are_recorded_and_replayed_by_the_tokenizer(toy, tmp_path):
    v, g, emb = toy
    spec = ["gem_icd9_icd10", "gem_icd10_icd9"]
    common = dict(steps=8, batch_size=32, save_every=100, heldout_fraction=0.1)
    out = train(TrainConfig(out_dir=str(tmp_path / "dropped"), drop_edge_types=spec, **common), MedTokConfig(**TINY),
                vocab=v, graph=g, text_embeddings=emb, progress=False)
    edited = drop_edges(v, g, spec)
    # training saw exactly the edited graph: bitwise the run on a graph that never had the edges
    ref = train(TrainConfig(out_dir=str(tmp_path / "pre_edited"), **common), MedTokConfig(**TINY),
                vocab=v, graph=edited, text_embeddings=emb, progress=False)
    a, b = load_file(out / "model.safetensors"), load_file(ref / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["drop_edge_types"] == [[t, None, None] for t in spec] and saved["drop_edges_touching"] is None

    tok = MedTokTokenizer.from_pretrained(out, vocab=v, graph=g, text_embeddings=emb, progress=False)
    assert tok.graph.num_edges == g.num_edges - 384 and tok.reference_graph is g
    assert tok._table_key == table_key(tok.model, tok.x, edited, v)
    plain = MedTokTokenizer(tok.model, v, edited, tok.x)  # the tokens of the edited graph
    enc, enc_plain = tok.encode_all(progress=False), plain.encode_all(progress=False)
    assert torch.equal(enc.ids, enc_plain.ids) and torch.equal(enc.weights, enc_plain.weights)
    assert (out / TOKEN_TABLE).exists()
    again = MedTokTokenizer.from_pretrained(out, vocab=v, graph=g, text_embeddings=emb, progress=False)
    assert again._load_table() is not None  # the cached table's key matches on reload
    # the pairs are still scored from the unedited graph
    r = evaluate(tok, n_pairs=300, progress=False)
    assert r["gem"]["pairs"] > 0 and r["gem_heldout"]["pairs"] > 0
    # a tokenizer saved from it keeps the record
    tok.save_pretrained(tmp_path / "saved")
    assert MedTokTokenizer.from_pretrained(tmp_path / "saved", vocab=v, graph=g, text_embeddings=emb,
                                           progress=False).graph.num_edges == edited.num_edges


def test_training_flags_for_the_new_fields(tmp_path):
    (tmp_path / "held.txt").write_text("ICD10CM:A00.0\nICD9CM:100.0\n")
    a = add_training_arguments(argparse.ArgumentParser()).parse_args(
        ["--heldout-codes", str(tmp_path / "held.txt"), "--drop-edge-types", "gem_icd9_icd10:ICD9CM:ICD10CM", "is_a",
         "--dead-restarts", "false"])
    tkw = {k[2:]: v for k, v in vars(a).items() if k.startswith("t_") and v is not None}
    tcfg, _ = training_configs(tkw, {})
    assert tcfg.heldout_codes == ["ICD10CM:A00.0", "ICD9CM:100.0"] and tcfg.dead_restarts is False
    assert tcfg.drop_edge_types == [["gem_icd9_icd10", "ICD9CM", "ICD10CM"], ["is_a", None, None]]
    assert TrainConfig.from_dict(tcfg.to_dict()) == tcfg  # JSON round trip of the saved config


# ---- no dead-entry restarts --------------------------------------------------------------------
def test_no_restart_ablation(toy, tmp_path):
    v, g, emb = toy
    assert split_change(ABLATIONS["no_restarts"]) == ({"dead_restarts": False}, {})
    assert split_change(ABLATIONS["no_gem_edges"]) == ({"drop_edge_types": GEM_EDGES}, {})
    with pytest.raises(ValueError, match="neither"):
        split_change({"restarts": False})
    logs = {}
    for on in (True, False):
        out = train(TrainConfig(out_dir=str(tmp_path / str(on)), steps=10, batch_size=32, save_every=100,
                                restart_every=2, restart_idle=1, dead_restarts=on),
                    MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb, progress=False)
        logs[on] = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["restarted"] for r in logs[True]) > 0
    assert sum(r["restarted"] for r in logs[False]) == 0
    # usage is still logged without restarts (entries used in the last restart_idle steps)
    assert all(0 < r["usage"] <= 1 for r in logs[False])


# ---- chance-corrected overlap ----------------------------------------------------------------------
def test_kappa_and_auc_by_hand_and_against_scikit_learn():
    from sklearn.metrics import roc_auc_score

    assert kappa(0.5, 0.1) == pytest.approx(0.4 / 0.9) and kappa(0.1, 0.1) == 0 and kappa(1.0, 1.0) == 0
    rng = np.random.default_rng(0)
    rel, ran = rng.choice([0, 0.1, 0.2, 0.5], 300), rng.choice([0, 0.1, 0.2], 400)  # many ties
    ref = roc_auc_score(np.r_[np.ones(300), np.zeros(400)], np.r_[rel, ran])
    assert auc(rel, ran) == pytest.approx(ref)
    # (1 vs 0) win, (1 vs 2) loss, (2 vs 0) win, (2 vs 2) tie
    assert auc([1.0, 2.0], [0.0, 2.0]) == pytest.approx((1 + 0 + 1 + 0.5) / 4)


def _regions(n):
    return MedTokConfig(**{**TINY, "codebook_size": n}).regions()


def test_random_token_sets_score_at_chance(toy):
    v, g, _ = toy
    regions, k = _regions(300), 3
    rng = np.random.default_rng(1)
    ids = random_token_ids(np.zeros((len(v), 4, k), dtype=np.int64), regions, rng)
    for j, grp in enumerate(GROUPS):  # in the group's region, K distinct per group
        lo, hi = regions[GROUP_REGION[grp]]
        assert ids[:, j].min() >= lo and ids[:, j].max() < hi
        assert (np.sort(ids[:, j], 1)[:, 1:] != np.sort(ids[:, j], 1)[:, :-1]).all()
    w = np.full(ids.shape, 1 / k, dtype=np.float32)
    held = heldout_mask(v.codes["code_id"], v.codes["kind"], 0.3)
    r = evaluate_tokens(ids, w, v, g, held, regions, n_pairs=3000, seed=0)
    for key in ("siblings", "gem", "siblings_heldout", "gem_heldout"):
        assert r[key]["pairs"] > 50
        assert abs(r[key]["kappa"]) < 0.01, (key, r[key])
        assert abs(r[key]["auc"] - 0.5) < 0.08, (key, r[key])  # held-out GEM: ~200 pairs
        assert r[key]["lift_uniform"] == pytest.approx(1.0, abs=0.35), (key, r[key])
        assert r[key]["ratio"] == pytest.approx(1.0, abs=0.35), (key, r[key])


def test_kappa_does_not_reward_a_larger_codebook_by_construction(toy):
    """Siblings with identical tokens (tokens a function of the parent): the old ratio and the lift
    over uniform chance grow with the codebook, kappa is 1 at every size."""
    v, g, _ = toy
    parent = v.codes["parents"].map(lambda p: p[0] if p else "").to_numpy()
    _, code = np.unique(parent, return_inverse=True)
    held = np.zeros(len(v), bool)
    out = {}
    for n in (60, 600):
        regions = _regions(n)
        ids = np.stack([lo + (code[:, None] * 3 + np.arange(3)) % (hi - lo)
                        for lo, hi in (regions[GROUP_REGION[grp]] for grp in GROUPS)], 1)
        out[n] = evaluate_tokens(ids, np.full(ids.shape, 1 / 3), v, g, held, regions, n_pairs=2000)["siblings"]
    assert out[60]["kappa"] == pytest.approx(1.0) and out[600]["kappa"] == pytest.approx(1.0)
    assert out[600]["ratio"] > 3 * out[60]["ratio"] and out[600]["lift_uniform"] > 5 * out[60]["lift_uniform"]


# ---- training-free baselines -----------------------------------------------------------------------
def test_spherical_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4] * 1.0
    x = np.concatenate([c + 0.05 * rng.normal(size=(50, 8)) for c in centres]).astype(np.float32)
    cent = spherical_kmeans(x, 4, iters=20, seed=3, sample=None)
    assert np.allclose(np.linalg.norm(cent, axis=1), 1, atol=1e-5)
    ids, w = nearest_centroids(x, cent, 2)
    labels = ids[:, 0]
    assert all(len(set(labels[i * 50:(i + 1) * 50])) == 1 for i in range(4)) and len(set(labels)) == 4
    assert np.allclose(w.sum(1), 1) and (w[:, 0] >= w[:, 1]).all()


def test_knn_token_table_shape_regions_and_fitting_rows(toy):
    v, g, emb = toy
    regions, k = _regions(60), 3
    nb = neighbour_mean_features(emb, g, hops=2)
    feats = {"text_specific": emb, "shared_text": emb, "graph_specific": nb, "shared_graph": nb}
    fit = np.arange(0, len(v), 2)
    ids, w = knn_token_table(feats, regions, k, fit_rows=fit, iters=10, seed=0)
    assert ids.shape == (len(v), 4, k) and w.shape == (len(v), 4, k)
    for j, grp in enumerate(GROUPS):
        lo, hi = regions[GROUP_REGION[grp]]
        assert ids[:, j].min() >= lo and ids[:, j].max() < hi
    assert np.allclose(w.sum(-1), 1, atol=1e-5) and (np.diff(w, axis=-1) <= 1e-7).all()  # nearest first
    # deterministic, and the features decide: text groups differ from graph groups
    ids2, _ = knn_token_table(feats, regions, k, fit_rows=fit, iters=10, seed=0)
    assert (ids == ids2).all() and (ids[:, 0] - regions["text"][0] != ids[:, 1] - regions["graph"][0]).any()
    r = evaluate_tokens(ids, w, v, g, heldout_mask(v.codes["code_id"], v.codes["kind"], 0.2), regions, n_pairs=500)
    assert r["siblings"]["kappa"] > 0.3 and r["gem"]["kappa"] > 0.3  # siblings / GEM partners share words


def test_neighbour_mean_features_by_hand():
    # path 0 - 1 - 2 (edge 0->1 stored twice: counts once), node 3 isolated
    g = CodeGraph(4, np.array([0, 0, 1]), np.array([1, 1, 2]), np.array([0, 0, 0]))
    x = np.array([[1, 0], [0, 1], [1, 1], [3, 4]], dtype=np.float32)
    # P x: node0 <- x1 = (0,1); node1 <- (x0 + x2)/2 = (1, .5); node2 <- x1 = (0,1)
    # P^2 x: node0 <- (1,.5); node1 <- ((0,1)+(0,1))/2 = (0,1); node2 <- (1,.5)
    want = np.array([[1, 1.5], [1, 1.5], [1, 1.5], [3, 4]], dtype=np.float32)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(neighbour_mean_features(x, g, hops=2), want, rtol=1e-6)


# ---- the table runner ---------------------------------------------------------------------------------
def test_intrinsic_runner_on_the_toy_vocabulary(toy, tmp_path):
    v, g, emb = toy
    cfg = IntrinsicConfig(out_root=str(tmp_path / "intr"), steps=6, batch_size=32, codebook_sizes=[30], n_pairs=300,
                          rows=["medtok", "medtok_untrained", "knn_text", "no_gem_edges", "knn_text_graph_no_gem",
                                "knn_text_N30"],
                          kmeans_iters=5, model=TINY, train={"heldout_fraction": 0.1})
    res, out = run_intrinsic(cfg, progress=False, vocab=v, graph=g, text_embeddings=emb)
    assert list(res) == cfg.rows and out.exists()
    assert res["no_gem_edges"]["graph_edges"] == g.num_edges - 384 == res["knn_text_graph_no_gem"]["graph_edges"]
    for name in cfg.rows:  # GEM pairs come from the unedited graph for every row
        assert res[name]["gem"]["pairs"] == res["medtok"]["gem"]["pairs"] > 0
        assert res[name]["heldout_codes"] == res["medtok"]["heldout_codes"] > 0
    assert sum(hi - lo for lo, hi in res["knn_text_N30"]["regions"].values()) == 30
    # untrained = the configuration at its initialisation: different tokens from the trained run
    assert res["medtok_untrained"]["siblings"]["overlap"] != res["medtok"]["siblings"]["overlap"]
    table = format_intrinsic_table(res)
    assert table.count("\n") == len(cfg.rows) + 1 and "| knn_text_N30 | 30 |" in table
    # a rerun reuses finished rows and checkpoints
    stamp = (tmp_path / "intr" / "medtok" / "model.safetensors").stat().st_mtime_ns
    res2, _ = run_intrinsic(cfg, progress=False, vocab=v, graph=g, text_embeddings=emb)
    assert res2 == json.loads(out.read_text()) == json.loads(json.dumps(res, default=str))
    assert (tmp_path / "intr" / "medtok" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown rows"):
        IntrinsicConfig(rows=["nope"])

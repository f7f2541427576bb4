"""HICD-Graph (issue 22): PMI weights on a hand-made 5-patient cohort (computed by hand), ancestor
edges per level combination (ICD-10-CM and ICD-9-CM), link prediction beating random scoring on
a fixture graph, inductive embeddings of unseen codes, the cached pretraining artefact, the
visit-pooling patient model, and the vocabulary-KG graph source."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from ehr.benchmark.cooccurrence import (ancestor_edges, build_pmi_graph, pmi_edges, training_visits,
                                        vocabulary_graph)
from ehr.benchmark.features import SequenceData
from ehr.benchmark.hierarchy import Hierarchy
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.hicd_graph import (GCNConfig, GraphInitTokenizer, VisitPatientModel, cached_embeddings,
                                             link_auc, pretrain_link_prediction)
from ehr.benchmark.cooccurrence import HICDGraph
from ehr.benchmark.tokenizers import CodeSpace, Resources, make_tokenizer
from medtok.codes.vocabulary import Vocabulary

A, B, C, D, X = "ICD10CM:E11.9", "ICD9CM:428.0", "ICD9CM:759.9", "ICD10CM:I10", "ICD10PCS:0DTJ4ZZ"


def seq_data(samples: list[tuple[int, str, list[list[str]]]], space: CodeSpace) -> SequenceData:
    """Hand-made SequenceData: (subject, split, visits as code lists) per sample."""
    n = len(samples)
    L = max(sum(len(v) for v in vis) for _, _, vis in samples)
    codes, vpos = np.zeros((n, L), np.int64), np.zeros((n, L), np.int64)
    length = np.zeros(n, np.int64)
    for r, (_, _, vis) in enumerate(samples):
        k = 0
        for vi, v in enumerate(vis):
            for c in v:
                codes[r, k], vpos[r, k] = space.index[c], vi
                k += 1
        length[r] = k
    z = np.zeros((n, L), np.float32)
    return SequenceData(sample_id=np.arange(n), subject_id=np.array([s for s, _, _ in samples]),
                        prediction_time=np.arange(n), split=np.array([sp for _, sp, _ in samples]), codes=codes,
                        visit_pos=vpos, visit_seg=vpos, days=z, age=z, length=length, truncated=np.zeros(n, np.int64),
                        bag=sparse.csr_matrix((n, len(space))), y=np.arange(n) % 2, kind="binary",
                        classes=["n", "p"])


SPACE = CodeSpace([A, B, C, D, X, "ICD10CM:E11.65"])
COHORT = [
    (1, "train", [[A, B]]),                      # an earlier sample of patient 1: superseded by its longest
    (1, "train", [[A, B, X], [A, C]]),
    (2, "train", [[A, B], [C, D]]),
    (3, "train", [[B, C], [A, B, C]]),
    (4, "train", [[D], [C, D]]),
    (5, "train", [[A, B, X]]),
    (6, "tuning", [[C, D], [C, D], [A, C]]),     # not training: never counted
]


def test_pmi_weights_by_hand():
    data = seq_data(COHORT, SPACE)
    from ehr.benchmark.cooccurrence import graph_codes
    visits = training_visits(data, graph_codes(SPACE.codes))
    assert len(visits) == 9                      # 2 + 2 + 2 + 2 + 1 visits of the 5 training patients
    i, j, w, info = pmi_edges(visits, min_count=2)
    got = {(SPACE.codes[a], SPACE.codes[b]): x for a, b, x in zip(i, j, w)}
    # N = 9; n_A = 5, n_B = 5, n_C = 5, n_D = 3; n_AB = 4, n_AC = 2, n_BC = 2, n_CD = 2
    # PMI = log(n_ij N / (n_i n_j)): AB log(36/25) > 0; CD log(18/15) > 0; AC, BC log(18/25) < 0 (dropped)
    key = lambda a, b: tuple(sorted((a, b), key=SPACE.index.get))
    assert set(got) == {key(A, B), key(C, D)}
    assert got[key(A, B)] == pytest.approx(math.log(36 / 25))
    assert got[key(C, D)] == pytest.approx(math.log(18 / 15))
    assert info["pairs_pmi_not_positive"] == 2 and info["visits"] == 9
    # min count 3: only AB (4 visits) is left
    i, j, w, info = pmi_edges(visits, min_count=3)
    assert len(w) == 1 and info["pairs_below_min_count"] == 3


def _vocab(rows):
    return Vocabulary(pd.DataFrame([dict(code_id=c, system=c.split(":")[0], code=c.split(":")[1], description=d,
                                         parents=p, synonyms=[], kind=k) for c, d, p, k in rows]))


MINI = _vocab([
    ("ICD10CM:CH04", "Endocrine, nutritional and metabolic diseases (E00-E89)", [], "group"),
    ("ICD10CM:E08-E13", "Diabetes mellitus", ["ICD10CM:CH04"], "group"),
    ("ICD10CM:E11", "Type 2 diabetes mellitus", ["ICD10CM:E08-E13"], "group"),
    ("ICD10CM:E11.9", "Type 2 diabetes mellitus without complications", ["ICD10CM:E11"], "code"),
    ("ICD10CM:E11.65", "Type 2 diabetes mellitus with hyperglycemia", ["ICD10CM:E11"], "code"),
    ("ICD10CM:CH09", "Diseases of the circulatory system (I00-I99)", [], "group"),
    ("ICD10CM:I10-I1A", "Hypertensive diseases", ["ICD10CM:CH09"], "group"),
    ("ICD10CM:I10", "Essential hypertension", ["ICD10CM:I10-I1A"], "code"),
    ("ICD9CM:390-459", "Diseases of the circulatory system", [], "group"),
    ("ICD9CM:420-429", "Other forms of heart disease", ["ICD9CM:390-459"], "group"),
    ("ICD9CM:428", "Heart failure", ["ICD9CM:420-429"], "group"),
    ("ICD9CM:428.0", "Congestive heart failure, unspecified", ["ICD9CM:428"], "code"),
    ("ICD9CM:740-759", "Congenital anomalies", [], "group"),
    ("ICD9CM:759", "Other and unspecified congenital anomalies", ["ICD9CM:740-759"], "group"),
    ("ICD9CM:759.9", "Congenital anomaly, unspecified", ["ICD9CM:759"], "code"),
])
LEVELS = Hierarchy(MINI).levels(SPACE.codes)
ANCESTORS = {A: ("ICD10CM:CH04", "ICD10CM:E08-E13", "ICD10CM:E11"),
             "ICD10CM:E11.65": ("ICD10CM:CH04", "ICD10CM:E08-E13", "ICD10CM:E11"),
             D: ("ICD10CM:CH09", "ICD10CM:I10-I1A", None),          # I10 is its own category: no G2 node
             B: ("ICD9CM:390-459", "ICD9CM:420-429", "ICD9CM:428"),
             C: ("ICD9CM:740-759", None, "ICD9CM:759")}             # a chapter without blocks


@pytest.mark.parametrize("enabled", list(product((0, 1), repeat=3)))
def test_ancestor_edges_per_level_combination(enabled):
    rows = np.array([SPACE.index[c] for c in ANCESTORS])
    keys, a, b = ancestor_edges(LEVELS, rows, enabled, SPACE.codes)
    got = {(list(ANCESTORS)[i], keys[j]) for i, j in zip(a, b)}
    want = {(c, anc[j]) for c, anc in ANCESTORS.items() for j in range(3) if enabled[j] and anc[j] is not None}
    assert got == want
    # the whole graph: PMI edges + these, uniform weight 1 on ancestor edges, both directions stored
    g = build_pmi_graph(SPACE.codes, LEVELS, seq_data(COHORT, SPACE), enabled)
    names = np.array(g.node_names)
    anc = g.edge_weight[np.char.startswith(names[g.edge_index[1]].astype(str), "level:")]
    assert len(anc) == len(want) and (anc == 1).all()
    assert g.info["levels"] == "".join(map(str, enabled)) and g.info["ancestor_edges"] == len(want)
    assert X not in g.node_names                                    # procedures are not graph nodes
    e = set(map(tuple, g.edge_index.T.tolist()))
    assert all((v, u) in e for u, v in e)


def test_unseen_code_reaches_the_graph_through_its_ancestors():
    g = build_pmi_graph(SPACE.codes, LEVELS, seq_data(COHORT, SPACE), (0, 0, 1))
    u = g.code_node[SPACE.index["ICD10CM:E11.65"]]                  # in no visit
    nbrs = {g.node_names[j] for j in g.edge_index[1][g.edge_index[0] == u]}
    assert nbrs == {"level:ICD10CM:E11"}
    g0 = build_pmi_graph(SPACE.codes, LEVELS, seq_data(COHORT, SPACE), (0, 0, 0))
    assert not (g0.edge_index[0] == g0.code_node[SPACE.index["ICD10CM:E11.65"]]).any()


def _sbm(seed=0, k=4, size=15, p_in=0.4, p_out=0.02):
    rng = np.random.default_rng(seed)
    n = k * size
    comm = np.repeat(np.arange(k), size)
    iu = np.triu_indices(n, 1)
    p = np.where(comm[iu[0]] == comm[iu[1]], p_in, p_out)
    hit = rng.random(len(p)) < p
    return n, np.stack([iu[0][hit], iu[1][hit]]), rng


def test_link_prediction_beats_random_scoring():
    n, pairs, rng = _sbm()
    perm = rng.permutation(pairs.shape[1])
    held, train = pairs[:, perm[:len(perm) // 5]], pairs[:, perm[len(perm) // 5:]]
    g = HICDGraph([f"n{i}" for i in range(n)], np.arange(n), np.arange(n), np.zeros((2, 0), np.int64), np.zeros(0))
    ei = np.concatenate([train, train[::-1]], 1)
    z, hist = pretrain_link_prediction(g, 16, 0, GCNConfig(hidden=16, epochs=100), ei, np.ones(ei.shape[1]))
    edges = {tuple(e) for e in pairs.T.tolist()}
    neg = []
    while len(neg) < held.shape[1]:
        a, b = sorted(rng.integers(0, n, 2).tolist())
        if a != b and (a, b) not in edges:
            neg.append((a, b))
    auc = link_auc(z, held, np.array(neg).T)
    rand = link_auc(np.random.default_rng(1).normal(size=(n, 16)), held, np.array(neg).T)
    assert auc > 0.8 and auc > rand + 0.2, (auc, rand)
    assert hist["loss"][-1] < hist["loss"][0]


def test_pretraining_is_cached_and_resumable(tmp_path):
    g = build_pmi_graph(SPACE.codes, LEVELS, seq_data(COHORT, SPACE), (1, 1, 1))
    cfg = GCNConfig(hidden=8, epochs=5)
    z1, m1 = cached_embeddings(g, 8, 0, cfg, tmp_path)
    z2, m2 = cached_embeddings(g, 8, 0, cfg, tmp_path)
    assert not m1["cached"] and m2["cached"] and np.array_equal(z1, z2)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    z3, m3 = cached_embeddings(g, 8, 1, cfg, tmp_path)             # another seed: its own artefact
    assert not m3["cached"] and len(list(tmp_path.glob("*.npz"))) == 2
    g2 = build_pmi_graph(SPACE.codes, LEVELS, seq_data(COHORT, SPACE), (1, 0, 0))   # other levels: other graph
    assert g2.fingerprint() != g.fingerprint()


def test_graph_init_tokenizer_rows_and_unseen_codes():
    data = seq_data(COHORT, SPACE)
    seen = np.zeros(len(SPACE), bool)
    seen[np.unique(data.codes[data.split == "train"])] = True
    seen[0] = False
    g = build_pmi_graph(SPACE.codes, LEVELS, data, (1, 1, 1))
    z, _ = cached_embeddings(g, 8, 0, GCNConfig(hidden=8, epochs=5), None)
    tok = GraphInitTokenizer("graph-111", 8, SPACE, seen, Resources(levels=LEVELS), g, z)
    codes = torch.from_numpy(SPACE.encode([A, "ICD10CM:E11.65", X])).view(1, -1)
    with torch.no_grad():
        x = tok(codes)[0][0, :, 0].numpy()
    scale = tok.graph_info["gcn_scale"]
    np.testing.assert_allclose(x[0], z[g.code_node[SPACE.index[A]]] * scale, rtol=1e-5)
    np.testing.assert_allclose(x[1], z[g.code_node[SPACE.index["ICD10CM:E11.65"]]] * scale, rtol=1e-5)
    assert np.abs(x[1]).sum() > 0 and tok.counts["unseen_graph_codes"] == 1


def test_visit_patient_model_pools_visits():
    torch.manual_seed(0)
    data = seq_data(COHORT, SPACE)
    seen = np.ones(len(SPACE), bool)
    seen[0] = False
    cfg = ModelConfig(d_model=8, heads=2, ff=16, dropout=0.0)
    tok = make_tokenizer("flat", 8, SPACE, seen, Resources())
    net = VisitPatientModel(tok, 1, cfg)
    b = {"codes": torch.from_numpy(data.codes), "visit_pos": torch.from_numpy(data.visit_pos)}
    v, present = net.visit_vectors(b)
    r = 3                                                            # patient 3: visits [B, C], [A, B, C]
    e = lambda c: tok.flat(tok.flat_row[SPACE.index[c]]).detach()
    torch.testing.assert_close(v[r, 0].detach(), (e(B) + e(C)) / 2)
    torch.testing.assert_close(v[r, 1].detach(), (e(A) + e(B) + e(C)) / 3)
    assert present[r].tolist()[:2] == [True, True] and not present[r, 2:].any()
    out = net(b)
    assert out.shape == (len(COHORT), 1)
    # codes permuted inside a visit: same output (mean pooling)
    b2 = {k: t.clone() for k, t in b.items()}
    b2["codes"][r, :2] = b["codes"][r, [1, 0]]
    net.eval()
    torch.testing.assert_close(net(b), net(b2))
    out.sum().backward()
    assert net.attn.weight.grad is not None


def test_vocabulary_graph_source_on_toy_vocabulary():
    from medtok.toy import toy_vocabulary

    vocab, graph = toy_vocabulary()
    leaves = vocab.codes.loc[vocab.codes["kind"] == "code", "code_id"].tolist()[:6]
    space = CodeSpace(leaves + ["MEDICATION//aspirin"])
    g = vocabulary_graph(space.codes, vocab.codes, graph, hops=1)
    assert g.info["source"] == "vocabulary KG" and len(g.code_index) == len(leaves)
    assert g.edge_index.shape[1] > 0 and (g.edge_weight == 1).all()
    assert g.code_node[space.index["MEDICATION//aspirin"]] == -1

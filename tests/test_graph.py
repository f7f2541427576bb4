import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.utils import k_hop_subgraph, to_undirected

import medtok.build
from medbase.paths import shared_data_path
from medtok.build import assemble, build_vocabulary, statistics
from medtok.codes.sources.atc import load_atc
from medtok.codes.sources.base import SourceTable, rows_frame
from medtok.graph.external import attach_external
from medtok.graph.graph import CodeGraph
from medtok.toy import toy_vocabulary


def small_graph():
    # 0 - 1 - 2 - 3 (a path) plus a star around 1: 1-4, 1-5, 1-6
    src = np.array([0, 1, 2, 1, 1, 1])
    dst = np.array([1, 2, 3, 4, 5, 6])
    return CodeGraph(7, src, dst, np.zeros(6, dtype=np.int64))


def test_k_hop_nodes_by_hand():
    g = small_graph()
    nodes, _ = g.k_hop_nodes(0, num_hops=1)
    assert nodes.tolist() == [0, 1]
    nodes, _ = g.k_hop_nodes(0, num_hops=2)
    assert nodes[0] == 0 and set(nodes.tolist()) == {0, 1, 2, 4, 5, 6}
    nodes, _ = g.k_hop_nodes(0, num_hops=3)
    assert set(nodes.tolist()) == set(range(7))


def test_neighbor_cap_and_determinism():
    g = small_graph()
    capped, _ = g.k_hop_nodes(1, num_hops=1, max_neighbors=2)
    assert len(capped) == 3 and capped[0] == 1
    a, _ = g.k_hop_nodes(1, 1, 2, rng=np.random.default_rng(0))
    b, _ = g.k_hop_nodes(1, 1, 2, rng=np.random.default_rng(0))
    assert a.tolist() == b.tolist()


def test_subgraph_matches_pyg_k_hop_subgraph():

    vocab, g = toy_vocabulary()
    center = vocab.index_of("ICD10CM:A00.1")
    data = g.subgraph(center, num_hops=2, max_neighbors=10_000)
    ref_nodes, _, _, _ = k_hop_subgraph(center, 2, to_undirected(g.edge_index(), num_nodes=g.num_nodes), num_nodes=g.num_nodes)
    assert set(data.n_id.tolist()) == set(ref_nodes.tolist())
    assert data.n_id[0].item() == center
    # every local edge is a real edge of the global graph
    glob = {(int(s), int(d)) for s, d in g.edge_index().t()}
    glob |= {(d, s) for s, d in glob}
    for s, d in data.edge_index.t().tolist():
        assert (int(data.n_id[s]), int(data.n_id[d])) in glob
    assert data.edge_index.shape[1] == data.edge_type.shape[0]


def test_subgraph_batch_center_index():
    vocab, g = toy_vocabulary()
    centers = vocab.indices_of(["A00.1", "B02.3", "100.1"])
    batch = g.subgraph_batch(centers, num_hops=2, max_neighbors=4)
    assert batch.n_id[batch.center_index].tolist() == centers.tolist()
    assert batch.edge_index.max() < batch.num_nodes


def test_save_load_roundtrip(tmp_path):
    _, g = toy_vocabulary()
    g.save(tmp_path)
    h = CodeGraph.load(tmp_path)
    assert torch.equal(g.edge_index(), h.edge_index()) and g.edge_counts() == h.edge_counts()


def test_assemble_drops_dangling_parents_and_edges():
    rows = rows_frame([
        dict(code_id="X:A", system="X", code="A", description="root", parents=[], synonyms=[], kind="group"),
        dict(code_id="X:B", system="X", code="B", description="child", parents=["X:A", "X:MISSING"], synonyms=[], kind="code"),
        dict(code_id="X:B", system="X", code="B", description="dup", parents=[], synonyms=["alias"], kind="code"),
    ])
    edges = pd.DataFrame({"src_id": ["X:B", "X:B"], "dst_id": ["X:A", "Y:NOPE"], "type": ["xref", "xref"]})
    vocab, graph, stats = assemble([SourceTable("x", rows, edges)])
    assert len(vocab) == 2 and vocab.row("X:B")["parents"] == ["X:A"] and vocab.row("X:B")["synonyms"] == ["alias"]
    assert stats["dangling_parents_dropped"] == 1 and stats["edges_dropped_unknown_endpoint"] == {"xref": 1}
    assert graph.edge_counts() == {"is_a": 1, "xref": 1}


def test_external_primekg_and_mondo_fixture(tmp_path):
    vocab, g = toy_vocabulary()
    mondo = tmp_path / "mondo"
    mondo.mkdir()
    (mondo / "m.sssom.tsv").write_text(
        "# curie_map: ...\nsubject_id\tsubject_label\tpredicate_id\tobject_id\tmapping_justification\n"
        "MONDO:0000001\theart infection\tskos:exactMatch\tICD10CM:A00.0\tx\n"
        "MONDO:0000002\tnothing\tskos:exactMatch\tICD10CM:Z99.9\tx\n")
    cols = "relation,display_relation,x_index,x_id,x_type,x_name,x_source,y_index,y_id,y_type,y_name,y_source"
    kg = tmp_path / "kg.csv.gz"
    with gzip.open(kg, "wt") as f:
        f.write(cols + "\n")
        f.write("disease_protein,associated with,1,1,disease,heart infection,MONDO,2,7157,gene/protein,TP53,NCBI\n")
        f.write("protein_protein,ppi,2,7157,gene/protein,TP53,NCBI,3,672,gene/protein,BRCA1,NCBI\n")  # not joined
    v2, g2, stats = attach_external(vocab, g, mondo_dir=mondo, primekg_file=kg, progress=False)
    assert v2.normalize("MONDO:0000001") and "MONDO:0000002" not in v2._index
    assert v2.row("NCBI:7157")["description"] == "TP53 (gene/protein)" and "NCBI:672" not in v2._index
    assert stats["edges_mondo"] == 1 and stats["edges_primekg"] == 1 and stats["primekg_edges_not_joined"] == 1
    assert g2.num_edges == g.num_edges + 2


def test_real_primekg_sample_joins_atc_drugs():
    path = shared_data_path("kg", "primekg-sample", "kg_drug_protein_sample.csv.gz")
    if path is None:
        pytest.skip("shared data absent (set MEDTOK_SHARED_DATA): PrimeKG sample")
    vocab, graph, _ = assemble([load_atc()])
    _, g2, stats = attach_external(vocab, graph, primekg_file=path, progress=False)
    assert stats["edges_primekg"] > 500  # drug-protein edges anchored on ATC drugs by name


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    vocab, graph, stats = build_vocabulary(out, progress=False)
    return out, vocab, graph, stats


def test_full_offline_vocabulary_meets_the_foundation_figures(full_build):
    out, vocab, graph, stats = full_build
    df = vocab.codes
    assert len(df) >= 200_000
    assert df["system"].nunique() >= 6
    assert (df["description"].str.strip() != "").all()
    # every non-root has a parent: roots are only top-level nodes (chapters, sections, main groups)
    roots = df[df["parents"].map(len) == 0]
    assert len(roots) < 200 and (roots["kind"] == "group").all()
    assert stats["icd9_icd10_equivalence_edges"] >= 20_000
    assert stats["codes_with_no_edges"] == 0
    assert statistics(vocab, graph)["codes"] == stats["codes"]


def test_rebuild_reuses_cache(full_build, monkeypatch):
    out, vocab, graph, stats = full_build

    def no_loaders():
        raise AssertionError("an identical rebuild must not run the source loaders")

    monkeypatch.setattr(medtok.build, "_loaders", no_loaders)
    v2, g2, s2 = build_vocabulary(out, progress=False)
    assert s2["cached"] and len(v2) == len(vocab) and g2.num_edges == graph.num_edges
    assert v2.codes["code_id"].tolist() == vocab.codes["code_id"].tolist()
    assert json.loads((out / "build_meta.json").read_text())["stats"]["codes"] == len(vocab)

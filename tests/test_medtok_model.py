"""Training, resume, save/load and the tokenizer API on the toy vocabulary (tiny model)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medtok.codes.vocabulary import UnknownCodeError, Vocabulary
from medtok.graph.graph import CodeGraph
from medtok.loading import subset_vocabulary
from medtok.model import GROUPS, MedTokConfig, MedTokModel
from medtok.model.features import impute_missing_text, neighbor_table, node_features
from medtok.splits import heldout_mask
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from medtok.train import CHECKPOINT_FILES, TrainConfig, make_batch, train

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def _toy():
    v, g = toy_vocabulary()
    # deterministic stand-in for text embeddings: siblings share their category's direction
    rng = np.random.default_rng(0)
    base = {c: rng.normal(size=24) for c in v.codes["description"].str.lower().str.split(" of ").str[0].unique()}
    emb = np.stack([base[d.lower().split(" of ")[0]] + 0.3 * rng.normal(size=24) for d in v.codes["description"]])
    return v, g, (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    return _toy()


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    v, g, emb = toy
    out = tmp_path_factory.mktemp("ck") / "run"
    tc = TrainConfig(out_dir=str(out), steps=30, batch_size=32, save_every=15, heldout_fraction=0.1)
    train(tc, MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb, progress=False)
    return out


def test_training_lowers_loss_and_writes_checkpoint(trained):
    log = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    for key in ("total", "codebook", "kl", "shared", "specific", "shared_nce", "specific_orth", "usage"):
        assert key in log[0]
    first = np.mean([r["total"] for r in log[:5]])
    last = np.mean([r["total"] for r in log[-5:]])
    assert last < first
    for name in CHECKPOINT_FILES + ("checkpoint.json",):
        assert (trained / name).exists() and (trained / "checkpoint-15" / name).exists()
    assert MedTokConfig.load(trained / "config.json").codebook_size == 60


def test_resume_equals_uninterrupted_run(toy, trained, tmp_path):
    v, g, emb = toy
    tc = TrainConfig(out_dir=str(tmp_path / "resumed"), steps=30, batch_size=32, save_every=15, heldout_fraction=0.1)
    train(tc, vocab=v, graph=g, text_embeddings=emb, resume_from=trained / "checkpoint-15", progress=False)
    a, b = load_file(trained / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise: every draw of step t is seeded by (seed, step)
    # and the resumed run did move away from the checkpoint it started from
    c = load_file(trained / "checkpoint-15" / "model.safetensors")
    assert not torch.allclose(a["quantizer.codebook"], c["quantizer.codebook"])


def test_save_load_equality(toy, trained, tmp_path):
    v, g, emb = toy
    tok = MedTokTokenizer.from_pretrained(trained, vocab=v, graph=g, text_embeddings=emb)
    enc = tok.encode_all(progress=False)
    tok.save_pretrained(tmp_path / "saved")
    tok2 = MedTokTokenizer.from_pretrained(tmp_path / "saved", vocab=v, graph=g, text_embeddings=emb)
    enc2 = tok2.encode_all(progress=False)
    assert torch.equal(enc.ids, enc2.ids) and torch.allclose(enc.vectors, enc2.vectors)
    m1, m2 = MedTokModel.from_pretrained(trained), MedTokModel.from_pretrained(tmp_path / "saved")
    for (k1, p1), (k2, p2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(p1, p2)


def test_encode_contract_and_spellings(toy, trained):
    v, g, emb = toy
    tok = MedTokTokenizer.from_pretrained(trained, vocab=v, graph=g, text_embeddings=emb)
    assert tok.embedding_dim == 16 and tok.vocab_size == 60
    enc = tok.encode(["A00.1", "ICD10CM:A00.1", "a001", "ICD9CM:100.1"])
    assert enc.code_ids == ["ICD10CM:A00.1"] * 3 + ["ICD9CM:100.1"]
    assert enc.ids.shape == (4, 4, 3) and enc.weights.shape == (4, 4, 3) and enc.vectors.shape == (4, 4, 16)
    assert enc.ids.dtype == torch.long and torch.equal(enc.ids[0], enc.ids[2])
    assert torch.allclose(enc.weights.sum(-1), torch.ones(4, 4), atol=1e-5)
    regions = tok.model.config.regions()
    for j, (lo, hi) in enumerate([regions["text"], regions["graph"], regions["shared"], regions["shared"]]):
        assert ((enc.ids[:, j] >= lo) & (enc.ids[:, j] < hi)).all(), GROUPS[j]
    # vectors are the quantized embeddings rebuilt from (ids, weights)
    assert torch.allclose(tok.model.quantizer.get_output_from_indices(enc.ids, enc.weights), enc.vectors, atol=1e-5)
    assert enc.missing == [None] * 4
    with pytest.raises(UnknownCodeError, match="nearest|not found"):
        tok.encode(["ICD10CM:Z99.9"])


def test_export_parquet_and_npz(toy, trained, tmp_path):
    v, g, emb = toy
    tok = MedTokTokenizer.from_pretrained(trained, vocab=v, graph=g, text_embeddings=emb)
    p = tok.export(["A00.1", "100.2"], tmp_path / "tok.parquet")
    df = pd.read_parquet(p)
    assert list(df["code_id"]) == ["ICD10CM:A00.1", "ICD9CM:100.2"] and len(df["ids"][0]) == 12
    z = np.load(tok.export(None, tmp_path / "all.npz"))
    assert z["ids"].shape == (len(v), 4, 3)
    assert np.array_equal(z["ids"][v.index_of("A00.1")], df["ids"][0].reshape(4, 3))


def test_heldout_codes_never_trained_but_tokenized(toy, trained):
    v, g, emb = toy
    held = heldout_mask(v.codes["code_id"], v.codes["kind"], 0.1)
    assert held.any() and (v.codes["kind"][held] == "code").all()
    assert np.array_equal(held, heldout_mask(v.codes["code_id"], v.codes["kind"], 0.1))  # deterministic
    tc = TrainConfig(batch_size=32, heldout_fraction=0.1)
    mc = MedTokConfig(**TINY)
    x = node_features(v, g, mc, emb)
    rows = np.flatnonzero(~held)
    seen = set()
    for step in range(10):
        xs, ei, ci, keys, _, _ = make_batch(g, x, rows, mc, tc, step)
        assert torch.equal(keys[:, 0], ci)  # column 0 of the attention keys = the centre itself
        # map centre features back to vocabulary rows (all rows are distinct)
        match = (xs[ci][:, None, :] == x[None, :, :]).all(-1)
        assert (match.sum(1) == 1).all()
        seen.update(match.float().argmax(1).tolist())
    assert not held[sorted(seen)].any() and len(seen) > 100
    tok = MedTokTokenizer.from_pretrained(trained, vocab=v, graph=g, text_embeddings=emb)
    code = v.codes["code_id"][held].iloc[0]
    enc = tok.encode([code])
    assert enc.missing == [None] and enc.ids.shape == (1, 4, 3)


def test_missing_modalities(toy, trained):
    v, g, emb = toy
    df = v.codes.copy()
    df.loc[df["code_id"] == "ICD10CM:A00.1", "description"] = ""
    extra = dict(code_id="ICD10CM:Z00.0", system="ICD10CM", code="Z00.0", description="Isolated code",
                 parents=[], synonyms=[], kind="code")
    df = pd.concat([df, pd.DataFrame([extra])], ignore_index=True)
    v2 = Vocabulary(df)
    g2 = CodeGraph(len(df), g.src, g.dst, g.etype, g.edge_type_names)
    emb2 = np.vstack([emb, emb[:1]])
    tok = MedTokTokenizer.from_pretrained(trained, vocab=v2, graph=g2, text_embeddings=emb2)
    enc = tok.encode(["A00.1", "Z00.0", "A00.2"])
    assert enc.missing == ["text", "graph", None]
    assert enc.ids.shape == (3, 4, 3) and torch.isfinite(enc.vectors).all()
    # the text-less code is described by its neighbours, not left at zero
    row = v2.index_of("A00.1")
    assert tok.x[row].norm() == pytest.approx(1.0, abs=1e-5)


def test_impute_missing_text_uses_neighbours():
    emb = np.array([[1.0, 0], [0, 1.0], [5.0, 5.0]], dtype=np.float32)
    out = impute_missing_text(emb, np.array([True, True, False]), np.array([0, 1]), np.array([2, 2]))
    assert np.allclose(out[2], [1 / np.sqrt(2), 1 / np.sqrt(2)]) and np.allclose(out[:2], emb[:2])


def test_neighbor_table_caps_and_dedupes():
    src = np.array([0, 0, 0, 0, 1])
    dst = np.array([1, 1, 2, 3, 2])
    s, d = np.concatenate([src, dst]), np.concatenate([dst, src])
    t = neighbor_table(s, d, 4, cap=5)
    assert t[0, 0] == 0 and sorted(t[0, 1:4]) == [1, 2, 3] and (t[0, 4:] == -1).all()
    assert sorted(t[1, 1:3]) == [0, 2] and (t[1, 3:] == -1).all()
    capped = neighbor_table(s, d, 4, cap=2)
    assert capped.shape == (4, 3) and len(set(capped[0, 1:])) == 2 and set(capped[0, 1:]) <= {1, 2, 3}


@pytest.mark.parametrize("kind", ["gcn", "gat"])
def test_other_graph_encoders_run(toy, kind, tmp_path):
    v, g, emb = toy
    tc = TrainConfig(out_dir=str(tmp_path / kind), steps=2, batch_size=16, save_every=100)
    train(tc, MedTokConfig(**{**TINY, "graph_encoder": kind}), vocab=v, graph=g, text_embeddings=emb, progress=False)
    tok = MedTokTokenizer.from_pretrained(tmp_path / kind, vocab=v, graph=g, text_embeddings=emb)
    assert tok.encode(["A00.1"]).ids.shape == (1, 4, 3)


def test_subset_vocabulary_keeps_only_chosen_systems(toy):
    v, g, _ = toy
    v9, g9 = subset_vocabulary(v, g, ["ICD9CM"])
    assert set(v9.codes["system"]) == {"ICD9CM"} and len(v9) == (v.codes["system"] == "ICD9CM").sum()
    # only is_a edges survive (GEM edges lead to ICD10CM), all inside the subset
    assert set(g9.to_frame()["type"]) == {"is_a"} and g9.num_edges == (v9.codes["parents"].map(len)).sum()
    child, parent = g9.src[0], g9.dst[0]
    assert v9.codes["code_id"][parent] in v9.codes["parents"][child]


def test_token_table_is_cached_beside_checkpoint(toy, trained, tmp_path):
    v, g, emb = toy
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb)
    first = tok.encode(["A00.1", "100.2"])
    assert (ck / "token_table.npz").exists()
    tok2 = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb)
    tok2.model.tokenize_graph = None  # a cache hit must not recompute
    again = tok2.encode(["A00.1", "100.2"])
    assert torch.equal(first.ids, again.ids) and torch.allclose(first.vectors, again.vectors)
    # a changed vocabulary (here one description) does not reuse the stale table
    df = v.codes.copy()
    df.loc[0, "description"] = "something else"
    tok3 = MedTokTokenizer.from_pretrained(ck, vocab=Vocabulary(df), graph=g, text_embeddings=emb)
    assert tok3._table_key != tok2._table_key
    calls = []
    orig = tok3.model.tokenize_graph
    tok3.model.tokenize_graph = lambda *a, **k: calls.append(1) or orig(*a, **k)
    tok3.encode(["A00.1"])
    assert calls == [1]


@pytest.mark.parametrize("change", ["graph", "features"])
def test_token_table_not_reused_after_a_graph_or_feature_change(toy, trained, tmp_path, change):
    """The cache key covers the graph and the node features: a changed one recomputes the table."""
    v, g, emb = toy
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb).encode(["A00.1"])  # writes the table
    assert (ck / "token_table.npz").exists()
    if change == "graph":  # drop every GEM edge: same codes, same descriptions, different neighbourhoods
        keep = np.isin(np.array(g.edge_type_names)[g.etype], ["is_a"])
        g2, emb2 = CodeGraph(g.num_nodes, g.src[keep], g.dst[keep], g.etype[keep], g.edge_type_names), emb
    else:  # another text encoder: same codes and graph, other features
        rng = np.random.default_rng(1)
        g2, emb2 = g, (emb + 0.5 * rng.normal(size=emb.shape)).astype(np.float32)
    tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g2, text_embeddings=emb2)
    got = tok.encode_all(progress=False)
    fresh = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g2, text_embeddings=emb2)
    fresh._table_cache = None  # computed from scratch, no file involved
    want = fresh.encode_all(progress=False)
    assert torch.equal(got.ids, want.ids) and torch.equal(got.weights, want.weights)
    stale = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb)
    stale._table_cache = None
    assert not torch.equal(stale.encode_all(progress=False).ids, want.ids)  # the change matters


def test_cache_table_false_neither_reads_nor_writes_the_table(toy, trained, tmp_path):
    v, g, emb = toy
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    (ck / "token_table.npz").unlink(missing_ok=True)
    tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb, cache_table=False)
    enc = tok.encode_all(progress=False)
    assert not (ck / "token_table.npz").exists()
    (ck / "token_table.npz").write_bytes(b"not a table")  # would be reported and recomputed if it were read
    again = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb, cache_table=False)
    assert torch.equal(again.encode_all(progress=False).ids, enc.ids)
    assert (ck / "token_table.npz").read_bytes() == b"not a table"

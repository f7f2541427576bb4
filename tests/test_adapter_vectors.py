"""Code-vector sources against values computed independently of them: MedTok vectors are the
weighted sums of their tokens' codebook entries (recomputed here in numpy from the ids,
weights and codebook), the table returns the rows it was given, the random source is pinned
by golden numbers."""

import numpy as np
import pytest
import torch

from llm_adapter.vectors import MedTokVectors, RandomVectors, TableVectors
from medtok.model import MedTokConfig
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, train


@pytest.fixture(scope="module")
def medtok_source(tmp_path_factory):
    v, g = toy_vocabulary()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(v), 24)).astype(np.float32)
    out = tmp_path_factory.mktemp("medtok") / "run"
    train(TrainConfig(out_dir=str(out), steps=3, batch_size=16, save_every=100, heldout_fraction=0.1, device="cpu"),
          MedTokConfig(text_dim=24, gnn_hidden=16, embed_dim=16, codebook_size=30, top_k=2, attn_heads=2,
                       max_neighbors=4), vocab=v, graph=g, text_embeddings=emb, progress=False)
    tok = MedTokTokenizer.from_pretrained(out, vocab=v, graph=g, text_embeddings=emb, progress=False)
    return MedTokVectors(tok, identity=str(out.resolve())), tok, v


def test_medtok_vectors_are_weighted_codebook_entries(medtok_source):
    src, tok, v = medtok_source
    codes = ["ICD10CM:A00.1", "ICD9CM:100.1", "ICD10CM:B02.3"]
    vec = src.vectors(codes).numpy()
    assert vec.shape == (3, 4, 16) and (src.num_groups, src.dim) == (4, 16) and vec.dtype == np.float32
    enc = tok.encode(codes)
    ids, w = enc.ids.numpy(), enc.weights.numpy()
    book = tok.codebook().numpy()
    assert ids.shape == (3, 4, 2) and np.allclose(w.sum(-1), 1.0, atol=1e-5)  # K=2 weights per group
    expected = np.einsum("ngk,ngkd->ngd", w, book[ids])
    np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-6)
    # rows belong to their codes: the same code alone gives its row, another code another row
    np.testing.assert_array_equal(src.vectors([codes[1]]).numpy()[0], vec[1])
    assert not np.allclose(vec[0], vec[2])
    assert src.known("ICD10CM:A00.1") and not src.known("ICD10CM:ZZZ")
    table = TableVectors.from_source(src, codes + ["ICD10CM:ZZZ"])  # unknown codes are left out
    assert table.code_ids == sorted(codes) and table.name == "medtok" and table.identity == src.identity
    np.testing.assert_array_equal(table.vectors(codes).numpy(), vec)


def test_table_returns_given_rows_and_rejects_unknown_codes():
    t = TableVectors(["A", "B"], np.arange(12, dtype=np.float32).reshape(2, 2, 3), name="minilm", identity="x")
    assert torch.equal(t.vectors(["B", "A"]), torch.tensor([[[6.0, 7, 8], [9, 10, 11]], [[0, 1, 2], [3, 4, 5]]]))
    assert t.vectors(["A"]).device.type == "cpu"
    with pytest.raises(KeyError, match="not in the vector table"):
        t.vectors(["C"])
    with pytest.raises(ValueError, match="must be"):
        TableVectors(["A"], np.zeros((1, 3)))
    other = TableVectors(["A", "B"], np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 1)
    assert len(t.fingerprint()) == 64 and t.fingerprint() != other.fingerprint()


def test_random_vectors_golden_values():
    a = RandomVectors(4, 8, seed=0)
    v = a.vectors(["X", "Y"])
    # sha256("0:X") -> numpy default_rng -> standard normal [4, 8]; pinned so the control arm stays the same
    np.testing.assert_allclose(v[0, 0, :3].numpy(), [-0.464771, -0.054079, -0.510833], atol=1e-6)
    np.testing.assert_allclose(v[1, 3, -2:].numpy(), [-0.566798, 1.169304], atol=1e-6)
    assert torch.equal(a.vectors(["Y"])[0], v[1])  # per code, whatever the batch
    assert not torch.equal(RandomVectors(4, 8, seed=1).vectors(["X"])[0], v[0])
    assert a.vectors([]).shape == (0, 4, 8)

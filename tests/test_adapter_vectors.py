"""Code-vector sources: a (tiny, toy-trained) MedTok tokenizer feeding the prefix, the
precomputed table, and the deterministic random source."""

import numpy as np
import pytest
import torch

from llm_adapter.vectors import MedTokVectors, RandomVectors, TableVectors


@pytest.fixture(scope="module")
def medtok_source(tmp_path_factory):
    from medtok.toy import toy_vocabulary
    from medtok.model import MedTokConfig
    from medtok.tokenizer import MedTokTokenizer
    from medtok.train import TrainConfig, train

    v, g = toy_vocabulary()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(v), 24)).astype(np.float32)
    out = tmp_path_factory.mktemp("medtok") / "run"
    train(TrainConfig(out_dir=str(out), steps=3, batch_size=16, save_every=100, heldout_fraction=0.1),
          MedTokConfig(text_dim=24, gnn_hidden=16, embed_dim=16, codebook_size=30, top_k=2, attn_heads=2,
                       max_neighbors=4), vocab=v, graph=g, text_embeddings=emb, progress=False)
    tok = MedTokTokenizer.from_pretrained(out, vocab=v, graph=g, text_embeddings=emb, progress=False)
    return MedTokVectors(tok, identity=str(out.resolve())), tok, v


def test_medtok_vectors_are_the_tokenizers_quantized_vectors(medtok_source):
    src, tok, v = medtok_source
    codes = ["ICD10CM:A00.1", "ICD9CM:100.1", "ICD10CM:B02.3"]
    vec = src.vectors(codes)
    assert vec.shape == (3, 4, 16) and (src.num_groups, src.dim) == (4, 16)
    assert torch.equal(vec, tok.encode(codes).vectors.float())
    assert src.known("ICD10CM:A00.1") and not src.known("ICD10CM:ZZZ")
    table = TableVectors.from_source(src, codes + ["ICD10CM:ZZZ"])  # unknown codes are left out
    assert table.code_ids == sorted(codes) and table.name == "medtok" and table.identity == src.identity
    assert torch.equal(table.vectors(codes), vec)


def test_table_save_load_and_missing(tmp_path):
    t = TableVectors(["A", "B"], np.arange(12, dtype=np.float32).reshape(2, 2, 3), name="minilm", identity="x")
    t2 = TableVectors.load(t.save(tmp_path / "t.npz"))
    assert t2.code_ids == ["A", "B"] and t2.name == "minilm" and t2.identity == "x"
    assert torch.equal(t2.vectors(["B"]), torch.tensor([[[6.0, 7, 8], [9, 10, 11]]]))
    with pytest.raises(KeyError, match="not in the vector table"):
        t.vectors(["C"])


def test_random_vectors_deterministic_per_code():
    a, b = RandomVectors(4, 8, seed=0), RandomVectors(4, 8, seed=1)
    assert torch.equal(a.vectors(["X", "Y"])[0], a.vectors(["X"])[0])
    assert not torch.equal(a.vectors(["X"]), b.vectors(["X"]))
    assert not torch.equal(a.vectors(["X"]), a.vectors(["Y"]))

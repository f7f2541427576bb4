"""The vectorised k-hop batch sampler against the per-centre loop (`CodeGraph.subgraph_batch`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medtok.graph.graph import CodeGraph
from medtok.toy import toy_vocabulary


@pytest.fixture(scope="module")
def toy_graph():
    return toy_vocabulary()[1]


@pytest.mark.parametrize("hops", [1, 2, 3])
@pytest.mark.parametrize("cap", [1, 3, 6, 50])
def test_same_neighbourhoods_as_the_loop_without_subsampling_randomness(toy_graph, hops, cap):
    centers = np.random.default_rng(hops * 100 + cap).choice(toy_graph.num_nodes, 48)
    a = toy_graph.subgraph_batch(centers, hops, cap, None)
    b = toy_graph.subgraph_batch_vectorized(centers, hops, cap, None)
    for name in ("n_id", "edge_index", "edge_type", "ptr", "center_index", "batch"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _star_plus_chain(deg: int = 10) -> CodeGraph:
    # node 0 has `deg` neighbours 1..deg; neighbour i also links to deg + i (a second hop)
    src = list(range(1, deg + 1)) + list(range(1, deg + 1))
    dst = [0] * deg + [deg + i for i in range(1, deg + 1)]
    e = pd.DataFrame({"src": src, "dst": dst, "type": ["is_a"] * (2 * deg)})
    return CodeGraph.from_frame(2 * deg + 1, e)


def test_subsampled_neighbourhoods_have_the_same_distribution():
    """A centre with 10 neighbours and cap 3: every neighbour is kept with probability 3/10 in both
    samplers, and its own next hop comes with it; the same invariants hold for every draw."""
    g = _star_plus_chain(10)
    trials, cap = 250, 3
    counts = {"loop": np.zeros(g.num_nodes), "vectorized": np.zeros(g.num_nodes)}
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(1)
    for _ in range(trials):
        centers = np.zeros(4, dtype=np.int64)
        a = g.subgraph_batch(centers, 2, cap, rng_a)
        b = g.subgraph_batch_vectorized(centers, 2, cap, rng_b)
        for name, batch in (("loop", a), ("vectorized", b)):
            ptr = batch.ptr.numpy()
            for i in range(len(centers)):
                nodes = batch.n_id.numpy()[ptr[i]:ptr[i + 1]]
                assert nodes[0] == 0 and len(nodes) == 1 + 2 * cap and len(set(nodes)) == len(nodes)
                hop1 = nodes[1:1 + cap]
                assert set(nodes[1 + cap:]) == {10 + h for h in hop1}  # each kept neighbour brings its leaf
                counts[name][nodes] += 1
            assert batch.edge_index.shape[1] == len(centers) * 2 * 2 * cap
    n = trials * 4
    for name, c in counts.items():
        p = c[1:11] / n
        assert np.allclose(p, cap / 10, atol=0.04), (name, p)
    # the two empirical inclusion frequencies agree (within sampling error)
    assert np.abs(counts["loop"][1:11] - counts["vectorized"][1:11]).max() / n < 0.05


def test_a_training_step_runs_with_the_vectorized_sampler(tmp_path):
    from medtok.model import MedTokConfig
    from medtok.train import TrainConfig, train

    v, g = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)
    tiny = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
    out = train(TrainConfig(out_dir=str(tmp_path), steps=3, batch_size=16, sampler="vectorized", device="cpu",
                            save_every=100), MedTokConfig(**tiny), vocab=v, graph=g, text_embeddings=emb, progress=False)
    assert (out / "model.safetensors").exists()
    assert TrainConfig.load_saved(out / "train_config.json").sampler == "vectorized"

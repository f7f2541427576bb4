"""The intrinsic MedTok table with baselines (issue 13): `run_intrinsic(IntrinsicConfig)`.

Rows, every one scored by `medtok.evaluate.evaluate_tokens` on the same vocabulary, the same
pairs (siblings from the vocabulary's parents, GEM pairs from the *unedited* graph) and the
same held-out codes (the trained runs' hashed 5%, never a training centre / k-means point):

| row | tokens |
|---|---|
| medtok | MedTok trained with `steps` x `batch_size` (default recipe otherwise) |
| medtok_untrained | the same configuration at its initialisation (same seed: the trained run's step 0) |
| knn_text | K nearest k-means centroids of the MiniLM description embedding, per region (text only) |
| knn_text_graph | the same, graph groups from the neighbours' mean embedding (training-free text + graph) |
| text_only | MedTok without graph (paper Fig. 4 ablation) |
| no_restarts | MedTok without dead-entry restarts (not in the paper): codebook usage without them |
| no_gem_edges | MedTok trained and tokenized without the GEM edges (scored on the GEM pairs) |
| knn_text_graph_no_gem | knn_text_graph on the graph without those edges |
| medtok_N<n>, knn_text_N<n> | the same at another codebook size (does a larger codebook win by construction?) |

Each row's result is written to `out_root/results/<row>.json` as it finishes; a rerun skips
rows whose file exists (delete it to recompute) and reuses trained checkpoints, so an
interrupted run continues. `format_intrinsic_table` prints the markdown table.

Trains (through `medtok.ablations`), so inference code never imports this module.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig
from medtok.ablations import GEM_EDGES, split_change, train_summary, train_variant
from medtok.baselines import knn_token_table, neighbour_mean_features
from medtok.evaluate import evaluate, evaluate_tokens
from medtok.graph_edits import drop_edges
from medtok.loading import load_vocabulary
from medtok.model.config import GROUPS, MedTokConfig
from medtok.model.medtok import MedTokModel
from medtok.model.text_encoder import cached_text_embeddings
from medtok.splits import heldout_mask
from medtok.tokenizer import MedTokTokenizer
from medtok.train import TrainConfig

log = logging.getLogger(__name__)

# row -> (kind, TrainConfig / MedTokConfig changes); kinds: medtok (trained), untrained, knn_text, knn_text_graph
BASE_ROWS = {
    "medtok": ("medtok", {}),
    "medtok_untrained": ("untrained", {}),
    "knn_text": ("knn_text", {}),
    "knn_text_graph": ("knn_text_graph", {}),
    "text_only": ("medtok", {"modalities": "text"}),
    "no_restarts": ("medtok", {"dead_restarts": False}),
    "no_gem_edges": ("medtok", {"drop_edge_types": GEM_EDGES}),
    "knn_text_graph_no_gem": ("knn_text_graph", {"drop_edge_types": GEM_EDGES}),
}


@dataclass
class IntrinsicConfig(JsonConfig):
    out_root: str = "runs/medtok_intrinsic"
    vocab_dir: str | None = None
    systems: list | None = None        # None = the whole vocabulary (as README section 2)
    steps: int = 300                   # MedTok training steps of every trained row (the CPU default recipe)
    batch_size: int = 256
    seed: int = 0
    codebook_sizes: list = field(default_factory=lambda: [3000])  # extra N for medtok_N<n> / knn_text_N<n>
    rows: list | None = None           # subset of the rows (None = all), in table order
    n_pairs: int = 20000
    kmeans_iters: int = 20
    kmeans_sample: int = 50000         # rows each k-means is fitted on (a seeded sample of the fitting rows)
    neighbour_hops: int = 2
    model: dict = field(default_factory=dict)  # MedTokConfig overrides for every row (default: the CPU default model)
    train: dict = field(default_factory=dict)  # further TrainConfig overrides for every trained row

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2 or self.n_pairs < 1 or self.kmeans_iters < 1:
            raise ValueError("steps >= 1, batch_size >= 2, n_pairs >= 1, kmeans_iters >= 1 required")
        unknown = set(self.rows or ()) - set(self.all_rows())
        if unknown:
            raise ValueError(f"unknown rows {sorted(unknown)}; known: {list(self.all_rows())}")

    def all_rows(self) -> dict:
        rows = dict(BASE_ROWS)
        for n in self.codebook_sizes:
            rows[f"medtok_N{n}"] = ("medtok", {"codebook_size": int(n)})
            rows[f"knn_text_N{n}"] = ("knn_text", {"codebook_size": int(n)})
        return rows

    def selected_rows(self) -> dict:
        rows = self.all_rows()
        return {k: rows[k] for k in (self.rows or rows)}

    def train_config(self) -> TrainConfig:
        kw = dict(vocab_dir=self.vocab_dir, systems=self.systems, steps=self.steps, batch_size=self.batch_size,
                  seed=self.seed, save_every=10 ** 9)
        kw.update(self.train)
        return TrainConfig(**kw)

    def model_config(self) -> MedTokConfig:
        return MedTokConfig(**self.model)


def _knn_row(kind: str, change: dict, vocab, graph, text_emb: np.ndarray, held: np.ndarray, mcfg: MedTokConfig,
             cfg: IntrinsicConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    t_change, m_change = split_change(change)
    mc = replace(mcfg, **m_change)
    feats = {g: text_emb for g in GROUPS}
    edges = graph.num_edges
    if kind == "knn_text_graph":
        g2 = drop_edges(vocab, graph, t_change.get("drop_edge_types"))
        edges = g2.num_edges
        nb = neighbour_mean_features(text_emb, g2, cfg.neighbour_hops)
        feats["graph_specific"] = feats["shared_graph"] = nb
    ids, w = knn_token_table(feats, mc.regions(), mc.top_k, fit_rows=np.flatnonzero(~held), iters=cfg.kmeans_iters,
                             sample=cfg.kmeans_sample, seed=cfg.seed, temperature=mc.temperature)
    return ids, w, {"regions": mc.regions(), "top_k": mc.top_k, "graph_edges": int(edges)}


def run_intrinsic(cfg: IntrinsicConfig, progress: bool = True, vocab=None, graph=None,
                  text_embeddings: np.ndarray | None = None) -> tuple[dict, Path]:
    """Train what is missing, score every row -> ({row: result}, path of intrinsic.json).
    `vocab`/`graph`/`text_embeddings` replace the built vocabulary and the MiniLM embeddings (tests)."""
    root = Path(cfg.out_root)
    (root / "results").mkdir(parents=True, exist_ok=True)
    cfg.save(root / "intrinsic_config.json")
    tcfg, mcfg = cfg.train_config(), cfg.model_config()
    if vocab is None:
        vocab, graph = load_vocabulary(cfg.vocab_dir, cfg.systems)
    if text_embeddings is None:
        texts = [str(t or "") for t in vocab.codes["description"]]
        text_embeddings = cached_text_embeddings(texts, mcfg.text_encoder, progress=progress)
    text_emb = np.asarray(text_embeddings, dtype=np.float32)
    held = heldout_mask(vocab.codes["code_id"], vocab.codes["kind"], tcfg.heldout_fraction, tcfg.heldout_codes)
    results = {}
    for name, (kind, change) in cfg.selected_rows().items():
        path = root / "results" / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text())
            continue
        t0 = time.perf_counter()
        if kind in ("medtok", "untrained"):
            ckpt = train_variant(tcfg, mcfg, change, root / name, progress, vocab, graph, text_emb)
            tok = MedTokTokenizer.from_pretrained(ckpt, vocab=vocab, graph=graph, text_embeddings=text_emb,
                                                  progress=False)
            if kind == "untrained":  # the trained run's initialisation: same seed, same config
                torch.manual_seed(tcfg.seed)
                tok = tok.with_model(MedTokModel(tok.model.config))
            r = evaluate(tok, n_pairs=cfg.n_pairs, seed=cfg.seed, progress=False)
            r["graph_edges"] = int(tok.graph.num_edges)
            r["regions"], r["top_k"] = tok.model.config.regions(), tok.model.config.top_k
            if kind == "medtok":
                r["train"] = train_summary(ckpt)
            r["checkpoint"] = str(ckpt)
        else:
            ids, w, info = _knn_row(kind, change, vocab, graph, text_emb, held, mcfg, cfg)
            r = evaluate_tokens(ids, w, vocab, graph, held, info["regions"], n_pairs=cfg.n_pairs, seed=cfg.seed)
            r.update(info)
        r.update(row=name, kind=kind, change=change, seconds=time.perf_counter() - t0)
        atomic_write_text(path, json.dumps(r, indent=1, default=str))
        results[name] = r
        log.info("intrinsic row %s done in %.0f s", name, r["seconds"])
    out = root / "intrinsic.json"
    atomic_write_text(out, json.dumps(results, indent=1, default=str))
    return results, out


def format_intrinsic_table(results: dict) -> str:
    """Markdown: usage, then per pair set overlap / old ratio / kappa / AUC (ho = pairs with a held-out code)."""
    head = ("| row | N | graph edges | usage | siblings overlap | ratio | kappa | AUC | held-out sib. kappa "
            "| GEM overlap | ratio | kappa | AUC | held-out GEM kappa |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        n = sum(hi - lo for lo, hi in r["regions"].values())
        f = lambda k, m, p=3: f"{r[k][m]:.{p}f}" if m in r.get(k, {}) else "-"  # noqa: E731
        lines.append(f"| {name} | {n} | {r.get('graph_edges', '-'):,} | {r['codebook']['all']['usage']:.3f} "
                     f"| {f('siblings', 'overlap')} | {f('siblings', 'ratio', 1)} | {f('siblings', 'kappa')} "
                     f"| {f('siblings', 'auc')} | {f('siblings_heldout', 'kappa')} "
                     f"| {f('gem', 'overlap')} | {f('gem', 'ratio', 1)} | {f('gem', 'kappa')} | {f('gem', 'auc')} "
                     f"| {f('gem_heldout', 'kappa')} |")
    return "\n".join(lines)

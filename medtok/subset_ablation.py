"""The subset ablation (issue 21) as a project command: `run_subset_ablation(SubsetAblationConfig)`.

A stated subset of the vocabulary -- by default 5 ICD-10-CM chapters and the 5 matching ICD-9-CM
chapters (`DEFAULT_ROOTS`: infectious, blood, endocrine, circulatory, respiratory), every code
below them, the is_a edges among them and their GEM edges (`DEFAULT_EDGE_TYPES`) -- trained at a
small codebook (N = 480, batch 256, 600 steps by default) once per *cell*: one set of changes
(an ablation) and one seed. Every `eval_every` steps a cell records
* the intrinsic kappa over the whole subset (`medtok.evaluate.evaluate_tokens`: sibling and GEM
  pairs, all and held-out), the figures of the issue's audit, and
* the validation kappa (`medtok.validation`: a fixed sample of pairs from the validation split,
  disjoint from the held-out codes and from `val_exclude_codes`, the QA test splits), the number
  a default is chosen on.
Each cell's result goes to `out_root/cells/<cell>.json` when it finishes (a rerun skips it: a sweep
resumes cell by cell); a cell stopped midway resumes from its last checkpoint (`save_every`).

Ablation changes (`ABLATIONS`, one flag each in scripts/subset_ablation.py):
`nce_temperature` (both InfoNCE terms), `shared_nce_temperature`, `specific_nce_temperature`,
`nce_weight` (0 = no InfoNCE), `codebook_init` ("unit"), `restart_norm` ("codebook"),
`restart_reset_optimizer`, `temperature` (the Eq. 4 weight temperature), `kl_weight`; any other
TrainConfig / MedTokConfig field works too. `SWEEPS` lists the named grids.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medbase.atomic import atomic_write_text
from medbase.jsonconfig import JsonConfig
from medtok.ablations import split_change
from medtok.codes.vocabulary import Vocabulary
from medtok.evaluate import evaluate_tokens
from medtok.graph.graph import CodeGraph
from medtok.loading import load_vocabulary
from medtok.model.config import MedTokConfig
from medtok.model.features import neighbor_table, node_features
from medtok.model.text_encoder import cached_text_embeddings
from medtok.splits import heldout_mask
from medtok.train import METRICS_NAME, TrainConfig, latest_checkpoint, train
from medtok.validation import ValidationSet, eligible_mask, validation_mask

log = logging.getLogger(__name__)

DEFAULT_ROOTS = ["ICD10CM:CH01", "ICD10CM:CH03", "ICD10CM:CH04", "ICD10CM:CH09", "ICD10CM:CH10",
                 "ICD9CM:001-139", "ICD9CM:280-289", "ICD9CM:240-279", "ICD9CM:390-459", "ICD9CM:460-519"]
DEFAULT_EDGE_TYPES = ["is_a", "gem_icd9_icd10", "gem_icd10_icd9"]

# ablation name -> the change it makes (the value is the flag's argument where it takes one)
ABLATIONS = {
    "nce_temperature": "both InfoNCE temperatures (float)",
    "shared_nce_temperature": "the shared (cross-modal) InfoNCE temperature (float)",
    "specific_nce_temperature": "the specific (augmented-view) InfoNCE temperature (float)",
    "nce_weight": "scale of both InfoNCE terms; 0 = no InfoNCE",
    "codebook_init": "'unit': unit-norm initial codebook rows",
    "restart_norm": "'codebook': dead-entry restarts re-seated at the codebook's mean norm",
    "restart_reset_optimizer": "True: AdamW moments of re-seated rows reset",
    "temperature": "the Eq. 4 top-K weight temperature (float)",
    "kl_weight": "scale of the KL term (float)",
}
SWEEPS = {
    "temperature": [{"nce_temperature": t} for t in (0.07, 0.1, 0.2, 0.5, 1.0)] + [{"nce_weight": 0.0}],
    "split_temperature": [{"shared_nce_temperature": a, "specific_nce_temperature": b}
                          for a in (0.07, 0.5) for b in (0.07, 0.5)],
    "hygiene": [{}, {"codebook_init": "unit"}, {"restart_norm": "codebook"}, {"restart_reset_optimizer": True},
                {"codebook_init": "unit", "restart_reset_optimizer": True},
                {"temperature": 0.1}, {"temperature": 0.3}, {"kl_weight": 0.0}, {"kl_weight": 10.0}],
}


@dataclass
class SubsetAblationConfig(JsonConfig):
    out_root: str = "runs/medtok_subset"
    vocab_dir: str | None = None
    roots: list = field(default_factory=lambda: list(DEFAULT_ROOTS))  # every code below these (and them)
    edge_types: list = field(default_factory=lambda: list(DEFAULT_EDGE_TYPES))  # edges kept among them
    steps: int = 600
    batch_size: int = 256
    codebook_size: int = 480
    eval_every: int = 50
    save_every: int = 100
    seeds: list = field(default_factory=lambda: [0])
    n_pairs: int = 20000               # intrinsic pairs per set (all of them on a subset this size)
    val_fraction: float = 0.2          # of the eligible subset codes (a subset has few GEM pairs)
    val_pairs: int = 2000
    val_exclude_codes: list | None = None  # QA test codes (a file or a list): never validation codes
    model: dict = field(default_factory=dict)  # MedTokConfig overrides for every cell
    train: dict = field(default_factory=dict)  # TrainConfig overrides for every cell
    text_encoder_threads: str | None = None   # None | an int | "free" (see TextEmbedder)

    def __post_init__(self):
        if self.steps < 1 or self.eval_every < 1 or not self.seeds:
            raise ValueError("steps >= 1, eval_every >= 1 and at least one seed required")


def expand_change(change: dict) -> dict:
    """`nce_temperature` sets both InfoNCE temperatures; everything else is a config field."""
    change = dict(change)
    if "nce_temperature" in change:
        t = change.pop("nce_temperature")
        change.setdefault("shared_nce_temperature", t)
        change.setdefault("specific_nce_temperature", t)
    split_change(change)  # unknown keys are an error
    return change


def cell_name(change: dict, seed: int) -> str:
    parts = [f"{k}={change[k]}" for k in sorted(change)]
    return ("+".join(parts) if parts else "default") + f"-s{seed}"


def subset_vocabulary(vocab, graph, roots: list[str], edge_types: list[str] | None = None):
    """(Vocabulary, CodeGraph, rows) of `roots` and every code below them (by `parents`), with the
    edges among them whose type is in `edge_types` (None = all); rows = their rows in `vocab`."""
    codes = vocab.codes
    idx = vocab._index
    children: dict[int, list[int]] = {}
    for r, parents in enumerate(codes["parents"]):
        for p in parents:
            pr = idx.get(p)
            if pr is not None:
                children.setdefault(pr, []).append(r)
    missing = [c for c in roots if c not in idx]
    if missing:
        raise KeyError(f"subset roots not in the vocabulary: {missing}")
    keep = np.zeros(len(codes), dtype=bool)
    stack = [idx[c] for c in roots]
    while stack:
        r = stack.pop()
        if not keep[r]:
            keep[r] = True
            stack.extend(children.get(r, ()))
    rows = np.flatnonzero(keep)
    new = np.full(len(codes), -1, dtype=np.int64)
    new[rows] = np.arange(len(rows))
    names = np.array(graph.edge_type_names)
    m = keep[graph.src] & keep[graph.dst]
    if edge_types is not None:
        m &= np.isin(names[graph.etype], list(edge_types))
    sub_codes = codes.iloc[rows].reset_index(drop=True)
    sub_vocab = Vocabulary(sub_codes)
    frame = pd.DataFrame({"src": new[graph.src[m]], "dst": new[graph.dst[m]], "type": names[graph.etype[m]]})
    return sub_vocab, CodeGraph.from_frame(len(rows), frame), rows


class SubsetEvaluator:
    """model -> {"metric": validation kappa, ..., "intrinsic": whole-subset kappa}: one tokenization."""

    def __init__(self, vocab, graph, x, mcfg: MedTokConfig, tcfg: TrainConfig, n_pairs: int):
        self.vocab, self.graph, self.x, self.n_pairs, self.seed = vocab, graph, x, n_pairs, tcfg.seed
        self.regions = mcfg.regions()
        self.held = heldout_mask(vocab.codes["code_id"], vocab.codes["kind"], tcfg.heldout_fraction, tcfg.heldout_codes)
        val = validation_mask(vocab, tcfg.heldout_fraction, tcfg.heldout_codes, tcfg.val_exclude_codes,
                              tcfg.val_fraction, tcfg.val_seed)
        elig = eligible_mask(vocab, tcfg.heldout_fraction, tcfg.heldout_codes, tcfg.val_exclude_codes)
        self.vset = ValidationSet.build(vocab, graph, val, elig, tcfg.val_pairs, tcfg.seed)
        self.metric = tcfg.val_metric
        if mcfg.modalities == "text":
            self.ei = torch.empty(2, 0, dtype=torch.long, device="cpu")
        else:
            self.ei = torch.from_numpy(np.stack([np.concatenate([graph.src, graph.dst]),
                                                 np.concatenate([graph.dst, graph.src])]))
        e = self.ei.numpy()
        self.keys = torch.from_numpy(neighbor_table(e[0], e[1], len(vocab), mcfg.max_neighbors))

    def __call__(self, model) -> dict:
        ids, w, _ = model.tokenize_graph(self.x, self.ei, self.keys, progress=False)
        ids, w = ids.numpy(), w.numpy()
        r = evaluate_tokens(ids, w, self.vocab, self.graph, self.held, self.regions, n_pairs=self.n_pairs,
                            seed=self.seed)
        rows = self.vset.rows
        out = self.vset.score(ids[rows], w[rows], self.metric)
        out["intrinsic"] = {k: r[k].get("kappa") for k in ("siblings", "siblings_heldout", "gem", "gem_heldout")}
        out["intrinsic"]["usage"] = r["codebook"]["all"]["usage"]
        return out


def run_cell(cfg: SubsetAblationConfig, change: dict, seed: int, vocab, graph, text_emb: np.ndarray,
             progress: bool = False) -> dict:
    """Train one cell (or finish it from its last checkpoint) and write its result file."""
    root = Path(cfg.out_root)
    name = cell_name(change, seed)
    path = root / "cells" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    change = expand_change(change)
    t_change, m_change = split_change(change)
    out = root / "runs" / name
    tkw = dict(out_dir=str(out), steps=cfg.steps, batch_size=cfg.batch_size, seed=int(seed), save_every=cfg.save_every,
               val_every=cfg.eval_every, val_fraction=cfg.val_fraction, val_pairs=cfg.val_pairs,
               val_exclude_codes=cfg.val_exclude_codes, val_select_best=False, device="cpu")
    tkw.update(cfg.train)
    tkw.update(t_change)
    tcfg = TrainConfig(**tkw)
    mcfg = replace(MedTokConfig(**{"codebook_size": cfg.codebook_size, **cfg.model}), **m_change)
    x = node_features(vocab, graph, mcfg, text_emb, progress=False)
    evaluator = SubsetEvaluator(vocab, graph, x, mcfg, tcfg, cfg.n_pairs)
    t0 = time.perf_counter()
    resume = "latest" if latest_checkpoint(out) is not None else None
    train(tcfg, mcfg if resume is None else None, resume_from=resume, vocab=vocab, graph=graph,
          text_embeddings=text_emb, progress=progress, evaluator=evaluator)
    metrics = json.loads((out / METRICS_NAME).read_text())
    curve = metrics["validation"]["curve"]
    result = {"cell": name, "change": change, "seed": int(seed), "steps": cfg.steps, "batch_size": cfg.batch_size,
              "codebook_size": mcfg.codebook_size, "codes": len(vocab), "edges": int(graph.num_edges),
              "curve": curve, "final": curve[-1] if curve else None,
              "best_validation_step": metrics["validation"]["best_step"],
              "best_validation_metric": metrics["validation"]["best_metric"],
              "seconds": time.perf_counter() - t0, "threads": metrics["threads"]}
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    return result


def run_subset_ablation(cfg: SubsetAblationConfig, cells: list[dict], progress: bool = True, vocab=None, graph=None,
                        text_embeddings: np.ndarray | None = None) -> tuple[dict, Path]:
    """Every (cell, seed) in order, skipping finished ones -> ({cell name: result}, summary.md path).
    `vocab`/`graph`/`text_embeddings` replace the built vocabulary and MiniLM (tests: the toy)."""
    root = Path(cfg.out_root)
    (root / "cells").mkdir(parents=True, exist_ok=True)
    cfg.save(root / "subset_config.json")
    if vocab is None:
        vocab, graph = load_vocabulary(cfg.vocab_dir)
    sub_vocab, sub_graph, rows = subset_vocabulary(vocab, graph, cfg.roots, cfg.edge_types)
    if text_embeddings is None:
        texts = [str(t or "") for t in sub_vocab.codes["description"]]
        mc = MedTokConfig(**cfg.model)
        text_emb = cached_text_embeddings(texts, mc.text_encoder, progress=progress, threads=cfg.text_encoder_threads)
    else:
        text_emb = np.asarray(text_embeddings, dtype=np.float32)
        text_emb = text_emb[rows] if len(text_emb) == len(vocab) else text_emb
    log.info("subset: %d codes, %d edges %s", len(sub_vocab), sub_graph.num_edges, sub_graph.edge_counts())
    results = {}
    for change in cells:
        for seed in cfg.seeds:
            r = run_cell(cfg, change, seed, sub_vocab, sub_graph, text_emb, progress)
            results[r["cell"]] = r
    out = root / "summary.md"
    atomic_write_text(out, format_subset_table(results) + "\n")
    return results, out


def format_subset_table(results: dict) -> str:
    """Markdown: per cell, final intrinsic sibling / GEM kappa, validation kappa, best validation step."""
    head = ("| cell | steps | siblings kappa | GEM kappa | held-out sib. | held-out GEM | usage | val. sib. | val. GEM "
            "| best val. step | best val. metric |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, r in results.items():
        fin = r.get("final") or {}
        i = fin.get("intrinsic", {})
        lines.append(f"| {name} | {r['steps']} | {f(i.get('siblings'))} | {f(i.get('gem'))} "
                     f"| {f(i.get('siblings_heldout'))} | {f(i.get('gem_heldout'))} | {f(i.get('usage'))} "
                     f"| {f(fin.get('kappa_siblings'))} | {f(fin.get('kappa_gem'))} | {r['best_validation_step']} "
                     f"| {f(r['best_validation_metric'])} |")
    return "\n".join(lines)

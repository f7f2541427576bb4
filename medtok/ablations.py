"""Ablations (paper Fig. 4 and 5A): train and evaluate variants with the same budget.

`run_ablations(TrainConfig, MedTokConfig, out_root)` trains the full model, text-only,
graph-only, the model without dead-entry restarts, the model without the GEM edges in its
graph, and other codebook sizes (each once: an existing checkpoint is reused),
evaluates each and returns {variant: result}. A variant changes `MedTokConfig` and/or
`TrainConfig` fields (split by name). It trains, so it lives apart from `medtok.evaluate`
(inference never imports training).
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from medbase.atomic import atomic_write_text
from medtok.evaluate import GEM_TYPES, evaluate
from medtok.loading import load_vocabulary
from medtok.model.config import MedTokConfig
from medtok.model.medtok import WEIGHTS_NAME
from medtok.tokenizer import MedTokTokenizer
from medtok.train import TrainConfig, train

# every GEM edge (ICD-9-CM <-> ICD-10-CM both directions, ICD-9 px -> ICD-10-PCS): the pairs the
# GEM-overlap metric scores (`medtok.evaluate.GEM_TYPES`)
GEM_EDGES = [[t, None, None] for t in GEM_TYPES]

ABLATIONS = {
    "medtok": {},
    "text_only": {"modalities": "text"},
    "graph_only": {"modalities": "graph"},
    # dead-entry restarts are not in the paper: codebook usage without them
    "no_restarts": {"dead_restarts": False},
    # GEM partners are message-passing neighbours in the default graph: their overlap without that edge
    "no_gem_edges": {"drop_edge_types": GEM_EDGES},
}

_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
_MODEL_FIELDS = {f.name for f in fields(MedTokConfig)}


def split_change(change: dict) -> tuple[dict, dict]:
    """A variant's changes -> (TrainConfig changes, MedTokConfig changes); unknown keys are an error."""
    unknown = set(change) - _TRAIN_FIELDS - _MODEL_FIELDS
    if unknown:
        raise ValueError(f"ablation changes {sorted(unknown)} are neither TrainConfig nor MedTokConfig fields")
    return ({k: v for k, v in change.items() if k in _TRAIN_FIELDS},
            {k: v for k, v in change.items() if k in _MODEL_FIELDS and k not in _TRAIN_FIELDS})


def train_variant(tcfg: TrainConfig, mcfg: MedTokConfig, change: dict, out: str | Path, progress: bool = True,
                  vocab=None, graph=None, text_embeddings=None) -> Path:
    """Train `change` applied to (tcfg, mcfg) into `out`, unless a checkpoint is already there."""
    out = Path(out)
    if not (out / WEIGHTS_NAME).exists():
        t_change, m_change = split_change(change)
        train(replace(tcfg, out_dir=str(out), **t_change), replace(mcfg, **m_change), vocab=vocab, graph=graph,
              text_embeddings=text_embeddings, progress=progress)
    return out


def train_summary(out: str | Path) -> dict:
    """First/last total loss, steps, seconds, and last logged usage / restarts of a run's train_log.jsonl."""
    log = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return {"first_total": log[0]["total"], "last_total": log[-1]["total"], "steps": len(log),
            "seconds": log[-1]["elapsed_s"], "last_usage": log[-1]["usage"],
            "restarted": int(sum(r.get("restarted", 0) for r in log))}


def run_ablations(tcfg: TrainConfig, mcfg: MedTokConfig, out_root: str | Path, codebook_sizes=(3000,),
                  variants: dict | None = None, n_pairs: int = 20000, progress: bool = True, vocab=None, graph=None,
                  text_embeddings=None) -> dict:
    """Train and evaluate each variant with the same budget (steps, batch) as `tcfg`:
    the full model, text-only and graph-only (paper Fig. 4), no dead-entry restarts, no GEM edges,
    and other codebook sizes (Fig. 5A). Each is tokenized on its own graph (the checkpoint's
    recorded edit) and scored on the pairs of the unedited graph."""
    if vocab is None:
        vocab, graph = load_vocabulary(tcfg.vocab_dir, tcfg.systems)
    variants = dict(variants if variants is not None else ABLATIONS)
    for n in codebook_sizes:
        variants[f"N={n}"] = {"codebook_size": int(n)}
    results = {}
    for name, change in variants.items():
        out = train_variant(tcfg, mcfg, change, Path(out_root) / name.replace("=", ""), progress, vocab, graph,
                            text_embeddings)
        tok = MedTokTokenizer.from_pretrained(out, vocab=vocab, graph=graph, text_embeddings=text_embeddings,
                                              progress=False)
        r = evaluate(tok, n_pairs=n_pairs, progress=progress)
        r["train"] = train_summary(out)
        results[name] = r
    return results


def ablation_study(out_root: str | Path, steps: int = 150, batch_size: int = 256, codebook_sizes=(3000,),
                   systems: list[str] | None = None, vocab_dir: str | None = None, n_pairs: int = 20000,
                   out_json: str | Path | None = None) -> tuple[dict, Path]:
    """`scripts/eval_medtok.py --ablations`: the default model's variants at one budget -> (results, JSON path)."""
    tcfg = TrainConfig(vocab_dir=vocab_dir, steps=steps, batch_size=batch_size, systems=systems, save_every=10 ** 9)
    res = run_ablations(tcfg, MedTokConfig(), out_root, codebook_sizes=codebook_sizes, n_pairs=n_pairs)
    out = Path(out_json) if out_json else Path(out_root) / "ablations.json"
    atomic_write_text(out, json.dumps(res, indent=1))
    return res, out

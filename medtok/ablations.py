"""Ablations (paper Fig. 4 and 5A): train and evaluate variants with the same budget.

`run_ablations(TrainConfig, MedTokConfig, out_root)` trains the full model, text-only,
graph-only and other codebook sizes (each once: an existing checkpoint is reused), evaluates
each and returns {variant: result}. It trains, so it lives apart from `medtok.evaluate`
(inference never imports training).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from medtok.common.atomic import atomic_write_text
from medtok.evaluate import evaluate
from medtok.loading import load_vocabulary
from medtok.model.config import MedTokConfig
from medtok.model.features import node_features
from medtok.model.medtok import WEIGHTS_NAME, MedTokModel
from medtok.tokenizer import MedTokTokenizer
from medtok.train import TrainConfig, train

ABLATIONS = {
    "medtok": {},
    "text_only": {"modalities": "text"},
    "graph_only": {"modalities": "graph"},
}


def run_ablations(tcfg: TrainConfig, mcfg: MedTokConfig, out_root: str | Path, codebook_sizes=(3000,),
                  variants: dict | None = None, n_pairs: int = 20000, progress: bool = True, vocab=None, graph=None,
                  text_embeddings=None) -> dict:
    """Train and evaluate each variant with the same budget (steps, batch) as `tcfg`:
    the full model, text-only and graph-only (paper Fig. 4), and other codebook sizes (Fig. 5A)."""
    if vocab is None:
        vocab, graph = load_vocabulary(tcfg.vocab_dir, tcfg.systems)
    variants = dict(variants if variants is not None else ABLATIONS)
    for n in codebook_sizes:
        variants[f"N={n}"] = {"codebook_size": int(n)}
    results = {}
    for name, change in variants.items():
        out = Path(out_root) / name.replace("=", "")
        if not (out / WEIGHTS_NAME).exists():
            train(replace(tcfg, out_dir=str(out)), replace(mcfg, **change), vocab=vocab, graph=graph,
                  text_embeddings=text_embeddings, progress=progress)
        model = MedTokModel.from_pretrained(out)
        x = node_features(vocab, graph, model.config, text_embeddings, progress=False)
        tok = MedTokTokenizer(model, vocab, graph, x, heldout_fraction=tcfg.heldout_fraction)
        r = evaluate(tok, n_pairs=n_pairs, progress=progress)
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        r["train"] = {"first_total": log[0]["total"], "last_total": log[-1]["total"], "steps": len(log),
                      "seconds": log[-1]["elapsed_s"]}
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

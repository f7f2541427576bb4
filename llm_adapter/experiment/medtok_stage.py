"""The prefix experiment's MedTok stage: the MedTok an arm reads, per modalities x setting x
seed, trained as a visible stage under deterministic CPU kernels and cached by config hash.

Settings: "today" (only MedTok's own hashed 5% held out), "strict" (every vocabulary code of
the test split also held out: never a training centre, tokens from the inductive path),
"strict_edges" (relational task: strict + the edges the relational answers travel along
removed wherever they touch a test-split code). `cfg` is an `ExperimentConfig`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

from llm_adapter.experiment.relational import edges_to_drop, relational_config
from medbase.determinism import deterministic_on_cpu
from medtok.model.config import MedTokConfig
from medtok.train import TrainConfig, latest_checkpoint, train
from qa.datasets.relational.checks import split_vocabulary_codes


def medtok_configs(cfg, modalities: str, setting: str, seed: int, vocab, fcfg):

    held, drop = None, {}
    if setting in ("strict", "strict_edges"):
        oc = fcfg.ontology
        held = sorted(split_vocabulary_codes(vocab, "test", tuple(oc.get("split_fractions", (0.7, 0.15, 0.15))),
                                             oc.get("split_seed", 0)))
    if setting == "strict_edges":
        # every edge the relational answers travel along, where it touches a test-split code
        drop = {"drop_edge_types": edges_to_drop(relational_config(cfg.relational, fcfg, cfg.task).types), "drop_edges_touching": held}
    tcfg = TrainConfig(vocab_dir=fcfg.vocab_dir, systems=list(cfg.medtok_systems), steps=cfg.medtok_steps,
                       batch_size=cfg.medtok_batch_size, seed=seed, heldout_codes=held, save_every=100, **drop)
    mcfg = MedTokConfig(**{**cfg.medtok_model, "modalities": modalities})
    return tcfg, mcfg


def medtok_stage(cfg, modalities: str, setting: str, seed: int, vocab, fcfg,
                 medtok_inputs: dict | None = None) -> tuple[Path, dict]:
    """Train (or reuse) the MedTok an arm reads, under deterministic CPU kernels; its directory
    is named by a hash of its configs, so a changed recipe never reuses a stale checkpoint."""

    tcfg, mcfg = medtok_configs(cfg, modalities, setting, seed, vocab, fcfg)
    key = hashlib.sha256(json.dumps([tcfg.to_dict(), mcfg.to_dict()], sort_keys=True).encode()).hexdigest()[:12]
    out = cfg.medtok_root() / f"{mcfg.modalities}-{setting}-seed{seed}-{key}"
    # the name under the MedTok root, never an absolute path: result files must not carry the machine's paths
    info = {"dir": out.name, "modalities": mcfg.modalities, "setting": setting, "seed": seed, "steps": tcfg.steps,
            "heldout_codes": len(tcfg.heldout_codes or []), "config_hash": key}
    if tcfg.drop_edge_types:
        info["drop_edge_types"] = tcfg.drop_edge_types
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        print(f"  [medtok] reusing {out}", flush=True)
        info["train_s"] = None
        return out, info
    t0 = time.perf_counter()
    print(f"  [medtok] training {mcfg.modalities} MedTok ({setting}, seed {seed}, {tcfg.steps} steps, "
          f"{info['heldout_codes']} extra held-out codes) -> {out}", flush=True)
    inputs = medtok_inputs or {}
    with deterministic_on_cpu(None):
        train(replace(tcfg, out_dir=str(out)), mcfg, resume_from="latest" if latest_checkpoint(out) else None,
              progress=cfg.progress, **inputs)
    info["train_s"] = time.perf_counter() - t0
    print(f"  [medtok] done in {info['train_s']:.0f} s", flush=True)
    return out, info


__all__ = ["medtok_configs", "medtok_stage"]

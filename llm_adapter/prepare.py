"""The fine-tuning job's prerequisites, made as explicit stages (the job itself only reads them).

    prepare_vocabulary(cfg)     build (or reuse) the vocabulary + knowledge graph
    prepare_medtok(cfg)         train (or reuse) the MedTok of the QA set's code systems
    demo()                      `make demo`: those two stages, then the fine-tuning job

Each stage prints what it does, where it writes and how long it took; the training stages
show their own progress bars.
"""

from __future__ import annotations

import time
from pathlib import Path

from llm_adapter.data import vocab_dir_of
from llm_adapter.finetune import NO_PREFIX_ARMS, finetune
from llm_adapter.prerequisites import default_medtok_checkpoint
from llm_adapter.finetune_config import FinetuneConfig
from medbase.determinism import deterministic_on_cpu
from medtok.build import build_vocabulary, format_statistics
from medtok.train import TrainConfig, train


def _stage(i: int, n: int, text: str) -> float:
    print(f"\n[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str = "done") -> None:
    print(f"      {what} in {time.perf_counter() - t0:.0f} s", flush=True)


def prepare_vocabulary(cfg: FinetuneConfig, progress: bool = True) -> Path:
    """The vocabulary the job reads: the default one is built (or its cache reused) with the
    default sources; a directory given in cfg.vocab_dir that is already built is left as is."""
    d = vocab_dir_of(cfg)
    if cfg.vocab_dir is not None and (d / "codes.parquet").exists():
        print(f"      using the vocabulary at {d}", flush=True)
        return d
    _, _, stats = build_vocabulary(d, progress=progress)
    print(format_statistics(stats), flush=True)
    return d


def needs_medtok(cfg: FinetuneConfig) -> bool:
    return cfg.vector_source == "medtok" and any(a not in NO_PREFIX_ARMS for a in cfg.arms)


def prepare_medtok(cfg: FinetuneConfig, progress: bool = True) -> Path | None:
    """The MedTok checkpoint the prefix arm reads: cfg.medtok_checkpoint as given, or the default
    one trained on the QA set's systems for cfg.medtok_steps steps (reused once it exists; an
    interrupted training continues from its last intermediate checkpoint)."""
    if not needs_medtok(cfg):
        print("      not needed (no MedTok prefix arm)", flush=True)
        return None
    if cfg.medtok_checkpoint is not None:
        print(f"      using {cfg.medtok_checkpoint}", flush=True)
        return Path(cfg.medtok_checkpoint)
    ckpt = default_medtok_checkpoint(cfg)
    if (ckpt / "model.safetensors").exists() and (ckpt / "config.json").exists():
        print(f"      reusing {ckpt}", flush=True)
        return ckpt
    partial = sorted(ckpt.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    tcfg = TrainConfig(out_dir=str(ckpt), vocab_dir=cfg.vocab_dir, systems=list(cfg.ontology["systems"]),
                       steps=cfg.medtok_steps)
    # deterministic CPU kernels: with >= 2 threads MedTok training otherwise differs run to run
    with deterministic_on_cpu(None if tcfg.device == "auto" else tcfg.device):
        if partial:
            print(f"      continuing from {partial[-1]}", flush=True)
            train(tcfg, resume_from=partial[-1], progress=progress)
        else:
            print(f"      text embeddings of the descriptions (cached), then {cfg.medtok_steps} training steps",
                  flush=True)
            train(tcfg, progress=progress)
    return ckpt


def demo(cfg: FinetuneConfig | None = None, prepare_only: bool = False) -> dict | None:
    """`make demo`: vocabulary -> MedTok for the QA systems -> fine-tuning (both arms)."""
    cfg = cfg or FinetuneConfig()
    t_all = time.perf_counter()
    n = 2 if prepare_only else 3
    t0 = _stage(1, n, f"vocabulary and knowledge graph -> {vocab_dir_of(cfg)}")
    prepare_vocabulary(cfg, progress=cfg.progress)
    _done(t0)
    systems = ", ".join(cfg.ontology["systems"])
    t0 = _stage(2, n, f"MedTok tokenizer for the QA set's codes ({systems}) -> "
                      f"{cfg.medtok_checkpoint or default_medtok_checkpoint(cfg)}")
    prepare_medtok(cfg, progress=cfg.progress)
    _done(t0)
    results = None
    if not prepare_only:
        t0 = _stage(3, n, f"fine-tuning {' vs '.join(cfg.arms)} on the {cfg.dataset} QA set -> {cfg.output_dir}")
        results = finetune(cfg)
        _done(t0)
    print(f"demo wall time {time.perf_counter() - t_all:.0f} s", flush=True)
    return results

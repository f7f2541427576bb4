"""What the fine-tuning job reads and never makes: the MedTok checkpoint of the prefix arm
(a missing one is an error naming the command that makes it; `make demo` prepares it,
`llm_adapter.prepare`), the prefix arm's code vectors, and the accelerator for the device."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from llm_adapter.finetune_config import FinetuneConfig
from llm_adapter.vectors import ConstantVectors, DescriptionVectors, MedTokVectors, RandomVectors, TableVectors
from medbase.paths import cache_dir


def default_medtok_checkpoint(cfg: FinetuneConfig) -> Path:
    """The job's MedTok when none is given: the one trained on the QA set's code systems only
    (ICD-10-CM by default), data/cache/medtok_<systems> (made by `llm_adapter.prepare`)."""
    return cache_dir() / ("medtok_" + "_".join(s.lower() for s in cfg.ontology["systems"]))


def medtok_checkpoint_of(cfg: FinetuneConfig) -> Path:
    return Path(cfg.medtok_checkpoint) if cfg.medtok_checkpoint else default_medtok_checkpoint(cfg)


def missing_medtok_message(cfg: FinetuneConfig, ckpt: Path) -> str:
    """One line: where the checkpoint was looked for and the command that makes it."""
    systems = " ".join(cfg.ontology["systems"])
    vocab = f" --vocab {cfg.vocab_dir}" if cfg.vocab_dir else ""
    return (f"no MedTok checkpoint at {ckpt}; make one with: python scripts/train_medtok.py --out {ckpt} "
            f"--systems {systems} --steps {cfg.medtok_steps}{vocab}  (or `make demo`, which prepares it; "
            f"or set medtok_checkpoint=DIR / vector_source=minilm)")


def require_medtok_checkpoint(cfg: FinetuneConfig) -> Path:
    """The MedTok checkpoint the prefix arm reads; FileNotFoundError (one line, with the command
    that makes it) when it is not there."""
    ckpt = medtok_checkpoint_of(cfg)
    if not (ckpt / "config.json").exists() or not (ckpt / "model.safetensors").exists():
        raise FileNotFoundError(missing_medtok_message(cfg, ckpt))
    return ckpt



def make_vector_source(cfg: FinetuneConfig, vocab, needed_codes: list[str], source=None) -> TableVectors:
    """The prefix arm's code vectors, precomputed once into an in-memory table (from `source`
    when given, else from cfg.vector_source)."""
    if source is None and cfg.vector_source == "medtok":
        source = MedTokVectors.from_checkpoint(require_medtok_checkpoint(cfg), vocab_dir=cfg.vocab_dir)
    elif source is None and cfg.vector_source == "minilm":
        source = DescriptionVectors(vocab)
    elif source is None and cfg.vector_source == "constant":
        source = ConstantVectors(num_groups=4, dim=64, seed=cfg.seed)
    elif source is None:
        source = RandomVectors(num_groups=4, dim=64, seed=cfg.seed)
    return TableVectors.from_source(source, needed_codes)



def make_accelerator(cfg: FinetuneConfig) -> Accelerator:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no CUDA device")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])

"""The MedTok training job behind `scripts/train_medtok.py`: flags, the paper preset, resume.

    ap = argparse.ArgumentParser(); add_training_arguments(ap)
    train_from_args(ap.parse_args())        # -> checkpoint directory

One flag per `TrainConfig` / `MedTokConfig` field (`--steps`, `--codebook-size`, `--device`, ...);
precedence: explicit flags > the resumed run's train_config.json > `--paper` > the defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import torch

from medtok.model.config import MedTokConfig
from medtok.train import TRAIN_CONFIG_NAME, TrainConfig, latest_checkpoint, train

# The paper's training budget: N = 12k, d = 64, 3,000 steps of a batch of 1,024 codes. The
# batch is global (the paper trains on 4 GPUs), so it is `global_batch_size`: each of the W
# processes of `accelerate launch` takes 1024 / W codes per step (1,024 on one device).
PAPER_PRESET = {"codebook_size": 12000, "embed_dim": 64, "global_batch_size": 1024, "steps": 3000}

_RUN_FIELDS = ("vocab_dir", "out_dir", "systems")   # own flags (--vocab, --out, --systems)
_LIST_FIELDS = {  # list-valued TrainConfig fields: flag help (code lists are read from a file)
    "heldout_codes": "file with one code id per line: never a training centre (on top of --heldout-fraction)",
    "drop_edge_types": "edges removed from the graph before training and tokenization: TYPE or "
                       "TYPE:SRC_SYSTEM:DST_SYSTEM ('*' = any), e.g. gem_icd9_icd10:ICD9CM:ICD10CM",
    "drop_edges_touching": "file of code ids: drop only the --drop-edge-types edges touching these codes",
    "val_exclude_codes": "file of code ids never used for validation (scripts/medtok_validation_codes.py writes "
                         "the union of the QA test splits)",
}
_OWN_FLAG_FIELDS = ("threads",)  # TrainConfig fields set through another flag (--threads)
_NONE_DEFAULT_TYPES = {"global_batch_size": int, "text_encoder": str}


def _flag_type(f):
    if f.name in _NONE_DEFAULT_TYPES:
        return _NONE_DEFAULT_TYPES[f.name]
    if isinstance(f.default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    return type(f.default)


def add_training_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--vocab", dest="vocab_dir", default=None, help="vocabulary dir (default data/cache/vocab)")
    ap.add_argument("--out", dest="out_dir", default="runs/medtok")
    ap.add_argument("--resume", default=None,
                    help="checkpoint dir to resume from (its model config is used), or 'latest': the newest "
                         "checkpoint under --out that verifies")
    ap.add_argument("--paper", action="store_true", help="the paper's budget: " + str(PAPER_PRESET))
    ap.add_argument("--no-progress", action="store_true")
    for f in fields(TrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if f.name in _LIST_FIELDS:
            kind = {"nargs": "+", "metavar": "SPEC"} if f.name == "drop_edge_types" else {"metavar": "FILE"}
            ap.add_argument(flag, dest=f"t_{f.name}", default=None, help=_LIST_FIELDS[f.name], **kind)
        elif f.name not in _RUN_FIELDS and f.name not in _OWN_FLAG_FIELDS:
            ap.add_argument(flag, dest=f"t_{f.name}", type=_flag_type(f), default=None)
    for f in fields(MedTokConfig):
        if f.name not in ("extra", "region_fractions"):
            ap.add_argument(f"--{f.name.replace('_', '-')}", dest=f"m_{f.name}", type=_flag_type(f), default=None)
    ap.add_argument("--region-fractions", type=float, nargs=3, default=None)
    ap.add_argument("--nce-temperature", type=float, default=None,
                    help="both InfoNCE temperatures (--shared-nce-temperature / --specific-nce-temperature: one each)")
    ap.add_argument("--systems", nargs="+", default=None, help="restrict to these code systems, e.g. ICD10CM ICD9CM")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; 1 is much faster on a machine shared with other jobs")
    return ap


def training_configs(train_overrides: dict, model_overrides: dict, *, paper: bool = False,
                     resume: str | None = None, vocab_dir: str | None = None, out_dir: str = "runs/medtok",
                     systems: list[str] | None = None) -> tuple[TrainConfig, MedTokConfig | None]:
    """(TrainConfig, MedTokConfig) of a run; the model config is None when resuming (taken from the
    checkpoint). `resume="latest"` with no checkpoint under `out_dir` is a fresh run."""
    base = dict(PAPER_PRESET) if paper else {}
    ckpt = latest_checkpoint(out_dir) if resume == "latest" else Path(resume) if resume else None
    if ckpt is not None and (ckpt / TRAIN_CONFIG_NAME).exists():
        # continue with the interrupted run's settings unless overridden here
        base = TrainConfig.load_saved(ckpt / TRAIN_CONFIG_NAME).to_dict()
        base.pop("device")  # where to run is not a setting of the run: a GPU run may resume on a CPU
        vocab_dir = vocab_dir or base.get("vocab_dir")
        systems = systems or base.get("systems")
    tkw = {f.name: base[f.name] for f in fields(TrainConfig) if f.name in base and f.name not in _RUN_FIELDS}
    if "batch_size" in train_overrides and "global_batch_size" not in train_overrides:
        tkw["global_batch_size"] = None  # an explicit per-process batch replaces the preset's global one
    tkw.update(train_overrides)
    tcfg = TrainConfig(vocab_dir=vocab_dir, out_dir=out_dir, systems=systems, **tkw)
    if ckpt is not None:  # resuming: the model config comes from the checkpoint
        return tcfg, None
    mkw = {f.name: base[f.name] for f in fields(MedTokConfig) if f.name in base}
    mkw.update(model_overrides)
    return tcfg, MedTokConfig(**mkw)


def train_from_args(a: argparse.Namespace) -> Path:
    """Run the training job described by parsed `add_training_arguments` flags; returns the checkpoint dir."""
    if a.threads:
        torch.set_num_threads(a.threads)
    t_over = {k[2:]: v for k, v in vars(a).items() if k.startswith("t_") and v is not None}
    m_over = {k[2:]: v for k, v in vars(a).items() if k.startswith("m_") and v is not None}
    if a.region_fractions:
        m_over["region_fractions"] = tuple(a.region_fractions)
    if a.nce_temperature is not None:
        m_over.setdefault("shared_nce_temperature", a.nce_temperature)
        m_over.setdefault("specific_nce_temperature", a.nce_temperature)
    tcfg, mcfg = training_configs(t_over, m_over, paper=a.paper, resume=a.resume, vocab_dir=a.vocab_dir,
                                  out_dir=a.out_dir, systems=a.systems)
    return train(tcfg, mcfg, resume_from=a.resume, progress=not a.no_progress)

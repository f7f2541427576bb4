"""MedTok training checkpoints on disk: what a checkpoint holds, writing one (every file
atomically, the manifest last), finding the newest that verifies, and reading back the state a
resumed run continues from (model config, weights, optimizer state, step, validation record).
Never unpickles objects (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from safetensors.torch import load_file, save_file

from medbase.atomic import atomic_path, atomic_write_text
from medtok.checkpoint import (CheckpointError, load_tensors_pt, read_manifest, save_tensors_pt, verify,
                               write_manifest)
from medtok.model.config import MedTokConfig
from medtok.model.medtok import CONFIG_NAME, WEIGHTS_NAME, MedTokModel

log = logging.getLogger(__name__)

TRAIN_CONFIG_NAME = "train_config.json"
STATE_NAME = "training_state.json"      # progress (step) as JSON
OPTIMIZER_NAME = "optimizer.pt"         # optimizer state: tensors and numbers only (weights_only=True)
LEGACY_STATE_NAME = "training_state.pt"  # older checkpoints: {"optimizer", "step"}, also read with weights_only=True
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, TRAIN_CONFIG_NAME, STATE_NAME, OPTIMIZER_NAME)
BEST_WEIGHTS_NAME = "best_model.safetensors"  # best-so-far validation weights (intermediate checkpoints)
LAST_WEIGHTS_NAME = "last_model.safetensors"  # final weights when model.safetensors holds the best step
VALIDATION_NAME = "validation.json"           # validation curve and best step so far
METRICS_NAME = "metrics.json"                 # run summary: time, steps/s, threads, validation curve


def _save_weights(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))


def save_checkpoint(model: MedTokModel, opt, step: int, tcfg, directory: Path,
                    validation: dict | None = None, best_state: dict | None = None, final: bool = False) -> None:
    """Every file atomically, then the manifest over all of them (written last); `tcfg` is the
    run's `medtok.train.TrainConfig`.

    With validation (`TrainConfig.val_every`): validation.json (curve, best step so far) and the
    best-so-far weights beside the checkpoint (best_model.safetensors), so a resumed run keeps
    both; in the final checkpoint with `val_select_best`, model.safetensors holds the best step's
    weights and last_model.safetensors the last step's (what a resume continues from)."""
    directory = Path(directory)
    files = list(CHECKPOINT_FILES)
    select = final and validation is not None and best_state is not None and tcfg.val_select_best
    if select:
        directory.mkdir(parents=True, exist_ok=True)
        model.config.save(directory / CONFIG_NAME)
        _save_weights(best_state, directory / WEIGHTS_NAME)
        _save_weights(model.state_dict(), directory / LAST_WEIGHTS_NAME)
        files.append(LAST_WEIGHTS_NAME)
    else:
        model.save_pretrained(directory)
        (directory / LAST_WEIGHTS_NAME).unlink(missing_ok=True)
    tcfg.save(directory / TRAIN_CONFIG_NAME)
    save_tensors_pt(opt.state_dict(), directory / OPTIMIZER_NAME)
    atomic_write_text(directory / STATE_NAME, json.dumps({"step": int(step)}) + "\n")
    if validation is not None:
        atomic_write_text(directory / VALIDATION_NAME, json.dumps(validation, indent=1) + "\n")
        files.append(VALIDATION_NAME)
        if best_state is not None:
            _save_weights(best_state, directory / BEST_WEIGHTS_NAME)
            files.append(BEST_WEIGHTS_NAME)
    write_manifest(directory, files, step=int(step))


def checkpoint_step(directory: str | Path) -> int | None:
    """The training step of a complete, undamaged checkpoint at `directory`; None otherwise."""
    directory = Path(directory)
    m = read_manifest(directory)
    if m is None or not set(CHECKPOINT_FILES) <= set(m["files"]) or verify(directory):
        return None
    try:
        return int(json.loads((directory / STATE_NAME).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint under `out_dir` (out_dir itself or checkpoint-<step>) that verifies;
    damaged or incomplete ones are skipped with a logged message."""
    out = Path(out_dir)
    steps = [p for p in out.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    best, best_step = None, -1
    for d in [out] + sorted(steps, key=lambda p: -int(p.name.split("-")[1])):
        if not d.is_dir() or not ((d / WEIGHTS_NAME).exists() or (d / "checkpoint.json").exists()):
            continue
        step = checkpoint_step(d)
        if step is None:
            log.warning("skipping checkpoint %s: %s", d, verify(d) or "incomplete (no training state)")
        elif step > best_step:
            best, best_step = d, step
    return best


def load_training_state(directory: str | Path) -> tuple[MedTokConfig, dict, dict, int]:
    """(model config, model weights, optimizer state, step) of a checkpoint; CheckpointError if it
    is incomplete or damaged. Never unpickles objects (weights_only=True)."""
    d = Path(directory)
    if (d / "checkpoint.json").exists():
        if checkpoint_step(d) is None:
            raise CheckpointError(f"cannot resume from {d}: {verify(d) or 'incomplete (no training state)'}; "
                                  "resume_from='latest' picks the newest checkpoint that verifies")
        step = int(json.loads((d / STATE_NAME).read_text())["step"])
        opt_state = load_tensors_pt(d / OPTIMIZER_NAME)
    elif (d / LEGACY_STATE_NAME).exists():  # checkpoints written before the manifest existed
        try:
            legacy = load_tensors_pt(d / LEGACY_STATE_NAME)
            step, opt_state = int(legacy["step"]), legacy["optimizer"]
        except Exception as e:
            raise CheckpointError(f"cannot resume from {d}: {d / LEGACY_STATE_NAME} is unreadable ({e})") from e
    else:
        raise CheckpointError(f"cannot resume from {d}: no training state in it")
    try:
        mcfg = MedTokConfig.load_saved(d / CONFIG_NAME)
        # a final checkpoint that saved its best validation step keeps the last step's weights aside
        weights = load_file(d / (LAST_WEIGHTS_NAME if (d / LAST_WEIGHTS_NAME).exists() else WEIGHTS_NAME))
    except Exception as e:
        raise CheckpointError(f"cannot resume from {d}: {e}") from e
    return mcfg, weights, opt_state, step


def load_validation_state(directory: str | Path | None) -> tuple[dict | None, dict | None]:
    """(validation record, best-so-far weights) saved beside a checkpoint; (None, None) without validation."""
    if directory is None or not (Path(directory) / VALIDATION_NAME).exists():
        return None, None
    d = Path(directory)
    record = json.loads((d / VALIDATION_NAME).read_text())
    best = load_file(d / BEST_WEIGHTS_NAME) if (d / BEST_WEIGHTS_NAME).exists() else None
    return record, best


def _truncate_log(path: Path, last_step: int) -> None:
    """Keep the log records of steps <= last_step (a killed run may have logged past its checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut by the kill
            continue
        if rec.get("step", 0) <= last_step:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))


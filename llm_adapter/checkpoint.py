"""Resumable training state of the fine-tuning job, never read with an unrestricted unpickler.

A checkpoint is a directory `<ckpt_dir>/<stage>-step-<N>/` holding
    adapter.safetensors   every adapter parameter (LoRA + projector) by name: enough to rebuild
                          the model state, also for a later stage (the projector trained in
                          stage 1 is in the stage-2 checkpoints too)
    optimizer.pt          the optimizer's state_dict (tensors and numbers only), read back with
                          `torch.load(weights_only=True)`
    progress.json         step, the curve so far, whether the stage is complete, and the
                          fingerprint of the run (config + data) it belongs to
It is written into a hidden temporary directory that is renamed into place only when every
file is there, so a run killed at any moment leaves whole checkpoints or none. On load every
checkpoint is validated (files parse, parameter names and shapes match the model); a damaged
one is reported and the one before it is used. One of another run (different fingerprint)
is an error, never silently resumed.

accelerate's `save_state` is not used: it saves the whole model (the frozen base LM too, 0.5 GB
for SmolLM2 per checkpoint), writes in place, and reads custom states with weights_only=False.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medbase.atomic import atomic_write_text

ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
PROGRESS_FILE = "progress.json"


class CheckpointMismatch(ValueError):
    """The output directory holds checkpoints of a different run (other config or data)."""


def is_adapter_parameter(name: str) -> bool:
    return "lora_" in name or name.startswith("projector.")


def adapter_state(model) -> dict[str, torch.Tensor]:
    """Every LoRA and projector parameter of a PrefixLM, on the CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if is_adapter_parameter(n)}


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def checkpoints(ckpt_dir: str | Path, stage: str) -> list[Path]:
    """Finished checkpoint directories of `stage`, newest first (temporary ones are not listed)."""
    d = Path(ckpt_dir)
    found = [p for p in d.glob(f"{stage}-step-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(found, key=_step_of, reverse=True)


def save_checkpoint(ckpt_dir: str | Path, stage: str, step: int, model, optimizer, progress: dict,
                    keep: int = 2) -> Path:
    """Write `<stage>-step-<step>` atomically; keep the newest `keep` checkpoints of the stage."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"{stage}-step-{step}"
    for stale in ckpt_dir.glob(f".{stage}-step-*.tmp-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    tmp = ckpt_dir / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    save_file(adapter_state(model), str(tmp / ADAPTER_FILE))
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    atomic_write_text(tmp / PROGRESS_FILE, json.dumps({**progress, "step": step}))
    for f in tmp.iterdir():  # the rename below must not publish files still in the page cache only
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # a damaged checkpoint of the same step, being replaced
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(ckpt_dir, stage)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _read(path: Path, model) -> tuple[dict, dict[str, torch.Tensor], dict]:
    progress = json.loads((path / PROGRESS_FILE).read_text())
    weights = load_file(str(path / ADAPTER_FILE))
    want = {n: tuple(p.shape) for n, p in model.named_parameters() if is_adapter_parameter(n)}
    got = {n: tuple(t.shape) for n, t in weights.items()}
    if want != got:
        raise ValueError(f"adapter parameters differ from the model's ({len(got)} saved, {len(want)} expected)")
    opt_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    if not isinstance(opt_state, dict) or "state" not in opt_state or "param_groups" not in opt_state:
        raise ValueError("optimizer state is not an optimizer state_dict")
    return progress, weights, opt_state


def latest_checkpoint(ckpt_dir: str | Path, stage: str, fingerprint: str, model):
    """(path, progress, weights, optimizer state) of the newest valid checkpoint of `stage`, or None.

    A checkpoint that cannot be read is reported and skipped; one written for another
    fingerprint raises `CheckpointMismatch`."""
    for path in checkpoints(ckpt_dir, stage):
        try:
            progress, weights, opt_state = _read(path, model)
        except Exception as e:  # truncated / corrupted files: fall back to the previous checkpoint
            warnings.warn(f"skipping damaged checkpoint {path}: {type(e).__name__}: {e}", stacklevel=2)
            continue
        if progress.get("fingerprint") != fingerprint:
            raise CheckpointMismatch(
                f"{path} belongs to another run (different config or data); use another output_dir "
                f"or resume=false to start over")
        return path, progress, weights, opt_state
    return None


def load_adapter_weights(model, weights: dict[str, torch.Tensor]) -> None:
    """Copy saved adapter parameters into `model` in place (device and dtype of the model's)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)

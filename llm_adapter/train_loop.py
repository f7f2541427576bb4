"""The training loop of one stage of the fine-tuning job (`llm_adapter.finetune`).

A plain accelerate loop, not trl's SFTTrainer: with `inputs_embeds` built from a projector
SFTTrainer needs remove_unused_columns=False, a custom collator, an overridden compute_loss
and the projector attached to the model; the loop below is shorter than those overrides,
still runs under `accelerate launch` (DDP: the loss goes through the wrapped module's
forward so gradients are all-reduced; each process takes its own slice of every batch),
and keeps the train and eval inputs on the one `build_inputs` path.

Gradient accumulation is exact: each optimizer step's loss is the sum of the answer-token
cross-entropies of all its micro-batches on all processes divided by their total number of
answer tokens (known in advance from the shared data order), so batch 2 x accumulation 4,
batch 8 x 1 and 2 processes x 4 x 1 give the same update, whatever the answer lengths.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llm_adapter.checkpoint import latest_checkpoint, load_adapter_weights, save_checkpoint
from llm_adapter.model import PrefixLM


def lr_factor(stage, step: int) -> float:
    """Linear warm-up over `stage.warmup` steps, then constant (step counts from 0)."""
    if stage.warmup and step < stage.warmup:
        return (step + 1) / stage.warmup
    return 1.0


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one optimizer step on one process: dropout masks are a function of
    (seed, step, rank), so a resumed run replays exactly the steps it did not finish."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint32)[0])


def data_order(n_examples: int, steps: int, per_step: int, seed: int) -> np.ndarray:
    """Example indices of the whole stage: seeded epochs (permutations) back to back."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(steps * per_step / n_examples) + 1
    return np.concatenate([rng.permutation(n_examples) for _ in range(epochs)])


def micro_batch(order: np.ndarray, step: int, micro: int, rank: int, batch_size: int, grad_accum: int,
                num_processes: int) -> np.ndarray:
    """Indices of one micro-batch of one process. The micro-batches of all processes of a step
    are `order[step * per_step:(step + 1) * per_step]`, so the union does not depend on how a
    step is split over processes and accumulation."""
    per_step = batch_size * grad_accum * num_processes
    start = step * per_step + (micro * num_processes + rank) * batch_size
    return order[start:start + batch_size]


def train_stage(model: PrefixLM, examples: list[tuple], stage, *, accelerator, lora: bool, projector: bool,
                name: str, ckpt_dir: Path | None = None, checkpoint_every: int = 0, resume: bool = True,
                fingerprint: str = "", seed: int = 0, callback=None, progress: bool = True) -> list[dict]:
    """Optimise `model` on (codes, prompt_ids, answer_ids) examples for `stage.steps` steps.

    Returns the curve: one record per step (loss = mean over the step's answer tokens,
    grad_norm after accumulation, tokens, seconds). `callback(step)` runs on the main process
    after each step (learning-curve evaluation). Resumable: every `checkpoint_every` steps,
    and at the end of the stage, the adapter + optimizer state + curve go to
    `ckpt_dir/<name>-step-N` (`llm_adapter.checkpoint`); a rerun continues from the newest one."""
    if stage.steps == 0 or not examples:
        return []
    bad = [i for i, (_, p, a) in enumerate(examples) if not len(p) or not len(a)]
    if bad:
        raise ValueError(f"{len(bad)} {name} examples have an empty prompt or answer (e.g. #{bad[0]})")
    params = model.trainable_parameters(lora=lora, projector=projector)
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    wrapped, opt = accelerator.prepare(model, opt)
    P, rank = accelerator.num_processes, accelerator.process_index
    saving = ckpt_dir is not None and checkpoint_every > 0
    start, curve = 0, []
    if saving and resume:
        found = latest_checkpoint(ckpt_dir, name, fingerprint, model)
        if found is not None:
            path, meta, weights, opt_state = found
            load_adapter_weights(model, weights)
            opt.load_state_dict(opt_state)
            start, curve = int(meta["step"]), meta["curve"]
            if accelerator.is_main_process:
                tqdm.write(f"{name}: resumed from {path} (step {start} of {stage.steps})")
    per_step = stage.batch_size * stage.grad_accum * P
    order = data_order(len(examples), stage.steps, per_step, seed)
    wrapped.train()
    bar = tqdm(range(start, stage.steps), initial=start, total=stage.steps, desc=name,
               disable=not (progress and accelerator.is_main_process))
    t0 = time.perf_counter() - (curve[-1]["elapsed_s"] if curve else 0.0)
    for step in bar:
        torch.manual_seed(step_seed(seed, step, rank))
        everyone = order[step * per_step:(step + 1) * per_step]
        n_answer = sum(len(examples[i][2]) for i in everyone)  # the step's answer tokens, all processes
        loss_sum = torch.zeros((), dtype=torch.float32, device=accelerator.device)
        for micro in range(stage.grad_accum):
            idx = micro_batch(order, step, micro, rank, stage.batch_size, stage.grad_accum, P)
            codes, prompts, answers = zip(*[examples[i] for i in idx])
            # gradients are all-reduced once per step, on the last micro-batch
            sync = contextlib.nullcontext() if micro == stage.grad_accum - 1 else accelerator.no_sync(wrapped)
            with sync, autocast_of(model):
                loss = wrapped(code_lists=list(codes), prompt_ids=list(prompts), answer_ids=list(answers),
                               reduction="sum")
                if not loss.requires_grad:
                    # no trainable path this batch (projector-only stage, no question with a code):
                    # a zero-gradient step keeps every process in the same collective calls
                    loss = loss + sum(p.sum() for p in params) * 0.0
                # DDP averages gradients over processes: times P makes it the sum over all of them
                accelerator.backward(loss * (P / n_answer))
            loss_sum += loss.detach().float()
        for group in opt.param_groups:
            group["lr"] = stage.lr * lr_factor(stage, step)
        grad_norm = _grad_norm(params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if P > 1:
            loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        rec = {"step": step + 1, "loss": float(loss_sum) / n_answer, "grad_norm": grad_norm,
               "tokens": int(sum(len(examples[i][1]) + len(examples[i][2]) for i in everyone)),
               # soft prefix positions the step's examples fed the LM (0 for arms without a prefix)
               "prefix_tokens": int(sum(len(model.codes_for_prefix(examples[i][0])) for i in everyone)
                                    * (model.config.projector.tokens_per_code if model.config.uses_prefix else 0)),
               "examples": int(len(everyone)),
               "elapsed_s": time.perf_counter() - t0}
        curve.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if callback is not None and accelerator.is_main_process:
            extra = callback(step + 1)
            if extra:
                rec.update(extra)
        done = step + 1 == stage.steps
        if saving and ((step + 1) % checkpoint_every == 0 or done):
            if accelerator.is_main_process:
                save_checkpoint(ckpt_dir, name, step + 1, model, opt,
                                {"curve": curve, "complete": done, "fingerprint": fingerprint})
            accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()
    model.trainable_parameters(lora=False, projector=False)
    return curve


def _grad_norm(params) -> float:
    """L2 norm of the accumulated (and, under DDP, all-reduced) gradient of the step."""
    norms = [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0



def autocast_of(model):
    """bf16 autocast on the model's device when the model asks for it (`bf16_autocast`)."""
    enabled = getattr(model, "bf16_autocast", False)
    return torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=enabled)

"""The main job: LoRA fine-tuning on multiple-choice QA, without and with the code prefix.

    results = finetune(FinetuneConfig())        # what `scripts/finetune_qa.py` runs

Per arm, from the same base weights and seed: (prefix arm only) stage 1, projector-only
caption alignment over vocabulary codes absent from every evaluation question; stage 2,
LoRA (+ projector) on the QA training split with the answer-only loss; then the QA harness
(`qa.scoring.score_multiple_choice`, option-letter log-likelihood) and option-likelihood
scoring (`llm_adapter.option_scoring`) on the evaluation splits, the letter harness also
on a fixed subset of training questions (the learning curve). Writes per-arm
checkpoints, `results.json` (with `provenance`: versions, threads, seeds, fingerprints of
vocabulary, MedTok checkpoint and data), `curves.png`, and prints the table with the
paired difference.

The job reads its prerequisites and never makes them: a missing vocabulary or MedTok
checkpoint is an error naming the command that makes it (`make demo` runs those as stages
of their own, `llm_adapter.prepare`).

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
import copy
import dataclasses
import hashlib
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from llm_adapter.checkpoint import latest_checkpoint, load_adapter_weights, save_checkpoint
from llm_adapter.data import alignment_examples, load_questions, qa_examples, vocab_dir_of
from llm_adapter.determinism import deterministic_on_cpu
from llm_adapter.finetune_config import TEXT_ARM, FinetuneConfig, projector_for
from llm_adapter.model import PrefixLM, base_fingerprint, load_base_lm
from llm_adapter.option_scoring import score_by_option_likelihood
from llm_adapter.report import format_seed_summary, format_table, plot_curves, summarize, summarize_seeds
from llm_adapter.text_baseline import text_caption_examples
from llm_adapter.vectors import ConstantVectors, DescriptionVectors, MedTokVectors, RandomVectors, TableVectors
from medtok.common.atomic import atomic_write_text
from medtok.paths import cache_dir
from qa.report import (checkpoint_fingerprint, files_fingerprint, provenance, questions_fingerprint, save_results,
                       vocabulary_content_fingerprint, vocabulary_fingerprint)
from qa.scoring import score_multiple_choice

# config keys that do not change what a run computes: a run may resume with other values
NOT_FINGERPRINTED = ("output_dir", "progress", "resume", "checkpoint_every", "threads", "device")
# keys added after the default job's figures were made: left out of the fingerprint while they
# have their default value, so checkpoints of the default job stay resumable
ADDED_KEYS = {"text_align_lr": None, "text_caption": "question"}
NO_PREFIX_ARMS = ("lora", TEXT_ARM)
ARM_RESULT = "arm_result.json"


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
            with sync, _autocast(model):
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


def _autocast(model):
    enabled = getattr(model, "bf16_autocast", False)
    return torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=enabled)


def score(model: PrefixLM, tokenizer, questions, batch_size: int, progress: bool, scoring: str = "letter"):
    """The QA harness (letter log-likelihood), or option likelihood (llm_adapter.option_scoring)."""
    with _autocast(model):
        if scoring == "option":
            return score_by_option_likelihood(model, tokenizer, questions, batch_size=2 * batch_size, progress=progress)
        return score_multiple_choice(model, tokenizer, questions, batch_size=batch_size,
                                     input_builder=model.input_builder(), progress=progress)


def _record(r, label: str = "") -> dict:
    if label:
        print(f"[{label}] accuracy {r.correct.mean():.3f} (n={len(r.correct)})", flush=True)
    return {"ids": r.ids, "pred": r.pred.tolist(), "correct": r.correct.tolist(), "answer": r.answer.tolist()}


def run_arm(arm: str, cfg: FinetuneConfig, base_lm, tokenizer, vectors, data: dict, accelerator,
            fingerprint: str = "") -> dict:
    """Train and evaluate one arm; returns its curves, scores and checkpoint path.

    With checkpoints on (cfg.checkpoint_every > 0) a finished arm's record is kept beside its
    adapter and reused by a resumed run with the same fingerprint."""
    out_dir = Path(cfg.output_dir) / arm.replace("+", "_")
    arm_fp = hashlib.sha256(f"{fingerprint}/{arm}".encode()).hexdigest()
    saved = out_dir / ARM_RESULT
    if cfg.checkpoint_every and cfg.resume and saved.exists():
        try:
            rec = json.loads(saved.read_text())
        except json.JSONDecodeError:
            rec = None  # damaged: the arm is redone (its stage checkpoints make that quick)
        if rec is not None and rec.get("fingerprint") == arm_fp:
            if accelerator.is_main_process:
                print(f"{arm}: finished in an earlier run, reusing {saved}", flush=True)
            return rec["result"]
    prefix = arm not in NO_PREFIX_ARMS
    acfg = copy.deepcopy(cfg.adapter)
    if prefix:
        acfg.vector_source = cfg.vector_source
        acfg.medtok_checkpoint = vectors.identity if cfg.vector_source == "medtok" else None
        acfg.projector = projector_for(vectors.num_groups, vectors.dim, acfg.projector)
    else:
        acfg.vector_source = "none"
    lm = copy.deepcopy(base_lm)  # every arm starts from the same weights
    model = PrefixLM.build(acfg, lm=lm, tokenizer=tokenizer, vector_source=vectors if prefix else None, seed=cfg.seed)
    model.to(accelerator.device)
    model.bf16_autocast = cfg.bf16_autocast
    res = {"arm": arm, "adapter": acfg.to_dict(), "curves": {}}
    train_probe = data["train_probe"]
    common = dict(accelerator=accelerator, ckpt_dir=out_dir / "checkpoints", checkpoint_every=cfg.checkpoint_every,
                  resume=cfg.resume, fingerprint=arm_fp, progress=cfg.progress)

    def probe(step):
        if cfg.eval_every and step % cfg.eval_every == 0 and train_probe:
            acc = float(score(model, tokenizer, train_probe, cfg.eval_batch_size, False).correct.mean())
            model.train()
            return {"train_acc": acc}
        return None

    res["scores"] = {}
    if prefix and cfg.align.steps:
        res["curves"]["align"] = train_stage(model, data["align"], cfg.align, lora=False, projector=True,
                                             name="align", seed=cfg.seed, **common)
    if arm == TEXT_ARM and cfg.align.steps:
        # the text baseline's counterpart of the alignment stage: LoRA on the captions as text,
        # the align stage's steps and batch (same budget), LoRA's learning rate
        text_stage = dataclasses.replace(cfg.align, lr=cfg.text_align_lr or cfg.qa.lr)
        res["curves"]["align"] = train_stage(model, data["align_text"], text_stage, lora=True, projector=False,
                                             name="align_text", seed=cfg.seed, **common)
    if "option" in cfg.scorings and accelerator.is_main_process and cfg.score_base_before_qa:
        # before QA training: what the alignment alone gives (prefix arm) / the untrained LM (no prefix)
        res["scores"]["option@pre_qa"] = {s: _record(score(model, tokenizer, qs, cfg.eval_batch_size, cfg.progress,
                                                           "option"), f"{arm} option@pre_qa {s}")
                                          for s, qs in data["eval"].items() if qs}
    start_acc = None
    if accelerator.is_main_process and train_probe:
        start_acc = float(score(model, tokenizer, train_probe, cfg.eval_batch_size, cfg.progress).correct.mean())
    res["curves"]["qa"] = train_stage(model, data["qa"], cfg.qa, lora=True, projector=prefix and cfg.qa_train_projector,
                                      name="qa", seed=cfg.seed + 1, callback=probe, **common)
    res["train_acc_start"] = start_acc
    if accelerator.is_main_process:
        model.eval()
        for scoring in cfg.scorings:
            splits = ([("train_probe", train_probe)] if scoring == "letter" else []) + list(data["eval"].items())
            res["scores"][scoring] = {s: _record(score(model, tokenizer, qs, cfg.eval_batch_size, cfg.progress, scoring),
                                                 f"{arm} {scoring} {s}") for s, qs in splits if qs}
        model.save_pretrained(out_dir)
        res["checkpoint"] = str(out_dir)
        if cfg.checkpoint_every:
            atomic_write_text(saved, json.dumps({"fingerprint": arm_fp, "result": res}))
    accelerator.wait_for_everyone()
    return res


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
    if source is not None:
        pass
    elif cfg.vector_source == "medtok":
        source = MedTokVectors.from_checkpoint(require_medtok_checkpoint(cfg), vocab_dir=cfg.vocab_dir)
    elif cfg.vector_source == "minilm":
        source = DescriptionVectors(vocab)
    elif cfg.vector_source == "constant":
        source = ConstantVectors(num_groups=4, dim=64, seed=cfg.seed)
    else:
        source = RandomVectors(num_groups=4, dim=64, seed=cfg.seed)
    return TableVectors.from_source(source, needed_codes)


def _examples_digest(examples: list[tuple]) -> str:
    h = hashlib.sha256()
    for codes, prompt, answer in examples:
        h.update(json.dumps([list(codes), list(map(int, prompt)), list(map(int, answer))]).encode())
    return h.hexdigest()


def run_fingerprint(cfg: FinetuneConfig, data: dict, vectors, base_lm) -> str:
    """What a checkpoint belongs to: the config (less keys that do not change results), the
    training examples, the prefix vectors and the base LM."""
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in NOT_FINGERPRINTED and not (k in ADDED_KEYS and v == ADDED_KEYS[k])}
    parts = [json.dumps(d, sort_keys=True), _examples_digest(data["qa"]), _examples_digest(data.get("align", [])),
             vectors.fingerprint() if vectors is not None else "", json.dumps(base_fingerprint(base_lm))]
    if data.get("align_text"):
        parts.append(_examples_digest(data["align_text"]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _provenance(cfg: FinetuneConfig, accelerator, vocab, train_qs, eval_sets, vectors, vocab_from_files: bool) -> dict:
    uses_medtok = vectors is not None and cfg.vector_source == "medtok"
    medtok_seed = None
    if uses_medtok:
        tc = medtok_checkpoint_of(cfg) / "train_config.json"
        medtok_seed = json.loads(tc.read_text()).get("seed") if tc.exists() else None
    data_file = Path(cfg.data_path) if cfg.data_path else None
    return provenance(
        device=str(accelerator.device),
        seeds={"finetune": cfg.seed, "medtok_training": medtok_seed},
        fingerprints={
            "vocabulary": (vocabulary_fingerprint(vocab_dir_of(cfg)) if vocab_from_files
                           else "content:" + vocabulary_content_fingerprint(vocab)),
            "medtok_checkpoint": checkpoint_fingerprint(medtok_checkpoint_of(cfg)) if uses_medtok else None,
            "prefix_vectors": vectors.fingerprint() if vectors is not None else None,
            "data_file": files_fingerprint([data_file]) if data_file and data_file.is_file() else None,
            "train_questions": questions_fingerprint(train_qs),
            "eval_questions": {s: questions_fingerprint(qs) for s, qs in eval_sets.items()},
        })


def make_accelerator(cfg: FinetuneConfig) -> Accelerator:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch sees no CUDA device")
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def finetune(cfg: FinetuneConfig, *, lm=None, tokenizer=None, questions=None, vector_source=None) -> dict:
    """Run both arms, write checkpoints / results.json / curves.png, print the table; returns the results.

    lm, tokenizer: a ready base model (default: loaded from cfg.adapter.base_model);
    questions: (vocab, train questions, {split: eval questions}) instead of cfg.dataset;
    vector_source: a ready code-vector source (`llm_adapter.vectors`) of kind cfg.vector_source,
    e.g. a MedTok tokenizer already in memory, instead of loading cfg.medtok_checkpoint."""
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = make_accelerator(cfg)
    out = Path(cfg.output_dir)
    prefix_arm = any(a not in NO_PREFIX_ARMS for a in cfg.arms)
    if prefix_arm and cfg.vector_source == "medtok" and vector_source is None:
        require_medtok_checkpoint(cfg)  # before anything slow: a missing prerequisite fails at once
    if accelerator.is_main_process:
        cfg.save(out / "finetune_config.json")
    vocab, train_qs, eval_sets = questions if questions is not None else load_questions(cfg)
    torch.manual_seed(cfg.seed)
    base_lm, tokenizer = (lm, tokenizer) if lm is not None else load_base_lm(cfg.adapter)
    data = {"qa": qa_examples(tokenizer, train_qs, cfg.qa_target), "eval": eval_sets,
            "train_probe": train_qs[: cfg.train_eval_size]}
    vectors = None
    results = {"config": cfg.to_dict(), "arms": {}, "n_train": len(train_qs),
               "n_eval": {k: len(v) for k, v in eval_sets.items()}}
    if TEXT_ARM in cfg.arms and cfg.align.steps:
        excluded = {c for qs in eval_sets.values() for q in qs for c in q.codes + q.meta.get("option_codes", [])}
        data["align_text"] = text_caption_examples(tokenizer, vocab, cfg, excluded)
        results["text_align_codes"] = [ex[0][0] for ex in data["align_text"]]
    if prefix_arm:
        # captions never describe a code that an evaluation question asks about or offers
        excluded = {c for qs in eval_sets.values() for q in qs for c in q.codes + q.meta.get("option_codes", [])}
        align = alignment_examples(tokenizer, vocab, cfg, excluded) if cfg.align.steps else []
        needed = sorted({c for q in train_qs for c in q.codes} | {c for qs in eval_sets.values() for q in qs for c in q.codes}
                        | {ex[0][0] for ex in align})
        vectors = make_vector_source(cfg, vocab, needed, vector_source)
        data["align"] = align
        results["align_codes"] = sorted({ex[0][0] for ex in align})
    results["n_align"] = len(data.get("align", []))
    fingerprint = run_fingerprint(cfg, data, vectors, base_lm)
    with deterministic_on_cpu(accelerator.device) as det:
        results["deterministic_kernels"] = det
        for arm in cfg.arms:
            results["arms"][arm] = run_arm(arm, cfg, base_lm, tokenizer, vectors, data, accelerator, fingerprint)
    results["wall_s"] = time.perf_counter() - t_start
    if accelerator.is_main_process:
        results["summary"] = summarize(results, cfg)
        results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results["provenance"] = _provenance(cfg, accelerator, vocab, train_qs, eval_sets, vectors,
                                            vocab_from_files=questions is None)
        save_results(results, out / "results.json")
        plot_curves(results, out / "curves.png")
        print(format_table(results))
    return results


def finetune_seeds(cfg: FinetuneConfig, seeds: list[int], **kwargs) -> dict:
    """The job once per seed (output_dir/seed-<s>), then mean ± sd over seeds of every
    accuracy and of the paired difference (`seeds_summary.json`, printed)."""
    if len(seeds) < 2:
        raise ValueError("give at least two seeds for a spread")
    runs = []
    for s in seeds:
        d = {**cfg.to_dict(), "seed": int(s), "output_dir": str(Path(cfg.output_dir) / f"seed-{s}")}
        runs.append(finetune(FinetuneConfig.from_dict(d), **kwargs))
    if any("summary" not in r for r in runs):  # not the main process: it summarises
        return {}
    summary = summarize_seeds(runs)
    summary["provenance"] = runs[-1].get("provenance")
    save_results(summary, Path(cfg.output_dir) / "seeds_summary.json")
    print(format_seed_summary(summary))
    return summary

"""The main job: LoRA fine-tuning on multiple-choice QA, without and with the code prefix.

    results = finetune(FinetuneConfig())        # what `scripts/finetune_qa.py` runs

Per arm, from the same base weights and seed: (prefix arm only) stage 1, projector-only
caption alignment over vocabulary codes absent from every evaluation question; stage 2,
LoRA (+ projector) on the QA training split with the answer-only loss; then the QA harness
(`qa.scoring.score_multiple_choice`, option-letter log-likelihood) and option-likelihood
scoring (`llm_adapter.option_scoring`) on the evaluation splits, the letter harness also
on a fixed subset of training questions (the learning curve). Writes per-arm
checkpoints, `results.json`, `curves.png`, and prints the table with the paired difference.

A plain accelerate loop, not trl's SFTTrainer: with `inputs_embeds` built from a projector
SFTTrainer needs remove_unused_columns=False, a custom collator, an overridden compute_loss
and the projector attached to the model; the loop below is shorter than those overrides,
still runs under `accelerate launch` (DDP: the loss goes through the wrapped module's
forward so gradients are all-reduced; each process takes its own slice of every batch),
and keeps the train and eval inputs on the one `build_inputs` path.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from llm_adapter.data import alignment_examples, load_questions, qa_examples
from llm_adapter.finetune_config import FinetuneConfig, projector_for
from llm_adapter.model import PrefixLM, load_base_lm
from llm_adapter.report import format_table, plot_curves, summarize


def _lr_lambda(stage):
    def f(step):
        if stage.warmup and step < stage.warmup:
            return (step + 1) / stage.warmup
        return 1.0

    return f


def train_stage(model: PrefixLM, examples: list[tuple], stage, *, accelerator, lora: bool, projector: bool,
                name: str, ckpt_dir: Path | None = None, checkpoint_every: int = 0, resume: bool = True,
                seed: int = 0, callback=None, progress: bool = True) -> list[dict]:
    """Optimise `model` on (codes, prompt_ids, answer_ids) examples for `stage.steps` steps.

    Returns the curve: one record per step (loss, tokens, seconds). `callback(step)` runs on
    the main process after each step (learning-curve evaluation). Resumable: every
    `checkpoint_every` steps the accelerate state + curve go to `ckpt_dir/name-step-N`."""
    from tqdm.auto import tqdm

    if stage.steps == 0 or not examples:
        return []
    params = model.trainable_parameters(lora=lora, projector=projector)
    opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(stage))
    wrapped, opt, sched = accelerator.prepare(model, opt, sched)
    start, curve = 0, []
    if resume and ckpt_dir is not None:
        done = sorted(ckpt_dir.glob(f"{name}-step-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
        if done:
            accelerator.load_state(str(done[-1]))
            meta = json.loads((done[-1] / "progress.json").read_text())
            start, curve = int(meta["step"]), meta["curve"]
    rng = np.random.default_rng(seed)
    per_step = stage.batch_size * stage.grad_accum * accelerator.num_processes
    order = np.concatenate([rng.permutation(len(examples)) for _ in range(math.ceil(stage.steps * per_step / len(examples)) + 1)])
    wrapped.train()
    bar = tqdm(range(start, stage.steps), initial=start, total=stage.steps, desc=name,
               disable=not (progress and accelerator.is_main_process))
    t0 = time.perf_counter() - (curve[-1]["elapsed_s"] if curve else 0.0)
    for step in bar:
        total_loss, n_tokens = 0.0, 0
        for micro in range(stage.grad_accum):
            base = step * per_step + micro * stage.batch_size * accelerator.num_processes
            idx = order[base + accelerator.process_index * stage.batch_size:
                        base + (accelerator.process_index + 1) * stage.batch_size]
            codes, prompts, answers = zip(*[examples[i] for i in idx])
            with accelerator.accumulate(wrapped), _autocast(model):
                loss = wrapped(code_lists=list(codes), prompt_ids=list(prompts), answer_ids=list(answers))
                if not loss.requires_grad:
                    # no trainable path this batch (projector-only stage, no question with a code):
                    # a zero-gradient step keeps every process in the same collective calls
                    loss = loss + sum(p.sum() for p in params) * 0.0
                accelerator.backward(loss / 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            total_loss += float(loss.detach()) / stage.grad_accum
            n_tokens += sum(len(p) + len(a) for p, a in zip(prompts, answers))
        rec = {"step": step + 1, "loss": total_loss, "tokens": n_tokens * accelerator.num_processes,
               "elapsed_s": time.perf_counter() - t0}
        curve.append(rec)
        bar.set_postfix(loss=f"{total_loss:.3f}")
        if callback is not None and accelerator.is_main_process:
            extra = callback(step + 1)
            if extra:
                rec.update(extra)
        if ckpt_dir is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < stage.steps:
            target = ckpt_dir / f"{name}-step-{step + 1}"
            accelerator.save_state(str(target))
            if accelerator.is_main_process:
                (target / "progress.json").write_text(json.dumps({"step": step + 1, "curve": curve}))
    accelerator.wait_for_everyone()
    model.trainable_parameters(lora=False, projector=False)
    return curve


def _autocast(model):
    enabled = getattr(model, "bf16_autocast", False)
    return torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=enabled)


def score(model: PrefixLM, tokenizer, questions, batch_size: int, progress: bool, scoring: str = "letter"):
    """The QA harness (letter log-likelihood), or option likelihood (llm_adapter.option_scoring)."""
    with _autocast(model):
        if scoring == "option":
            from llm_adapter.option_scoring import score_by_option_likelihood

            return score_by_option_likelihood(model, tokenizer, questions, batch_size=2 * batch_size, progress=progress)
        from qa.scoring import score_multiple_choice

        return score_multiple_choice(model, tokenizer, questions, batch_size=batch_size,
                                     input_builder=model.input_builder(), progress=progress)


def _record(r, label: str = "") -> dict:
    if label:
        print(f"[{label}] accuracy {r.correct.mean():.3f} (n={len(r.correct)})", flush=True)
    return {"ids": r.ids, "pred": r.pred.tolist(), "correct": r.correct.tolist(), "answer": r.answer.tolist()}


def run_arm(arm: str, cfg: FinetuneConfig, base_lm, tokenizer, vectors, data: dict, accelerator) -> dict:
    """Train and evaluate one arm; returns its curves, scores and checkpoint path."""
    out_dir = Path(cfg.output_dir) / arm.replace("+", "_")
    prefix = arm != "lora"
    acfg = copy.deepcopy(cfg.adapter)
    if prefix:
        acfg.vector_source = cfg.vector_source
        acfg.medtok_checkpoint = vectors.identity if cfg.vector_source == "medtok" else None
        acfg.projector = projector_for(vectors.num_groups, vectors.dim, acfg.projector)
    else:
        acfg.vector_source = "none"
    lm = copy.deepcopy(base_lm)  # every arm starts from the same weights
    model = PrefixLM.build(acfg, lm=lm, tokenizer=tokenizer, vector_source=vectors if prefix else None, seed=cfg.seed)
    model.bf16_autocast = cfg.bf16_autocast
    res = {"arm": arm, "adapter": acfg.to_dict(), "curves": {}}
    train_probe = data["train_probe"]

    def probe(step):
        if cfg.eval_every and step % cfg.eval_every == 0 and train_probe:
            acc = float(score(model, tokenizer, train_probe, cfg.eval_batch_size, False).correct.mean())
            model.train()
            return {"train_acc": acc}
        return None

    res["scores"] = {}
    if prefix and cfg.align.steps:
        res["curves"]["align"] = train_stage(
            model, data["align"], cfg.align, accelerator=accelerator, lora=False, projector=True, name="align",
            ckpt_dir=out_dir / "checkpoints", checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
            seed=cfg.seed, progress=cfg.progress)
    if "option" in cfg.scorings and accelerator.is_main_process and cfg.score_base_before_qa:
        # before QA training: what the alignment alone gives (prefix arm) / the untrained LM (no prefix)
        res["scores"]["option@pre_qa"] = {s: _record(score(model, tokenizer, qs, cfg.eval_batch_size, cfg.progress,
                                                                 "option"), f"{arm} option@pre_qa {s}")
                                          for s, qs in data["eval"].items() if qs}
    start_acc = None
    if accelerator.is_main_process and train_probe:
        start_acc = float(score(model, tokenizer, train_probe, cfg.eval_batch_size, cfg.progress).correct.mean())
    res["curves"]["qa"] = train_stage(
        model, data["qa"], cfg.qa, accelerator=accelerator, lora=True, projector=prefix and cfg.qa_train_projector,
        name="qa", ckpt_dir=out_dir / "checkpoints", checkpoint_every=cfg.checkpoint_every, resume=cfg.resume,
        seed=cfg.seed + 1, callback=probe, progress=cfg.progress)
    res["train_acc_start"] = start_acc
    if accelerator.is_main_process:
        model.eval()
        for scoring in cfg.scorings:
            splits = ([("train_probe", train_probe)] if scoring == "letter" else []) + list(data["eval"].items())
            res["scores"][scoring] = {s: _record(score(model, tokenizer, qs, cfg.eval_batch_size, cfg.progress, scoring),
                                                     f"{arm} {scoring} {s}") for s, qs in splits if qs}
        model.save_pretrained(out_dir)
        res["checkpoint"] = str(out_dir)
    accelerator.wait_for_everyone()
    return res


def default_medtok_checkpoint(cfg: FinetuneConfig) -> Path:
    """The job's own MedTok when none is given: trained on the QA set's code systems only
    (ICD-10-CM by default), under data/cache/medtok_<systems>."""
    from medtok.paths import cache_dir

    return cache_dir() / ("medtok_" + "_".join(s.lower() for s in cfg.ontology["systems"]))


def ensure_inputs(cfg: FinetuneConfig, accelerator) -> None:
    """First run of the default job: build the vocabulary and train its MedTok when they are
    missing (main process; the others wait), so that no argument is needed."""
    from medtok.paths import default_vocab_dir

    if accelerator.is_main_process:
        if cfg.vocab_dir is None and not (default_vocab_dir() / "codes.parquet").exists():
            from medtok.build import build_vocabulary

            print(f"building the vocabulary -> {default_vocab_dir()}", flush=True)
            build_vocabulary(default_vocab_dir())
        needs_medtok = cfg.vector_source == "medtok" and any(a != "lora" for a in cfg.arms)
        ckpt = default_medtok_checkpoint(cfg)
        if needs_medtok and cfg.medtok_checkpoint is None and not (ckpt / "model.safetensors").exists():
            from medtok.train import TrainConfig, train

            print(f"training MedTok on {cfg.ontology['systems']} (first run only) -> {ckpt}", flush=True)
            train(TrainConfig(out_dir=str(ckpt), vocab_dir=cfg.vocab_dir, systems=list(cfg.ontology["systems"]),
                              steps=cfg.medtok_steps))
    accelerator.wait_for_everyone()


def make_vector_source(cfg: FinetuneConfig, vocab, needed_codes: list[str]):
    """The prefix arm's code vectors, precomputed once into a table (cached on disk)."""
    from llm_adapter.vectors import DescriptionVectors, MedTokVectors, RandomVectors, TableVectors

    if cfg.vector_source == "medtok":
        ckpt = Path(cfg.medtok_checkpoint) if cfg.medtok_checkpoint else default_medtok_checkpoint(cfg)
        if not (ckpt / "config.json").exists():
            raise FileNotFoundError(f"no MedTok checkpoint at {ckpt}: train one (scripts/train_medtok.py) "
                                    "or set medtok_checkpoint / vector_source=minilm")
        source = MedTokVectors.from_checkpoint(ckpt, vocab_dir=cfg.vocab_dir)
    elif cfg.vector_source == "minilm":
        source = DescriptionVectors(vocab)
    else:
        source = RandomVectors(num_groups=4, dim=64, seed=cfg.seed)
    return TableVectors.from_source(source, needed_codes)


def finetune(cfg: FinetuneConfig, *, lm=None, tokenizer=None, questions=None) -> dict:
    """Run both arms, write checkpoints / results.json / curves.png, print the table; returns the results.

    lm, tokenizer: a ready base model (default: loaded from cfg.adapter.base_model);
    questions: (vocab, train questions, {split: eval questions}) instead of cfg.dataset."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        cfg.save(out / "finetune_config.json")
    if questions is None:
        ensure_inputs(cfg, accelerator)
    torch.manual_seed(cfg.seed)
    base_lm, tokenizer = (lm, tokenizer) if lm is not None else load_base_lm(cfg.adapter)
    vocab, train_qs, eval_sets = questions if questions is not None else load_questions(cfg)
    data = {"qa": qa_examples(tokenizer, train_qs, cfg.qa_target), "eval": eval_sets,
            "train_probe": train_qs[: cfg.train_eval_size]}
    vectors = None
    if any(a != "lora" for a in cfg.arms):
        excluded = {c for qs in eval_sets.values() for q in qs for c in q.codes + q.meta.get("option_codes", [])}
        align = alignment_examples(tokenizer, vocab, cfg, excluded) if cfg.align.steps else []
        needed = sorted({c for q in train_qs for c in q.codes} | {c for qs in eval_sets.values() for q in qs for c in q.codes}
                        | {ex[0][0] for ex in align})
        vectors = make_vector_source(cfg, vocab, needed)
        data["align"] = align
    results = {"config": cfg.to_dict(), "arms": {}, "n_train": len(train_qs),
               "n_eval": {k: len(v) for k, v in eval_sets.items()}, "n_align": len(data.get("align", []))}
    for arm in cfg.arms:
        results["arms"][arm] = run_arm(arm, cfg, base_lm, tokenizer, vectors, data, accelerator)
    results["wall_s"] = time.perf_counter() - t_start
    if accelerator.is_main_process:
        results["summary"] = summarize(results, cfg)
        try:
            import resource

            results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except ImportError:  # pragma: no cover - non-POSIX
            pass
        (out / "results.json").write_text(json.dumps(results, indent=1))
        plot_curves(results, out / "curves.png")
        print(format_table(results))
    return results

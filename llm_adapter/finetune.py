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

The job's parts: the training loop of one stage (`llm_adapter.train_loop`), its prerequisites
(`llm_adapter.prerequisites`: it reads them and never makes them; a missing vocabulary or
MedTok checkpoint is an error naming the command that makes it), and the run's fingerprint
and provenance (`llm_adapter.run_provenance`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import resource
import time
from pathlib import Path

import torch

from llm_adapter.data import alignment_examples, load_questions, qa_examples
from llm_adapter.finetune_config import TEXT_ARM, FinetuneConfig, projector_for
from llm_adapter.finetune_results import format_seed_summary, format_table, plot_curves, summarize, summarize_seeds
from llm_adapter.model import PrefixLM, load_base_lm
from llm_adapter.option_scoring import score_by_option_likelihood
from llm_adapter.prerequisites import make_accelerator, make_vector_source, require_medtok_checkpoint
from llm_adapter.run_provenance import run_fingerprint, run_provenance
from llm_adapter.text_baseline import text_caption_examples
from llm_adapter.train_loop import autocast_of, train_stage
from medbase.atomic import atomic_write_text
from medbase.determinism import deterministic_on_cpu
from medbase.provenance import save_results
from qa.scoring import score_multiple_choice

NO_PREFIX_ARMS = ("lora", TEXT_ARM)
ARM_RESULT = "arm_result.json"


def score(model: PrefixLM, tokenizer, questions, batch_size: int, progress: bool, scoring: str = "letter"):
    """The QA harness (letter log-likelihood), or option likelihood (llm_adapter.option_scoring)."""
    with autocast_of(model):
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
    # captions never describe a code that an evaluation question asks about or offers
    excluded = {c for qs in eval_sets.values() for q in qs for c in q.codes + q.meta.get("option_codes", [])}
    if TEXT_ARM in cfg.arms and cfg.align.steps:
        data["align_text"] = text_caption_examples(tokenizer, vocab, cfg, excluded)
        results["text_align_codes"] = [ex[0][0] for ex in data["align_text"]]
    if prefix_arm:
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
        results["provenance"] = run_provenance(cfg, accelerator, vocab, train_qs, eval_sets, vectors,
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


"""Training data of the fine-tuning job: QA questions, their token ids, and the caption pairs
of the alignment stage. Examples are (codes, prompt_ids, answer_ids) triples, the arguments
of `PrefixLM.loss` / `build_inputs`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llm_adapter.option_scoring import cloze_prompt_ids, option_ids
from medbase.paths import default_vocab_dir
from medtok.codes.vocabulary import Vocabulary
from qa.datasets.meddx import load_meddx
from qa.datasets.ontology import SYSTEM_NAMES, TEMPLATE, OntologyQAConfig, build_ontology_qa, code_split
from qa.scoring import answer_ids, build_prompt_ids


def vocab_dir_of(cfg) -> Path:
    return Path(cfg.vocab_dir) if cfg.vocab_dir else default_vocab_dir()


def _vocab(cfg):
    d = vocab_dir_of(cfg)
    if not (d / "codes.parquet").exists():
        # the job never builds the vocabulary as a side effect (`make demo` has a stage for it)
        raise FileNotFoundError(f"no vocabulary at {d}; build it with: python scripts/build_vocab.py --out {d}")
    return Vocabulary.load(d)


def link_questions(questions, vocab=None, max_codes: int = 4, progress: bool = True) -> None:
    """Fill `.codes` of free-text questions (MedDDx) with the linker's affirmed codes, in text order
    (stem first, then options), best-scored first within the stem; in place."""
    from qa.linker import CodeLinker  # spaCy is slow to import: only the linker path needs it

    linker = CodeLinker.build(vocab, verbose=progress)
    texts = [q.question + "\n" + "\n".join(q.options) for q in questions]
    for q, links in zip(questions, linker.link_batch(texts, progress=progress)):
        if not q.codes:
            seen = []
            # negated, family-history and rule-out mentions are not the patient's codes
            affirmed = [lc for lc in links if getattr(lc, "status", "affirmed") == "affirmed"]
            for lc in sorted(affirmed, key=lambda lc: (lc.start >= len(q.question), -lc.score)):
                if lc.code_id not in seen:
                    seen.append(lc.code_id)
            q.codes = seen[:max_codes]


def load_questions(cfg):
    """(vocab, train questions, {eval split: questions}) for cfg.dataset."""
    if cfg.dataset == "ontology":
        vocab = _vocab(cfg)
        qs = build_ontology_qa(vocab, OntologyQAConfig(**cfg.ontology))
        train = [q for q in qs if q.split == cfg.train_split]
        evals = {s: [q for q in qs if q.split == s] for s in cfg.eval_splits}
    else:
        qs = load_meddx(cfg.data_path)
        vocab = _vocab(cfg)
        key = lambda q: q.meta.get("difficulty", q.split)  # noqa: E731
        # MedDDx protocol: train on Intermediate (its "train" part), test on Basic and Expert
        train = [q for q in qs if key(q) == cfg.train_split and q.split != "validation"]
        evals = {s: [q for q in qs if key(q) == s] for s in cfg.eval_splits}
        link_questions(train + [q for v in evals.values() for q in v], vocab, cfg.adapter.max_codes, cfg.progress)
    if cfg.max_eval_questions:
        evals = {s: v[: cfg.max_eval_questions] for s, v in evals.items()}
    if not train:
        raise ValueError(f"no training questions in split {cfg.train_split!r}")
    return vocab, train, evals


def qa_examples(tokenizer, questions, target: str = "letter") -> list[tuple[list[str], list[int], list[int]]]:
    """(codes, prompt_ids, answer_ids) per question.

    letter: the QA harness's own chat prompt and answer letter (+ end of turn), so training sees
            exactly what letter scoring evaluates;
    option: the option-likelihood layout "<stem>\nAnswer:" -> the correct option's text, what
            option scoring evaluates (and the caption-alignment stage trains)."""
    if target == "option":
        return [(list(q.codes), cloze_prompt_ids(tokenizer, q.question), option_ids(tokenizer, q.options[q.answer]))
                for q in questions]
    return [(list(q.codes), build_prompt_ids(tokenizer, q), answer_ids(tokenizer, q)) for q in questions]


def alignment_codes(vocab, cfg, excluded: set[str]) -> list[str]:
    """Up to cfg.align_codes vocabulary codes of the QA set's systems (`cfg.ontology["systems"]`,
    the codes questions carry and the default MedTok is trained on) with a description, that
    appear in no evaluation question (neither as the asked code nor as an option) and, for the
    ontology set, belong to its training split of codes; a seeded sample."""
    df = vocab.codes
    ok = (df["description"].fillna("").str.strip().ne("") & ~df["code_id"].isin(excluded)
          & df["system"].isin(list(cfg.ontology["systems"])))
    if cfg.dataset == "ontology":
        oc = OntologyQAConfig(**cfg.ontology)
        ok &= df["code_id"].map(lambda c: code_split(c, oc.split_fractions, oc.split_seed) == "train")
    pool = df.loc[ok, "code_id"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    take = min(cfg.align_codes, len(pool))
    return [str(c) for c in rng.choice(pool, size=take, replace=False)] if take else []


def code_question(code_id: str) -> str:
    """The ontology set's question about a code ("What does the ICD-10-CM code X denote?")."""
    system = code_id.split(":", 1)[0]
    return TEMPLATE.format(system=SYSTEM_NAMES.get(system, system), code=code_id)


def alignment_examples(tokenizer, vocab, cfg, excluded: set[str]) -> list[tuple[list[str], list[int], list[int]]]:
    """Caption pairs "[prefix] <question about the code>\nAnswer: <description>", loss on the
    description: the same text layout option-likelihood scoring reads (llm_adapter.option_scoring)."""
    n = cfg.align.steps * cfg.align.batch_size * cfg.align.grad_accum
    codes = alignment_codes(vocab, cfg, excluded)[: max(n, 1)]  # no vectors for pairs never drawn
    desc = vocab.codes.set_index("code_id").loc[codes, "description"].tolist() if codes else []
    return [([c], cloze_prompt_ids(tokenizer, code_question(c)), option_ids(tokenizer, d)) for c, d in zip(codes, desc)]

"""The "describe this code" task: does the served prefix carry a code's meaning?

For codes unseen by every component (ICD-10-CM codes of the ontology set's test split: never in
a QA training question or an alignment caption; and held out of MedTok training), the service
completes the alignment stage's own layout, "What does the ICD-10-CM code X denote?\\nAnswer:",
and the first line is scored against the code's true description by token F1 and ROUGE-L
(F-measure of the longest common word subsequence). Arms: the adapter with its prefix, the same
adapter with no prefix (`codes: []`), and the no-prefix LoRA arm of the run (the text-string
baseline: it only sees the code as text in the question). Means with 95% bootstrap CIs, and
paired differences with their own CIs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
from llm_adapter.data import code_question
from llm_adapter.option_scoring import ANSWER_CUE
from medtok.splits import heldout_mask, read_code_list
from qa.datasets.ontology import code_split

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def token_f1(pred: str, ref: str) -> float:
    """SQuAD-style bag-of-words F1 (lowercase alphanumeric words)."""
    p, r = words(pred), words(ref)
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 over words: 2PR / (P + R) with P, R = LCS / len."""
    p, r = words(pred), words(ref)
    if not p or not r:
        return float(p == r)
    prev = [0] * (len(r) + 1)
    for a in p:
        cur = [0]
        for j, b in enumerate(r):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def mean_ci(x, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> dict:
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(x))}


def paired_diff_ci(a, b, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> dict:
    """mean(b - a) with a percentile bootstrap CI, resampling items jointly."""
    return mean_ci(np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64), n_boot, seed, alpha)


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def unseen_codes(vocab, medtok_checkpoint: str | None, n: int, *, systems=("ICD10CM",), seed: int = 0,
                 split_fractions=(0.7, 0.15, 0.15), split_seed: int = 0) -> list[str]:
    """`n` assignable codes of the ontology set's test split that MedTok never trained on as a centre
    (its held-out rule, read from the checkpoint's train_config.json), a seeded sample."""

    df = vocab.codes
    df = df[df["system"].isin(list(systems)) & (df["kind"] == "code")
            & df["description"].fillna("").str.strip().ne("")]
    held = np.ones(len(df), dtype=bool)
    if medtok_checkpoint:
        tc = json.loads((Path(medtok_checkpoint) / "train_config.json").read_text())
        held = heldout_mask(df["code_id"].tolist(), df["kind"].tolist(), float(tc.get("heldout_fraction", 0.05)),
                            read_code_list(tc.get("heldout_codes")))
    pool = [c for c, h in zip(df["code_id"], held) if h and code_split(c, split_fractions, split_seed) == "test"]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())


def describe_prompt(code_id: str) -> str:
    """The alignment captions' layout (`llm_adapter.data.code_question` + option_scoring's cue)."""

    return code_question(code_id).strip() + ANSWER_CUE


def score_arms(descriptions: list[str], arms: dict[str, list[str]], n_boot: int = 10_000) -> dict:
    """Per arm mean token F1 / ROUGE-L with CIs; paired differences of the first arm against the others."""
    out = {"n": len(descriptions), "arms": {}, "paired": {}}
    per = {}
    for arm, texts in arms.items():
        f1 = [token_f1(first_line(t), d) for t, d in zip(texts, descriptions)]
        rl = [rouge_l(first_line(t), d) for t, d in zip(texts, descriptions)]
        per[arm] = (f1, rl)
        out["arms"][arm] = {"token_f1": mean_ci(f1, n_boot), "rouge_l": mean_ci(rl, n_boot)}
    names = list(arms)
    for other in names[1:]:
        out["paired"][f"{names[0]} - {other}"] = {
            "token_f1": paired_diff_ci(per[other][0], per[names[0]][0], n_boot),
            "rouge_l": paired_diff_ci(per[other][1], per[names[0]][1], n_boot)}
    return out


def format_describe(res: dict) -> str:
    lines = [f"describe this code (n = {res['n']} unseen codes): mean [95% CI]",
             f"{'arm':28s} {'token F1':>24s} {'ROUGE-L':>24s}"]
    fmt = lambda m: f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"  # noqa: E731
    for arm, m in res["arms"].items():
        lines.append(f"{arm:28s} {fmt(m['token_f1']):>24s} {fmt(m['rouge_l']):>24s}")
    fmtd = lambda m: f"{m['mean']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"  # noqa: E731
    for name, m in res["paired"].items():
        lines.append(f"{name:28s} {fmtd(m['token_f1']):>24s} {fmtd(m['rouge_l']):>24s}")
    return "\n".join(lines)

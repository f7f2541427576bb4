"""End-to-end evaluation on the project's hand-written sentence set (qa/linker/sentences/).

Each sentence is linked as a whole text (mention detection + linking), and the linked codes are
scored against the gold items (rules in qa/linker/sentences/PROTOCOL.md):

category recall      required affirmed items whose 3-character category is among the sentence's
                     affirmed linked codes
code accuracy@1      required affirmed items one of whose gold codes is a linked code (the linker
                     keeps its top code per mention)
false codes / sent.  affirmed linked codes whose category matches no gold item of the sentence
negated / family / ruleout   counted apart: found (category linked, any status), marked (linked
                     with that status), status errors (linked as affirmed)

A linked code's status is its `status` attribute ("affirmed" when the linker has none).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

SENTENCE_DIR = Path(__file__).resolve().parent / "sentences"
SPLITS = ("dev", "test")
OTHER_STATUSES = ("negated", "family", "ruleout")


def sentence_file(split: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SENTENCE_DIR / f"{split}.jsonl"


def load_sentences(split: str = "dev", path: str | Path | None = None) -> list[dict]:
    """The records of one part of the set (or of the JSONL file `path`)."""
    p = Path(path) if path else sentence_file(split)
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def sentence_set_sha256(split: str) -> str:
    return hashlib.sha256(sentence_file(split).read_bytes()).hexdigest()


def _code(code_id: str) -> str:
    return code_id.split(":", 1)[-1]


def _status(link) -> str:
    return getattr(link, "status", None) or "affirmed"


def score_sentence(record: dict, links: Iterable) -> dict:
    """Per-sentence counts for one record and its linked codes (objects with `code_id`, optional `status`)."""
    links = list(links)
    affirmed = [_code(lk.code_id) for lk in links if _status(lk) == "affirmed"]
    aff_codes, aff_cats = set(affirmed), {c[:3] for c in affirmed}
    gold_cats = {cat for g in record["gold"] for cat in g["categories"]}
    out = {"id": record["id"], "required": 0, "category_hits": 0, "code_hits": 0,
           "false_codes": sorted(c for c in aff_codes if c[:3] not in gold_cats), "missed": [], "wrong_code": [],
           "status": {s: {"items": 0, "found": 0, "marked": 0, "status_errors": 0} for s in OTHER_STATUSES}}
    for g in record["gold"]:
        cats = set(g["categories"])
        if g["status"] == "affirmed":
            if not g["required"]:
                continue
            out["required"] += 1
            cat_hit = bool(cats & aff_cats)
            out["category_hits"] += cat_hit
            code_hit = bool(set(g["codes"]) & aff_codes)
            out["code_hits"] += code_hit
            if not cat_hit:
                out["missed"].append(g["codes"][0])
            elif not code_hit:
                out["wrong_code"].append(g["codes"][0])
            continue
        st = out["status"][g["status"]]
        st["items"] += 1
        linked = [lk for lk in links if _code(lk.code_id)[:3] in cats]
        st["found"] += bool(linked)
        st["marked"] += any(_status(lk) == g["status"] for lk in linked)
        # an affirmed link to a negated condition is a status error only if no affirmed gold item has it
        affirmed_gold = {c for h in record["gold"] if h["status"] == "affirmed" for c in h["categories"]}
        st["status_errors"] += any(_status(lk) == "affirmed" and _code(lk.code_id)[:3] not in affirmed_gold
                                   for lk in linked)
    return out


def summarize(records: list[dict], per_sentence: list[dict]) -> dict:
    n = len(records)
    req = sum(s["required"] for s in per_sentence)
    out = {"sentences": n, "required_items": req,
           "category_recall": sum(s["category_hits"] for s in per_sentence) / max(req, 1),
           "code_accuracy_at_1": sum(s["code_hits"] for s in per_sentence) / max(req, 1),
           "false_codes_per_sentence": sum(len(s["false_codes"]) for s in per_sentence) / max(n, 1),
           "sentences_all_categories_found": sum(s["category_hits"] == s["required"] for s in per_sentence) / max(n, 1)}
    for st in OTHER_STATUSES:
        agg = {k: sum(s["status"][st][k] for s in per_sentence) for k in ("items", "found", "marked", "status_errors")}
        out[st] = agg
    # recall by tag (a sentence counts under each of its tags)
    by_tag: dict[str, list[int]] = {}
    for r, s in zip(records, per_sentence):
        for t in r["tags"]:
            slot = by_tag.setdefault(t, [0, 0, 0])
            slot[0] += s["required"]
            slot[1] += s["category_hits"]
            slot[2] += s["code_hits"]
    out["by_tag"] = {t: {"items": v[0], "category_recall": round(v[1] / v[0], 3) if v[0] else None,
                         "code_accuracy_at_1": round(v[2] / v[0], 3) if v[0] else None}
                     for t, v in sorted(by_tag.items())}
    return out


def evaluate_sentences(linker, split: str = "dev", path: str | Path | None = None, *, details: bool = False) -> dict:
    """Link every sentence of `split` with `linker.link_batch` and score it (see module docstring)."""
    records = load_sentences(split, path)
    results = linker.link_batch([r["text"] for r in records])
    per = [score_sentence(r, lk) for r, lk in zip(records, results)]
    out = {"split": split if path is None else str(path),
           "sha256": sentence_set_sha256(split) if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest(),
           **summarize(records, per)}
    if details:
        out["per_sentence"] = [{"id": r["id"], "text": r["text"],
                             "linked": [f"{_code(lk.code_id)}{'' if _status(lk) == 'affirmed' else ':' + _status(lk)}"
                                        f" <{lk.mention}>" for lk in links],
                             "missed": s["missed"], "wrong_code": s["wrong_code"], "false_codes": s["false_codes"]}
                            for r, links, s in zip(records, results, per)]
    return out

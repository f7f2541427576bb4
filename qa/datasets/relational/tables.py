"""How much of each relational question type the code's own description already answers.

A type needs the graph only if a reader of the code's description alone cannot pick the
answer. Per type and split this reports the counts, the answer groups, and three text-only
"oracles" that see the asked code's description (which no question shows, but MedTok's text
half and the MiniLM arm encode) and pick the option most similar to it:
  words   content-word Jaccard (`relational.title_similarity`), ties shared;
  tfidf   TF-IDF cosine (word 1-2-grams fitted on the questions' texts);
  minilm  MiniLM cosine (optional: needs the text encoder, a few seconds per 1,000 texts).
plus how often the answer text is a prefix of / contained in the description, and how many
graph edges `graph_without_relied_edges` removes per type.

    python -m qa.datasets.relational.tables --out runs/relational_report.json [--minilm]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from medbase.atomic import atomic_write_text
from medtok.loading import load_vocabulary
from medtok.model.text_encoder import TextEmbedder
from qa.datasets.ontology import SPLITS, norm_text
from qa.datasets.relational.checks import relied_edge_mask
from qa.datasets.relational.questions import TYPES, RelationalQAConfig, build_relational_qa, title_similarity


def _oracle_accuracy(scores: list[np.ndarray], answers: list[int]) -> float:
    """Mean accuracy of argmax-picking, a tie among k options counting 1/k when the answer is in it."""
    acc = []
    for s, a in zip(scores, answers):
        best = np.flatnonzero(np.isclose(s, s.max()))
        acc.append(1.0 / len(best) if a in best else 0.0)
    return float(np.mean(acc)) if acc else float("nan")


def text_oracles(questions, descriptions: list[str], minilm=None) -> dict:
    """Text-only oracle accuracies for `questions` given each asked code's description."""
    out = {"words": _oracle_accuracy([np.array([title_similarity(d, o) for o in q.options])
                                      for q, d in zip(questions, descriptions)], [q.answer for q in questions])}
    if not questions:
        return out
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(descriptions) + [o for q in questions for o in q.options]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
    d = vec.transform(descriptions)
    scores = []
    for i, q in enumerate(questions):
        scores.append((vec.transform(q.options) @ d[i].T).toarray().ravel())
    out["tfidf"] = _oracle_accuracy(scores, [q.answer for q in questions])
    if minilm is not None:
        uniq = sorted(set(texts))
        emb = dict(zip(uniq, minilm(uniq)))
        out["minilm"] = _oracle_accuracy(
            [np.array([float(emb[o] @ emb[dd]) for o in q.options]) for q, dd in zip(questions, descriptions)],
            [q.answer for q in questions])
    return out


def relational_report(vocab, graph, config: RelationalQAConfig | None = None, minilm=None,
                      splits=("test",)) -> dict:
    """Counts per type x split, answer groups, skip reasons, text oracles on `splits`, removed edges."""
    cfg = config or RelationalQAConfig()
    stats: dict = {}
    qs = build_relational_qa(vocab, graph, cfg, stats=stats)
    rep: dict = {"config": cfg.to_dict(), "types": {}}
    for qtype in cfg.types:
        sub = [q for q in qs if q.meta["qtype"] == qtype]
        r = {"counts": {s: sum(q.split == s for q in sub) for s in SPLITS},
             "answer_groups": {s: len({q.meta["answer_group"] for q in sub if q.split == s}) for s in SPLITS},
             "skipped": {s: stats.get((qtype, s), {}) for s in SPLITS},
             "edges_removed": int(relied_edge_mask(vocab, graph, qtype).sum())}
        held = [q for q in sub if q.split in splits]
        desc = [vocab.description(q.codes[0]) for q in held]
        ans = [norm_text(q.options[q.answer]) for q in held]
        nd = [norm_text(d) for d in desc]
        r["eval_n"] = len(held)
        r["answer_prefix_of_description"] = float(np.mean([d.startswith(a) for a, d in zip(ans, nd)])) if held else None
        r["answer_in_description"] = float(np.mean([a in d for a, d in zip(ans, nd)])) if held else None
        r["mean_similarity"] = float(np.mean([q.meta["similarity"] for q in held])) if held else None
        r["oracle"] = text_oracles(held, desc, minilm)
        r["top_answer_share"] = (Counter(q.meta["answer_group"] for q in held).most_common(1)[0][1] / len(held)
                                 if held else None)
        hops = [q.meta["answer_hops"] for q in held if "answer_hops" in q.meta]
        if hops:  # KG types: how far the answer is from the asked code in the KG-joined graph
            r["answer_hops"] = dict(sorted(Counter(hops).items()))
            r["test_codes"] = len({q.codes[0] for q in held})
        rep["types"][qtype] = r
    return rep


def format_report(rep: dict) -> str:
    """A markdown table, one row per type."""
    has_minilm = any("minilm" in r["oracle"] for r in rep["types"].values())
    head = ("| type | train / val / test | test answer groups | answer = prefix of desc. | mean word sim. "
            "| text oracle: words / tf-idf" + (" / MiniLM" if has_minilm else "") + " | edges removed |")
    lines = [head, "|" + "---|" * 7]
    f = lambda x: "–" if x is None or x != x else f"{x:.2f}"  # noqa: E731
    for t, r in rep["types"].items():
        c, o = r["counts"], r["oracle"]
        orc = " / ".join(f(o.get(k)) for k in (("words", "tfidf", "minilm") if has_minilm else ("words", "tfidf")))
        lines.append(f"| {t} | {c['train']} / {c['validation']} / {c['test']} | {r['answer_groups']['test']} "
                     f"| {f(r['answer_prefix_of_description'])} | {f(r['mean_similarity'])} | {orc} | {r['edges_removed']:,} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="JSON path")
    ap.add_argument("--types", nargs="+", default=list(TYPES))
    ap.add_argument("--minilm", action="store_true", help="also the MiniLM-cosine oracle")
    ap.add_argument("--splits", nargs="+", default=["test"], help="splits the oracles are measured on")
    ap.add_argument("--vocab-dir", default=None, help="vocabulary (default: the built cache); the KG types need "
                    "one built with --kg-mondo/--kg-hetionet for `edges removed`")
    a = ap.parse_args(argv)

    vocab, graph = load_vocabulary(a.vocab_dir)
    minilm = None
    if a.minilm:

        emb = TextEmbedder()
        minilm = lambda texts: emb.embed(texts, progress=False)  # noqa: E731  (unit-norm rows)
    rep = relational_report(vocab, graph, RelationalQAConfig(types=tuple(a.types)), minilm, tuple(a.splits))
    print(format_report(rep))
    if a.out:

        atomic_write_text(a.out, json.dumps(rep, indent=1))
    return rep


if __name__ == "__main__":
    main()

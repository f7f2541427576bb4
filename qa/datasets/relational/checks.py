"""What the relational experiment removes from MedTok's graph and checks for leaks.

- `relied_edge_mask` / `graph_without_relied_edges`: the edges a question type's answer
  travels along (`relational.RELIED_EDGES`), optionally only those touching given codes, so a
  MedTok can be retrained without them ("the type with its edges removed");
- `split_vocabulary_codes`: every vocabulary code of a split, the centres a strictly-unseen
  MedTok leaves out;
- `training_footprint` / `find_leaks`: every code and answer text training shows (questions
  of any set, alignment or text-baseline captions) and the held-out questions that hit it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medtok.graph.graph import CodeGraph
from qa.datasets.ontology import code_split, norm_text
from qa.datasets.relational.questions import RELIED_EDGES, EdgeSpec

__all__ = ["EdgeSpec", "relied_edges", "relied_edge_mask", "graph_without_relied_edges", "split_vocabulary_codes",
           "Footprint", "training_footprint", "find_leaks"]


def relied_edges(qtype: str) -> tuple[EdgeSpec, ...]:
    """The edges (type, source system, target system) a question type's answer travels along."""
    return RELIED_EDGES[qtype]


def relied_edge_mask(vocab, graph, qtypes, touching=None) -> np.ndarray:
    """Boolean mask over `graph`'s stored edges: those `qtypes` rely on. `touching` (code ids)
    narrows it to edges with an endpoint among those codes (e.g. only the test codes' edges)."""
    system = vocab.codes["system"].to_numpy()
    s_sys, d_sys = system[graph.src], system[graph.dst]
    names = np.array(graph.edge_type_names)[graph.etype]
    mask = np.zeros(graph.num_edges, dtype=bool)
    for qtype in ([qtypes] if isinstance(qtypes, str) else qtypes):
        for e in RELIED_EDGES[qtype]:
            m = names == e.type
            if e.src_system:
                m &= s_sys == e.src_system
            if e.dst_system:
                m &= d_sys == e.dst_system
            mask |= m
    if touching is not None:
        rows = vocab.codes["code_id"].isin(set(touching)).to_numpy()
        mask &= rows[graph.src] | rows[graph.dst]
    return mask


def graph_without_relied_edges(vocab, graph, qtypes, touching=None):
    """A copy of `graph` without the edges `qtypes` rely on (see `relied_edge_mask`)."""

    keep = ~relied_edge_mask(vocab, graph, qtypes, touching)
    return CodeGraph(graph.num_nodes, graph.src[keep], graph.dst[keep], graph.etype[keep], graph.edge_type_names)


def split_vocabulary_codes(vocab, split: str = "test", split_fractions=(0.7, 0.15, 0.15), split_seed: int = 0) -> list[str]:
    """Every vocabulary code (any system, any kind) in `split`: what a strictly-unseen MedTok
    may leave out as training centres to cover every held-out code of both question sets."""
    return [str(c) for c in vocab.codes["code_id"] if code_split(c, split_fractions, split_seed) == split]


@dataclass
class Footprint:
    """Codes and (normalised) texts that training shows: questions' codes, option codes, answer
    groups and option texts, and the alignment/baseline captions' codes and descriptions."""

    codes: set[str] = field(default_factory=set)
    texts: set[str] = field(default_factory=set)


def training_footprint(questions, splits=("train",), vocab=None, caption_codes=()) -> Footprint:
    """Every code and text the questions of `splits` (any set: ontology, relational) and the
    captions of `caption_codes` (their description is the caption target) put into training."""
    fp = Footprint()
    for q in questions:
        if q.split not in splits:
            continue
        fp.codes.update(q.codes)
        fp.codes.update(c for c in q.meta.get("option_codes", []) if c)
        if q.meta.get("answer_group"):
            fp.codes.add(q.meta["answer_group"])
        fp.texts.update(norm_text(o) for o in q.options)
    caption_codes = list(caption_codes)
    if caption_codes:
        fp.codes.update(caption_codes)
        fp.texts.update(norm_text(vocab.description(c)) for c in caption_codes)
    return fp


def find_leaks(questions, footprint: Footprint, splits=("validation", "test")) -> list[str]:
    """One line per held-out question whose code, answer code/group or answer text is in the footprint."""
    out = []
    for q in questions:
        if q.split not in splits:
            continue
        opts = q.meta.get("option_codes") or []
        codes = set(q.codes) | ({opts[q.answer]} if opts else set()) | {q.meta.get("answer_group")} - {None}
        bad = sorted(codes & footprint.codes)
        text = norm_text(q.options[q.answer])
        if bad or text in footprint.texts:
            out.append(f"{q.id} ({q.split}): codes {bad}" + (f", answer text {text!r}" if text in footprint.texts else ""))
    return out

"""Code tokenizers: one interface, a batch of code ids -> input vectors for the EHR model.

    space = CodeSpace(codes)                       # the dataset's codes; index 0 = padding
    tok = make_tokenizer("hier-111", d=64, space=space, train_seen=seen, resources=res)
    x, tmask = tok(codes)                          # codes [B, L] -> x [B, L, T, d], tmask [B, L, T]

T = 1 except in the hierarchical "extra tokens" mode (one token per code plus one per enabled
level). Every tokenizer embeds the codes that are in no vocabulary (drug names, stay markers,
sex) with the same learned table (codes seen in training + one unknown row), so the arms
differ only on vocabulary codes (ICD-9/10 diagnoses and procedures, ATC):

| spec            | vocabulary code ->                                   | a code never seen in training ->                     |
|-----------------|------------------------------------------------------|------------------------------------------------------|
| flat            | learned row per train-seen code                      | the UNK row                                          |
| hier-XYZ[-tok]  | flat + learned rows of its enabled levels G0/G1/G2    | UNK row + its levels' rows (a level never seen: its level's UNK row) |
| text            | frozen MiniLM description vector -> learned Linear    | same path (every vocabulary code has a description)  |
| medtok[-text|-graph|-n3000] | frozen MedTok quantized vectors [4, 64] -> learned Linear | same path: MedTok tokenizes unseen codes from their text and graph (inductive) |
| medtok-ids      | MedTok token ids -> learned codebook-sized embedding, weighted mean | same path                                   |
| X+flat (X = text, medtok[-text|-graph|-n3000]) | X's projected frozen vector + learned per-code row initialised at 0 | X's projected vector alone |
| graph-XYZ / graph-kg[join] | learned row per code initialised from a pretrained GCN (HICD-Graph; built by the cell) | its GCN embedding (inductive via ancestor / KG edges) |
| X-init          | trainable per-code row initialised by a fixed PCA map of X's vector (fitted on train-seen codes) | the same fixed map of its vector |

A vocabulary code outside the tokenizer's code systems (e.g. an ATC code for a MedTok trained
on ICD-9) is counted as `out_of_system` and gets the UNK row, like an unseen code. `hier-XYZ`
switches G0 (chapter), G1 (block), G2 (category) on/off ("hier-000" = flat); the suffix
"-tok" adds level tokens instead of summing ("add", the default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ehr.benchmark.hierarchy import LEVELS

MEDTOK_SPECS = {"medtok": "both-n12000", "medtok-text": "text-n12000", "medtok-graph": "graph-n12000",
                "medtok-n3000": "both-n3000", "medtok-ids": "both-n12000"}
DEFAULT_TOKENIZERS = ["flat", "hier-111", "text", "medtok", "medtok-text", "medtok-graph", "medtok-ids"]
ABLATION_TOKENIZERS = [f"hier-{a}{b}{c}" for a in "01" for b in "01" for c in "01"]
_HIER = re.compile(r"^hier(?:-([01]{3}))?(-tok)?$")
# issue 22: the MedTok paper's integration (Appendix B.3: the vectors INITIALISE the model's code
# embeddings, then train) beside today's frozen arms. X+flat: projected frozen vector + a
# learned per-code row initialised at zero; X-init: a trainable per-code table initialised by a
# fixed PCA map of X. X in INTEGRATION_BASES.
INTEGRATION_BASES = ("text", "medtok", "medtok-text", "medtok-graph", "medtok-n3000")
INTEGRATIONS = {"+flat": "plus-flat", "-init": "init"}
# HICD-Graph's code table (issue 22; `ehr.benchmark.models.hicd_graph`): graph-XYZ = GCN on PMI +
# ancestor edges at levels XYZ (graph-000: PMI only), graph-kg = on the vocabulary's is_a / GEM /
# in_group edges, graph-kgjoin = + xref / kg_relation edges (a KG-joined vocabulary)
_GRAPH = re.compile(r"^graph-([01]{3}|kg|kgjoin)$")
GRAPH_TOKENIZERS = ["graph-111", "graph-kg"]
GRAPH_ABLATION_TOKENIZERS = [f"graph-{a}{b}{c}" for a in "01" for b in "01" for c in "01"]
INTEGRATION_TOKENIZERS = [f"{x}{suffix}" for x in ("medtok", "text") for suffix in INTEGRATIONS]
_INTEGRATION = re.compile(r"^(" + "|".join(re.escape(b) for b in INTEGRATION_BASES) + r")(\+flat|-init)$")


def parse_spec(spec: str) -> dict:
    """{'family': flat|hier|text|medtok|medtok-ids, 'levels': (g0, g1, g2), 'mode': add|tokens, 'variant': ...}."""
    m = _HIER.match(spec)
    if m:
        levels = tuple(int(c) for c in (m.group(1) or "111"))
        return {"family": "hier", "levels": levels, "mode": "tokens" if m.group(2) else "add"}
    if spec == "flat":
        return {"family": "flat", "levels": (0, 0, 0), "mode": "add"}
    if spec == "text":
        return {"family": "text"}
    if spec in MEDTOK_SPECS:
        return {"family": "medtok-ids" if spec == "medtok-ids" else "medtok", "variant": MEDTOK_SPECS[spec]}
    m = _GRAPH.match(spec)
    if m:
        lv = m.group(1)
        if lv in ("kg", "kgjoin"):
            return {"family": "graph", "source": lv, "levels": (0, 0, 0)}
        return {"family": "graph", "source": "pmi", "levels": tuple(int(c) for c in lv)}
    m = _INTEGRATION.match(spec)
    if m:
        base = parse_spec(m.group(1))
        return {**base, "integration": INTEGRATIONS[m.group(2)]}
    raise KeyError(f"unknown tokenizer {spec!r}; known: flat, hier[-XYZ][-tok] (XYZ in 0/1), text, "
                   f"{', '.join(MEDTOK_SPECS)}, and X+flat / X-init for X in {', '.join(INTEGRATION_BASES)}")


class CodeSpace:
    """The dataset's distinct codes (index 0 = padding, codes from 1)."""

    def __init__(self, codes):
        self.codes = ["<pad>"] + sorted(set(map(str, codes)) - {"<pad>"})
        self.index = {c: i for i, c in enumerate(self.codes)}

    def __len__(self) -> int:
        return len(self.codes)

    def encode(self, codes) -> np.ndarray:
        return np.array([self.index[c] for c in codes], dtype=np.int64)


@dataclass
class Resources:
    """Frozen inputs some tokenizers need, already aligned to a CodeSpace: per code index,
    `levels` [V, 3] level keys, `vocab` [V] bool (a vocabulary code), text / MedTok vectors and
    the masks saying which codes they cover."""

    levels: np.ndarray | None = None
    in_vocab: np.ndarray | None = None
    text: np.ndarray | None = None                       # [V, 1, 384]
    text_found: np.ndarray | None = None
    medtok: dict = field(default_factory=dict)           # variant -> (vectors [V, 4, d], ids [V, 4, K], weights, found)
    vocab_graph: tuple | None = None                     # (code table, CodeGraph) for graph-kg; None = the built vocabulary


def _lookup_rows(keys, allowed: set) -> tuple[np.ndarray, int]:
    """Row per key: 1.. for keys in `allowed` (sorted), 0 = unknown / missing."""
    vocab = {k: i + 1 for i, k in enumerate(sorted(allowed))}
    return np.array([vocab.get(k, 0) if k is not None else 0 for k in keys], dtype=np.int64), len(vocab) + 1


class CodeTokenizer(nn.Module):
    """Base: the learned table for codes the tokenizer does not cover with its own path."""

    unseen_rule = ""

    def __init__(self, spec: str, d: int, space: CodeSpace, train_seen: np.ndarray, res: Resources,
                 own: np.ndarray | None = None):
        super().__init__()
        self.spec, self.d = spec, d
        V = len(space)
        own = np.zeros(V, dtype=bool) if own is None else own.astype(bool)
        own[0] = False
        self.counts = {"codes": V - 1, "own_path": int(own[1:].sum())}
        flat_codes = (~own) & train_seen.astype(bool)
        flat_codes[0] = False
        rows, n_rows = _lookup_rows(range(V), set(np.flatnonzero(flat_codes).tolist()))
        rows[own] = 0
        # row 0 = UNK; padding positions are masked anyway
        self.register_buffer("flat_row", torch.from_numpy(rows), persistent=False)
        self.register_buffer("own", torch.from_numpy(own), persistent=False)
        self.flat = nn.Embedding(n_rows, d)
        nn.init.normal_(self.flat.weight, std=0.02)
        notpad = np.arange(V) > 0
        self.counts["learned_rows"] = n_rows - 1
        self.counts["unseen_to_unk"] = int((notpad & ~own & ~train_seen.astype(bool)).sum())

    def tokens_per_code(self) -> int:
        return 1

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        return self.flat(self.flat_row[codes])

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.code_vectors(codes).unsqueeze(2)
        return x, (codes > 0).unsqueeze(2)

    # ---- reporting -------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def frozen_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n.startswith("frozen"))

    def describe(self) -> dict:
        return {"tokenizer": self.spec, "unseen_rule": self.unseen_rule, "trainable_params": self.trainable_parameters(),
                "embedding_table_bytes": sum(p.numel() * p.element_size() for p in self.parameters()) + self.frozen_bytes(),
                "frozen_bytes": self.frozen_bytes(), **self.counts}


class FlatTokenizer(CodeTokenizer):
    unseen_rule = "one learned UNK row for every code never seen in training"


class HierTokenizer(CodeTokenizer):
    unseen_rule = ("UNK row + the code's learned G0/G1/G2 level rows (a level never seen in training: "
                   "that level's UNK row)")

    def __init__(self, spec, d, space, train_seen, res, levels=(1, 1, 1), mode="add"):
        super().__init__(spec, d, space, train_seen, res)
        if res.levels is None:
            raise ValueError("hierarchical tokenizer needs Resources.levels")
        self.enabled, self.mode = tuple(int(x) for x in levels), mode
        seen = train_seen.astype(bool)
        self.level_emb = nn.ModuleList()
        self.level_names = []
        for j, on in enumerate(self.enabled):
            if not on:
                continue
            keys = res.levels[:, j]
            allowed = {k for k, s in zip(keys, seen) if s and k is not None}
            rows, n = _lookup_rows(keys, allowed)
            has = np.array([k is not None for k in keys])
            rows = np.where(has, rows, -1)       # -1: the code has no such level (no contribution)
            self.register_buffer(f"lvl_row{j}", torch.from_numpy(rows), persistent=False)
            emb = nn.Embedding(n, d)
            nn.init.normal_(emb.weight, std=0.02)
            self.level_emb.append(emb)
            self.level_names.append(LEVELS[j])
            self.counts[f"{LEVELS[j]}_rows"] = n - 1
            self.counts[f"{LEVELS[j]}_unseen_level"] = int((has & (rows == 0) & (np.arange(len(keys)) > 0)).sum())
        if mode == "tokens":
            self.slot = nn.Embedding(1 + len(self.level_emb), d)
            nn.init.normal_(self.slot.weight, std=0.02)
        self.counts["unseen_with_levels"] = int(sum(1 for i in range(1, len(seen)) if not seen[i]
                                                    and any(res.levels[i, j] is not None
                                                            for j in range(3) if self.enabled[j])))

    def tokens_per_code(self) -> int:
        return 1 + len(self.level_emb) if self.mode == "tokens" else 1

    def _level_parts(self, codes):
        parts = []
        k = 0
        for j, on in enumerate(self.enabled):
            if not on:
                continue
            r = getattr(self, f"lvl_row{j}")[codes]
            has = r >= 0
            parts.append((self.level_emb[k](r.clamp(min=0)) * has.unsqueeze(-1), has))
            k += 1
        return parts

    def forward(self, codes):
        base = self.flat(self.flat_row[codes])
        parts = self._level_parts(codes)
        notpad = codes > 0
        if self.mode == "add":
            for v, _ in parts:
                base = base + v
            return base.unsqueeze(2), notpad.unsqueeze(2)
        x = torch.stack([base] + [v for v, _ in parts], dim=2) + self.slot.weight
        m = torch.stack([notpad] + [h & notpad for _, h in parts], dim=2)
        return x, m


class VectorTokenizer(CodeTokenizer):
    """Frozen per-code vectors (text or MedTok) through a learned projection; other codes flat."""

    def __init__(self, spec, d, space, train_seen, res, vectors: np.ndarray, found: np.ndarray, rule: str,
                 out_of_system: np.ndarray | None = None):
        found = found.astype(bool).copy()
        found[0] = False
        super().__init__(spec, d, space, train_seen, res, own=found | (out_of_system if out_of_system is not None
                                                                       else np.zeros_like(found)))
        self.unseen_rule = rule
        flat_dim = int(np.prod(vectors.shape[1:]))
        self.register_buffer("frozen_vec", torch.from_numpy(
            np.ascontiguousarray(vectors.reshape(len(vectors), flat_dim), dtype=np.float32)).to(torch.float16),
            persistent=False)
        self.register_buffer("has_vec", torch.from_numpy(found), persistent=False)
        self.proj = nn.Sequential(nn.LayerNorm(flat_dim), nn.Linear(flat_dim, d))
        self.counts["frozen_vectors"] = int(found.sum())
        self.counts["out_of_system"] = int(out_of_system[1:].sum()) if out_of_system is not None else 0

    def code_vectors(self, codes):
        v = self.proj(self.frozen_vec[codes].float())
        return torch.where(self.has_vec[codes].unsqueeze(-1), v, self.flat(self.flat_row[codes]))


class MedTokIdTokenizer(CodeTokenizer):
    unseen_rule = ("MedTok token ids of any code in the checkpoint's systems (inductive: from its text and "
                   "graph) -> learned codebook-sized embedding, weighted mean; codes outside those systems: UNK row")

    def __init__(self, spec, d, space, train_seen, res, ids: np.ndarray, weights: np.ndarray, found: np.ndarray,
                 codebook_size: int, out_of_system: np.ndarray | None = None):
        found = found.astype(bool).copy()
        found[0] = False
        oos = out_of_system if out_of_system is not None else np.zeros_like(found)
        super().__init__(spec, d, space, train_seen, res, own=found | oos)
        V = len(found)
        self.register_buffer("frozen_ids", torch.from_numpy(ids.reshape(V, -1).astype(np.int64)), persistent=False)
        w = weights.reshape(V, -1).astype(np.float32)
        w = w / np.maximum(w.sum(1, keepdims=True), 1e-9)
        self.register_buffer("frozen_w", torch.from_numpy(w), persistent=False)
        self.register_buffer("has_vec", torch.from_numpy(found), persistent=False)
        self.codebook = nn.Embedding(codebook_size, d)
        nn.init.normal_(self.codebook.weight, std=0.02)
        self.counts["frozen_vectors"] = int(found.sum())
        self.counts["out_of_system"] = int(oos[1:].sum())

    def code_vectors(self, codes):
        v = (self.codebook(self.frozen_ids[codes]) * self.frozen_w[codes].unsqueeze(-1)).sum(-2)
        return torch.where(self.has_vec[codes].unsqueeze(-1), v, self.flat(self.flat_row[codes]))


def _oos(res: Resources, found: np.ndarray) -> np.ndarray:
    """Vocabulary codes without a vector: outside the tokenizer's systems."""
    if res.in_vocab is None:
        return np.zeros_like(found, dtype=bool)
    return res.in_vocab.astype(bool) & ~found.astype(bool)


def make_tokenizer(spec: str, d: int, space: CodeSpace, train_seen: np.ndarray, res: Resources) -> CodeTokenizer:
    p = parse_spec(spec)
    fam = p["family"]
    if fam == "flat":
        return FlatTokenizer(spec, d, space, train_seen, res)
    if fam == "hier":
        if p["levels"] == (0, 0, 0):
            return FlatTokenizer(spec, d, space, train_seen, res)
        return HierTokenizer(spec, d, space, train_seen, res, p["levels"], p["mode"])
    if fam == "graph":
        raise ValueError(f"{spec}: a graph-initialised table needs its GCN pretraining; the benchmark cell builds "
                         "it (ehr.benchmark.cells.run_cell -> models.hicd_graph.GraphInitTokenizer)")
    if p.get("integration"):
        return _integration_tokenizer(spec, p, d, space, train_seen, res)
    if fam == "text":
        if res.text is None:
            raise ValueError("text tokenizer needs Resources.text")
        return VectorTokenizer(spec, d, space, train_seen, res, res.text, res.text_found,
                               "frozen MiniLM description embedding of any vocabulary code (seen or not), learned projection")
    variant = p["variant"]
    if variant not in res.medtok:
        raise ValueError(f"{spec} needs MedTok vectors of variant {variant!r} in Resources.medtok")
    vec, ids, w, found = res.medtok[variant]
    if fam == "medtok-ids":
        n_codebook = int(ids.max()) + 1 if ids.size else 1
        n_codebook = max(n_codebook, int(variant.split("-n")[1]))
        return MedTokIdTokenizer(spec, d, space, train_seen, res, ids, w, found, n_codebook, _oos(res, found))
    return VectorTokenizer(spec, d, space, train_seen, res, vec, found,
                           "frozen MedTok quantized vectors of any code in the checkpoint's systems (inductive: from "
                           "its text and graph), learned projection; codes outside those systems: UNK row",
                           out_of_system=_oos(res, found))


class VectorPlusFlatTokenizer(VectorTokenizer):
    """`X+flat`: the frozen vector through the learned projection, plus a learned per-code row
    (initialised at ZERO) for every train-seen code with a vector. At initialisation it gives
    exactly the vectors of the frozen arm X; training can move each seen code away from its
    projection. A code never seen in training has the zero row (row 0, `padding_idx`: no
    gradient, no weight decay moves it): the projected vector alone."""

    def __init__(self, spec, d, space, train_seen, res, vectors, found, rule, out_of_system=None):
        super().__init__(spec, d, space, train_seen, res, vectors, found, rule, out_of_system)
        has = found.astype(bool).copy()
        has[0] = False
        seen_vec = has & train_seen.astype(bool)
        rows, n = _lookup_rows(range(len(has)), set(np.flatnonzero(seen_vec).tolist()))
        self.register_buffer("delta_row", torch.from_numpy(rows), persistent=False)
        self.delta = nn.Embedding(n, d, padding_idx=0)
        nn.init.zeros_(self.delta.weight)
        self.counts["plus_flat_rows"] = n - 1

    def code_vectors(self, codes):
        v = self.proj(self.frozen_vec[codes].float()) + self.delta(self.delta_row[codes])
        return torch.where(self.has_vec[codes].unsqueeze(-1), v, self.flat(self.flat_row[codes]))


def pca_map(vectors: np.ndarray, fit_rows: np.ndarray, d: int, target_std: float = 0.02) -> tuple[np.ndarray, np.ndarray, float]:
    """The fixed map of `X-init`: PCA of the vectors of the `fit_rows` codes (centred; the top
    `d` right singular vectors; components beyond the rank are zero), scaled so the mapped
    fit rows have overall standard deviation `target_std` (the flat table's init scale).
    Returns (mean [F], components [F, d], scale); map(x) = scale * (x - mean) @ components."""
    X = vectors.reshape(len(vectors), -1).astype(np.float64)
    F = X[fit_rows] if len(fit_rows) else X[:0]
    mean = F.mean(0) if len(F) else np.zeros(X.shape[1])
    comp = np.zeros((X.shape[1], d))
    if len(F) > 1:
        _, _, vt = np.linalg.svd(F - mean, full_matrices=False)
        k = min(d, vt.shape[0])
        comp[:, :k] = vt[:k].T
        # a fixed sign per component (SVD signs are arbitrary): the largest |loading| positive
        sgn = np.sign(comp[np.abs(comp).argmax(0), np.arange(d)])
        comp = comp * np.where(sgn == 0, 1.0, sgn)
    z = (F - mean) @ comp if len(F) else np.zeros((0, d))
    sd = float(z.std()) if z.size else 0.0
    scale = target_std / sd if sd > 0 else 1.0
    return mean, comp, scale


class VectorInitTokenizer(CodeTokenizer):
    """`X-init` (the MedTok paper's protocol): a trainable per-code table whose row for every
    train-seen code with a vector starts from X mapped to the model width by a fixed PCA map
    (`pca_map`, fitted on the train-seen codes' vectors), then trains like flat. A code never
    seen in training gets the same fixed map of its vector (a frozen buffer: nothing trains it);
    codes without a vector: the flat table (UNK row when unseen)."""

    def __init__(self, spec, d, space, train_seen, res, vectors, found, rule, out_of_system=None):
        has = found.astype(bool).copy()
        has[0] = False
        oos = out_of_system if out_of_system is not None else np.zeros_like(has)
        super().__init__(spec, d, space, train_seen, res, own=has | oos)
        self.unseen_rule = rule
        seen_vec = has & train_seen.astype(bool)
        mean, comp, scale = pca_map(vectors, np.flatnonzero(seen_vec), d)
        X = vectors.reshape(len(vectors), -1).astype(np.float64)
        mapped = (scale * (X - mean) @ comp).astype(np.float32)
        mapped[~has] = 0.0
        self.register_buffer("frozen_mapped", torch.from_numpy(mapped), persistent=False)
        rows, n = _lookup_rows(range(len(has)), set(np.flatnonzero(seen_vec).tolist()))
        self.register_buffer("init_row", torch.from_numpy(rows), persistent=False)
        self.register_buffer("seen_vec", torch.from_numpy(seen_vec), persistent=False)
        self.register_buffer("has_vec", torch.from_numpy(has), persistent=False)
        table = np.zeros((n, d), dtype=np.float32)
        table[rows[seen_vec]] = mapped[seen_vec]
        self.table = nn.Embedding(n, d)
        with torch.no_grad():
            self.table.weight.copy_(torch.from_numpy(table))
        self.map_info = {"pca_fit_codes": int(seen_vec.sum()), "pca_scale": scale,
                         "pca_components": int(min(d, max(int(seen_vec.sum()) - 1, 0)))}
        self.counts.update(init_rows=n - 1, frozen_vectors=int(has.sum()), out_of_system=int(oos[1:].sum()),
                           unseen_fixed_map=int((has & ~train_seen.astype(bool)).sum()))

    def code_vectors(self, codes):
        learned = self.table(self.init_row[codes])
        v = torch.where(self.seen_vec[codes].unsqueeze(-1), learned, self.frozen_mapped[codes])
        return torch.where(self.has_vec[codes].unsqueeze(-1), v, self.flat(self.flat_row[codes]))

    def describe(self):
        return {**super().describe(), **self.map_info}


def _integration_tokenizer(spec, p, d, space, train_seen, res) -> CodeTokenizer:
    cls = VectorPlusFlatTokenizer if p["integration"] == "plus-flat" else VectorInitTokenizer
    what = ("projected frozen vector + learned per-code row initialised at zero (unseen: projection alone)"
            if cls is VectorPlusFlatTokenizer else
            "trainable per-code table initialised by a fixed PCA map of the vector (unseen: the fixed map)")
    if p["family"] == "text":
        if res.text is None:
            raise ValueError(f"{spec} needs Resources.text")
        return cls(spec, d, space, train_seen, res, res.text, res.text_found, f"MiniLM description vector: {what}")
    variant = p["variant"]
    if variant not in res.medtok:
        raise ValueError(f"{spec} needs MedTok vectors of variant {variant!r} in Resources.medtok")
    vec, _, _, found = res.medtok[variant]
    return cls(spec, d, space, train_seen, res, vec, found, f"MedTok quantized vectors: {what}; codes outside the "
               "checkpoint's systems: UNK row", out_of_system=_oos(res, found))


def full_vocab_footprint(spec: str, d: int, n_codes: int, level_rows: dict | None = None, text_dim: int = 384,
                         medtok_dim: int = 64, medtok_k: int = 4, codebook_size: int = 12000) -> dict:
    """Embedding-table memory (float32 learned, float16 frozen, int32 ids) and trainable
    parameters if every code of an `n_codes` vocabulary had to be embedded (the paper's
    scaling argument: one learned row per code grows with the vocabulary; a tokenizer with
    frozen inputs and a shared codebook does not)."""
    p = parse_spec(spec)
    fam = p["family"]
    out = {"tokenizer": spec, "n_codes": n_codes}
    if fam in ("flat", "hier", "graph"):       # graph: one learned row per code (GCN pretraining not counted)
        rows = n_codes + 1
        if fam == "hier":
            rows += sum((level_rows or {}).get(LEVELS[j], 0) + 1 for j in range(3) if p["levels"][j])
        out.update(trainable_params=rows * d, learned_bytes=rows * d * 4, frozen_bytes=0)
    elif fam == "text":
        out.update(trainable_params=2 * text_dim + text_dim * d + d, learned_bytes=(2 * text_dim + text_dim * d + d) * 4,
                   frozen_bytes=n_codes * text_dim * 2)
    elif fam == "medtok":
        f = 4 * medtok_dim
        out.update(trainable_params=2 * f + f * d + d, learned_bytes=(2 * f + f * d + d) * 4,
                   frozen_bytes=n_codes * f * 2)
    else:
        cb = int(p["variant"].split("-n")[1]) if "-n" in p["variant"] else codebook_size
        out.update(trainable_params=cb * d, learned_bytes=cb * d * 4,
                   frozen_bytes=n_codes * 4 * medtok_k * (4 + 2))
    if p.get("integration"):      # + one learned row per code (X+flat: zero-initialised; X-init: the table)
        rows = n_codes * d
        if p["integration"] == "init":
            out.update(trainable_params=rows, learned_bytes=rows * 4)
        else:
            out.update(trainable_params=out["trainable_params"] + rows, learned_bytes=out["learned_bytes"] + rows * 4)
    out["total_bytes"] = out["learned_bytes"] + out["frozen_bytes"]
    return out

"""Intrinsic evaluation of a MedTok tokenizer: `evaluate(tokenizer) -> dict`.

* codebook usage (fraction of a region's entries used by some code of the vocabulary)
  and perplexity (exp entropy of the weight-mass distribution over the region's entries);
* hierarchy: weighted Jaccard overlap of token bags for sibling codes (same parent, same
  system) vs random pairs drawn from the same systems;
* cross-system alignment: the same for ICD-9 <-> ICD-10 GEM pairs vs random pairs with the
  same system pair;
* the same ratios restricted to held-out codes (never a training centre).
Token bag of a code: its 4K (id, weight) pairs, weights summed over repeated ids (total mass 4).

Normalised overlap. The ratio related / random grows with the codebook by construction (the
random-pair overlap falls like 1/N), so each pair set also reports
* `kappa` = (O - R) / (1 - R), O the related-pair and R the random-pair mean overlap: the share
  of the overlap a pair could still gain over chance that related pairs get (0 = chance,
  1 = identical bags; Cohen's kappa form, R from the tokenizer's own token frequencies);
* `auc`: P(a related pair overlaps more than a random pair), ties counted 1/2 (0.5 = chance);
* `uniform_overlap` U: the mean overlap of the same pairs with every group's ids replaced by
  K distinct ids drawn uniformly from the group's region (weights kept) -- random token sets
  of the same sizes -- and `lift_uniform` = O / U.
GEM and sibling pairs are drawn from `reference_graph` / the vocabulary's parents, so a
tokenizer whose graph lost its GEM edges is still scored on the GEM pairs.

`evaluate_checkpoints` is the job behind `scripts/eval_medtok.py` (results dict + JSON file);
the ablations, which train, live in `medtok.ablations` (inference never imports training).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medbase.atomic import atomic_write_text
from medtok.model.config import GROUP_REGION, GROUPS
from medtok.model.text_encoder import benchmark_text_embedder
from medtok.splits import heldout_mask
from medtok.tokenizer import MedTokTokenizer

GEM_TYPES = ("gem_icd9_icd10", "gem_icd10_icd9", "gem_icd9pcs_icd10pcs")


def token_bags(ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[V, 4, K] -> per-code unique ids [V, 4K] (-1 pads) and summed weights (0 pads)."""
    v = len(ids)
    flat_i, flat_w = ids.reshape(v, -1), weights.reshape(v, -1).astype(np.float64)
    order = np.argsort(flat_i, axis=1, kind="stable")
    si, sw = np.take_along_axis(flat_i, order, 1), np.take_along_axis(flat_w, order, 1)
    first = np.ones_like(si, dtype=bool)
    first[:, 1:] = si[:, 1:] != si[:, :-1]
    grp = np.cumsum(first, axis=1) - 1
    out_i = np.full_like(si, -1)
    out_w = np.zeros_like(sw)
    rows = np.repeat(np.arange(v), si.shape[1]).reshape(si.shape)
    out_i[rows[first], grp[first]] = si[first]
    np.add.at(out_w, (rows, grp), sw)
    return out_i, out_w


def weighted_jaccard(bag_i: np.ndarray, bag_w: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 20000) -> np.ndarray:
    """sum min(w_a, w_b) / sum max(w_a, w_b) over token ids, for each pair (a[p], b[p])."""
    out = np.empty(len(a))
    for s in range(0, len(a), chunk):
        ia, ib = bag_i[a[s:s + chunk]], bag_i[b[s:s + chunk]]
        wa, wb = bag_w[a[s:s + chunk]], bag_w[b[s:s + chunk]]
        eq = (ia[:, :, None] == ib[:, None, :]) & (ia[:, :, None] >= 0)
        inter = (eq * np.minimum(wa[:, :, None], wb[:, None, :])).sum((1, 2))
        out[s:s + chunk] = inter / (wa.sum(1) + wb.sum(1) - inter)
    return out


def codebook_stats(ids: np.ndarray, weights: np.ndarray, regions: dict[str, tuple[int, int]]) -> dict:
    out = {}
    for region, (lo, hi) in regions.items():
        cols = [j for j, g in enumerate(GROUPS) if GROUP_REGION[g] == region]
        i, w = ids[:, cols].ravel(), weights[:, cols].ravel()
        mass = np.bincount(i - lo, weights=w, minlength=hi - lo)
        p = mass / mass.sum()
        nz = p[p > 0]
        out[region] = {"entries": hi - lo, "used": int((mass > 0).sum()), "usage": float((mass > 0).mean()),
                       "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}
    used = sum(r["used"] for r in out.values())
    out["all"] = {"entries": int(sum(r["entries"] for r in out.values())), "used": used,
                  "usage": used / sum(r["entries"] for r in out.values())}
    return out


def sibling_pairs(vocab, codes_mask: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Up to n (a, b) row pairs of assignable codes sharing a parent (same system)."""
    idx = vocab._index
    systems = vocab.codes["system"].to_numpy()
    children: dict[int, list[int]] = {}
    for r in np.flatnonzero(codes_mask):
        for p in vocab.codes["parents"].iat[r]:
            pr = idx.get(p)
            if pr is not None and systems[pr] == systems[r]:
                children.setdefault(pr, []).append(r)
    groups = [np.array(c) for c in children.values() if len(c) >= 2]
    if not groups:
        return np.zeros((0, 2), dtype=np.int64)
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    pick = rng.choice(len(groups), n, p=sizes / sizes.sum())  # sample proportionally to family size
    pairs = np.array([rng.choice(groups[k], 2, replace=False) for k in pick])
    return np.unique(pairs, axis=0)


def random_pairs_like(pairs: np.ndarray, systems: np.ndarray, pool_a: np.ndarray, pool_b: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """For each (a, b): a random code from pool_a with a's system and one from pool_b with b's system."""
    out = np.empty_like(pairs)
    for col, pool in ((0, pool_a), (1, pool_b)):
        by_sys = {s: pool[systems[pool] == s] for s in np.unique(systems[pairs[:, col]])}
        for s, cand in by_sys.items():
            m = systems[pairs[:, col]] == s
            out[m, col] = rng.choice(cand, m.sum())
    same = out[:, 0] == out[:, 1]
    out[same, 1] = rng.choice(pool_b, same.sum())
    return out


def kappa(overlap: float, random_overlap: float) -> float:
    """Chance-corrected overlap (O - R) / (1 - R); 0 when R = 1 (every bag equal: nothing to gain)."""
    return float((overlap - random_overlap) / (1 - random_overlap)) if random_overlap < 1 else 0.0


def auc(related: np.ndarray, random: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for X a related-pair and Y a random-pair overlap (Mann-Whitney U / nm)."""
    x, y = np.sort(np.asarray(related, float)), np.sort(np.asarray(random, float))
    below = np.searchsorted(y, x, side="left")
    ties = np.searchsorted(y, x, side="right") - below
    return float((below + ties / 2).sum() / (len(x) * len(y)))


def random_token_ids(ids: np.ndarray, regions: dict[str, tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """`ids` [n, 4, K] with each group's K ids replaced by K distinct ids drawn uniformly from its region."""
    out = np.empty_like(ids)
    n, _, k = ids.shape
    for j, g in enumerate(GROUPS):
        lo, hi = regions[GROUP_REGION[g]]
        draw = rng.integers(lo, hi, size=(n, k))
        while True:  # redraw repeated ids within a row until all K are distinct (regions >= K entries)
            s = np.sort(draw, axis=1)
            dup_rows = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(1))
            if len(dup_rows) == 0:
                break
            draw[dup_rows] = rng.integers(lo, hi, size=(len(dup_rows), k))
        out[:, j] = draw
    return out


def _ratio(bag_i, bag_w, pairs, rand, chance=None) -> dict:
    """Overlap of related `pairs` vs `rand` pairs; `chance` = (ids, weights, regions, rng) adds the
    uniform random-token-set overlap of the same pairs."""
    if len(pairs) == 0:
        return {"pairs": 0}
    o = weighted_jaccard(bag_i, bag_w, pairs[:, 0], pairs[:, 1])
    r = weighted_jaccard(bag_i, bag_w, rand[:, 0], rand[:, 1])
    out = {"pairs": int(len(pairs)), "overlap": float(o.mean()), "random_overlap": float(r.mean()),
           "ratio": float(o.mean() / max(r.mean(), 1e-12)), "kappa": kappa(o.mean(), r.mean()), "auc": auc(o, r)}
    if chance is not None:
        ids, w, regions, rng = chance
        rows = pairs.reshape(-1)
        ri, rw = token_bags(random_token_ids(ids[rows], regions, rng), w[rows])
        u = weighted_jaccard(ri, rw, np.arange(0, len(rows), 2), np.arange(1, len(rows), 2)).mean()
        out.update(uniform_overlap=float(u), lift_uniform=float(o.mean() / max(u, 1e-12)))
    return out


def evaluate(tokenizer, heldout_fraction: float | None = None, n_pairs: int = 20000, seed: int = 0,
             progress: bool = True) -> dict:
    """Evaluate a `MedTokTokenizer` (see the module docstring). Held-out codes: the tokenizer's own
    (`tokenizer.heldout_mask()`: hashed fraction + explicit list), or `heldout_fraction` when given."""
    vocab = tokenizer.vocab
    codes = vocab.codes
    if heldout_fraction is None:
        held = tokenizer.heldout_mask()
    else:
        held = heldout_mask(codes["code_id"], codes["kind"], heldout_fraction, tokenizer.heldout_codes)
    t0 = time.perf_counter()
    enc = tokenizer.encode_all(progress=progress)
    t_tok = time.perf_counter() - t0
    result = evaluate_tokens(enc.ids.numpy(), enc.weights.numpy(), vocab, tokenizer.reference_graph, held,
                             tokenizer.model.config.regions(), n_pairs=n_pairs, seed=seed)
    result["tokenize_s"] = t_tok
    return result


def evaluate_tokens(ids: np.ndarray, w: np.ndarray, vocab, graph, held: np.ndarray, regions: dict,
                    n_pairs: int = 20000, seed: int = 0) -> dict:
    """The metrics of `evaluate` for any token table: ids / weights [V, 4, K] of every vocabulary row
    (group j's ids in region GROUP_REGION[GROUPS[j]] of `regions`), GEM pairs from `graph`'s edges,
    `held` the rows never used in fitting (the held-out columns)."""
    rng = np.random.default_rng(seed)
    chance_rng = np.random.default_rng([seed, 1])  # own stream: the pair sampling below is unchanged
    bag_i, bag_w = token_bags(ids, w)
    systems = vocab.codes["system"].to_numpy()
    is_code = vocab.codes["kind"].to_numpy() == "code"
    codes = np.flatnonzero(is_code)
    result = {"codes": len(vocab), "heldout_codes": int(held.sum()), "codebook": codebook_stats(ids, w, regions)}
    chance = (ids, w, regions, chance_rng)

    sib = sibling_pairs(vocab, is_code, rng, n_pairs)
    result["siblings"] = _ratio(bag_i, bag_w, sib, random_pairs_like(sib, systems, codes, codes, rng), chance)
    sib_h = sib[held[sib[:, 0]] | held[sib[:, 1]]]
    sib_h = np.where(held[sib_h[:, :1]], sib_h, sib_h[:, ::-1])  # held-out code first
    result["siblings_heldout"] = _ratio(bag_i, bag_w, sib_h,
                                        random_pairs_like(sib_h, systems, np.flatnonzero(held), codes, rng), chance)

    names = np.array(graph.edge_type_names)
    gem = np.isin(names[graph.etype], GEM_TYPES)
    gp = np.stack([graph.src[gem], graph.dst[gem]], 1)
    gp = gp[is_code[gp[:, 0]] & is_code[gp[:, 1]]]
    if len(gp) > n_pairs:
        gp = gp[rng.choice(len(gp), n_pairs, replace=False)]
    result["gem"] = _ratio(bag_i, bag_w, gp, random_pairs_like(gp, systems, codes, codes, rng), chance)
    gem_all = np.stack([graph.src[gem], graph.dst[gem]], 1)
    gh = gem_all[(held[gem_all[:, 0]] | held[gem_all[:, 1]]) & is_code[gem_all[:, 0]] & is_code[gem_all[:, 1]]]
    gh = np.where(held[gh[:, :1]], gh, gh[:, ::-1])
    result["gem_heldout"] = _ratio(bag_i, bag_w, gh, random_pairs_like(gh, systems, np.flatnonzero(held), codes, rng),
                                   chance)
    return result


def format_table(results: dict[str, dict]) -> str:
    """One row per evaluated checkpoint."""
    head = (f"{'model':<22}{'usage':>7}{'ppl_t':>8}{'ppl_g':>8}{'ppl_s':>8}{'sib':>8}{'sib_ho':>8}{'gem':>8}"
            f"{'gem_ho':>8}{'k_sib':>8}{'k_gem':>8}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        cb = r["codebook"]
        f = lambda k, m="ratio": r[k].get(m, float("nan"))  # noqa: E731
        lines.append(f"{name:<22}{cb['all']['usage']:>7.3f}{cb['text']['perplexity']:>8.0f}{cb['graph']['perplexity']:>8.0f}"
                     f"{cb['shared']['perplexity']:>8.0f}{f('siblings'):>8.1f}{f('siblings_heldout'):>8.1f}"
                     f"{f('gem'):>8.1f}{f('gem_heldout'):>8.1f}{f('siblings', 'kappa'):>8.3f}{f('gem', 'kappa'):>8.3f}")
    lines.append("ratios = mean weighted-Jaccard token overlap of related pairs / random pairs of the same systems "
                 "(ho = pairs with a held-out code); k_ = chance-corrected (O - R) / (1 - R)")
    return "\n".join(lines)


def evaluate_checkpoint(ckpt: str | Path, vocab_dir: str | Path | None = None, out_json: str | Path | None = None,
                        device: str | None = None, **kw) -> dict:
    tok = MedTokTokenizer.from_pretrained(ckpt, vocab_dir, device=device)
    res = evaluate(tok, **kw)
    res["checkpoint"] = str(ckpt)
    res["config"] = tok.model.config.to_dict()
    if out_json:
        atomic_write_text(out_json, json.dumps(res, indent=1))
    return res


def evaluate_checkpoints(checkpoints: list[str | Path], vocab_dir: str | Path | None = None, n_pairs: int = 20000,
                         seed: int = 0, benchmark: bool = False, bench_texts: int = 5000,
                         out_json: str | Path | None = None, device: str | None = None) -> tuple[dict, Path]:
    """Evaluate each checkpoint -> ({checkpoint name: result}, path of the JSON written).

    With `benchmark`, also time whole-vocabulary tokenization (second of two runs) and, once, the
    text embedder on `bench_texts` descriptions (key "_text_embedder_benchmark"). Writes `out_json`
    (default <first checkpoint>/eval.json)."""
    results, tok = {}, None
    for ck in checkpoints:
        tok = MedTokTokenizer.from_pretrained(ck, vocab_dir, device=device)
        r = evaluate(tok, n_pairs=n_pairs, seed=seed)
        r["checkpoint"], r["config"] = str(ck), tok.model.config.to_dict()
        if benchmark:
            r["tokenize_benchmark"] = [tok.benchmark_encode_all() for _ in range(2)][-1]
        results[Path(ck).name] = r
    if benchmark and tok is not None:
        results["_text_embedder_benchmark"] = benchmark_description_embedder(
            tok.vocab, bench_texts, seed, tok.model.config.text_encoder)
    out = Path(out_json) if out_json else Path(checkpoints[0]) / "eval.json"
    atomic_write_text(out, json.dumps(results, indent=1))
    return results, out


def benchmark_description_embedder(vocab, n_texts: int = 5000, seed: int = 0, model_path: str | None = None,
                                   batch_size: int = 128, repeats: int = 1) -> dict:
    """`benchmark_text_embedder` on `n_texts` descriptions sampled from `vocab` (fixed seed)."""
    texts = list(vocab.codes["description"].sample(n_texts, random_state=seed))
    return benchmark_text_embedder(texts, model_path, batch_size=batch_size, repeats=repeats)

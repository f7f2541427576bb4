"""Cross-dataset transfer (the hierarchical-ICD paper's second axis): train a neural model on
dataset A, freeze it, and fit a linear probe on dataset B's [CLS] features.

Both cohorts share one code space (the union of their codes); the tokenizer's "seen" codes
are A's training codes, so a code that only B uses is an unseen code, handled by each
tokenizer's rule (UNK, hierarchy levels, text, MedTok). Per (task, model, tokenizer, seed):
- `probe`: logistic regression (C = 1, standardised features; one-vs-rest for multi-label)
  fitted on B's train split, scored on B's test split;
- `direct`: A's own head applied to B's test split (no adaptation), for reference.
For synthetic -> synthetic, B is generated with `synthetic_seed + 1`: another code world
(popularity and effects drawn anew), i.e. a shifted code distribution.
Cells are resumable like the grid (`<out>/transfer/cells/...`); results go to
`transfer_results.csv` / `.json` and `transfer_report.md` with CIs and paired differences
to flat (same replicates).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from ehr.benchmark.bootstrap import bootstrap_ci
from ehr.benchmark.cells import NEURAL_MODELS, BenchConfig, predictions_frame, read_cell
from ehr.benchmark.data import SyntheticSpec, load_cohort
from ehr.benchmark.metrics import compute_metrics
from ehr.benchmark.models.behrt import BEHRT
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.transformer import TransformEHR
from ehr.benchmark.prepare import default_task_specs, prepare
from ehr.benchmark.tokenizers import DEFAULT_TOKENIZERS, CodeSpace, make_tokenizer
from ehr.benchmark.train import TrainConfig, fit, n_outputs, predict, to_batch
from medbase.atomic import atomic_path, atomic_write_text
from medbase.jsonconfig import JsonConfig


@dataclass
class TransferConfig(JsonConfig):
    source_dataset: str = "mimic3"
    source_root: str = ""
    target_dataset: str = "eicu"
    target_root: str = ""
    out: str = "runs/ehr_transfer"
    tasks: list | None = None
    tokenizers: list = field(default_factory=lambda: list(DEFAULT_TOKENIZERS))
    models: list = field(default_factory=lambda: ["transformer"])
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    threads: int = 1
    bench: dict = field(default_factory=lambda: BenchConfig().to_dict())
    synthetic_patients: int = 2000
    synthetic_scenario: str = "hierarchy"
    target_synthetic_scenario: str = "hierarchy"
    synthetic_seed: int = 0
    probe_c: float = 1.0
    keep_codes: str | None = None       # regex: only these codes become inputs (None = all)
    build_medtok: bool = True
    progress: bool = True

    def __post_init__(self):
        bad = [m for m in self.models if m not in NEURAL_MODELS]
        if bad:
            raise ValueError(f"transfer needs neural models ({NEURAL_MODELS}), got {bad}")


@torch.no_grad()
def encode_all(net, data, idx: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """[CLS] features [len(idx), d_model] on the CPU; the batches go to the model's device (`fit`
    may have put it on CUDA)."""
    net.eval()
    device = next(net.parameters()).device
    out = np.zeros((len(idx), net.cfg.d_model), dtype=np.float32)
    order = np.argsort(data.length[idx], kind="stable")
    for a in range(0, len(idx), batch_size):
        rows = order[a:a + batch_size]
        out[rows] = net.encode(to_batch(data, idx[rows], device)).float().cpu().numpy()
    return out


def linear_probe(kind: str, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, n_classes: int, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(Xtr)
    Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)

    def one(y):
        if len(np.unique(y)) < 2:
            return None
        return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(Xtr, y)

    if kind == "multilabel":
        out = np.zeros((len(Xte), ytr.shape[1]))
        for j in range(ytr.shape[1]):
            m = one(ytr[:, j])
            out[:, j] = m.predict_proba(Xte)[:, 1] if m is not None else float(ytr[:, j].mean())
        return out
    m = one(ytr)
    k = 2 if kind == "binary" else n_classes
    if m is None:
        p = np.tile(np.bincount(ytr, minlength=k) / len(ytr), (len(Xte), 1))
    else:
        p = np.zeros((len(Xte), k))
        p[:, m.classes_.astype(int)] = m.predict_proba(Xte)
    return p[:, 1] if kind == "binary" else p


def _score(kind, y, p, subj, classes, bench):
    return {"metrics": compute_metrics(kind, y, p, classes),
            "ci": bootstrap_ci(kind, y, p, subj, bench.n_boot, bench.boot_seed)}


def run_transfer(cfg: TransferConfig, source=None, target=None, tasks_source: list | None = None,
                 tasks_target: list | None = None, vectors: dict | None = None) -> dict:
    """`source` / `target`: ready cohorts (default: loaded from the config); `tasks_*`: task
    specs or objects per side, in matching order (default: `cfg.tasks` for both); `vectors`:
    ready frozen vectors (tests)."""
    t0 = time.perf_counter()
    bench = BenchConfig.from_dict(cfg.bench)
    torch.set_num_threads(cfg.threads)
    A = source or load_cohort(cfg.source_dataset, cfg.source_root,
                              SyntheticSpec(cfg.synthetic_patients, cfg.synthetic_scenario, cfg.synthetic_seed))
    B = target or load_cohort(cfg.target_dataset, cfg.target_root,
                              SyntheticSpec(cfg.synthetic_patients, cfg.target_synthetic_scenario, cfg.synthetic_seed + 1))
    space = CodeSpace(set(A.events["code"].unique().to_list()) | set(B.events["code"].unique().to_list()))
    ta = tasks_source or cfg.tasks or default_task_specs()
    tb = tasks_target or ta
    mcfg, tcfg = ModelConfig.from_dict(bench.model), TrainConfig.from_dict(bench.train)
    pa = prepare(A, ta, cfg.tokenizers, mcfg.max_len, bench.medtok_steps, cfg.progress, vectors=vectors,
                 build_medtok=cfg.build_medtok, space=space, keep_codes=cfg.keep_codes)
    pb = prepare(B, tb, [], mcfg.max_len, bench.medtok_steps, cfg.progress, space=space, keep_codes=cfg.keep_codes)
    out = Path(cfg.out)
    records = []
    key = hashlib.blake2b(json.dumps([A.fingerprint, B.fingerprint, bench.to_dict(), cfg.probe_c, cfg.keep_codes],
                                     sort_keys=True).encode(), digest_size=5).hexdigest()
    from tqdm.auto import tqdm

    pairs = [(ba, bb) for ba, bb in zip(pa.bundles, pb.bundles) if not ba.skipped and not bb.skipped]
    jobs = [(ba, bb, m, t, s) for ba, bb in pairs for m in cfg.models for t in cfg.tokenizers for s in cfg.seeds]
    for ba, bb, model, tok, seed in tqdm(jobs, desc="transfer cells", disable=not cfg.progress):
        path = out / "transfer" / "cells" / f"{A.name}-to-{B.name}" / ba.key / f"{model}__{tok}__s{seed}__{key}.json"
        rec = read_cell(path)
        if rec is None:
            rec = _transfer_cell(path, ba, bb, pa, model, tok, seed, mcfg, tcfg, bench, cfg)
        records.append(rec)
    rows = []
    for r in records:
        for mode in ("probe", "direct"):
            m, ci = r[mode]["metrics"], r[mode]["ci"]
            kap = "auprc" if r["kind"] == "binary" else "auprc_macro"
            rows.append({"source": A.name, "target": B.name, "task": r["task"], "preset": r["preset"], "model": r["model"],
                         "tokenizer": r["tokenizer"], "seed": r["seed"], "mode": mode, "n_test": m["n"],
                         "prevalence": m["headline_prevalence"], "auprc": m["headline_auprc"],
                         "auprc_lo": ci[kap]["lo"], "auprc_hi": ci[kap]["hi"], "auroc": m["headline_auroc"],
                         "target_codes_unseen_in_source": r["target_codes_unseen_in_source"]})
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        pl.DataFrame(rows).write_csv(out / "transfer_results.csv")
    meta = {"config": cfg.to_dict(), "source_fingerprint": A.fingerprint, "target_fingerprint": B.fingerprint,
            "seconds": time.perf_counter() - t0,
            "skipped": {b.label: b.skipped for b in pa.bundles + pb.bundles if b.skipped}}
    atomic_write_text(out / "transfer_results.json", json.dumps({**meta, "rows": rows}, indent=1, default=str) + "\n")
    report = transfer_report(rows, A.name, B.name)
    (out / "transfer_report.md").write_text(report + "\n")
    return {**meta, "rows": rows, "report": report}


def _transfer_cell(path, ba, bb, pa, model, tok, seed, mcfg, tcfg, bench, cfg) -> dict:

    torch.manual_seed(seed)
    da, db = ba.data, bb.data
    tk = make_tokenizer(tok, mcfg.d_model, pa.space, ba.seen, pa.resources)
    net = (TransformEHR if model == "transformer" else BEHRT)(tk, n_outputs(da.kind, len(da.classes)), mcfg)
    hist = fit(net, da, tcfg, seed)
    net = hist.pop("model")
    tr, te = db.rows("train"), db.rows("held_out")
    Xtr, Xte = encode_all(net, db, tr), encode_all(net, db, te)
    p_probe = linear_probe(db.kind, Xtr, db.y[tr], Xte, len(db.classes), cfg.probe_c, seed)
    p_direct = predict(net, db, te, tcfg.eval_batch_size)
    subj = db.subject_id[te]
    target_codes = np.unique(db.bag.indices)
    rec = {"task": ba.name, "preset": ba.preset, "kind": ba.kind, "model": model, "tokenizer": tok, "seed": seed,
           "probe": _score(db.kind, db.y[te], p_probe, subj, db.classes, bench),
           "direct": _score(db.kind, db.y[te], p_direct, subj, db.classes, bench),
           "target_codes_unseen_in_source": int((~ba.seen[target_codes]).sum()),
           "target_codes": int(len(target_codes)), "epochs": hist["epochs"], "config": cfg.to_dict()}
    pred = predictions_frame(bb, te, p_probe)
    with atomic_path(path.with_suffix(".predictions.parquet")) as tmp:
        pred.write_parquet(tmp)
    rec["predictions_file"] = str(path.with_suffix(".predictions.parquet"))
    atomic_write_text(path, json.dumps(rec, indent=1, default=str) + "\n")
    return rec


def transfer_report(rows: list[dict], source: str, target: str) -> str:
    if not rows:
        return f"# Transfer {source} -> {target}\n\nno task is supported by both datasets"
    df = pl.DataFrame(rows)
    g = (df.group_by("task", "preset", "model", "tokenizer", "mode")
         .agg(pl.col("auprc").mean().alias("m"), pl.col("auprc").std().alias("sd"), pl.col("auprc_lo").mean().alias("lo"),
              pl.col("auprc_hi").mean().alias("hi"), pl.col("prevalence").first(), pl.col("n_test").first(),
              pl.col("target_codes_unseen_in_source").first())
         .sort("task", "preset", "model", "mode", "tokenizer"))
    lines = [f"# Transfer {source} -> {target} (frozen encoder + linear probe on the target's train split)\n",
             "| task | model | mode | tokenizer | AUPRC mean ± sd | mean per-seed 95% CI | prevalence | n test | target codes unseen in source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in g.iter_rows(named=True):
        lines.append(f"| {r['task']}/{r['preset']} | {r['model']} | {r['mode']} | {r['tokenizer']} | {r['m']:.3f} ± "
                     f"{(r['sd'] or 0):.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {r['prevalence']:.3f} | {r['n_test']} | "
                     f"{r['target_codes_unseen_in_source']} |")
    return "\n".join(lines)

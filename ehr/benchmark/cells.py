"""One cell of the grid = (dataset, task, model, tokenizer, seed): train, predict the WHOLE test
split, score it, write one result file (+ the per-sample predictions) and never redo it.

Cell files live at `<out>/cells/<dataset>/<task key>/<model>__<tokenizer>__s<seed>__<config
hash>.json` with `.predictions.parquet` beside; the config hash covers the data fingerprint,
the task definition and every model / training / tree / bootstrap setting, so a changed
setting makes new cells instead of reusing stale ones. Files are written atomically
(predictions first, the JSON last), so a cell interrupted mid-way is simply redone.

Predictions use the MEDS label layout, one row per (sample, label): `subject_id`,
`prediction_time`, `sample_id`, `label` (class name), `boolean_value` (the truth for that
label), `predicted_boolean_probability`, `predicted_boolean_value` (p >= 0.5); for binary tasks
one row per sample (the positive class), which `meds-evaluation` reads as is.
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

from ehr.benchmark.bootstrap import DEFAULT_REPLICATES, bootstrap_ci
from ehr.benchmark.metrics import compute_metrics
from ehr.benchmark.cooccurrence import KG_EDGE_TYPES, KG_JOINED_EDGE_TYPES, build_pmi_graph, vocabulary_graph
from ehr.benchmark.metrics import f1_at_tuned_threshold
from ehr.benchmark.models.behrt import BEHRT
from ehr.benchmark.models.hicd_bert import MLMConfig, cached_pretrain
from ehr.benchmark.models.hicd_graph import GCNConfig, GraphInitTokenizer, VisitPatientModel, cached_embeddings
from ehr.benchmark.models.encoder import ModelConfig
from ehr.benchmark.models.gbt import TREE_MODELS, TreeConfig, bag_features, fit_predict
from ehr.benchmark.models.transformer import TransformEHR
from ehr.benchmark.prepare import TaskBundle
from ehr.benchmark.tokenizers import CodeSpace, Resources, make_tokenizer, parse_spec
from ehr.benchmark.train import HeldOutIntegrityError, TrainConfig, fit, n_outputs, predict
from medbase.atomic import atomic_path, atomic_write_text
from medbase.jsonconfig import JsonConfig

NEURAL_MODELS = ("transformer", "behrt")
# issue 22: HICD-Graph's patient model (visit mean pooling, attention pooling across visits; with
# the `flat` tokenizer its flat-codes baseline, with `graph-*` the GCN-initialised arm) and the
# BEHRT-style model with masked-code pretraining (HICD-BERT; `behrt` is it without pretraining)
PAPER_MODELS = ("hicd", "behrt-mlm")
MODELS = NEURAL_MODELS + TREE_MODELS + PAPER_MODELS
DEFAULT_MODELS = ["transformer", "behrt", "gbt"]


@dataclass
class BenchConfig(JsonConfig):
    """Every setting a cell depends on (recorded in every result file)."""

    model: dict = field(default_factory=lambda: ModelConfig().to_dict())
    train: dict = field(default_factory=lambda: TrainConfig().to_dict())
    trees: dict = field(default_factory=lambda: TreeConfig().to_dict())
    n_boot: int = DEFAULT_REPLICATES
    boot_seed: int = 0
    medtok_steps: int = 600
    gcn: dict = field(default_factory=lambda: GCNConfig().to_dict())     # HICD-Graph pretraining (issue 22)
    mlm: dict = field(default_factory=lambda: MLMConfig().to_dict())     # HICD-BERT pretraining (issue 22)

    def __post_init__(self):
        ModelConfig.from_dict(self.model), TrainConfig.from_dict(self.train), TreeConfig.from_dict(self.trees)
        GCNConfig.from_dict(self.gcn), MLMConfig.from_dict(self.mlm)
        if self.n_boot < 1:
            raise ValueError("n_boot must be >= 1")

    def key(self, fingerprint: str, task_key: str, model: str, tokenizer: str | None = None) -> str:
        part = {"fp": fingerprint, "task": task_key, "n_boot": self.n_boot, "boot_seed": self.boot_seed,
                "medtok_steps": self.medtok_steps}
        part["cfg"] = self.trees if model in TREE_MODELS else {"model": self.model, "train": self.train}
        # the pretraining settings enter only the keys of the arms that pretrain (today's keys unchanged)
        if model == "behrt-mlm":
            part["mlm"] = self.mlm
        if tokenizer is not None and parse_spec(tokenizer)["family"] == "graph" and model not in TREE_MODELS:
            part["gcn"] = self.gcn
        return hashlib.blake2b(json.dumps(part, sort_keys=True).encode(), digest_size=5).hexdigest()


def cell_path(out: Path, dataset: str, bundle: TaskBundle, model: str, tokenizer: str, seed: int, cfg_key: str) -> Path:
    return Path(out) / "cells" / dataset / bundle.key / f"{model}__{tokenizer}__s{seed}__{cfg_key}.json"


def read_cell(path: Path) -> dict | None:
    """The finished cell at `path`, or None (absent, unreadable, or its predictions missing)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not Path(rec.get("predictions_file", "")).exists():
        return None
    return rec


MEDS_PREDICTION_COLUMNS = ("subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                           "predicted_boolean_probability")


def meds_predictions(path, label: str | None = None) -> pl.DataFrame:
    """The five columns `meds-evaluation`'s PredictionSchema accepts, from a cell's predictions
    file (multi-class / multi-label: the rows of one `label`)."""
    df = pl.read_parquet(path)
    if label is not None:
        df = df.filter(pl.col("label") == label)
    return df.select(MEDS_PREDICTION_COLUMNS)


def predictions_frame(bundle: TaskBundle, rows: np.ndarray, p: np.ndarray) -> pl.DataFrame:
    d = bundle.data
    base = {"subject_id": d.subject_id[rows], "prediction_time": d.prediction_time[rows], "sample_id": d.sample_id[rows]}
    if d.kind == "binary":
        y = d.y[rows].astype(bool)
        return pl.DataFrame({**base, "label": [d.classes[1]] * len(rows), "boolean_value": y,
                             "predicted_boolean_probability": p.astype(np.float32),
                             "predicted_boolean_value": p >= 0.5})
    K = len(d.classes)
    Y = np.eye(K, dtype=bool)[d.y[rows]] if d.kind == "multiclass" else d.y[rows].astype(bool)
    rep = {k: np.repeat(v, K) for k, v in base.items()}
    return pl.DataFrame({**rep, "label": np.tile(np.array(d.classes, dtype=object), len(rows)).astype(str),
                         "boolean_value": Y.ravel(), "predicted_boolean_probability": p.reshape(-1).astype(np.float32),
                         "predicted_boolean_value": p.reshape(-1) >= 0.5})


def _vocabulary_graph_source(joined: bool = False):
    """(code table, CodeGraph) of the built vocabulary (graph-kg), or of the built vocabulary
    joined to the shared MONDO and Hetionet files (graph-kgjoin: `medtok.graph.external
    .attach_external`, as the knowledge-graph question task joins them); loaded once per process."""
    key = "joined" if joined else "vg"
    if key not in _VOCAB_GRAPH:
        from medtok.loading import load_vocabulary  # the vocabulary cache: only the graph-kg arms read it

        v, g = load_vocabulary()
        if joined:
            from medtok.graph.external import attach_external  # only graph-kgjoin joins the external KGs
            from medbase.paths import shared_data_path  # the shared KG files: only graph-kgjoin reads them

            mondo, hetio = shared_data_path("kg", "mondo"), shared_data_path("kg", "hetionet")
            if mondo is None or hetio is None:
                raise ValueError("graph-kgjoin needs the shared kg/mondo and kg/hetionet files")
            v, g, _ = attach_external(v, g, mondo_dir=mondo, hetionet_dir=hetio, progress=False)
        _VOCAB_GRAPH[key] = (v.codes, g)
    return _VOCAB_GRAPH[key]


_VOCAB_GRAPH: dict = {}


def hicd_graph_for(spec: str, bundle: TaskBundle, space: CodeSpace, res: Resources, pmi_min_count: int):
    """The graph of a `graph-*` tokenizer spec (issue 22): PMI + ancestors at its levels, or the
    vocabulary's KG (`graph-kg`: is_a / GEM / in_group; `graph-kgjoin`: + xref / kg_relation)."""
    p = parse_spec(spec)
    if p["source"] == "pmi":
        return build_pmi_graph(space.codes, res.levels, bundle.data, p["levels"], pmi_min_count)
    joined = p["source"] == "kgjoin"
    codes_df, graph = res.vocab_graph if res.vocab_graph is not None else _vocabulary_graph_source(joined)
    # the 2-layer GCN sees 2 hops from each code: graph-kg keeps the codes' direct neighbours
    # (parents, GEM maps, groups: code-group-code is within reach), graph-kgjoin also the second
    # hop along kg_relation (code -xref- MONDO -kg_relation- gene / compound, the hub two diseases
    # share); larger neighbourhoods only cost time (2 hops of all types around 2,000 codes: ~90k nodes)
    if joined:   # hop 2 only along kg_relation: MONDO -> the Hetionet genes / compounds
        return vocabulary_graph(space.codes, codes_df, graph, KG_JOINED_EDGE_TYPES, hops=2, expand_types=("kg_relation",))
    return vocabulary_graph(space.codes, codes_df, graph, KG_EDGE_TYPES, hops=1)


def _paper_tokenizer(tokenizer, mcfg, bundle, space, res, seed, cfg, cache_dir):
    if parse_spec(tokenizer)["family"] != "graph":
        return make_tokenizer(tokenizer, mcfg.d_model, space, bundle.seen, res)
    gcfg = GCNConfig.from_dict(cfg.gcn)
    graph = hicd_graph_for(tokenizer, bundle, space, res, gcfg.pmi_min_count)
    z, meta = cached_embeddings(graph, mcfg.d_model, seed, gcfg, cache_dir, label=f"gcn__{tokenizer}")
    return GraphInitTokenizer(tokenizer, mcfg.d_model, space, bundle.seen, res, graph, z, meta)


def run_cell(bundle: TaskBundle, space: CodeSpace, res: Resources, model: str, tokenizer: str, seed: int,
             cfg: BenchConfig, cache_dir: Path | None = None, with_tuning: bool = False, fingerprint: str = ""):
    """Train + predict the test split. Returns (record without metrics, test rows, probabilities)
    and, with `with_tuning`, also (tuning rows, their probabilities) for the F1 threshold.
    `cache_dir`: where the pretraining artefacts of the issue-22 arms live."""
    d = bundle.data
    test = d.rows("held_out")
    tune = d.rows("tuning")
    p_tune = None
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    rec: dict = {"model": model, "tokenizer": tokenizer, "seed": seed}
    t0 = time.perf_counter()
    if model in NEURAL_MODELS or model in PAPER_MODELS:

        mcfg, tcfg = ModelConfig.from_dict(cfg.model), TrainConfig.from_dict(cfg.train)
        if model in NEURAL_MODELS and parse_spec(tokenizer)["family"] != "graph":
            tok = make_tokenizer(tokenizer, mcfg.d_model, space, bundle.seen, res)
        else:
            tok = _paper_tokenizer(tokenizer, mcfg, bundle, space, res, seed, cfg, cache_dir)
        cls = {"transformer": TransformEHR, "behrt": BEHRT, "behrt-mlm": BEHRT, "hicd": VisitPatientModel}[model]
        net = cls(tok, n_outputs(d.kind, len(d.classes)), mcfg)
        if model == "behrt-mlm":
            data_key = f"{fingerprint}|{bundle.key}|{int(bundle.seen.sum())}|{len(space)}"
            rec["pretraining"] = cached_pretrain(net, d, space.codes, tokenizer, seed, MLMConfig.from_dict(cfg.mlm),
                                                 cache_dir, data_key)
        hist = fit(net, d, tcfg, seed)
        net = hist.pop("model")
        t1 = time.perf_counter()
        p = predict(net, d, test, tcfg.eval_batch_size)
        infer = time.perf_counter() - t1
        if with_tuning:
            p_tune = predict(net, d, tune, tcfg.eval_batch_size) if len(tune) else np.zeros(0, np.float32)
        rec["tokenizer_info"] = tok.describe()
        rec["model_trainable_params"] = sum(q.numel() for q in net.parameters() if q.requires_grad)
        rec["training"] = {k: v for k, v in hist.items()}
        rec["throughput"] = {"train_samples_per_s": hist["train_samples_seen"] / max(hist["train_seconds"], 1e-9),
                             "train_samples_seen": hist["train_samples_seen"], "train_seconds": hist["train_seconds"],
                             "infer_samples": int(len(test)), "infer_seconds": infer,
                             "infer_samples_per_s": len(test) / max(infer, 1e-9)}
    elif model in TREE_MODELS:
        X, groups = bag_features(tokenizer, d.bag, bundle.seen, res)
        rows = np.concatenate([test, tune]) if with_tuning else test
        p = fit_predict(model, d.kind, X, d.y, d.rows("train"), rows, TreeConfig.from_dict(cfg.trees), seed,
                        len(d.classes))
        if with_tuning:     # one fit; predictions are per row, so the test rows' values are unchanged
            p, p_tune = p[:len(test)], p[len(test):]
        rec["tokenizer_info"] = {"tokenizer": tokenizer, "feature_columns": int(X.shape[1]), "feature_groups": groups}
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    rec["seconds"] = time.perf_counter() - t0
    if len(p) != len(test):
        raise HeldOutIntegrityError(f"{len(p)} predictions for {len(test)} test samples")
    if with_tuning:
        return rec, test, p, tune, p_tune
    return rec, test, p


def score(bundle: TaskBundle, test: np.ndarray, p: np.ndarray, cfg: BenchConfig) -> dict:
    """Point metrics (scikit-learn, pooled test set) + patient-level bootstrap CIs."""
    d = bundle.data
    y = d.y[test]
    m = compute_metrics(d.kind, y, p, d.classes)
    ci = bootstrap_ci(d.kind, y, p, d.subject_id[test], cfg.n_boot, cfg.boot_seed)
    return {"metrics": m, "ci": ci, "n_test": int(len(test)), "n_test_subjects": int(len(np.unique(d.subject_id[test])))}


def execute_cell(path: Path, dataset: str, fingerprint: str, bundle: TaskBundle, space: CodeSpace, res: Resources,
                 model: str, tokenizer: str, seed: int, cfg: BenchConfig, extra: dict | None = None) -> dict:
    """Run and write one cell (predictions first, JSON last); returns the record. Also written:
    the tuning split's predictions (`.tuning.parquet`) and, for binary tasks, F1-macro at the
    threshold chosen on them (`metrics.f1_macro`, `metrics.f1_threshold`; issue 22)."""
    cache_dir = Path(path).parents[3] / "pretrain" / Path(path).parents[1].name / Path(path).parent.name
    rec, test, p, tune, p_tune = run_cell(bundle, space, res, model, tokenizer, seed, cfg, cache_dir, with_tuning=True,
                                          fingerprint=fingerprint)
    p = np.asarray(p, dtype=np.float32)    # as written (MEDS: float); scores and file agree exactly
    p_tune = np.asarray(p_tune, dtype=np.float32)
    rec.update(score(bundle, test, p, cfg))
    if bundle.data.kind == "binary":
        rec["metrics"].update(f1_at_tuned_threshold(bundle.data.y[tune], p_tune, bundle.data.y[test], p))
    rec.update({"dataset": dataset, "task": bundle.name, "preset": bundle.preset, "task_key": bundle.key,
                "kind": bundle.kind, "classes": bundle.classes, "task_definition": bundle.describe,
                "data_fingerprint": fingerprint, "config": cfg.to_dict(), "cell": path.stem, **(extra or {})})
    pred_path = path.with_suffix(".predictions.parquet")
    pred = predictions_frame(bundle, test, p).with_columns(pl.lit(model).alias("model"),
                                                            pl.lit(tokenizer).alias("tokenizer"),
                                                            pl.lit(seed).alias("seed"))
    with atomic_path(pred_path) as tmp:
        pred.write_parquet(tmp)
    tune_path = path.with_suffix(".tuning.parquet")
    with atomic_path(tune_path) as tmp:
        predictions_frame(bundle, tune, p_tune).write_parquet(tmp)
    rec["predictions_file"] = str(pred_path)
    rec["tuning_predictions_file"] = str(tune_path)
    atomic_write_text(path, json.dumps(rec, indent=1, default=_json_default) + "\n")
    return rec


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)

"""Train the MedTok tokenizer: `train(TrainConfig, MedTokConfig) -> checkpoint dir`.

Each step samples `batch_size` centre codes (never a held-out code), their k-hop
subgraphs (`CodeGraph.subgraph_batch`), and an augmented view (edge dropout + node
feature dropout for the graph, feature dropout + Gaussian noise on the frozen text
embedding for the text). All randomness of step t derives from (seed, step, rank), so
resuming from a checkpoint replays exactly the steps an uninterrupted run would take
(no RNG state needs saving; a kill-and-resume test checks the final weights bitwise).

Held-out codes: a deterministic `heldout_fraction` of assignable codes (kind == "code"),
chosen by a hash of the code_id (`medtok.splits.heldout_mask`), plus the explicit
`heldout_codes` (e.g. the QA test codes, for a "strictly unseen" MedTok). They stay in the
graph (their neighbours see them and their text embedding is a node feature) but are never a
training centre, so their own tokens are produced by an encoder that never optimised them.

Graph edits: `drop_edge_types` (optionally only edges touching `drop_edges_touching`) are
removed from the graph before training (`medtok.graph_edits`); the checkpoint's
train_config.json records them and the tokenizer removes the same edges from its graph.

Devices: `TrainConfig.device` ("auto" = CUDA when available, "cpu", "cuda", "cuda:N"). Node
features and batches are built on the CPU and moved to the device per step. Runs unchanged
under `accelerate launch`: `batch_size` is per process, or set `global_batch_size` (the
paper's 1024 is global) and each of the W processes takes global / W.

Checkpoints (`medtok.train_state`, on `medtok.checkpoint`'s manifest): model.safetensors + config.json (the model),
train_config.json, training_state.json (step), optimizer.pt (tensors only, read with
`torch.load(weights_only=True)`), and the manifest checkpoint.json written last.
Intermediate ones go to out_dir/checkpoint-<step> through a staged directory; the final one
to out_dir. `train(..., resume_from="latest")` picks the newest checkpoint that verifies.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from medtok.checkpoint import staged_directory
from medbase.atomic import atomic_path, atomic_write_text
from medbase.determinism import deterministic_on_cpu
from medbase.jsonconfig import JsonConfig
from medtok.graph_edits import drop_edges, normalize_edge_specs
from medtok.loading import load_vocabulary
from medtok.model.config import GROUP_REGION, GROUPS, MedTokConfig
from medtok.model.features import neighbor_table, node_features
from medtok.model.losses import distance_kl, shared_loss, specific_loss
from medtok.model.medtok import MedTokModel
from medtok.splits import heldout_mask, read_code_list
from medtok.train_state import (BEST_WEIGHTS_NAME, CHECKPOINT_FILES, LAST_WEIGHTS_NAME, LEGACY_STATE_NAME,  # noqa: F401
                                METRICS_NAME, OPTIMIZER_NAME, STATE_NAME, TRAIN_CONFIG_NAME, VALIDATION_NAME,
                                _truncate_log, checkpoint_step, latest_checkpoint, load_training_state,
                                load_validation_state, save_checkpoint)
from medtok.validation import VAL_METRICS, ValidationSet, Validator, eligible_mask, validation_mask

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
RESTART_NORMS = ("unit", "codebook")
SAMPLERS = ("loop", "vectorized")


@dataclass
class TrainConfig(JsonConfig):
    CONFIG_NAME = TRAIN_CONFIG_NAME

    vocab_dir: str | None = None        # None = medbase.paths.default_vocab_dir()
    systems: list | None = None         # train/tokenize only these code systems (None = all)
    out_dir: str = "runs/medtok"
    steps: int = 300
    batch_size: int = 256               # per process (ignored when global_batch_size is set)
    global_batch_size: int | None = None  # over all processes; each takes global / world size
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    heldout_fraction: float = 0.05
    # explicit held-out code ids on top of the hashed fraction (never a training centre; they stay
    # in the graph). A path to a file with one id per line is read here, so the saved config
    # always carries the list itself.
    heldout_codes: list | None = None
    # edges removed from the graph before training and tokenization: [type, src_system, dst_system]
    # (None/"*" = any system) or "type[:src:dst]" strings (`medtok.graph_edits`)
    drop_edge_types: list | None = None
    drop_edges_touching: list | None = None  # only edges with an endpoint among these code ids (or a file of them)
    dead_restarts: bool = True          # False: never re-seat dead entries (the no-restart ablation)
    restart_every: int = 10             # dead-entry restart period (steps); restarts are not in the paper
    restart_idle: int = 30              # an entry unused for this many steps is re-seated
    text_aug_dropout: float = 0.1
    text_aug_noise: float = 0.02
    edge_drop: float = 0.2
    node_drop: float = 0.1
    save_every: int = 100               # intermediate checkpoints out_dir/checkpoint-<step>
    log_every: int = 1                  # train_log.jsonl: one record (means over the interval) per log_every steps
    device: str = "auto"                # auto (CUDA when available) | cpu | cuda | cuda:N
    # ---- issue 21 settings; every default reproduces the checkpoints trained before them -------
    restart_norm: str = "unit"          # re-seated rows: unit (today) | codebook (scaled to the codebook's mean norm)
    restart_reset_optimizer: bool = False  # zero AdamW's moments of re-seated rows
    sampler: str = "loop"               # k-hop batch sampler: loop (per centre, today) | vectorized (CSR, tensor ops)
    threads: int | None = None          # torch CPU threads for the run (None = as set by the caller); recorded
    text_encoder_device: str = "cpu"    # where missing text embeddings are computed: cpu | cuda | cuda:N | auto
    val_every: int = 0                  # validation kappa every N steps (0 = off; `medtok.validation`)
    val_fraction: float = 0.05          # share of the eligible codes in the validation split
    val_seed: int = 0                   # salt of the validation split's hash
    val_pairs: int = 2000               # sibling and GEM pairs (each) of the fixed validation sample
    val_metric: str = "mean"            # selection metric: mean of sibling and GEM kappa | siblings | gem
    val_exclude_codes: list | None = None  # never validation codes: the QA test splits (a file or a list)
    val_exclude_from_training: bool = False  # validation codes are never a training centre
    val_select_best: bool = True        # with val_every: the saved tokenizer is the best validation step

    # written to train_config.json only when they differ from their default, so a default run's
    # train_config.json (and every cache key hashed from a TrainConfig) keeps its bytes
    QUIET_DEFAULTS = {"restart_norm": "unit", "restart_reset_optimizer": False, "sampler": "loop", "threads": None,
                      "text_encoder_device": "cpu", "val_every": 0, "val_fraction": 0.05, "val_seed": 0,
                      "val_pairs": 2000, "val_metric": "mean", "val_exclude_codes": None,
                      "val_exclude_from_training": False, "val_select_best": True}

    def to_dict(self) -> dict:
        d = super().to_dict()
        return {k: v for k, v in d.items() if not (k in self.QUIET_DEFAULTS and v == self.QUIET_DEFAULTS[k])}

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps >= 1 and batch_size >= 2 (in-batch negatives) required")
        if self.global_batch_size is not None and self.global_batch_size < 2:
            raise ValueError("global_batch_size must be >= 2 (or None)")
        if self.lr <= 0 or not 0 <= self.heldout_fraction < 1:
            raise ValueError("lr > 0 and heldout_fraction in [0, 1) required")
        for p in ("text_aug_dropout", "edge_drop", "node_drop"):
            if not 0 <= getattr(self, p) < 1:
                raise ValueError(f"{p} must be in [0, 1)")
        if self.restart_every < 1 or self.restart_idle < 1 or self.save_every < 1:
            raise ValueError("restart_every, restart_idle, save_every must be >= 1")
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N, got {self.device!r}")
        self.heldout_codes = read_code_list(self.heldout_codes)
        self.drop_edges_touching = read_code_list(self.drop_edges_touching)
        self.drop_edge_types = normalize_edge_specs(self.drop_edge_types)
        if self.drop_edges_touching is not None and not self.drop_edge_types:
            raise ValueError("drop_edges_touching needs drop_edge_types (which edges to drop)")
        if self.restart_norm not in RESTART_NORMS:
            raise ValueError(f"restart_norm must be one of {RESTART_NORMS}, got {self.restart_norm!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError("threads must be >= 1 (or None)")
        dev = str(self.text_encoder_device)
        if dev not in DEVICES and not re.fullmatch(r"cuda:\d+", dev):
            raise ValueError(f"text_encoder_device must be one of {DEVICES} or cuda:N, got {dev!r}")
        if self.val_every < 0 or not 0 < self.val_fraction < 1 or self.val_pairs < 1:
            raise ValueError("val_every >= 0, val_fraction in (0, 1) and val_pairs >= 1 required")
        if self.val_metric not in VAL_METRICS:
            raise ValueError(f"val_metric must be one of {VAL_METRICS}, got {self.val_metric!r}")
        self.val_exclude_codes = read_code_list(self.val_exclude_codes)

    def per_process_batch(self, world_size: int) -> int:
        """Centre codes per process and step."""
        if self.global_batch_size is None:
            return self.batch_size
        if self.global_batch_size % world_size or self.global_batch_size // world_size < 2:
            raise ValueError(f"global_batch_size {self.global_batch_size} must split into >= 2 per process "
                             f"over {world_size} processes")
        return self.global_batch_size // world_size


# ---- one training step as a module (so DDP sees a single forward) ---------------------------
class MedTokTrainingModule(nn.Module):
    def __init__(self, model: MedTokModel, tcfg: TrainConfig):
        super().__init__()
        self.model, self.tcfg = model, tcfg

    def forward(self, x, edge_index, centers, keys, edge_index_aug, node_keep):
        m, c, t = self.model, self.model.config, self.tcfg
        states = m.graph_encoder(x, edge_index)
        emb = m.embed(x, states, centers, keys)
        # full distance matrices only where the KL term needs them (the shared region)
        q = {g: m.quantizer(emb[g], GROUP_REGION[g], with_distances=GROUP_REGION[g] == "shared") for g in GROUPS}
        # augmented views of the modality-specific inputs
        states_aug = m.graph_encoder(x * node_keep[:, None], edge_index_aug)
        h_t = x[centers]
        h_t_aug = nn.functional.dropout(h_t, t.text_aug_dropout) + t.text_aug_noise * torch.randn_like(h_t)
        q_ts_aug = m.quantizer(m.text_specific(h_t_aug), "text", with_distances=False)
        q_gs_aug = m.quantizer(m.graph_specific(states_aug[centers]), "graph", with_distances=False)

        L_C = sum(q[g].loss for g in GROUPS)
        L_KL = distance_kl(q["shared_text"].distances, q["shared_graph"].distances, c.temperature)
        sh = shared_loss(q["shared_text"].quantized, q["shared_graph"].quantized,
                         emb["shared_text"], emb["shared_graph"], c.beta, c.shared_nce_temperature, c.nce_weight)
        sp = specific_loss(q["text_specific"].quantized, q_ts_aug.quantized, q["graph_specific"].quantized,
                           q_gs_aug.quantized, q["shared_text"].quantized, q["shared_graph"].quantized,
                           c.lam, c.specific_nce_temperature, c.nce_weight)
        kl_term = L_KL if c.kl_weight == 1.0 else c.kl_weight * L_KL  # weight 1: today's graph, bit for bit
        total = L_C + kl_term + sh["shared"] + sp["specific"]
        logs = {"total": total, "codebook": L_C, "kl": L_KL, **sh, **sp,
                "vq_codebook": sum(q[g].breakdown["codebook"] for g in GROUPS),
                "vq_commit": sum(q[g].breakdown["commitment"] for g in GROUPS)}
        return total, logs, q, emb


def make_batch(graph, x: torch.Tensor, train_rows: np.ndarray, mcfg: MedTokConfig, tcfg: TrainConfig,
               step: int, rank: int = 0):
    """Inputs of step `step`, on the CPU: everything random here derives from (seed, step, rank)."""
    rng = np.random.default_rng([tcfg.seed, step, rank])
    centers = rng.choice(train_rows, tcfg.batch_size, replace=len(train_rows) < tcfg.batch_size)
    if mcfg.modalities == "text":  # text-only ablation: no graph context at all
        n_id = torch.from_numpy(centers)
        ei = torch.empty(2, 0, dtype=torch.long, device="cpu")
        ci = torch.arange(len(centers), device="cpu")
    else:
        sample = graph.subgraph_batch_vectorized if tcfg.sampler == "vectorized" else graph.subgraph_batch
        batch = sample(centers, mcfg.num_hops, mcfg.max_neighbors, rng)
        n_id, ei, ci = batch.n_id, batch.edge_index, batch.center_index
    e = ei.numpy()
    keys = torch.from_numpy(neighbor_table(e[0], e[1], len(n_id), mcfg.max_neighbors, rows=ci.numpy(),
                                           seed=int(rng.integers(1 << 31))))
    keep_edge = torch.from_numpy(rng.random(ei.shape[1]) >= tcfg.edge_drop)
    node_keep = torch.from_numpy(rng.random(len(n_id)) >= tcfg.node_drop).float()
    node_keep[ci] = 1.0  # never blank the code's own features
    return x[n_id], ei, ci, keys, ei[:, keep_edge], node_keep


def make_accelerator(device: str) -> Accelerator:
    """The Accelerator for `TrainConfig.device` (one process, or one per GPU under `accelerate launch`)."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return Accelerator(cpu=True)
    if not torch.cuda.is_available():
        raise RuntimeError(f"TrainConfig.device={device!r} but CUDA is not available")
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
    return Accelerator()


def reset_optimizer_rows(opt, param: torch.Tensor, rows: torch.Tensor) -> int:
    """Zero the AdamW moments (exp_avg, exp_avg_sq, max_exp_avg_sq) of `rows` of `param`: a re-seated
    codebook row then starts without the momentum of the entry it replaces. Returns rows reset."""
    inner = getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps the torch one
    st = inner.state.get(param)
    if not st or len(rows) == 0:
        return 0
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        if k in st:
            st[k][rows.to(st[k].device)] = 0
    return int(len(rows))


# ---- what the run trains on -------------------------------------------------------------------
def training_graph(vocab, graph, tcfg: TrainConfig):
    """`graph` without `tcfg.drop_edge_types` (the same object when the config drops nothing)."""
    if not tcfg.drop_edge_types:
        return graph
    edited = drop_edges(vocab, graph, tcfg.drop_edge_types, tcfg.drop_edges_touching)
    log.info("graph edit %s%s: %d of %d edges removed", tcfg.drop_edge_types,
             f" (touching {len(tcfg.drop_edges_touching)} codes)" if tcfg.drop_edges_touching is not None else "",
             graph.num_edges - edited.num_edges, graph.num_edges)
    return edited


def training_rows(vocab, tcfg: TrainConfig) -> np.ndarray:
    """Rows that may be sampled as training centres: all but the held-out ones."""
    held = heldout_mask(vocab.codes["code_id"], vocab.codes["kind"], tcfg.heldout_fraction, tcfg.heldout_codes)
    if tcfg.heldout_codes:
        found = int(vocab.codes["code_id"].isin(set(tcfg.heldout_codes)).sum())
        log.info("held out: %d codes (%d of %d listed codes are in this vocabulary)", int(held.sum()), found,
                 len(tcfg.heldout_codes))
    rows = np.flatnonzero(~held)
    if len(rows) == 0:
        raise ValueError("every code is held out: nothing left to train on")
    return rows


# ---- the loop ------------------------------------------------------------------------------
def train(tcfg: TrainConfig, mcfg: MedTokConfig | None = None, resume_from: str | Path | None = None,
          vocab=None, graph=None, text_embeddings: np.ndarray | None = None, progress: bool = True,
          evaluator=None) -> Path:
    """Train MedTok and write the final checkpoint to `tcfg.out_dir`; returns that path.

    resume_from: a checkpoint directory (its model config is used), or "latest" for the newest
    checkpoint under `tcfg.out_dir` that verifies (a fresh start when there is none).
    evaluator: with `tcfg.val_every`, a callable model -> {"metric": float, ...} replacing the
    default validation (`medtok.validation.Validator`), e.g. the subset ablation's kappa by step.

    On the CPU this runs with PyTorch's deterministic kernels: the backward pass of the
    attention-key gathers (`kv[keys]`, repeated indices) otherwise accumulates in a
    thread-dependent order with >= 2 threads and every run trains a different tokenizer.
    `tcfg.threads` sets torch's CPU threads for the run (restored after); the count used is
    recorded in metrics.json, since results depend on it.
    """
    prev_threads = torch.get_num_threads()
    if tcfg.threads:
        torch.set_num_threads(int(tcfg.threads))
    try:
        with deterministic_on_cpu(None if tcfg.device == "auto" else tcfg.device) as det:
            return _train(tcfg, mcfg, resume_from, vocab, graph, text_embeddings, progress, evaluator, det)
    finally:
        torch.set_num_threads(prev_threads)


def _text_device(tcfg: TrainConfig, acc: Accelerator) -> str:
    dev = str(tcfg.text_encoder_device)
    return str(acc.device) if dev == "auto" else dev


def _train(tcfg: TrainConfig, mcfg: MedTokConfig | None, resume_from, vocab, graph,
           text_embeddings: np.ndarray | None, progress: bool, evaluator=None, deterministic: bool = False) -> Path:
    out = Path(tcfg.out_dir)
    if resume_from == "latest":
        resume_from = latest_checkpoint(out)
        if resume_from is None:
            log.warning("no usable checkpoint under %s: starting from step 0", out)
    state = load_training_state(resume_from) if resume_from is not None else None
    if state is not None:
        mcfg = state[0]
    mcfg = mcfg or MedTokConfig()
    acc = make_accelerator(tcfg.device)
    run_cfg = replace(tcfg, batch_size=tcfg.per_process_batch(acc.num_processes), global_batch_size=None)
    if vocab is None:
        vocab, graph = load_vocabulary(tcfg.vocab_dir, tcfg.systems)
    reference_graph = graph
    graph = training_graph(vocab, graph, tcfg)
    x = node_features(vocab, graph, mcfg, text_embeddings, progress=progress and acc.is_main_process,
                      device=_text_device(tcfg, acc))
    train_rows = training_rows(vocab, tcfg)

    validate = None
    if tcfg.val_every:
        val = validation_mask(vocab, tcfg.heldout_fraction, tcfg.heldout_codes, tcfg.val_exclude_codes,
                              tcfg.val_fraction, tcfg.val_seed)
        if tcfg.val_exclude_from_training:
            train_rows = train_rows[~val[train_rows]]
        if evaluator is not None:
            validate = evaluator
        else:
            elig = eligible_mask(vocab, tcfg.heldout_fraction, tcfg.heldout_codes, tcfg.val_exclude_codes)
            vset = ValidationSet.build(vocab, reference_graph, val, elig, tcfg.val_pairs, tcfg.seed)
            validate = Validator(vset, x, graph, mcfg.max_neighbors, mcfg.modalities == "text", tcfg.val_metric)
            log.info("validation: %d codes, %d sibling and %d GEM pairs, every %d steps", int(val.sum()),
                     len(vset.siblings), len(vset.gem), tcfg.val_every)

    torch.manual_seed(tcfg.seed)
    model = MedTokModel(mcfg)
    start = 0
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if state is not None:
        model.load_state_dict(state[1])
        opt.load_state_dict(state[2])
        start = state[3]
    vrec, best_state = (load_validation_state(resume_from) if (validate and state is not None) else (None, None))
    if validate:
        vrec = vrec or {"curve": [], "best_step": None, "best_metric": None, "metric": tcfg.val_metric}
        vrec["curve"] = [r for r in vrec["curve"] if r["step"] <= start]
    module = MedTokTrainingModule(model, run_cfg)
    module, opt = acc.prepare(module, opt)
    log_path = out / "train_log.jsonl"
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if start == 0 and log_path.exists():
            log_path.unlink()
        elif start > 0:
            _truncate_log(log_path, start)
    bar = tqdm(range(start, tcfg.steps), initial=start, total=tcfg.steps, desc="medtok",
               disable=not (progress and acc.is_main_process))
    core = acc.unwrap_model(module).model
    q_model = core.quantizer
    t0 = time.perf_counter()
    # loss terms are summed on the device and read back once per log interval (one host sync)
    log_keys, log_sum, log_n, restarted_sum = None, None, 0, 0
    for step in bar:
        # seeded per step: dropout masks / aug noise replay identically after a resume
        torch.manual_seed(tcfg.seed * 1_000_003 + step * 101 + acc.process_index)
        inputs = make_batch(graph, x, train_rows, mcfg, run_cfg, step, acc.process_index)
        module.train()
        total, logs, q, emb = module(*[t.to(acc.device) for t in inputs])
        opt.zero_grad(set_to_none=True)
        acc.backward(total)
        if tcfg.grad_clip:
            acc.clip_grad_norm_(module.parameters(), tcfg.grad_clip)
        opt.step()
        q_model.mark_used(torch.cat([q[g].indices for g in GROUPS]))
        restarted = 0
        if tcfg.dead_restarts and (step + 1) % tcfg.restart_every == 0:
            # CPU generator and samples: the same entries are re-seated on CPU and CUDA
            g = torch.Generator(device="cpu").manual_seed(tcfg.seed * 7919 + step)
            for region in ("text", "graph", "shared"):
                samples = torch.cat([emb[gr].detach() for gr in GROUPS if GROUP_REGION[gr] == region])
                rows = q_model.restart_dead(region, samples.cpu(), tcfg.restart_idle, g, norm=tcfg.restart_norm,
                                            return_rows=True)
                restarted += len(rows)
                if tcfg.restart_reset_optimizer:
                    reset_optimizer_rows(opt, q_model.codebook, rows)
            if acc.num_processes > 1:  # keep every replica's codebook identical
                torch.distributed.broadcast(q_model.codebook.data, 0)
                torch.distributed.broadcast(q_model.idle_steps, 0)
        usage = (q_model.idle_steps < tcfg.restart_idle).float().mean()
        if log_keys is None:
            log_keys = list(logs)
        vals = torch.stack([logs[k].detach().float() for k in log_keys] + [usage.float()])
        log_sum = vals if log_sum is None else log_sum + vals
        log_n += 1
        restarted_sum += restarted
        if (step + 1) % tcfg.log_every == 0 or step + 1 == tcfg.steps:
            means = (log_sum if log_n == 1 else log_sum / log_n).tolist()  # the one host sync
            rec = dict(zip(log_keys, means[:-1]))
            rec.update(step=step + 1, usage=means[-1], restarted=restarted_sum, elapsed_s=time.perf_counter() - t0)
            if log_n > 1:
                rec["steps_averaged"] = log_n
            log_sum, log_n, restarted_sum = None, 0, 0
            bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("total", "codebook", "kl", "shared", "specific", "usage")})
            if acc.is_main_process and (step + 1) % tcfg.log_every == 0:
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
        if validate and ((step + 1) % tcfg.val_every == 0 or step + 1 == tcfg.steps):
            if acc.is_main_process:
                r = validate(core)
                r = {"step": step + 1, **r}
                vrec["curve"].append(r)
                m = r["metric"]
                if m == m and (vrec["best_metric"] is None or m > vrec["best_metric"]):  # m == m: not NaN
                    vrec["best_metric"], vrec["best_step"] = float(m), step + 1
                    best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
                log.info("validation step %d: %s", step + 1, r)
            core.train()
        if validate:
            vrec["step"] = step + 1
        if acc.is_main_process and ((step + 1) % tcfg.save_every == 0 or step + 1 == tcfg.steps):
            if step + 1 == tcfg.steps:
                save_checkpoint(core, opt, step + 1, tcfg, out, vrec, best_state, final=True)
            else:
                with staged_directory(out / f"checkpoint-{step + 1}") as tmp:
                    save_checkpoint(core, opt, step + 1, tcfg, tmp, vrec, best_state)
    if acc.is_main_process and start >= tcfg.steps and Path(resume_from).resolve() != out.resolve():
        save_checkpoint(core, opt, start, tcfg, out, vrec, best_state, final=True)  # nothing left to train
    if acc.is_main_process and start < tcfg.steps:
        seconds = time.perf_counter() - t0
        metrics = {"steps": tcfg.steps, "start_step": start, "seconds": seconds,
                   "steps_per_s": (tcfg.steps - start) / max(seconds, 1e-9), "threads": torch.get_num_threads(),
                   "device": str(acc.device), "deterministic_cpu_kernels": bool(deterministic),
                   "processes": acc.num_processes, "batch_per_process": run_cfg.batch_size, "sampler": tcfg.sampler}
        if vrec is not None:
            metrics["validation"] = {**vrec, "selected_step": vrec["best_step"] if tcfg.val_select_best and
                                     vrec["best_step"] is not None else tcfg.steps}
            plot_validation_curve(vrec, out / "validation_curve.png")
        atomic_write_text(out / METRICS_NAME, json.dumps(metrics, indent=1, default=str) + "\n")
    acc.wait_for_everyone()
    return out


def plot_validation_curve(vrec: dict, path: Path) -> Path | None:
    """validation kappa by step (siblings, GEM, the selection metric); None without matplotlib."""
    try:
        import matplotlib  # optional: a plot is a convenience, the curve itself is in metrics.json

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # same optional dependency
    except ImportError:
        return None
    curve = vrec.get("curve") or []
    if not curve:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [r["step"] for r in curve]
    for key, label in (("kappa_siblings", "siblings"), ("kappa_gem", "GEM"), ("metric", "selection metric")):
        ys = [r.get(key) for r in curve]
        if any(y is not None for y in ys):
            ax.plot(steps, [float("nan") if y is None else y for y in ys], marker=".", label=label)
    if vrec.get("best_step") is not None:
        ax.axvline(vrec["best_step"], color="grey", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("validation kappa")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path

"""Train the MedTok tokenizer: `train(TrainConfig, MedTokConfig) -> checkpoint dir`.

Each step samples `batch_size` centre codes (never a held-out code), their k-hop
subgraphs (`CodeGraph.subgraph_batch`), and an augmented view (edge dropout + node
feature dropout for the graph, feature dropout + Gaussian noise on the frozen text
embedding for the text). All randomness of step t derives from (seed, step, rank), so
resuming from a checkpoint replays exactly the steps an uninterrupted run would take.

Held-out codes: a deterministic `heldout_fraction` of assignable codes (kind == "code"),
chosen by a hash of the code_id. They stay in the graph (their neighbours see them and
their text embedding is a node feature) but are never a training centre, so their own
tokens are produced by an encoder that never optimised them (unseen-code evaluation).

Runs unchanged under `accelerate launch` (batch_size is per process).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medtok.model.config import GROUP_REGION, GROUPS, MedTokConfig
from medtok.model.features import impute_missing_text, neighbor_table, random_node_features
from medtok.model.losses import distance_kl, shared_loss, specific_loss
from medtok.model.medtok import MedTokModel
from medtok.loading import load_vocabulary, subset_vocabulary  # noqa: F401 (re-exported)

TRAIN_CONFIG_NAME = "train_config.json"
STATE_NAME = "training_state.pt"


@dataclass
class TrainConfig:
    vocab_dir: str | None = None        # None = medtok.paths.default_vocab_dir()
    systems: list | None = None         # train/tokenize only these code systems (None = all)
    out_dir: str = "runs/medtok"
    steps: int = 300
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    heldout_fraction: float = 0.05
    restart_every: int = 10             # dead-entry restart period (steps)
    restart_idle: int = 30              # an entry unused for this many steps is re-seated
    text_aug_dropout: float = 0.1
    text_aug_noise: float = 0.02
    edge_drop: float = 0.2
    node_drop: float = 0.1
    save_every: int = 100               # intermediate checkpoints out_dir/checkpoint-<step>
    log_every: int = 1

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps >= 1 and batch_size >= 2 (in-batch negatives) required")
        if self.lr <= 0 or not 0 <= self.heldout_fraction < 1:
            raise ValueError("lr > 0 and heldout_fraction in [0, 1) required")
        for p in ("text_aug_dropout", "edge_drop", "node_drop"):
            if not 0 <= getattr(self, p) < 1:
                raise ValueError(f"{p} must be in [0, 1)")
        if self.restart_every < 1 or self.restart_idle < 1 or self.save_every < 1:
            raise ValueError("restart_every, restart_idle, save_every must be >= 1")

    def save(self, path):
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path) -> "TrainConfig":
        d = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


# ---- data -----------------------------------------------------------------------------
def heldout_mask(code_ids, kinds, fraction: float) -> np.ndarray:
    """Deterministic held-out set: assignable codes whose sha1(code_id) falls below `fraction`."""
    out = np.zeros(len(code_ids), dtype=bool)
    if fraction <= 0:
        return out
    for i, (cid, kind) in enumerate(zip(code_ids, kinds)):
        if kind == "code":
            h = int.from_bytes(hashlib.sha1(cid.encode()).digest()[:8], "big") / 2 ** 64
            out[i] = h < fraction
    return out


def node_features(vocab, graph, config: MedTokConfig, text_embeddings: np.ndarray | None = None,
                  progress: bool = True) -> torch.Tensor:
    """[V, text_dim] node features: cached frozen-encoder embeddings of the descriptions
    (imputed from neighbours where a description is empty), or random ids for the graph-only ablation."""
    if config.modalities == "graph":
        return random_node_features(len(vocab), config.text_dim)
    if text_embeddings is None:
        from medtok.model.text_encoder import cached_text_embeddings

        texts = [str(t or "") for t in vocab.codes["description"]]
        text_embeddings = cached_text_embeddings(texts, config.text_encoder, progress=progress)
    if text_embeddings.shape != (len(vocab), config.text_dim):
        raise ValueError(f"text embeddings {text_embeddings.shape} != ({len(vocab)}, text_dim={config.text_dim})")
    has_text = vocab.codes["description"].fillna("").str.strip().to_numpy() != ""
    if not has_text.all():
        text_embeddings = impute_missing_text(text_embeddings, has_text, graph.src, graph.dst)
    return torch.from_numpy(np.ascontiguousarray(text_embeddings, dtype=np.float32))


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
                         emb["shared_text"], emb["shared_graph"], c.beta, c.nce_temperature)
        sp = specific_loss(q["text_specific"].quantized, q_ts_aug.quantized, q["graph_specific"].quantized,
                           q_gs_aug.quantized, q["shared_text"].quantized, q["shared_graph"].quantized,
                           c.lam, c.nce_temperature)
        total = L_C + L_KL + sh["shared"] + sp["specific"]
        logs = {"total": total, "codebook": L_C, "kl": L_KL, **sh, **sp,
                "vq_codebook": sum(q[g].breakdown["codebook"] for g in GROUPS),
                "vq_commit": sum(q[g].breakdown["commitment"] for g in GROUPS)}
        return total, logs, q, emb


def make_batch(graph, x: torch.Tensor, train_rows: np.ndarray, mcfg: MedTokConfig, tcfg: TrainConfig,
               step: int, rank: int = 0):
    """Inputs of step `step`: everything random here derives from (seed, step, rank)."""
    rng = np.random.default_rng([tcfg.seed, step, rank])
    centers = rng.choice(train_rows, tcfg.batch_size, replace=len(train_rows) < tcfg.batch_size)
    if mcfg.modalities == "text":  # text-only ablation: no graph context at all
        n_id = torch.from_numpy(centers)
        ei = torch.empty(2, 0, dtype=torch.long)
        ci = torch.arange(len(centers))
    else:
        batch = graph.subgraph_batch(centers, mcfg.num_hops, mcfg.max_neighbors, rng)
        n_id, ei, ci = batch.n_id, batch.edge_index, batch.center_index
    e = ei.numpy()
    keys = torch.from_numpy(neighbor_table(e[0], e[1], len(n_id), mcfg.max_neighbors, rows=ci.numpy(),
                                           seed=int(rng.integers(1 << 31))))
    keep_edge = torch.from_numpy(rng.random(ei.shape[1]) >= tcfg.edge_drop)
    node_keep = torch.from_numpy(rng.random(len(n_id)) >= tcfg.node_drop).float()
    node_keep[ci] = 1.0  # never blank the code's own features
    return x[n_id], ei, ci, keys, ei[:, keep_edge], node_keep


def train(tcfg: TrainConfig, mcfg: MedTokConfig | None = None, resume_from: str | Path | None = None,
          vocab=None, graph=None, text_embeddings: np.ndarray | None = None, progress: bool = True) -> Path:
    """Train MedTok and write the final checkpoint to `tcfg.out_dir`; returns that path."""
    from accelerate import Accelerator

    if resume_from is not None:
        mcfg = MedTokConfig.load(Path(resume_from) / "config.json")
    mcfg = mcfg or MedTokConfig()
    acc = Accelerator(cpu=not torch.cuda.is_available())
    if vocab is None:
        vocab, graph = load_vocabulary(tcfg.vocab_dir, tcfg.systems)
    x = node_features(vocab, graph, mcfg, text_embeddings, progress=progress and acc.is_main_process)
    held = heldout_mask(vocab.codes["code_id"], vocab.codes["kind"], tcfg.heldout_fraction)
    train_rows = np.flatnonzero(~held)

    torch.manual_seed(tcfg.seed)
    model = MedTokModel(mcfg)
    start = 0
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    if resume_from is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(Path(resume_from) / "model.safetensors"))
        state = torch.load(Path(resume_from) / STATE_NAME, weights_only=False)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    module = MedTokTrainingModule(model, tcfg)
    module, opt = acc.prepare(module, opt)
    out = Path(tcfg.out_dir)
    log_path = out / "train_log.jsonl"
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if start == 0 and log_path.exists():
            log_path.unlink()
    bar = tqdm(range(start, tcfg.steps), initial=start, total=tcfg.steps, desc="medtok",
               disable=not (progress and acc.is_main_process))
    q_model = acc.unwrap_model(module).model.quantizer
    t0 = time.perf_counter()
    for step in bar:
        # seeded per step: dropout masks / aug noise replay identically after a resume
        torch.manual_seed(tcfg.seed * 1_000_003 + step * 101 + acc.process_index)
        inputs = make_batch(graph, x, train_rows, mcfg, tcfg, step, acc.process_index)
        module.train()
        total, logs, q, emb = module(*[t.to(acc.device) for t in inputs])
        opt.zero_grad(set_to_none=True)
        acc.backward(total)
        if tcfg.grad_clip:
            acc.clip_grad_norm_(module.parameters(), tcfg.grad_clip)
        opt.step()
        q_model.mark_used(torch.cat([q[g].indices for g in GROUPS]))
        restarted = 0
        if (step + 1) % tcfg.restart_every == 0:
            g = torch.Generator().manual_seed(tcfg.seed * 7919 + step)
            for region in ("text", "graph", "shared"):
                samples = torch.cat([emb[gr].detach() for gr in GROUPS if GROUP_REGION[gr] == region])
                restarted += q_model.restart_dead(region, samples.cpu(), tcfg.restart_idle, g)
            if acc.num_processes > 1:  # keep every replica's codebook identical
                torch.distributed.broadcast(q_model.codebook.data, 0)
                torch.distributed.broadcast(q_model.idle_steps, 0)
        usage = float((q_model.idle_steps < tcfg.restart_idle).float().mean())
        rec = {k: float(v.detach()) for k, v in logs.items()}
        rec.update(step=step + 1, usage=usage, restarted=restarted, elapsed_s=time.perf_counter() - t0)
        bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("total", "codebook", "kl", "shared", "specific", "usage")})
        if acc.is_main_process and (step + 1) % tcfg.log_every == 0:
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
        if acc.is_main_process and ((step + 1) % tcfg.save_every == 0 or step + 1 == tcfg.steps):
            target = out if step + 1 == tcfg.steps else out / f"checkpoint-{step + 1}"
            save_checkpoint(acc.unwrap_model(module).model, opt, step + 1, tcfg, target)
    acc.wait_for_everyone()
    return out


def save_checkpoint(model: MedTokModel, opt, step: int, tcfg: TrainConfig, directory: Path) -> None:
    model.save_pretrained(directory)
    tcfg.save(directory / TRAIN_CONFIG_NAME)
    torch.save({"optimizer": opt.state_dict(), "step": step}, directory / STATE_NAME)

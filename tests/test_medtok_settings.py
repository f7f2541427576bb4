"""Issue 21 settings of MedTok training: each reaches what it names, and every default reproduces
the checkpoint trained before the settings existed (tests/fixtures/medtok_tiny_default.json)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medtok.train as T
from medtok.checkpoint import load_tensors_pt
from medtok.model import MedTokConfig
from medtok.model.medtok import MedTokModel
from medtok.model.quantizer import RegionQuantizer
from medtok.toy import toy_vocabulary
from medtok.train import MedTokTrainingModule, TrainConfig, make_batch, reset_optimizer_rows, train

FIXTURE = Path(__file__).parent / "fixtures" / "medtok_tiny_default.json"
TINY = dict(text_dim=24, gnn_hidden=32, embed_dim=16, codebook_size=60, top_k=3, attn_heads=2, max_neighbors=6)
RUN = dict(steps=12, batch_size=16, save_every=100, restart_every=3, restart_idle=2, heldout_fraction=0.1, device="cpu")


@pytest.fixture(scope="module")
def toy():
    v, g = toy_vocabulary()
    return v, g, np.random.default_rng(0).normal(size=(len(v), 24)).astype(np.float32)


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _weights_digest(path: Path) -> str:
    w = load_file(path)
    h = hashlib.sha256()
    for k in sorted(w):
        h.update(k.encode())
        h.update(w[k].numpy().tobytes())
    return h.hexdigest()


def test_default_tiny_training_reproduces_the_checkpoint_before_issue_21(tmp_path, toy, one_thread):
    v, g, emb = toy
    ref = json.loads(FIXTURE.read_text())
    out = train(TrainConfig(out_dir=str(tmp_path / "run"), **RUN), MedTokConfig(**TINY), vocab=v, graph=g,
                text_embeddings=emb, progress=False)
    # the saved configs keep their bytes (cache keys hashed from them stay valid)
    assert hashlib.sha256((out / "config.json").read_bytes()).hexdigest() == ref["config_json_sha256"]
    tc = json.loads((out / "train_config.json").read_text())
    tc.pop("out_dir")
    assert tc == ref["train_config"]
    log = [{k: x for k, x in json.loads(line).items() if k != "elapsed_s"} for line in
           (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1] == ref["log_last"]
    same_machine = (ref["torch"] == torch.__version__ and ref["cpu_capability"] == torch.backends.cpu.get_cpu_capability())
    if same_machine:  # bitwise digests hold for one torch build and CPU capability
        assert hashlib.sha256(json.dumps(log).encode()).hexdigest() == ref["log_sha256"]
        assert _weights_digest(out / "model.safetensors") == ref["weights_sha256"]
        o = load_tensors_pt(out / "optimizer.pt")
        h = hashlib.sha256()
        for pid in sorted(o["state"]):
            for k in sorted(o["state"][pid]):
                h.update(o["state"][pid][k].numpy().tobytes())
        assert h.hexdigest() == ref["optimizer_state_sha256"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["threads"] == 1 and m["deterministic_cpu_kernels"] is True and "validation" not in m


def test_default_configs_serialise_as_before():
    assert hashlib.sha256(MedTokConfig().to_json().encode()).hexdigest() == \
        "3baa9c5a9f59ba0390fc0586bf1acdc59ec61ce41f7390edbedacb301d98f525"
    assert hashlib.sha256(TrainConfig().to_json().encode()).hexdigest() == \
        "df3794ce2af10cb57420369d0db2eaed01f7ce16ba48ba4ebf55230ffd948e0e"


def test_a_config_saved_with_one_nce_temperature_sets_both(tmp_path):
    d = MedTokConfig().to_dict()
    assert d["nce_temperature"] == 0.07 and "shared_nce_temperature" not in d
    d["nce_temperature"] = 0.3
    c = MedTokConfig.from_dict(d)
    assert c.shared_nce_temperature == c.specific_nce_temperature == 0.3 == c.nce_temperature
    c2 = MedTokConfig(shared_nce_temperature=0.5, specific_nce_temperature=0.2)
    assert MedTokConfig.from_dict(c2.to_dict()) == c2
    with pytest.raises(AttributeError):
        c2.nce_temperature
    with pytest.raises(ValueError):
        MedTokConfig(specific_nce_temperature=0)


def _loss_terms(mcfg: MedTokConfig, toy) -> dict:
    v, g, emb = toy
    tcfg = TrainConfig(**RUN)
    x = torch.from_numpy(emb)
    rows = np.arange(len(v))
    torch.manual_seed(0)
    model = MedTokModel(mcfg)
    module = MedTokTrainingModule(model, tcfg).eval()  # eval: no dropout; the augmentation noise is seeded
    inputs = make_batch(g, x, rows, mcfg, tcfg, step=0)
    torch.manual_seed(1)
    _, logs, _, _ = module(*inputs)
    return {k: float(t.detach()) for k, t in logs.items()}


def test_each_nce_temperature_reaches_only_its_infonce_term(toy):
    base = MedTokConfig(**TINY)
    ref = _loss_terms(base, toy)
    sh = _loss_terms(replace(base, shared_nce_temperature=0.5), toy)
    sp = _loss_terms(replace(base, specific_nce_temperature=0.5), toy)
    assert sh["shared_nce"] != ref["shared_nce"] and sh["specific_nce"] == ref["specific_nce"]
    assert sp["specific_nce"] != ref["specific_nce"] and sp["shared_nce"] == ref["shared_nce"]
    for k in ("codebook", "kl", "shared_align", "specific_orth"):
        assert sh[k] == ref[k] == sp[k]
    none = _loss_terms(replace(base, nce_weight=0.0), toy)
    assert none["shared_nce"] == 0 and none["specific_nce"] == 0 and none["kl"] == ref["kl"]
    kl = _loss_terms(replace(base, kl_weight=3.0), toy)
    assert kl["kl"] == ref["kl"]  # the logged term is unscaled; the total carries the weight
    assert kl["total"] == pytest.approx(ref["total"] + 2 * ref["kl"], rel=1e-5)


def test_unit_norm_initial_rows_are_the_same_draw_scaled():
    torch.manual_seed(0)
    a = RegionQuantizer(30, 8, {"text": (0, 10), "graph": (10, 20), "shared": (20, 30)})
    torch.manual_seed(0)
    b = RegionQuantizer(30, 8, {"text": (0, 10), "graph": (10, 20), "shared": (20, 30)}, init="unit")
    assert torch.allclose(b.codebook.norm(dim=-1), torch.ones(30))
    assert torch.allclose(torch.nn.functional.normalize(a.codebook, dim=-1), b.codebook)
    torch.manual_seed(0)
    assert torch.equal(MedTokModel(MedTokConfig(**TINY, codebook_init="unit")).quantizer.codebook.norm(dim=-1).round(
        decimals=5), torch.ones(60))


def test_restarts_at_the_codebook_norm():
    torch.manual_seed(0)
    q = RegionQuantizer(30, 8, {"text": (0, 10), "graph": (10, 20), "shared": (20, 30)})
    q.idle_steps[:3] = 50
    alive_norm = q.codebook.data[3:].norm(dim=-1).mean()
    rows = q.restart_dead("text", torch.randn(5, 8), 30, torch.Generator().manual_seed(0), norm="codebook",
                          return_rows=True)
    assert rows.tolist() == [0, 1, 2]
    assert torch.allclose(q.codebook.data[:3].norm(dim=-1), alive_norm.expand(3))
    q.idle_steps[10:12] = 50
    assert q.restart_dead("graph", torch.randn(5, 8), 30, torch.Generator().manual_seed(0)) == 2  # default: unit
    assert torch.allclose(q.codebook.data[10:12].norm(dim=-1), torch.ones(2), atol=0.05)


def test_reseated_rows_get_fresh_optimizer_state(tmp_path, toy, monkeypatch, one_thread):
    """Unit: the moments of the given rows are zeroed, the others kept. In training: right after
    every restart, the re-seated rows' moments are zero (and only with the setting on)."""
    p = torch.nn.Parameter(torch.randn(6, 4))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.sum().backward()
    opt.step()
    before = {k: opt.state[p][k].clone() for k in ("exp_avg", "exp_avg_sq")}
    assert reset_optimizer_rows(opt, p, torch.tensor([1, 4])) == 2
    for k, t in before.items():
        assert (opt.state[p][k][[1, 4]] == 0).all() and torch.equal(opt.state[p][k][[0, 2, 3, 5]], t[[0, 2, 3, 5]])

    seen = []
    real = T.reset_optimizer_rows

    def spy(opt, param, rows):
        n = real(opt, param, rows)
        st = getattr(opt, "optimizer", opt).state[param]
        seen.append((len(rows), bool((st["exp_avg"][rows] == 0).all() and (st["exp_avg_sq"][rows] == 0).all()),
                     float(st["exp_avg_sq"].abs().sum())))
        return n

    monkeypatch.setattr(T, "reset_optimizer_rows", spy)
    v, g, emb = toy
    run = dict(RUN, steps=7)  # not ending on a restart step: the last step moves the re-seated rows
    train(TrainConfig(out_dir=str(tmp_path / "off"), **run), MedTokConfig(**TINY), vocab=v, graph=g,
          text_embeddings=emb, progress=False)
    assert seen == []  # off by default
    train(TrainConfig(out_dir=str(tmp_path / "on"), restart_reset_optimizer=True, **run), MedTokConfig(**TINY),
          vocab=v, graph=g, text_embeddings=emb, progress=False)
    assert seen and sum(n for n, _, _ in seen) > 0
    assert all(ok for _, ok, _ in seen) and all(total > 0 for _, _, total in seen)  # other rows keep theirs
    a = load_file(tmp_path / "off" / "model.safetensors")["quantizer.codebook"]
    b = load_file(tmp_path / "on" / "model.safetensors")["quantizer.codebook"]
    assert not torch.equal(a, b)


def test_log_every_averages_the_interval_on_the_device(tmp_path, toy, one_thread):
    v, g, emb = toy
    run = dict(RUN, steps=6)
    every = train(TrainConfig(out_dir=str(tmp_path / "a"), **run), MedTokConfig(**TINY), vocab=v, graph=g,
                  text_embeddings=emb, progress=False)
    third = train(TrainConfig(out_dir=str(tmp_path / "b"), **dict(run, log_every=3)), MedTokConfig(**TINY),
                  vocab=v, graph=g, text_embeddings=emb, progress=False)
    a = [json.loads(x) for x in (every / "train_log.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (third / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [3, 6] and all(r["steps_averaged"] == 3 for r in b)
    assert b[0]["total"] == pytest.approx(np.mean([r["total"] for r in a[:3]]), rel=1e-6)
    assert b[1]["restarted"] == sum(r["restarted"] for r in a[3:])
    assert torch.equal(load_file(every / "model.safetensors")["quantizer.codebook"],
                       load_file(third / "model.safetensors")["quantizer.codebook"])

"""The fine-tuning job end to end on a tiny LLaMA + char tokenizer + the toy vocabulary:
both arms train, are scored both ways, checkpoints/results/plot are written with their
provenance, a checkpoint reloads to the same predictions, the alignment captions avoid every
evaluation code, a rerun resumes from its checkpoints (also past a damaged one), and the job
never makes its prerequisites."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.data import alignment_codes, qa_examples
from llm_adapter.finetune import finetune
from llm_adapter.prerequisites import default_medtok_checkpoint
from llm_adapter.finetune_config import FinetuneConfig, StageConfig
from llm_adapter.model import PrefixLM
from llm_adapter.option_scoring import cloze_prompt_ids, option_ids
from llm_adapter.vectors import RandomVectors
from qa.datasets.ontology import code_split
from qa.scoring import answer_ids, build_prompt_ids, score_multiple_choice
from tests.conftest import char_tokenizer, tiny_llama, toy_questions

H = 32


def _cfg(tmp_path, **kw):
    adapter = AdapterConfig(base_model="tiny", hidden_size=H, max_codes=1,
                            projector=ProjectorConfig(hidden_size=H, tokens_per_code=2, mlp_hidden=32),
                            lora=LoraSettings(r=2, alpha=4, target_modules=("q_proj", "v_proj")))
    base = dict(output_dir=str(tmp_path / "run"), vector_source="random", adapter=adapter,
                align=StageConfig(steps=3, batch_size=4, lr=1e-3, warmup=0), align_codes=16,
                qa=StageConfig(steps=4, batch_size=4, lr=1e-3, warmup=1), train_eval_size=4, eval_every=2,
                eval_batch_size=8, progress=False, bf16_autocast=False)
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(vocab_size=256, hidden_size=H, num_layers=2, seed=0), char_tokenizer()


def _excluded(evals) -> set[str]:
    return {c for q in evals["test"] for c in q.codes + q.meta["option_codes"]}


def test_finetune_two_arms_end_to_end(tmp_path, tiny):
    lm, tok = tiny
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    cfg = _cfg(tmp_path, score_base_before_qa=True)
    data = toy_questions()
    res = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    # the caller's base model is left untouched (each arm trains its own copy)
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    run = tmp_path / "run"
    assert (run / "results.json").exists() and (run / "curves.png").stat().st_size > 1000
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["arms"]) == {"lora", "lora+prefix"}
    pre = saved["arms"]["lora+prefix"]
    assert len(pre["curves"]["align"]) == 3 and len(pre["curves"]["qa"]) == 4
    assert "align" not in saved["arms"]["lora"]["curves"]
    assert [("train_acc" in c) for c in pre["curves"]["qa"]] == [False, True, False, True]
    assert all(c["grad_norm"] > 0 for c in pre["curves"]["qa"])
    assert set(pre["scores"]) == {"letter", "option", "option@pre_qa"}
    assert saved["deterministic_kernels"] is True and not torch.are_deterministic_algorithms_enabled()
    acc = saved["summary"]["accuracy"]["lora+prefix"]["letter"]["test"]
    assert acc["n"] == 8 and 0 <= acc["accuracy"] <= 1
    for sc in ("letter", "option"):
        paired = saved["summary"]["paired"]["lora+prefix"][sc]["test"]
        diff = np.mean(pre["scores"][sc]["test"]["correct"]) - np.mean(saved["arms"]["lora"]["scores"][sc]["test"]["correct"])
        assert paired["diff"] == pytest.approx(diff)
    # the alignment captions: drawn, of the QA system, and none about a test question's code or option
    assert saved["n_align"] == 12 and len(saved["align_codes"]) == 12  # 3 steps x 4
    assert not set(saved["align_codes"]) & _excluded(data[2])
    # provenance: what reproduces the run
    prov = saved["provenance"]
    assert {"torch", "transformers", "peft", "accelerate"} <= set(prov["versions"])
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"] == torch.__version__
    assert prov["torch_threads"] == torch.get_num_threads() and prov["seeds"]["finetune"] == cfg.seed
    fp = prov["fingerprints"]
    assert fp["vocabulary"].startswith("content:") and len(fp["prefix_vectors"]) == 64
    assert fp["medtok_checkpoint"] is None and set(fp["eval_questions"]) == {"test"}
    # reload the prefix arm's checkpoint: same predictions on the test split
    loaded = PrefixLM.from_pretrained(run / "lora_prefix", lm=tiny_llama(vocab_size=256, hidden_size=H, num_layers=2),
                                      tokenizer=tok, vector_source=RandomVectors(4, 64, seed=cfg.seed))
    r = score_multiple_choice(loaded, tok, data[2]["test"], input_builder=loaded.input_builder(), progress=False)
    assert r.pred.tolist() == pre["scores"]["letter"]["test"]["pred"]


def test_alignment_codes_exclude_eval_codes(tmp_path):
    vocab, train, evals = toy_questions()
    excluded = _excluded(evals)
    # free-text sets (MedDDx): the exclusion list is what keeps evaluation codes out of the captions
    cfg = _cfg(tmp_path, align_codes=10_000, dataset="meddx")
    codes = alignment_codes(vocab, cfg, excluded)
    assert codes and not set(codes) & excluded
    assert set(alignment_codes(vocab, cfg, set())) >= excluded  # (not vacuous: every one would be drawn)
    # the ontology set: captions come from training-split codes only, so also none of the test codes
    cfg = _cfg(tmp_path, align_codes=10_000)
    codes = alignment_codes(vocab, cfg, excluded)
    assert codes and not set(codes) & excluded
    assert all(code_split(c) == "train" for c in codes)
    # only the QA set's systems: codes of other systems would reach the prefix with no vector
    systems = set(vocab.codes["system"])
    assert len(systems) > 1 and {c.split(":")[0] for c in codes} == set(cfg.ontology["systems"])


def _adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for arm in ("lora", "lora_prefix"):
        for f in ("adapter_model.safetensors", "projector.safetensors"):
            if (run / arm / f).exists():
                out.update({f"{arm}/{f}/{k}": v for k, v in load_file(str(run / arm / f)).items()})
    return out


@pytest.mark.parametrize("damage", [None, "adapter.safetensors", "optimizer.pt", "progress.json"])
def test_resume_from_checkpoints_is_exact(tmp_path, tiny, damage):
    """Rerun in the same output dir after the last checkpoint of each stage is lost (and,
    parametrized, the one before it damaged by truncation): the run resumes from the newest valid
    checkpoint and ends with bitwise the same weights, curves and predictions."""
    lm, tok = tiny
    data = toy_questions()
    # the prefix arm has both stages (the no-prefix arm resumes the same way: tests/test_adapter_resume.py)
    cfg = _cfg(tmp_path, arms=("lora+prefix",), checkpoint_every=1, eval_every=0)
    straight = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    w_straight = _adapter_weights(tmp_path / "run")
    (tmp_path / "run" / "lora_prefix" / "arm_result.json").unlink()
    (tmp_path / "run" / "lora_prefix" / "adapter_model.safetensors").unlink()
    ckpts = tmp_path / "run" / "lora_prefix" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["align-step-2", "align-step-3", "qa-step-3", "qa-step-4"]
    for stage in ("qa-step-4", "align-step-3"):  # as if killed before the stage's last save
        for f in (ckpts / stage).iterdir():
            f.unlink()
        (ckpts / stage).rmdir()
    if damage:
        path = ckpts / "qa-step-3" / damage
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
            resumed = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    else:
        resumed = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    w_resumed = _adapter_weights(tmp_path / "run")
    assert set(w_straight) == set(w_resumed) and len(w_straight) > 4
    assert all(torch.equal(w_straight[k], w_resumed[k]) for k in w_straight)
    for arm in cfg.arms:
        a, b = straight["arms"][arm], resumed["arms"][arm]
        for stage in a["curves"]:
            assert [(c["loss"], c["grad_norm"]) for c in a["curves"][stage]] == \
                   [(c["loss"], c["grad_norm"]) for c in b["curves"][stage]]
        assert a["scores"] == b["scores"]


def test_resume_refuses_checkpoints_of_another_run(tmp_path, tiny):
    from llm_adapter.checkpoint import CheckpointMismatch

    lm, tok = tiny
    data = toy_questions()
    finetune(_cfg(tmp_path, arms=("lora",), checkpoint_every=2, scorings=("letter",)), lm=lm, tokenizer=tok,
             questions=data)
    (tmp_path / "run" / "lora" / "arm_result.json").unlink()
    other = _cfg(tmp_path, arms=("lora",), checkpoint_every=2, scorings=("letter",),
                 qa=StageConfig(steps=4, batch_size=4, lr=2e-3, warmup=1))
    with pytest.raises(CheckpointMismatch, match="another run"):
        finetune(other, lm=lm, tokenizer=tok, questions=data)
    # resume=false starts over, the same config with another output dir too
    finetune(FinetuneConfig.from_dict({**other.to_dict(), "resume": False}), lm=lm, tokenizer=tok, questions=data)


def test_config_validation():
    with pytest.raises(ValueError, match="arms"):
        FinetuneConfig(arms=("lora", "qlora"))
    with pytest.raises(ValueError, match="device"):
        FinetuneConfig(device="tpu")
    m = FinetuneConfig(dataset="meddx")
    assert m.train_split == "intermediate" and m.eval_splits == ["basic", "expert"]


def test_qa_examples_letter_and_option_targets():
    tok = char_tokenizer()
    q = toy_questions()[1][0]
    (codes, p, a), = qa_examples(tok, [q], "letter")
    assert codes == q.codes and p == build_prompt_ids(tok, q) and a == answer_ids(tok, q)
    assert tok.decode(a[:1]) == q.answer_letter
    (codes, p, a), = qa_examples(tok, [q], "option")
    assert p == cloze_prompt_ids(tok, q.question) and a == option_ids(tok, q.options[q.answer])
    assert tok.decode(p).endswith("\nAnswer:") and tok.decode(a).strip() == q.options[q.answer][:48].strip()


def test_job_never_makes_its_prerequisites(tmp_path, monkeypatch):
    """A missing vocabulary or MedTok checkpoint is a one-line error naming the command that
    makes it; nothing is built or trained as a side effect."""
    import medtok.build
    import medtok.train
    from llm_adapter.prerequisites import make_vector_source

    monkeypatch.setenv("MEDTOK_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(medtok.train, "train", lambda *a, **k: calls.append("train"))
    monkeypatch.setattr(medtok.build, "build_vocabulary", lambda *a, **k: calls.append("build"))
    with pytest.raises(FileNotFoundError, match="python scripts/build_vocab.py --out .*vocab"):
        finetune(FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), output_dir=str(tmp_path / "run"), arms=("lora",)))
    cfg = FinetuneConfig(output_dir=str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError) as e:
        make_vector_source(cfg, toy_questions()[0], ["ICD10CM:A00.1"])
    msg = str(e.value)
    ckpt = default_medtok_checkpoint(cfg)
    assert ckpt == tmp_path / "cache" / "medtok_icd10cm" and "\n" not in msg
    assert f"python scripts/train_medtok.py --out {ckpt} --systems ICD10CM --steps 600" in msg
    assert calls == [] and not ckpt.exists()


def test_prepare_stages_train_the_default_medtok_once(tmp_path, monkeypatch, capsys):
    """`make demo`'s MedTok stage: trains the QA systems' MedTok once (visible stage), then reuses it."""
    import llm_adapter.prepare as prepare

    monkeypatch.setenv("MEDTOK_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_train(tcfg, *a, **k):
        calls.append(tcfg)
        # trained with deterministic CPU kernels (otherwise MedTok differs run to run)
        assert torch.are_deterministic_algorithms_enabled()
        Path(tcfg.out_dir).mkdir(parents=True)
        (Path(tcfg.out_dir) / "model.safetensors").write_bytes(b"")
        (Path(tcfg.out_dir) / "config.json").write_text("{}")

    monkeypatch.setattr(prepare, "train", fake_train)
    cfg = FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), medtok_steps=7)
    assert prepare.prepare_medtok(cfg, progress=False) == tmp_path / "cache" / "medtok_icd10cm"
    prepare.prepare_medtok(cfg, progress=False)
    assert len(calls) == 1 and calls[0].systems == ["ICD10CM"] and calls[0].steps == 7
    assert not torch.are_deterministic_algorithms_enabled()
    assert "reusing" in capsys.readouterr().out
    # an explicit checkpoint, or an arm list without the prefix, never trains one
    prepare.prepare_medtok(FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), medtok_checkpoint="x"), progress=False)
    prepare.prepare_medtok(FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), arms=("lora",)), progress=False)
    assert len(calls) == 1


def test_demo_runs_visible_stages_in_order(tmp_path, monkeypatch, capsys):
    import llm_adapter.prepare as prepare

    monkeypatch.setenv("MEDTOK_CACHE", str(tmp_path / "cache"))
    order = []
    monkeypatch.setattr(prepare, "build_vocabulary", lambda d, **k: order.append("vocabulary") or (
        None, None, {"codes_per_system": {}, "roots_per_system": {}, "codes": 0, "edges_per_type": {}, "edges": 0}))
    monkeypatch.setattr(prepare, "format_statistics", lambda stats: "(statistics)")
    monkeypatch.setattr(prepare, "prepare_medtok", lambda cfg, progress=True: order.append("medtok"))
    monkeypatch.setattr(prepare, "finetune", lambda cfg: order.append("finetune") or {})
    prepare.demo(FinetuneConfig(output_dir=str(tmp_path / "run")))
    out = capsys.readouterr().out
    assert order == ["vocabulary", "medtok", "finetune"]
    assert out.index("[1/3] vocabulary") < out.index("(statistics)") < out.index("[2/3] MedTok") < out.index("[3/3] fine-tuning")
    prepare.demo(FinetuneConfig(output_dir=str(tmp_path / "run")), prepare_only=True)
    assert order[3:] == ["vocabulary", "medtok"] and "[2/2] MedTok" in capsys.readouterr().out

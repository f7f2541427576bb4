"""The fine-tuning job end to end on a tiny LLaMA + char tokenizer + the toy vocabulary:
both arms train, are scored by the QA harness, checkpoints/results/plot are written, a
checkpoint reloads to the same predictions, and a resumed run continues where it stopped."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.finetune import finetune
from llm_adapter.finetune_config import FinetuneConfig, StageConfig, apply_overrides
from medtok.toy import toy_vocabulary
from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa
from qa.lm import tiny_char_tokenizer, tiny_llama

H = 32


def _setup():
    vocab, _ = toy_vocabulary()
    qs = build_ontology_qa(vocab, OntologyQAConfig(systems=("ICD10CM",), sizes={"train": 24, "validation": 0, "test": 8},
                                                   n_options=2))
    train = [q for q in qs if q.split == "train"]
    evals = {"test": [q for q in qs if q.split == "test"]}
    return vocab, train, evals


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
    return tiny_llama(vocab_size=256, hidden_size=H, num_layers=2, seed=0), tiny_char_tokenizer()


def test_finetune_two_arms_end_to_end(tmp_path, tiny):
    from llm_adapter.model import PrefixLM
    from llm_adapter.vectors import RandomVectors
    from qa.scoring import score_multiple_choice

    lm, tok = tiny
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    cfg = _cfg(tmp_path, score_base_before_qa=True)
    res = finetune(cfg, lm=lm, tokenizer=tok, questions=_setup())
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
    assert set(pre["scores"]) == {"letter", "option", "option@pre_qa"}
    acc = saved["summary"]["accuracy"]["lora+prefix"]["letter"]["test"]
    assert acc["n"] == 8 and 0 <= acc["accuracy"] <= 1
    for sc in ("letter", "option"):
        paired = saved["summary"]["paired"]["lora+prefix"][sc]["test"]
        diff = np.mean(pre["scores"][sc]["test"]["correct"]) - np.mean(saved["arms"]["lora"]["scores"][sc]["test"]["correct"])
        assert paired["diff"] == pytest.approx(diff)
    # the alignment codes avoid every test question's codes and options
    excluded = {c for q in _setup()[2]["test"] for c in q.codes + q.meta["option_codes"]}
    assert saved["n_align"] > 0
    # reload the prefix arm's checkpoint: same predictions on the test split
    loaded = PrefixLM.from_pretrained(run / "lora_prefix", lm=tiny_llama(vocab_size=256, hidden_size=H, num_layers=2),
                                      tokenizer=tok, vector_source=RandomVectors(4, 64, seed=cfg.seed))
    r = score_multiple_choice(loaded, tok, _setup()[2]["test"], input_builder=loaded.input_builder(), progress=False)
    assert r.pred.tolist() == pre["scores"]["letter"]["test"]["pred"]
    assert excluded  # (used above) the test set has codes


def test_alignment_codes_exclude_eval_codes(tmp_path):
    from llm_adapter.data import alignment_codes

    vocab, train, evals = _setup()
    cfg = _cfg(tmp_path, align_codes=10_000)
    excluded = {c for q in evals["test"] for c in q.codes + q.meta["option_codes"]}
    codes = alignment_codes(vocab, cfg, excluded)
    assert codes and not set(codes) & excluded
    from qa.datasets.ontology import code_split

    assert all(code_split(c) == "train" for c in codes)
    # only the QA set's systems: codes of other systems would reach the prefix with no vector
    systems = set(vocab.codes["system"])
    assert len(systems) > 1 and {c.split(":")[0] for c in codes} == set(cfg.ontology["systems"])


def test_resume_continues_from_checkpoint(tmp_path, tiny):
    """A rerun in the same output dir resumes from the last checkpoint (step 2 of 4): the
    restored part of the curve is the saved one, the recomputed steps match the straight run."""
    lm, tok = tiny
    data = _setup()
    cfg = _cfg(tmp_path, arms=("lora",), checkpoint_every=2, eval_every=0, scorings=("letter",))
    straight = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    assert (tmp_path / "run" / "lora" / "checkpoints" / "qa-step-2" / "progress.json").exists()
    resumed = finetune(cfg, lm=lm, tokenizer=tok, questions=data)
    a, b = straight["arms"]["lora"]["curves"]["qa"], resumed["arms"]["lora"]["curves"]["qa"]
    assert len(b) == 4
    assert [c["elapsed_s"] for c in b[:2]] == [c["elapsed_s"] for c in a[:2]]  # restored, not rerun
    assert np.allclose([c["loss"] for c in a], [c["loss"] for c in b], atol=1e-5)
    assert resumed["arms"]["lora"]["scores"]["letter"]["test"]["pred"] == \
        straight["arms"]["lora"]["scores"]["letter"]["test"]["pred"]
    fresh = finetune(FinetuneConfig.from_dict({**cfg.to_dict(), "resume": False}), lm=lm, tokenizer=tok, questions=data)
    assert fresh["arms"]["lora"]["curves"]["qa"][0]["elapsed_s"] != a[0]["elapsed_s"]


def test_overrides_and_validation():
    d = apply_overrides(FinetuneConfig().to_dict(), ["qa.steps=7", "adapter.lora.r=4", "vector_source=minilm"])
    cfg = FinetuneConfig.from_dict(d)
    assert cfg.qa.steps == 7 and cfg.adapter.lora.r == 4 and cfg.vector_source == "minilm"
    with pytest.raises(KeyError, match="unknown key"):
        apply_overrides(FinetuneConfig().to_dict(), ["qa.stepz=7"])
    with pytest.raises(ValueError, match="arms"):
        FinetuneConfig(arms=("lora", "qlora"))
    m = FinetuneConfig(dataset="meddx")
    assert m.train_split == "intermediate" and m.eval_splits == ["basic", "expert"]


def test_qa_examples_letter_and_option_targets():
    from llm_adapter.data import qa_examples
    from llm_adapter.option_scoring import cloze_prompt_ids, option_ids
    from qa.scoring import answer_ids, build_prompt_ids

    tok = tiny_char_tokenizer()
    q = _setup()[1][0]
    (codes, p, a), = qa_examples(tok, [q], "letter")
    assert codes == q.codes and p == build_prompt_ids(tok, q) and a == answer_ids(tok, q)
    assert tok.decode(a[:1]) == q.answer_letter
    (codes, p, a), = qa_examples(tok, [q], "option")
    assert p == cloze_prompt_ids(tok, q.question) and a == option_ids(tok, q.options[q.answer])
    assert tok.decode(p).endswith("\nAnswer:") and tok.decode(a).strip() == q.options[q.answer][:48].strip()


def test_first_run_trains_the_default_medtok_once(tmp_path, monkeypatch):
    """No checkpoint given: the job trains its own MedTok (QA systems only) once, then reuses it."""
    import medtok.train
    from llm_adapter.finetune import default_medtok_checkpoint, ensure_inputs

    monkeypatch.setenv("MEDTOK_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_train(tcfg, *a, **k):
        calls.append(tcfg)
        Path(tcfg.out_dir).mkdir(parents=True)
        (Path(tcfg.out_dir) / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(medtok.train, "train", fake_train)

    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    cfg = FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), medtok_steps=7)
    assert default_medtok_checkpoint(cfg) == tmp_path / "cache" / "medtok_icd10cm"
    ensure_inputs(cfg, OneProcess())
    ensure_inputs(cfg, OneProcess())
    assert len(calls) == 1
    assert calls[0].systems == ["ICD10CM"] and calls[0].steps == 7
    assert calls[0].out_dir == str(tmp_path / "cache" / "medtok_icd10cm")
    # an explicit checkpoint, or an arm list without the prefix, never trains one
    ensure_inputs(FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), medtok_checkpoint="x"), OneProcess())
    ensure_inputs(FinetuneConfig(vocab_dir=str(tmp_path / "vocab"), arms=("lora",)), OneProcess())
    assert len(calls) == 1

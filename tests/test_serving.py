"""Serving export (llm_adapter.serving, main venv only, no vLLM): the exported base and LoRA
reload to the same model, the saved prompt embeds are the `build_inputs` rows, and the
reference tokens are the peft model's greedy generations. On a tiny random LLaMA."""

import base64
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.model import PrefixLM
from llm_adapter.serving import (BASE_DIR, EMBEDS_FILE, LORA_DIR, PEFT_FILES, REFERENCE_FILE, export_base_lm,
                                 export_for_serving)
from llm_adapter.vectors import RandomVectors
from qa.lm import tiny_char_tokenizer, tiny_llama
from qa.scoring import build_prompt_ids
from qa.types import MCQuestion

H = 32
MAX_NEW = 5


def _lm():
    return tiny_llama(vocab_size=256, hidden_size=H, num_layers=2, seed=0)


def _vectors():
    return RandomVectors(4, 8, seed=1)


def _questions():
    return [MCQuestion("q0", "What does X1 denote?", ["alpha", "beta"], 0, codes=["X1", "X2", "X3"]),
            MCQuestion("q1", "No codes here?", ["yes", "no", "maybe"], 2, codes=[]),
            MCQuestion("q2", "And X4?", ["one", "two"], 1, codes=["X4"])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    tok = tiny_char_tokenizer()
    cfg = AdapterConfig(base_model="tiny", hidden_size=H, vector_source="random", max_codes=2,
                        projector=ProjectorConfig(input_dim=8, num_groups=4, hidden_size=H, tokens_per_code=2,
                                                  mlp_hidden=32),
                        lora=LoraSettings(r=4, alpha=8))
    model = PrefixLM.build(cfg, lm=_lm(), tokenizer=tok, vector_source=_vectors(), seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter non-trivial
        for n, p in model.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(tmp / "adapter")
    rec = export_for_serving(tmp / "adapter", tmp / "out", _questions(), max_new_tokens=MAX_NEW, lm=_lm(),
                             tokenizer=tok, vector_source=_vectors())
    return tmp, tok, rec


def _reloaded_prefix_lm(tmp, tok):
    return PrefixLM.from_pretrained(tmp / "adapter", lm=_lm(), tokenizer=tok, vector_source=_vectors())


def test_export_writes_loadable_base_and_clean_lora(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp, tok, rec = exported
    base = tmp / "out" / BASE_DIR
    assert (base / "config.json").exists() and (base / "model.safetensors").exists()
    assert (base / "tokenizer.json").exists() and (base / "tokenizer_config.json").exists()
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ref = _lm().state_dict()
    got = lm.state_dict()
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    tok2 = AutoTokenizer.from_pretrained(base)
    q = _questions()[0]
    assert build_prompt_ids(tok2, q) == build_prompt_ids(tok, q)  # chat template travels with the export
    lora = tmp / "out" / LORA_DIR
    assert sorted(p.name for p in lora.iterdir()) == sorted(PEFT_FILES)
    assert json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())
    assert rec["base_dir"] == str(base.resolve()) and rec["dtype"] == "float32"


def test_prompt_embeds_are_build_inputs_rows(exported):
    tmp, tok, rec = exported
    rows = torch.load(tmp / "out" / EMBEDS_FILE, weights_only=True)
    model = _reloaded_prefix_lm(tmp, tok)
    qs = _questions()
    assert len(rows) == rec["n"] == len(qs)
    with torch.no_grad():
        for q, row, meta in zip(qs, rows, rec["questions"]):
            prompt = build_prompt_ids(tok, q)
            want = model.inputs([q.codes], [prompt])["inputs_embeds"][0]
            assert torch.equal(row, want)
            n_prefix = len(model.codes_for_prefix(q.codes)) * 2  # 2 tokens per code, max_codes=2
            assert row.shape == (n_prefix + len(prompt), H) and meta["embed_rows"] == row.shape[0]
            # the prompt part is the plain token embeddings
            assert torch.equal(row[n_prefix:], model.get_input_embeddings()(torch.tensor(prompt)))


def test_reference_tokens_are_peft_greedy_and_reproducible_from_the_export(exported):
    """The reference equals a greedy generation of the reloaded PrefixLM, and also of
    base/ + lora/ alone (what vLLM gets), fed the saved rows."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tmp, tok, rec = exported
    rows = torch.load(tmp / "out" / EMBEDS_FILE, weights_only=True)
    saved = json.loads((tmp / "out" / REFERENCE_FILE).read_text())
    assert saved["hf"]["token_ids"] == rec["hf"]["token_ids"] and saved["max_new_tokens"] == MAX_NEW
    served = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp / "out" / BASE_DIR),
                                       str(tmp / "out" / LORA_DIR)).eval()
    plain = _reloaded_prefix_lm(tmp, tok).lm
    for m in (plain, served):
        for row, want in zip(rows, rec["hf"]["token_ids"]):
            with torch.no_grad():
                out = m.generate(inputs_embeds=row[None], attention_mask=torch.ones(1, row.shape[0], dtype=torch.long),
                                 max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=0)
            assert [int(t) for t in out[0]] == want
    assert all(0 < len(t) <= MAX_NEW for t in rec["hf"]["token_ids"])
    assert rec["hf"]["generated_tokens"] == sum(len(t) for t in rec["hf"]["token_ids"])


def test_export_refuses_a_lora_wrapped_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(_lm(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="before wrapping"):
        export_base_lm(wrapped, tiny_char_tokenizer(), tmp_path / "base")


def _serve_check():
    path = Path(__file__).resolve().parents[1] / "scripts" / "serve_check.py"
    spec = importlib.util.spec_from_file_location("serve_check", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_serve_check_compare_and_base64_round_trip():
    sc = _serve_check()
    # tokens after the first stop token are ignored (HF stops there; vLLM may report it or not)
    assert sc.trim([5, 6, 2, 9], {2}) == [5, 6, 2]
    r = sc.compare([[1, 2, 3], [4, 5, 2]], [[1, 2, 3], [4, 7, 2]], [2])
    assert r["exact_match"] == 1 and r["first_mismatch"]["index"] == 1 and r["first_mismatch"]["position"] == 1
    assert sc.compare([[4, 2]], [[4, 2, 8]], [2])["exact_match"] == 1
    x = torch.randn(7, H)
    back = torch.load(io.BytesIO(base64.b64decode(sc.b64_embeds(x))), weights_only=True)
    assert torch.equal(back, x)


def test_export_drops_the_gguf_quantization_record(tmp_path):
    """A GGUF-loaded base (the embedded SmolLM2) has dequantized weights but keeps a
    `quantization_config` that would make vLLM look for a GGUF file: the export drops it."""
    lm = _lm()
    lm.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    out = export_base_lm(lm, tiny_char_tokenizer(), tmp_path / "base")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["dtype"] == "float32"
    assert (out / "generation_config.json").exists()

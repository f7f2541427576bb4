"""Serving export (llm_adapter.serving): the exported base + LoRA (what vLLM loads) reload to the
adapter's own model, and the GGUF record that would mislead vLLM is dropped. Tiny random LLaMA."""

import json

import pytest
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.model import PrefixLM
from llm_adapter.serving import PEFT_FILES, export_base_lm, export_lora
from llm_adapter.smoke import char_tokenizer, tiny_llama
from llm_adapter.vectors import RandomVectors
from qa.scoring import build_prompt_ids
from qa.types import MCQuestion

H = 32


def _lm():
    return tiny_llama(vocab_size=256, hidden_size=H, num_layers=2, seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    tok = char_tokenizer()
    cfg = AdapterConfig(base_model="tiny", hidden_size=H, vector_source="random", max_codes=2,
                        projector=ProjectorConfig(input_dim=8, num_groups=4, hidden_size=H, tokens_per_code=2,
                                                  mlp_hidden=32),
                        lora=LoraSettings(r=4, alpha=8))
    model = PrefixLM.build(cfg, lm=_lm(), tokenizer=tok, vector_source=RandomVectors(4, 8, seed=1), seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter non-trivial
        for n, p in model.lm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(tmp / "adapter")
    base = export_base_lm(_lm(), tok, tmp / "base")
    lora = export_lora(tmp / "adapter", tmp / "lora", base)
    return tmp, tok, model, base, lora


def test_export_writes_loadable_base_and_clean_lora(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp, tok, _, base, lora = exported
    assert (base / "config.json").exists() and (base / "model.safetensors").exists()
    assert (base / "tokenizer.json").exists() and (base / "tokenizer_config.json").exists()
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ref, got = _lm().state_dict(), lm.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    q = MCQuestion("q0", "What does X1 denote?", ["alpha", "beta"], 0)
    assert build_prompt_ids(AutoTokenizer.from_pretrained(base), q) == build_prompt_ids(tok, q)  # template travels
    assert sorted(p.name for p in lora.iterdir()) == sorted(PEFT_FILES)
    assert json.loads((lora / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())


def test_base_plus_lora_is_the_adapters_model(exported):
    """What vLLM gets (base/ + lora/ only) computes what the trained PrefixLM computes."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tmp, tok, model, base, lora = exported
    served = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(lora)).eval()
    x = torch.randn(1, 9, H)
    with torch.no_grad():
        want = model.lm.eval()(inputs_embeds=x).logits
        got = served(inputs_embeds=x).logits
        plain = AutoModelForCausalLM.from_pretrained(base)(inputs_embeds=x).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(plain, want, atol=1e-3)  # the LoRA really matters


def test_export_refuses_a_lora_wrapped_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(_lm(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="before wrapping"):
        export_base_lm(wrapped, char_tokenizer(), tmp_path / "base")


def test_export_lora_needs_peft_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a peft adapter directory"):
        export_lora(tmp_path, tmp_path / "out")


def test_parity_compare_and_base64_round_trip():
    import base64
    import io

    from serve.embeds import encode_embeds
    from serve.parity import compare, trim

    # tokens after the first stop token are ignored (HF stops there; vLLM may report it or not)
    assert trim([5, 6, 2, 9], {2}) == [5, 6, 2]
    r = compare([[1, 2, 3], [4, 5, 2]], [[1, 2, 3], [4, 7, 2]], [2])
    assert r["exact_match"] == 1 and r["first_mismatch"]["index"] == 1 and r["first_mismatch"]["position"] == 1
    assert compare([[4, 2]], [[4, 2, 8]], [2])["exact_match"] == 1
    x = torch.randn(7, H)
    assert torch.equal(torch.load(io.BytesIO(base64.b64decode(encode_embeds(x))), weights_only=True), x)


def test_export_drops_the_gguf_quantization_record(tmp_path):
    """A GGUF-loaded base (the embedded SmolLM2) has dequantized weights but keeps a
    `quantization_config` that would make vLLM look for a GGUF file: the export drops it."""
    lm = _lm()
    lm.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf", "dequantize": False}
    out = export_base_lm(lm, char_tokenizer(), tmp_path / "base")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["dtype"] == "float32"
    assert (out / "generation_config.json").exists()

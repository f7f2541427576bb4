"""Adapter configs: validation, JSON round trip, the unknown-key rules, and the Llama-3.1-8B
recipe on the meta device."""

import json

import pytest
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig, llama31_8b_config
from llm_adapter.finetune_config import FinetuneConfig, StageConfig, apply_overrides
from medbase.jsonconfig import UnknownConfigKeys
from qa.harness import EvalConfig
from tests.conftest import LLAMA31_8B_ARCH


def test_validation_errors():
    with pytest.raises(ValueError, match="kind"):
        ProjectorConfig(kind="conv")
    with pytest.raises(ValueError, match="per_group"):
        ProjectorConfig(pooling="per_group", num_groups=4, tokens_per_code=2)
    with pytest.raises(ValueError, match="hidden_size"):
        AdapterConfig(hidden_size=4096)  # projector still at 576
    with pytest.raises(ValueError, match="r must be"):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match="quantization"):
        AdapterConfig(quantization="int3")


def test_json_round_trip(tmp_path):
    c = llama31_8b_config(medtok_checkpoint="runs/medtok")
    c.save(tmp_path / "c.json")
    d = AdapterConfig.load(tmp_path / "c.json")
    assert d == c and isinstance(d.projector, ProjectorConfig) and d.lora.r == 16
    f = FinetuneConfig(qa=StageConfig(steps=3, grad_accum=2), adapter=c)
    f.save(tmp_path / "f.json")
    g = FinetuneConfig.load(tmp_path / "f.json")
    assert g == f and isinstance(g.qa, StageConfig) and g.adapter.lora.target_modules == c.lora.target_modules


@pytest.mark.parametrize("cls, path", [
    (AdapterConfig, ["projector"]), (AdapterConfig, ["lora"]), (AdapterConfig, []),
    (FinetuneConfig, ["qa"]), (FinetuneConfig, ["adapter", "projector"]), (FinetuneConfig, []),
    (EvalConfig, []), (StageConfig, []),
])
def test_unknown_keys_rejected_in_user_configs_and_ignored_with_a_warning_in_saved_ones(tmp_path, cls, path):
    """A typo in a config a user writes (at any nesting level) is an error naming the key; the same
    key in a config saved beside a checkpoint (a newer version's) is ignored with a warning."""
    d = cls().to_dict()
    node = d
    for p in path:
        node = node[p]
    node["lr_typo"] = 1
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(UnknownConfigKeys, match="lr_typo"):
        cls.load(tmp_path / "c.json")
    with pytest.raises(UnknownConfigKeys, match="lr_typo"):
        cls.from_dict(d)
    with pytest.warns(UserWarning, match="lr_typo"):
        loaded = cls.load_saved(tmp_path / "c.json")
    assert loaded == cls()


def test_cli_overrides_reject_unknown_keys():
    d = apply_overrides(FinetuneConfig().to_dict(), ["qa.steps=7", "adapter.lora.r=4", "vector_source=minilm"])
    cfg = FinetuneConfig.from_dict(d)
    assert cfg.qa.steps == 7 and cfg.adapter.lora.r == 4 and cfg.vector_source == "minilm"
    with pytest.raises(UnknownConfigKeys, match="stepz"):
        apply_overrides(FinetuneConfig().to_dict(), ["qa.stepz=7"])
    with pytest.raises(UnknownConfigKeys, match="no section"):
        apply_overrides(FinetuneConfig().to_dict(), ["qq.steps=7"])


def test_llama31_8b_on_meta_device():
    """Instantiate the 8B architecture without weights: shapes, parameter counts, projector to 4096."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_adapter.projector import CodeProjector

    cfg = llama31_8b_config()
    assert cfg.dtype == "bfloat16" and cfg.quantization == "nf4" and cfg.hidden_size == 4096
    with torch.device("meta"):
        lm = LlamaForCausalLM(LlamaConfig(**LLAMA31_8B_ARCH))
        n_base = sum(p.numel() for p in lm.parameters())
        peft_lm = get_peft_model(lm, cfg.lora.to_peft())
        cfg.projector.target_norm = 1.0  # "auto" needs real embeddings
        proj = CodeProjector(cfg.projector)
        out = proj(torch.zeros(3, 4, 64, device="meta"))
    assert n_base == 8_030_261_248  # the published Llama-3.1-8B parameter count
    n_lora = sum(p.numel() for n, p in peft_lm.named_parameters() if "lora_" in n)
    # r=16 on q,k,v,o (4096->4096, ->1024, ->1024, 4096->4096) and gate,up (4096->14336), down (14336->4096)
    per_layer = 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + 2 * (4096 + 14336) + (14336 + 4096))
    assert n_lora == 32 * per_layer == 41_943_040
    assert out.shape == (3, 4, 4096)
    assert sum(p.numel() for p in proj.parameters()) == (256 * 4096 + 4096) + (4096 * 4 * 4096 + 4 * 4096)
    assert lm.model.embed_tokens.weight.shape == (128256, 4096)

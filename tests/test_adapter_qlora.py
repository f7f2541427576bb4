"""QLoRA on CPU: with the repack fix, LoRA gradients through a bitsandbytes NF4 base match
the same LoRA on a dequantized (nn.Linear) copy of the base, even after an eval forward."""

import pytest
import torch

from llm_adapter.quantization import bitsandbytes_available

pytestmark = pytest.mark.skipif(not bitsandbytes_available(), reason="bitsandbytes not installed")


def _qlora_model(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llm_adapter.quantization import disable_cpu_bf16_repack, nf4_config
    from tests.conftest import tiny_llama

    tiny_llama(vocab_size=128, hidden_size=64, num_layers=2, seed=0).save_pretrained(tmp_path)
    q = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=nf4_config(torch.float32),
                                             dtype=torch.float32, device_map={"": "cpu"})
    n_fixed = disable_cpu_bf16_repack(q)
    torch.manual_seed(0)
    pm = get_peft_model(q, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"]))
    with torch.no_grad():  # non-zero B so that the A gradients are non-trivial too
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    return pm, n_fixed


def test_qlora_gradients_match_dequantized_reference(tmp_path):
    from llm_adapter.quantization import dequantized_copy

    pm, n_fixed = _qlora_model(tmp_path)
    assert n_fixed == 2 * 7  # 7 linear layers per LLaMA block, lm_head stays full precision
    ref = dequantized_copy(pm)
    x = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the eval forward that triggers the bf16 repack without the fix
        pm(input_ids=x)
    pm.train()
    ref.train()
    loss_q = pm(input_ids=x, labels=x).loss
    loss_q.backward()
    loss_r = ref(input_ids=x, labels=x).loss
    loss_r.backward()
    assert torch.allclose(loss_q, loss_r, atol=1e-4)
    grads_q = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    grads_r = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert set(grads_q) == set(grads_r) and len(grads_q) == 2 * 3 * 2
    for n in grads_q:
        assert grads_q[n] is not None, n
        rel = float((grads_q[n] - grads_r[n]).norm() / grads_r[n].norm().clamp(min=1e-12))
        assert rel < 1e-3, (n, rel)

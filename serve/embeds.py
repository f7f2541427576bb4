"""Server-side prompt embeddings: codes + prompt tokens -> one [P + L, H] row, as in training.

`PromptBuilder` loads only what the rows need: the tokenizer (with its chat template), the base
model's token-embedding table (read alone from the safetensors file, not the whole LM), the
adapter's projector and the code vectors. It wraps them in the project's own `PrefixLM` around
an embedding-only stand-in for the LM, so `code_prefixes` (which codes become prefix tokens)
and `build_inputs` (where they go) are the very functions training and the HF harness run.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import torch
from torch import nn

from llm_adapter.inputs import serving_prompt_embeds
from llm_adapter.model import PrefixLM
from llm_adapter.projector import CodeProjector
from qa.lm import pad_token_id
from qa.scoring import build_prompt_ids, letter_token_ids
from qa.types import MCQuestion

EMBED_KEYS = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


class EmbeddingError(ValueError):
    """A prompt row that must not reach the model (non-finite values, nothing to embed)."""


class EmbeddingOnlyLM(nn.Module):
    """Stands in for the causal LM where only its input embeddings are used (`build_inputs`)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.embed_tokens = nn.Embedding.from_pretrained(weight, freeze=True)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens


def load_embedding_table(base_dir: str | Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The input-embedding matrix [V, H] of an HF model directory, read alone (sharded or not)."""
    from safetensors import safe_open

    base_dir = Path(base_dir)
    index = base_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {weight_map[k]: k for k in weight_map if k.endswith(EMBED_KEYS)}
        candidates = [(base_dir / f, k) for f, k in files.items()]
    else:
        f = base_dir / "model.safetensors"
        with safe_open(str(f), framework="pt") as st:
            candidates = [(f, k) for k in st.keys() if k.endswith(EMBED_KEYS)]
    if not candidates:
        raise ValueError(f"no input-embedding tensor ({', '.join(EMBED_KEYS)}) in {base_dir}")
    path, key = sorted(candidates, key=lambda c: ("lm_head" in c[1], c[1]))[0]
    with safe_open(str(path), framework="pt", device="cpu") as st:
        return st.get_tensor(key).to(dtype)


def encode_embeds(row: torch.Tensor) -> str:
    """What vLLM's /v1/completions takes as `prompt_embeds`: base64 of `torch.save(tensor)`
    (loaded there with `weights_only=True`; nothing here is ever unpickled from a client)."""
    buf = io.BytesIO()
    torch.save(row.detach().cpu().contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class PromptBuilder:
    """Prompt token ids for each request kind, and their embedding rows with the code prefix."""

    def __init__(self, bundle, vocab=None, embed_dtype: str = "bfloat16"):
        from transformers import AutoTokenizer


        self.bundle = bundle
        self.tokenizer = AutoTokenizer.from_pretrained(str(bundle.base_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_dtype = getattr(torch, bundle["dtype"])
        self.wire_dtype = getattr(torch, embed_dtype)
        cfg = bundle.adapter_config
        projector = CodeProjector.from_pretrained(bundle.adapter_dir).eval() if cfg.uses_prefix else None
        weight = load_embedding_table(bundle.base_dir, self.model_dtype)
        self.model = PrefixLM(EmbeddingOnlyLM(weight), projector, cfg, bundle.vector_source(vocab),
                              pad_token_id(self.tokenizer)).eval()
        self.hidden_size = int(weight.shape[1])
        self.tokens_per_code = cfg.projector.tokens_per_code if cfg.uses_prefix else 0

    # ---- prompt token ids (the same templates as the HF harness and training) --------------
    def mc_prompt_ids(self, question: str, options: list[str]) -> list[int]:
        """The QA harness's chat prompt: stem, lettered options, "answer with the letter"."""
        return build_prompt_ids(self.tokenizer, MCQuestion("request", question, list(options), 0))

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    def text_prompt_ids(self, prompt: str) -> list[int]:
        """A raw completion prompt, no special tokens: "<stem>\\nAnswer:" is the layout the
        alignment captions and option scoring use (`llm_adapter.option_scoring.cloze_prompt_ids`)."""
        return [int(i) for i in self.tokenizer.encode(prompt, add_special_tokens=False)]

    def letter_ids(self, n_options: int) -> list[int]:
        return letter_token_ids(self.tokenizer, n_options)

    # ---- rows ------------------------------------------------------------------------------
    def prefix_codes(self, codes: list[str]) -> list[str]:
        """The codes that become prefix tokens (known to the vectors, deduplicated, first max_codes)."""
        return self.model.codes_for_prefix(list(codes))

    def row(self, prompt_ids: list[int], codes: list[str]) -> torch.Tensor:
        """[P + L, H] in the wire dtype: the `build_inputs` row of [prefix(codes) ; prompt]."""
        if not prompt_ids:
            raise EmbeddingError("the prompt has no tokens")
        with torch.inference_mode():
            prefix = self.model.code_prefixes([list(codes)])[0]
            row = serving_prompt_embeds(self.model.lm, prefix, prompt_ids)
        row = row.to(self.wire_dtype)
        # vLLM checks shape and dtype but not the values: a NaN/Inf would decode silently to garbage
        if not torch.isfinite(row).all():
            raise EmbeddingError("the prompt embeddings contain NaN or Inf")
        return row

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

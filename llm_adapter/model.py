"""PrefixLM: base causal LM + LoRA (peft) + code projector, with save/load.

    model = PrefixLM.build(AdapterConfig(...), vector_source=MedTokVectors.from_checkpoint(ckpt))
    batch = model.inputs(code_lists, prompt_ids, answer_ids)     # -> llm_adapter.inputs.build_inputs
    loss = model.loss(code_lists, prompt_ids, answer_ids)
    qa.scoring.score_multiple_choice(model, tok, questions, input_builder=model.input_builder())
    model.save_pretrained(dir); PrefixLM.from_pretrained(dir, vector_source=...)

A saved directory holds the LoRA adapter in peft format at its root (adapter_config.json +
adapter_model.safetensors: what vLLM's LoRA loader reads), the projector (safetensors) and
one `adapter_config_medtok.json` recording the base model (name + a weight fingerprint) and
the code-vector source (MedTok checkpoint) it was trained with; loading checks both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from llm_adapter.config import ADAPTER_CONFIG_NAME, AdapterConfig
from llm_adapter.inputs import answer_loss, build_inputs
from llm_adapter.projector import CodeProjector, mean_embedding_norm
from llm_adapter.quantization import load_4bit
from medbase.atomic import atomic_write_text
from qa.lm import load_causal_lm, pad_token_id

FINGERPRINT_NAME = "base_fingerprint.json"


def base_fingerprint(lm) -> dict:
    """Shape of the base LM plus a hash of a slice of its input embeddings (cheap, catches a different model)."""
    cfg = lm.config
    w = lm.get_input_embeddings().weight
    with torch.no_grad():
        sample = w[:64].float().cpu().numpy().round(4).tobytes()
    return {"hidden_size": int(cfg.hidden_size), "vocab_size": int(cfg.vocab_size),
            "num_hidden_layers": int(cfg.num_hidden_layers), "embed_sha": hashlib.sha256(sample).hexdigest()[:16]}


def load_base_lm(config: AdapterConfig):
    """(model, tokenizer) for config.base_model, 4-bit when config.quantization == 'nf4'."""
    if config.quantization == "nf4":
        return load_4bit(config.base_model, compute_dtype=config.torch_dtype)
    return load_causal_lm(config.base_model, dtype=config.torch_dtype)


class PrefixLM(nn.Module):
    """`pad_token_id` only fills masked positions (any valid id works): the tokenizer's
    (`qa.lm.pad_token_id`) when one is given to `build` / `from_pretrained`, else 0."""

    def __init__(self, lm, projector: CodeProjector | None, config: AdapterConfig, vector_source=None,
                 pad_token_id: int = 0):
        super().__init__()
        self.lm = lm  # a peft model (LoRA) or a plain causal LM
        self.projector = projector
        self.config = config
        self.vector_source = vector_source
        self.pad_token_id = int(pad_token_id)
        if config.uses_prefix and (projector is None or vector_source is None):
            raise ValueError(f"vector_source={config.vector_source!r} needs a projector and a vector source")
        if vector_source is not None and projector is not None:
            pc = projector.config
            if (vector_source.num_groups, vector_source.dim) != (pc.num_groups, pc.input_dim):
                raise ValueError(f"vector source gives [G={vector_source.num_groups}, d={vector_source.dim}], "
                                 f"projector expects [G={pc.num_groups}, d={pc.input_dim}]")

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def build(cls, config: AdapterConfig, lm=None, tokenizer=None, vector_source=None, seed: int = 0) -> "PrefixLM":
        """Fresh LoRA + projector around `lm` (loaded from config.base_model when None)."""
        from peft import get_peft_model

        if lm is None:
            lm, tokenizer = load_base_lm(config)
        if int(lm.config.hidden_size) != config.hidden_size:
            raise ValueError(f"config.hidden_size {config.hidden_size} != base LM hidden size {lm.config.hidden_size}")
        torch.manual_seed(seed)
        projector = None
        if config.uses_prefix:
            if config.projector.target_norm == "auto":
                config.projector.target_norm = round(mean_embedding_norm(lm), 6)
            projector = CodeProjector(config.projector).to(lm.get_input_embeddings().weight.device)
        peft_lm = get_peft_model(lm, config.lora.to_peft())
        return cls(peft_lm, projector, config, vector_source, _pad(tokenizer))

    # ---- prefix and inputs ----------------------------------------------------------------
    def codes_for_prefix(self, codes: list[str]) -> list[str]:
        """The codes that become prefix tokens: known to the source, deduplicated, first `max_codes`."""
        if not self.config.uses_prefix:
            return []
        out = []
        for c in codes:
            if c not in out and self.vector_source.known(c):
                out.append(c)
            if len(out) >= self.config.max_codes:
                break
        return out

    def code_prefixes(self, code_lists: list[list[str]]) -> list[torch.Tensor | None]:
        """Per example the soft tokens [n_codes * P, H] of its codes (in order), None without codes."""
        chosen = [self.codes_for_prefix(cl) for cl in code_lists]
        flat = [c for cl in chosen for c in cl]
        if not flat:
            return [None] * len(code_lists)
        tokens = self.projector(self.vector_source.vectors(flat))  # one projector call per batch
        out, k = [], 0
        for cl in chosen:
            out.append(tokens[k:k + len(cl)].reshape(-1, tokens.shape[-1]) if cl else None)
            k += len(cl)
        return out

    def inputs(self, code_lists: list[list[str]], prompt_ids: list[list[int]],
               answer_ids: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
        return build_inputs(self.lm, self.code_prefixes(code_lists), prompt_ids, answer_ids, self.pad_token_id)

    def input_builder(self):
        """A `qa.scoring.InputBuilder`: the questions' codes -> prefix, via `build_inputs`."""

        def build(questions, prompt_ids):
            return self.inputs([q.codes for q in questions], prompt_ids)

        return build

    def loss(self, code_lists, prompt_ids, answer_ids, reduction: str = "mean") -> torch.Tensor:
        """Answer-only cross-entropy (mean, or sum over answer tokens); the LM head runs on
        the answer positions only."""
        batch = self.inputs(code_lists, prompt_ids, answer_ids)
        labels = batch.pop("labels")
        k = max(len(a) for a in answer_ids) + 1
        logits = self.lm(**batch, logits_to_keep=k, use_cache=False).logits
        return answer_loss(logits, labels, reduction=reduction)

    def forward(self, code_lists=None, prompt_ids=None, answer_ids=None, reduction: str = "mean", **kwargs):
        """With prompt_ids/answer_ids: the training loss (this path lets DDP see the forward);
        otherwise the base LM's forward on ready inputs (e.g. from `inputs`)."""
        if prompt_ids is not None:
            return self.loss(code_lists, prompt_ids, answer_ids, reduction=reduction)
        return self.lm(**kwargs)

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def trainable_parameters(self, lora: bool = True, projector: bool = True) -> list[nn.Parameter]:
        """LoRA and/or projector parameters; also sets requires_grad accordingly (the base stays frozen)."""
        params = []
        for name, p in self.lm.named_parameters():
            is_lora = "lora_" in name
            p.requires_grad_(is_lora and lora)
            if is_lora and lora:
                params.append(p)
        if self.projector is not None:
            for p in self.projector.parameters():
                p.requires_grad_(projector)
                if projector:
                    params.append(p)
        return params

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.lm.save_pretrained(str(directory))  # peft: adapter_config.json + adapter_model.safetensors
        if self.projector is not None:
            self.projector.save_pretrained(directory)
        self.config.save(directory / ADAPTER_CONFIG_NAME)
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        atomic_write_text(directory / FINGERPRINT_NAME, json.dumps(base_fingerprint(base), indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, lm=None, tokenizer=None, vector_source=None,
                        is_trainable: bool = False) -> "PrefixLM":
        """Rebuild from `save_pretrained` output. `lm`: the base model (loaded from the recorded
        base_model when None); `vector_source` must have the recorded identity (MedTok checkpoint)."""
        from peft import PeftModel

        directory = Path(directory)
        config = AdapterConfig.load_saved(directory / ADAPTER_CONFIG_NAME)
        if lm is None:
            lm, tokenizer = load_base_lm(config)
        fp_path = directory / FINGERPRINT_NAME
        if fp_path.exists():
            want, got = json.loads(fp_path.read_text()), base_fingerprint(lm)
            if want != got:
                raise ValueError(f"base model mismatch: adapter trained on {config.base_model!r} {want}, "
                                 f"given a model with {got}")
        if config.uses_prefix:
            if vector_source is None:
                raise ValueError(f"this adapter reads {config.vector_source!r} code vectors "
                                 f"(checkpoint {config.medtok_checkpoint!r}): pass vector_source=")
            if config.vector_source == "medtok" and config.medtok_checkpoint and vector_source.identity and \
                    Path(vector_source.identity).resolve() != Path(config.medtok_checkpoint).resolve():
                raise ValueError(f"MedTok checkpoint mismatch: adapter trained with {config.medtok_checkpoint!r}, "
                                 f"given vectors from {vector_source.identity!r}")
            if vector_source.name != config.vector_source:
                raise ValueError(f"vector source mismatch: adapter trained with {config.vector_source!r} vectors, "
                                 f"given {vector_source.name!r}")
        peft_lm = PeftModel.from_pretrained(lm, str(directory), is_trainable=is_trainable)
        projector = CodeProjector.from_pretrained(directory).to(lm.get_input_embeddings().weight.device) \
            if config.uses_prefix else None
        model = cls(peft_lm, projector, config, vector_source, _pad(tokenizer))
        if not is_trainable:
            model.eval()
        return model


def _pad(tokenizer) -> int:
    return 0 if tokenizer is None else pad_token_id(tokenizer)


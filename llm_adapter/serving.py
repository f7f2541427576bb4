"""Serving a saved adapter with vLLM's prompt-embeds path: the export side (main venv).

vLLM does not know the code projector, so the client builds the input itself: one unpadded
row [soft prefix ; chat-templated prompt] per question (`llm_adapter.inputs.serving_prompt_embeds`,
the same `build_inputs` as training and HF scoring), sent as `prompt_embeds`, with the LoRA
applied by vLLM as a LoRA request. `export_for_serving` writes everything a vLLM process needs,
so that process imports only torch and vllm (`scripts/serve_check.py vllm`):

    <out>/base/                 the base LM as a plain HF directory (safetensors, config,
                                generation config, tokenizer files), in the adapter's dtype
    <out>/lora/                 the peft files only (adapter_config.json + adapter_model.safetensors)
    <out>/prompt_embeds.pt      torch.save of a list of [P_i + L_i, H] tensors, one per question
    <out>/reference.json        HF/peft greedy generations of the same rows (the expected tokens),
                                the stop tokens, timings and the question ids

Nothing here imports vllm.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from llm_adapter.config import ADAPTER_CONFIG_NAME, AdapterConfig
from llm_adapter.inputs import serving_prompt_embeds

BASE_DIR = "base"
LORA_DIR = "lora"
EMBEDS_FILE = "prompt_embeds.pt"
REFERENCE_FILE = "reference.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_base_lm(lm, tokenizer, out_dir: str | Path) -> Path:
    """Save the base LM (no LoRA layers: call before peft wraps it) and its tokenizer as a plain
    HF model directory (model.safetensors, config.json, generation_config.json, tokenizer files)
    that vLLM loads with `LLM(model=out_dir)` and transformers with `from_pretrained`."""
    if hasattr(lm, "peft_config"):
        raise ValueError("export the base LM before wrapping it with peft (got a model with LoRA layers)")
    if getattr(lm, "is_loaded_in_4bit", False) or getattr(lm, "is_loaded_in_8bit", False):
        raise ValueError("a quantized (bitsandbytes) base cannot be exported as plain weights; load it unquantized")
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # written by hand: transformers refuses `save_pretrained` on a model loaded from GGUF (the
    # embedded SmolLM2), although its weights are already dequantized to `dtype`
    state = {k: v.detach().cpu().contiguous() for k, v in lm.state_dict().items()}
    out_emb = lm.get_output_embeddings()
    if out_emb is not None and out_emb.weight is lm.get_input_embeddings().weight:
        state.pop("lm_head.weight", None)  # tied: safetensors stores a shared tensor once
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    cfg = lm.config.to_dict()
    cfg.pop("quantization_config", None)  # the GGUF record would make vLLM expect a GGUF file
    cfg["architectures"] = cfg.get("architectures") or [type(lm).__name__]  # None after a GGUF load
    cfg["dtype"] = str(next(lm.parameters()).dtype).replace("torch.", "")
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    lm.generation_config.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def export_lora(adapter_dir: str | Path, out_dir: str | Path, base_dir: str | Path | None = None) -> Path:
    """Copy only the peft files of a `PrefixLM.save_pretrained` directory (vLLM's LoRA loader
    reads these two; projector and MedTok files stay out). `base_dir` is recorded as the
    adapter's `base_model_name_or_path` (the path of the training venv is meaningless elsewhere)."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PEFT_FILES:
        if not (adapter_dir / name).exists():
            raise FileNotFoundError(f"{adapter_dir / name} missing: not a peft adapter directory")
        shutil.copyfile(adapter_dir / name, out_dir / name)
    if base_dir is not None:
        cfg_path = out_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out_dir


def prompt_rows(model, tokenizer, questions) -> list[torch.Tensor]:
    """Per question the unpadded [P + L, H] row vLLM takes as `prompt_embeds`: the projector's
    prefix for the question's codes (`PrefixLM.code_prefixes`) before the chat-templated prompt
    the HF scorer and generation use (`qa.scoring.build_prompt_ids`)."""
    from qa.scoring import build_prompt_ids

    rows = []
    with torch.no_grad():
        for q in questions:
            prefix = model.code_prefixes([list(q.codes)])[0]
            row = serving_prompt_embeds(model.lm, prefix, build_prompt_ids(tokenizer, q))
            rows.append(row.detach().float().cpu().contiguous())
    return rows


def stop_token_ids(model, tokenizer) -> list[int]:
    """The ids HF `generate` stops at (generation config eos, else the tokenizer's eos)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return sorted({int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None})


def reference_generations(model, rows: list[torch.Tensor], max_new_tokens: int,
                          pad_token_id: int) -> tuple[list[list[int]], float]:
    """Greedy `generate(inputs_embeds=row, attention_mask=ones)` of the peft model, one row at a
    time (no padding, so the numbers are those of the served single row); (token ids, seconds)."""
    device = model.get_input_embeddings().weight.device
    dtype = model.get_input_embeddings().weight.dtype
    out, t0 = [], time.perf_counter()
    with torch.no_grad():
        for row in rows:
            emb = row.to(device=device, dtype=dtype)[None]
            mask = torch.ones(emb.shape[:2], dtype=torch.long, device=device)
            ids = model.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad_token_id)
            out.append([int(i) for i in ids[0]])  # with inputs_embeds only, generate returns the new tokens
    return out, time.perf_counter() - t0


def default_vector_source(config: AdapterConfig):
    """The code vectors the adapter was trained with, from what adapter_config_medtok.json records."""
    if config.vector_source == "medtok" and config.medtok_checkpoint:
        from llm_adapter.vectors import MedTokVectors

        return MedTokVectors.from_checkpoint(config.medtok_checkpoint)
    raise ValueError(f"no default for vector_source={config.vector_source!r} "
                     f"(checkpoint {config.medtok_checkpoint!r}): pass vector_source=")


def finetune_questions(finetune_config: str | Path, split: str = "test", n: int | None = None):
    """The evaluation questions of a fine-tuning run, rebuilt from its finetune_config.json
    (`llm_adapter.data.load_questions`, the job's own loader)."""
    from llm_adapter.data import load_questions
    from llm_adapter.finetune_config import FinetuneConfig

    cfg = FinetuneConfig.from_dict(json.loads(Path(finetune_config).read_text()))
    cfg.progress = False
    if split not in cfg.eval_splits:
        cfg.eval_splits = list(cfg.eval_splits) + [split]
    _, _, evals = load_questions(cfg)
    qs = evals[split]
    return qs[:n] if n else qs


def export_for_serving(adapter_dir: str | Path, out_dir: str | Path, questions, *, max_new_tokens: int = 16,
                       lm=None, tokenizer=None, vector_source=None) -> dict:
    """Write base/, lora/, prompt_embeds.pt and reference.json under `out_dir` (see the module
    docstring) for `questions`; returns the reference record.

    lm, tokenizer   the un-wrapped base model (default: loaded from the adapter's recorded base);
                    it is exported first, then wrapped with the adapter's LoRA
    vector_source   the code vectors (default: the recorded MedTok checkpoint)
    """
    from llm_adapter.model import PrefixLM, _pad_id, load_base_lm
    from qa.scoring import build_prompt_ids

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config = AdapterConfig.load(adapter_dir / ADAPTER_CONFIG_NAME)
    t0 = time.perf_counter()
    if lm is None:
        lm, tokenizer = load_base_lm(config)
    if vector_source is None and config.uses_prefix:
        vector_source = default_vector_source(config)
    base_dir = export_base_lm(lm, tokenizer, out_dir / BASE_DIR)
    lora_dir = export_lora(adapter_dir, out_dir / LORA_DIR, base_dir)
    model = PrefixLM.from_pretrained(adapter_dir, lm=lm, tokenizer=tokenizer, vector_source=vector_source)
    load_s = time.perf_counter() - t0

    rows = prompt_rows(model, tokenizer, questions)
    torch.save(rows, out_dir / EMBEDS_FILE)
    tokens, gen_s = reference_generations(model.lm, rows, max_new_tokens, _pad_id(tokenizer))
    n_tokens = sum(len(t) for t in tokens)
    record = {
        "adapter_dir": str(adapter_dir.resolve()), "base_dir": str(base_dir.resolve()),
        "lora_dir": str(lora_dir.resolve()), "embeds_file": EMBEDS_FILE,
        "dtype": str(model.get_input_embeddings().weight.dtype).replace("torch.", ""),
        "hidden_size": int(config.hidden_size), "max_new_tokens": int(max_new_tokens),
        "stop_token_ids": stop_token_ids(model.lm, tokenizer), "torch_threads": torch.get_num_threads(),
        "n": len(rows),
        "questions": [{"id": q.id, "codes": list(q.codes), "prompt_tokens": len(build_prompt_ids(tokenizer, q)),
                       "embed_rows": int(r.shape[0])} for q, r in zip(questions, rows)],
        "hf": {"token_ids": tokens, "texts": [tokenizer.decode(t, skip_special_tokens=True) for t in tokens],
               "load_s": round(load_s, 2), "generate_s": round(gen_s, 3), "generated_tokens": n_tokens,
               "tokens_per_s": round(n_tokens / gen_s, 2) if gen_s > 0 else None,
               "batch": 1},
    }
    (out_dir / REFERENCE_FILE).write_text(json.dumps(record, indent=1))
    return record


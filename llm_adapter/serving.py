"""Exporting a saved adapter for serving (main venv; nothing here imports vllm).

vLLM does not know the code projector: the gateway (`serve`) builds each prompt's row
[soft prefix ; prompt] with the same `build_inputs` as training and sends it as `prompt_embeds`,
and vLLM applies the LoRA as a LoRA request. What vLLM loads is written here:

    export_base_lm(lm, tokenizer, dir)   the base LM as a plain HF directory (safetensors, config,
                                         generation config, tokenizer files), in its dtype
    export_lora(adapter_dir, dir, base)  the peft files only (adapter_config.json +
                                         adapter_model.safetensors), pointing at that base
    finetune_questions(config, split)    the evaluation questions of a fine-tuning run

`serve.bundle.prepare_bundle` calls them once per adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from llm_adapter.data import load_questions
from llm_adapter.finetune_config import FinetuneConfig


BASE_DIR = "base"
LORA_DIR = "lora"
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


def finetune_questions(finetune_config: str | Path, split: str = "test", n: int | None = None):
    """The evaluation questions of a fine-tuning run, rebuilt from its finetune_config.json
    (`llm_adapter.data.load_questions`, the job's own loader)."""

    cfg = FinetuneConfig.load_saved(finetune_config)  # saved beside a run: newer keys only warn
    cfg.progress = False
    if split not in cfg.eval_splits:
        cfg.eval_splits = list(cfg.eval_splits) + [split]
    _, _, evals = load_questions(cfg)
    qs = evals[split]
    return qs[:n] if n else qs

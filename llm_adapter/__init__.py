"""LLM prefix adapter: MedTok code vectors -> soft prefix tokens of a causal LM, LoRA/QLoRA
fine-tuning on multiple-choice QA (see `llm_adapter.finetune`)."""

"""Configuration of the fine-tuning job (`llm_adapter.finetune.finetune`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from llm_adapter.config import AdapterConfig, ProjectorConfig, nested_from_dict
from medbase.jsonconfig import JsonConfig, UnknownConfigKeys

ARMS = ("lora", "lora+prefix")
# every arm kind: ARMS (the default pair) plus the text baseline (llm_adapter.text_baseline):
# LoRA trained on the alignment captions with the code written as text, no prefix
TEXT_ARM = "lora+text"
KNOWN_ARMS = ARMS + (TEXT_ARM,)
VECTOR_SOURCES = ("medtok", "minilm", "random", "constant")
TEXT_CAPTIONS = ("question", "means")
DATASETS = ("ontology", "meddx")


@dataclass
class StageConfig(JsonConfig):
    """One optimisation stage. steps = optimizer steps. batch_size is per process and per
    micro-batch: one optimizer step sees batch_size * grad_accum * num_processes examples, and
    its loss is the mean over all answer tokens of those examples (exact accumulation)."""

    steps: int = 100
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-4
    warmup: int = 10
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1 or self.warmup < 0:
            raise ValueError(f"bad stage config {self}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class FinetuneConfig(JsonConfig):
    """The two-arm experiment: LoRA without prefix vs LoRA + code prefix, same budget and seed.

    Stage 1 ("align", prefix arm only): the projector alone learns to caption codes
    ("[prefix] Medical code meaning: <description>") with the LM frozen, on `align_codes`
    vocabulary codes that appear in no evaluation question (free pairs; the prefix probe
    measured this stage to be what makes a frozen LM read the prefix).
    Stage 2 ("qa", both arms): LoRA (+ projector) on the QA training split, answer-only loss,
    with the answer as the letter after the harness's chat prompt or (default) as the option
    text after "<stem>\nAnswer:". Both arms are scored both ways (`scorings`).
    Defaults = the measured CPU recipe (README). vector_source="medtok" uses `medtok_checkpoint`,
    or by default the MedTok of the QA set's code systems (ICD-10-CM) under
    data/cache/medtok_<systems>; the job never trains it itself (`make demo` /
    `llm_adapter.prepare.prepare_medtok` do, as a stage of their own).
    """

    output_dir: str = "runs/finetune_qa"
    dataset: str = "ontology"
    data_path: str | None = None           # meddx JSON, or a vocabulary dir for ontology
    ontology: dict = field(default_factory=lambda: {"systems": ["ICD10CM"], "difficulty": "mixed",
                                                    "sizes": {"train": 1000, "validation": 0, "test": 300}})
    train_split: str | None = None         # default: "train" (ontology) / "intermediate" (meddx)
    eval_splits: list | None = None        # default: ["test"] / ["basic", "expert"]
    arms: tuple = ARMS
    vector_source: str = "medtok"          # code vectors of the prefix arm: medtok | minilm | random
    medtok_checkpoint: str | None = None   # None: data/cache/medtok_<systems> (made by `make demo` / scripts/prepare_demo.py)
    medtok_steps: int = 600                # steps when that default MedTok is prepared (CPU budget of the demo)
    vocab_dir: str | None = None           # None: data/cache/vocab
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    align: StageConfig = field(default_factory=lambda: StageConfig(steps=120, batch_size=16, lr=3e-3, warmup=10))
    align_codes: int = 20000
    qa: StageConfig = field(default_factory=lambda: StageConfig(steps=60, batch_size=16, lr=5e-4, warmup=10))
    qa_train_projector: bool = True
    # letter: harness prompt -> letter; option: "<stem>\nAnswer:" -> option text. Default "option": with
    # letter targets both arms stayed at chance on held-out codes in the measured CPU budget
    qa_target: str = "option"
    train_eval_size: int = 16             # training questions scored for the learning curve
    eval_every: int = 0                    # qa steps between learning-curve points (0 = start and end only)
    eval_batch_size: int = 16
    checkpoint_every: int = 0              # optimizer steps between resumable checkpoints (0 = none); with
                                           # checkpoints on, finished stages and arms are kept and reused
    resume: bool = True                    # continue from the checkpoints in output_dir (same config only)
    seed: int = 0
    max_eval_questions: int | None = None
    scorings: tuple = ("letter", "option")  # letter = the QA harness; option = option likelihood
    score_base_before_qa: bool = False     # also option-score both arms before QA training (diagnostic, +2 min on CPU)
    progress: bool = True
    threads: int | None = None             # torch intra-op threads (None = torch default); 1 is ~2x faster on a busy shared CPU
    bf16_autocast: bool = True             # bf16 matmuls on CPU (measured 1.9x faster per matmul on this AVX512-BF16 CPU)
    device: str | None = None              # None: cuda when available, else cpu; or "cpu" / "cuda"
    # the text-baseline arm (arms containing "lora+text"): its caption stage trains LoRA with the
    # align stage's steps and batch at this learning rate (None = qa.lr, LoRA's own rate), on the
    # alignment codes' captions written as text: "question" = the prefix arm's caption layout
    # without the prefix, "means" = "<code id> means" -> description
    text_align_lr: float | None = None
    text_caption: str = "question"

    @classmethod
    def from_dict(cls, d: dict, *, unknown: str = "error") -> "FinetuneConfig":
        d = nested_from_dict(d, "adapter", AdapterConfig, unknown)
        for name in ("align", "qa"):
            d = nested_from_dict(d, name, StageConfig, unknown)
        return super().from_dict(d, unknown=unknown)

    def __post_init__(self):
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig.from_dict(self.adapter)
        for name in ("align", "qa"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, StageConfig.from_dict(getattr(self, name)))
        self.arms = tuple(self.arms)
        self.scorings = tuple(self.scorings)
        if self.qa_target not in ("letter", "option"):
            raise ValueError(f"qa_target must be 'letter' or 'option', got {self.qa_target!r}")
        if not self.scorings or set(self.scorings) - {"letter", "option"}:
            raise ValueError(f"scorings must be a non-empty subset of ('letter', 'option'), got {self.scorings}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        bad = [a for a in self.arms if a not in KNOWN_ARMS]
        if bad or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {KNOWN_ARMS}, got {self.arms}")
        if self.vector_source not in VECTOR_SOURCES:
            raise ValueError(f"vector_source must be one of {VECTOR_SOURCES}, got {self.vector_source!r}")
        if self.text_caption not in TEXT_CAPTIONS:
            raise ValueError(f"text_caption must be one of {TEXT_CAPTIONS}, got {self.text_caption!r}")
        if self.text_align_lr is not None and not self.text_align_lr > 0:
            raise ValueError(f"text_align_lr must be positive or None, got {self.text_align_lr}")
        if self.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device must be None, 'cpu' or 'cuda', got {self.device!r}")
        if self.medtok_steps < 1:
            raise ValueError("medtok_steps must be >= 1")
        if self.align_codes < 0 or self.train_eval_size < 0 or self.eval_every < 0 or self.checkpoint_every < 0:
            raise ValueError("align_codes, train_eval_size, eval_every, checkpoint_every must be >= 0")
        if self.train_split is None:
            self.train_split = "train" if self.dataset == "ontology" else "intermediate"
        if self.eval_splits is None:
            self.eval_splits = ["test"] if self.dataset == "ontology" else ["basic", "expert"]
        self.eval_splits = list(self.eval_splits)


def apply_overrides(cfg_dict: dict, overrides: list[str]) -> dict:
    """`key.sub=value` overrides (value parsed as JSON when possible) on a config dict; an
    unknown key is rejected (`UnknownConfigKeys`), like an unknown key in a config file."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = cfg_dict
        parts = key.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise UnknownConfigKeys(f"override {key!r}: no section {p!r}")
            node = node[p]
        if parts[-1] not in node:
            raise UnknownConfigKeys(f"override {key!r}: unknown key {parts[-1]!r} (known: {sorted(node)})")
        node[parts[-1]] = value
    return cfg_dict


def projector_for(source_groups: int, source_dim: int, base: ProjectorConfig) -> ProjectorConfig:
    """The projector config adapted to a vector source's [G, d] (per_group needs P = G)."""
    extra = {"tokens_per_code": source_groups} if base.pooling == "per_group" else {}
    return replace(base, input_dim=source_dim, num_groups=source_groups, **extra)

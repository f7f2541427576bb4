"""Configuration of the prefix adapter: projector, LoRA, base model, quantization.

One dataclass per component on `medbase.jsonconfig.JsonConfig`, validated in
`__post_init__`, saved as JSON beside every checkpoint (`AdapterConfig.save`; read back with
`load_saved`, which ignores keys of a newer version with a warning, while `load` / `from_dict`
reject unknown keys in a config a user writes). `llama31_8b_config()` is the ready GPU recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medbase.jsonconfig import JsonConfig

ADAPTER_CONFIG_NAME = "adapter_config_medtok.json"  # not "adapter_config.json": that name is peft's
PROJECTOR_KINDS = ("linear", "mlp")
POOLINGS = ("concat", "mean", "per_group")
QUANTIZATIONS = ("none", "nf4")
DTYPES = ("float32", "bfloat16", "float16")


def nested_from_dict(d: dict, name: str, cls, unknown: str) -> dict:
    """`d` with its sub-config `name` built by `cls.from_dict` under the same unknown-key rule."""
    if isinstance(d.get(name), dict):
        d = dict(d)
        d[name] = cls.from_dict(d[name], unknown=unknown)
    return d


@dataclass
class ProjectorConfig(JsonConfig):
    """Maps the G vectors [G, d] of one code to `tokens_per_code` soft tokens [P, H].

    pooling   concat: the G group vectors are concatenated (G*d inputs) -> P tokens
              mean: the G vectors are averaged (d inputs) -> P tokens
              per_group: one token per group (P must equal G), a shared map plus a learned
              group embedding
    kind      linear, or mlp = Linear-GELU-Linear as in LLaVA
    target_norm  each output token is rescaled to this L2 norm; "auto" = the mean norm of the
              LM's token embeddings, resolved (and recorded) when the model is built; measured
              to matter (see the prefix probe); None = unscaled
    """

    input_dim: int = 64
    num_groups: int = 4
    hidden_size: int = 576
    tokens_per_code: int = 4
    kind: str = "mlp"
    pooling: str = "concat"
    mlp_hidden: int = 1024
    target_norm: float | str | None = "auto"

    def __post_init__(self):
        for name in ("input_dim", "num_groups", "hidden_size", "tokens_per_code", "mlp_hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ProjectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"ProjectorConfig.kind must be one of {PROJECTOR_KINDS}, got {self.kind!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"ProjectorConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling == "per_group" and self.tokens_per_code != self.num_groups:
            raise ValueError(f"pooling='per_group' gives one token per group: tokens_per_code must be "
                             f"{self.num_groups}, got {self.tokens_per_code}")
        if self.target_norm is not None and self.target_norm != "auto" and not float(self.target_norm) > 0:
            raise ValueError(f"target_norm must be positive, 'auto' or None, got {self.target_norm!r}")


@dataclass
class LoraSettings(JsonConfig):
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        if self.r < 1 or self.alpha <= 0:
            raise ValueError(f"LoRA r must be >= 1 and alpha > 0, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules must name at least one module")

    def to_peft(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM")


@dataclass
class AdapterConfig(JsonConfig):
    """Everything needed to rebuild a trained adapter around its base LM.

    base_model        "smollm2" (the embedded GGUF) or a local HF directory / hub id
    vector_source     where code vectors come from: "medtok" (checkpoint `medtok_checkpoint`),
                      "minilm" (description embedding, a reference arm) or "none" (no prefix)
    max_codes         codes per question turned into prefix tokens (first ones = linker order)
    """

    base_model: str = "smollm2"
    hidden_size: int = 576
    dtype: str = "float32"
    quantization: str = "none"
    vector_source: str = "medtok"
    medtok_checkpoint: str | None = None
    max_codes: int = 4
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)

    @classmethod
    def from_dict(cls, d: dict, *, unknown: str = "error") -> "AdapterConfig":
        d = nested_from_dict(d, "projector", ProjectorConfig, unknown)
        return super().from_dict(nested_from_dict(d, "lora", LoraSettings, unknown), unknown=unknown)

    def __post_init__(self):
        if isinstance(self.projector, dict):
            self.projector = ProjectorConfig.from_dict(self.projector)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings.from_dict(self.lora)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.vector_source not in ("medtok", "minilm", "none", "random", "constant"):
            raise ValueError(f"vector_source must be medtok/minilm/none/random/constant, got {self.vector_source!r}")
        if self.max_codes < 0:
            raise ValueError(f"max_codes must be >= 0, got {self.max_codes}")
        if self.projector.hidden_size != self.hidden_size:
            raise ValueError(f"projector.hidden_size {self.projector.hidden_size} != LM hidden_size {self.hidden_size}")

    @property
    def uses_prefix(self) -> bool:
        return self.vector_source != "none" and self.max_codes > 0

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def llama31_8b_config(base_model: str = "meta-llama/Llama-3.1-8B-Instruct", medtok_checkpoint: str | None = None,
                      qlora: bool = True) -> AdapterConfig:
    """Llama-3.1-8B-Instruct (hidden 4096) for GPU users with the weights: bf16 compute,
    NF4 QLoRA base by default, LoRA r=16 on every linear layer, 2-layer MLP projector to 4096."""
    return AdapterConfig(
        base_model=base_model, hidden_size=4096, dtype="bfloat16", quantization="nf4" if qlora else "none",
        vector_source="medtok", medtok_checkpoint=medtok_checkpoint, max_codes=8,
        projector=ProjectorConfig(input_dim=64, num_groups=4, hidden_size=4096, tokens_per_code=4, kind="mlp",
                                  pooling="concat", mlp_hidden=4096, target_norm="auto"),
        lora=LoraSettings(r=16, alpha=32, dropout=0.05,
                          target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
    )

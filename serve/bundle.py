"""From a fine-tuning checkpoint to what a server loads: the served bundle.

`prepare_bundle(checkpoint)` finds the adapter (`PrefixLM.save_pretrained` output: peft LoRA,
projector, `adapter_config_medtok.json` naming the base model and MedTok checkpoint) and writes,
once per adapter (a cache keyed by the adapter's files), under `export_dir`:

    base/                  the base LM as a plain HF directory (only when the base is the embedded
                           GGUF SmolLM2: an HF directory base is served from where it is)
    lora/                  the peft files only (vLLM's `--lora-modules` reads these)
    code_vectors.safetensors, code_ids.json
                           the MedTok vector [G, d] of every code the checkpoint knows: the gateway
                           looks vectors up instead of loading the MedTok GNN and text encoder
    manifest.json          everything else a server needs (dtype, context length, LoRA rank and
                           target modules, stop tokens, versions, provenance)

The gateway then loads only the token-embedding table, the projector and these vectors
(`serve.embeds`), never the whole LM.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from llm_adapter.config import ADAPTER_CONFIG_NAME, AdapterConfig
from llm_adapter.model import load_base_lm
from llm_adapter.serving import export_base_lm, export_lora
from llm_adapter.vectors import DescriptionVectors, MedTokVectors, RandomVectors, TableVectors
from medbase.atomic import atomic_write_text
from medbase.atomic import atomic_path
from medbase.hashing import file_digest
from medbase.paths import cache_dir
from qa.lm import smollm2_gguf_path

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
VECTORS_FILE = "code_vectors.safetensors"
CODE_IDS_FILE = "code_ids.json"
PREFERRED_ARMS = ("lora_prefix", "lora")  # a run dir holds one adapter per arm; serve the prefix arm
CPU_CONTEXT_CAP = 2048


class BundleError(RuntimeError):
    """A checkpoint that cannot be served; the message is one actionable line."""


def find_adapter_dir(checkpoint: str | Path) -> Path:
    """The adapter directory of `checkpoint`: itself, or the prefix arm of a fine-tuning run dir."""
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise BundleError(f"checkpoint {ckpt} does not exist: train one with `make demo` "
                          f"(scripts/finetune_qa.py) or pass the directory of an adapter")
    if (ckpt / ADAPTER_CONFIG_NAME).exists():
        return ckpt
    for arm in PREFERRED_ARMS:
        if (ckpt / arm / ADAPTER_CONFIG_NAME).exists():
            return ckpt / arm
    found = sorted(p.parent for p in ckpt.glob(f"*/{ADAPTER_CONFIG_NAME}"))
    if len(found) == 1:
        return found[0]
    what = f"several adapters ({', '.join(p.name for p in found)}): pass one" if found else \
        f"no adapter ({ADAPTER_CONFIG_NAME} + adapter_model.safetensors, written by PrefixLM.save_pretrained)"
    raise BundleError(f"{ckpt} holds {what}")


def load_adapter_config(adapter_dir: Path) -> AdapterConfig:
    loader = getattr(AdapterConfig, "load_saved", AdapterConfig.load)  # saved beside a checkpoint
    cfg = loader(adapter_dir / ADAPTER_CONFIG_NAME)
    if not (adapter_dir / "adapter_model.safetensors").exists():
        raise BundleError(f"{adapter_dir} has no adapter_model.safetensors: the LoRA weights are missing")
    return cfg


def base_model_dir(base_model: str) -> Path | None:
    """A local HF directory for `base_model` (a path, or a hub id already in the local HF cache);
    None for the embedded GGUF model, which must be exported first."""
    if base_model in (None, "smollm2"):
        return None
    p = Path(base_model)
    if p.is_dir():
        if not (p / "config.json").exists() or not (list(p.glob("*.safetensors")) or list(p.glob("*.bin"))):
            raise BundleError(f"base model dir {p} lacks config.json or weights (*.safetensors)")
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base_model, local_files_only=True))
    except Exception:
        raise BundleError(f"base model {base_model!r} is neither a local directory nor in the local "
                          f"Hugging Face cache (no network here): download it and pass its directory") from None


def exported_embedded_base(cfg: AdapterConfig, root: Path, log=print) -> Path:
    """The embedded GGUF base as an HF directory under `root` (exported on first use, about a minute)."""
    import hashlib


    gguf = smollm2_gguf_path()
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{st.st_size}|{st.st_mtime_ns}|{cfg.dtype}".encode()).hexdigest()[:12]
    out = root / f"base-{cfg.base_model}-{cfg.dtype}-{key}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    log(f"exporting the embedded base model {gguf.name} for serving -> {out}")
    lm, tokenizer = load_base_lm(cfg)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    export_base_lm(lm, tokenizer, tmp)
    os.replace(tmp, out)  # whole directories only: a killed export leaves no half-written base
    return out


def bundle_key(adapter_dir: Path, cfg: AdapterConfig) -> str:
    """Changes when the adapter, its projector, its config, its base or its MedTok checkpoint do."""
    import hashlib

    h = hashlib.sha256(f"format={BUNDLE_FORMAT}".encode())
    for name in ("adapter_model.safetensors", "projector.safetensors", ADAPTER_CONFIG_NAME, "adapter_config.json"):
        if (adapter_dir / name).exists():
            h.update(f"{name}={file_digest(adapter_dir / name)}".encode())
    h.update(f"base={cfg.base_model}".encode())
    if cfg.medtok_checkpoint:
        w = Path(cfg.medtok_checkpoint) / "model.safetensors"
        h.update(f"medtok={file_digest(w) if w.exists() else cfg.medtok_checkpoint}".encode())
    return h.hexdigest()[:16]


@dataclass
class Bundle:
    """What `prepare_bundle` wrote; see the module docstring."""

    directory: Path
    manifest: dict

    def __getitem__(self, key):
        return self.manifest[key]

    @property
    def adapter_dir(self) -> Path:
        return Path(self.manifest["adapter_dir"])

    @property
    def base_dir(self) -> Path:
        return Path(self.manifest["base_dir"])

    @property
    def lora_dir(self) -> Path:
        return Path(self.manifest["lora_dir"])

    @property
    def adapter_config(self) -> AdapterConfig:
        return load_adapter_config(self.adapter_dir)

    def vector_source(self, vocab=None):
        """The code vectors the adapter was trained with (None for an adapter without prefix)."""
        kind = self.manifest["vector_source"]
        if not self.manifest["uses_prefix"]:
            return None
        if kind == "medtok":
            from safetensors.torch import load_file


            ids = json.loads((self.directory / CODE_IDS_FILE).read_text())
            vec = load_file(str(self.directory / VECTORS_FILE))["vectors"]
            return TableVectors(ids, vec, name="medtok", identity=self.manifest["medtok_checkpoint"])
        if kind == "minilm":

            if vocab is None:
                raise BundleError("the minilm vector source needs the vocabulary")
            return DescriptionVectors(vocab)

        return RandomVectors(**self.manifest.get("random_vectors", {}))


def _stop_ids(base_dir: Path, tokenizer) -> list[int]:
    """Generation config eos ids and the tokenizer's eos: vLLM stops at both, so HF must too."""
    gen = base_dir / "generation_config.json"
    eos = json.loads(gen.read_text()).get("eos_token_id") if gen.exists() else None
    ids = list(eos) if isinstance(eos, list) else [eos]
    return sorted({int(e) for e in ids + [tokenizer.eos_token_id] if e is not None})


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("medtok", "torch", "transformers", "peft", "fastapi"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _export_code_vectors(out: Path, source) -> int:
    """Every code the MedTok checkpoint knows -> [n, G, d] float32 (a few hundred MB at most)."""
    from safetensors.torch import save_file


    enc = source.tok.encode_all(progress=False)
    vec = enc.vectors.float().contiguous()
    with atomic_path(out / VECTORS_FILE) as tmp:
        save_file({"vectors": vec}, str(tmp))
    atomic_write_text(out / CODE_IDS_FILE, json.dumps(list(map(str, enc.code_ids))))
    return int(vec.shape[0])


def prepare_bundle(checkpoint: str | Path, export_dir: str | Path | None = None, *, vector_source=None,
                   lm=None, tokenizer=None, rebuild: bool = False, log=print) -> Bundle:
    """The served bundle of `checkpoint` (built on first use, then reused; see the module docstring).

    vector_source, lm, tokenizer   ready objects instead of the recorded MedTok checkpoint / base
                                   model (tests; the embedded base is loaded only to export it)"""

    adapter_dir = find_adapter_dir(checkpoint).resolve()
    cfg = load_adapter_config(adapter_dir)
    key = bundle_key(adapter_dir, cfg)
    out = Path(export_dir) if export_dir else cache_dir() / "serve" / f"{adapter_dir.parent.name}-{adapter_dir.name}-{key}"
    if (out / MANIFEST).exists() and not rebuild:
        manifest = json.loads((out / MANIFEST).read_text())
        if manifest.get("key") == key and manifest.get("format") == BUNDLE_FORMAT:
            return Bundle(out, manifest)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base_dir = None if lm is not None else base_model_dir(cfg.base_model)
    if lm is not None:  # a given model: written inside this bundle
        base_dir = export_base_lm(lm, tokenizer, out / "base")
    elif base_dir is None:  # the embedded GGUF: one plain HF export per GGUF file and dtype, shared by bundles
        if cfg.quantization != "none":
            raise BundleError("a quantized base is served from its unquantized HF directory: "
                              "set base_model to that directory")
        base_dir = exported_embedded_base(cfg, Path(export_dir).parent if export_dir else cache_dir() / "serve", log)
    lora_dir = export_lora(adapter_dir, out / "lora", base_dir)
    from transformers import AutoConfig, AutoTokenizer

    base_cfg = AutoConfig.from_pretrained(str(base_dir))
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if int(base_cfg.hidden_size) != cfg.hidden_size:
        raise BundleError(f"adapter expects hidden size {cfg.hidden_size}, base model {base_dir} has "
                          f"{base_cfg.hidden_size}: wrong base model")
    peft_cfg = json.loads((lora_dir / "adapter_config.json").read_text())
    n_codes = None
    if cfg.uses_prefix and cfg.vector_source == "medtok":
        if vector_source is None:

            if not cfg.medtok_checkpoint or not Path(cfg.medtok_checkpoint).exists():
                raise BundleError(f"the adapter's MedTok checkpoint {cfg.medtok_checkpoint!r} is missing")
            log(f"computing the MedTok vectors of every code ({cfg.medtok_checkpoint}) -> {out / VECTORS_FILE}")
            vector_source = MedTokVectors.from_checkpoint(cfg.medtok_checkpoint)
        n_codes = _export_code_vectors(out, vector_source)
    manifest = {
        "format": BUNDLE_FORMAT, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "adapter_dir": str(adapter_dir), "arm": adapter_dir.name, "run_dir": str(adapter_dir.parent),
        "base_model": cfg.base_model, "base_dir": str(Path(base_dir).resolve()), "lora_dir": str(lora_dir.resolve()),
        "dtype": cfg.dtype if cfg.quantization == "none" else "bfloat16",
        "quantization_trained": cfg.quantization,
        "hidden_size": int(base_cfg.hidden_size), "vocab_size": int(base_cfg.vocab_size),
        "max_position_embeddings": int(getattr(base_cfg, "max_position_embeddings", CPU_CONTEXT_CAP)),
        "architectures": list(getattr(base_cfg, "architectures", None) or []),
        "lora_rank": int(peft_cfg["r"]), "lora_target_modules": sorted(peft_cfg["target_modules"]),
        "uses_prefix": bool(cfg.uses_prefix), "vector_source": cfg.vector_source,
        "medtok_checkpoint": str(Path(cfg.medtok_checkpoint).resolve()) if cfg.medtok_checkpoint else None,
        "n_codes": n_codes, "max_codes": int(cfg.max_codes),
        "tokens_per_code": int(cfg.projector.tokens_per_code) if cfg.uses_prefix else 0,
        "stop_token_ids": _stop_ids(Path(base_dir), tok), "versions": _versions(),
        "export_s": round(time.perf_counter() - t0, 2),
    }
    if cfg.vector_source == "random" and vector_source is not None:
        manifest["random_vectors"] = {"num_groups": vector_source.num_groups, "dim": vector_source.dim,
                                      "seed": getattr(vector_source, "seed", 0)}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return Bundle(out, manifest)

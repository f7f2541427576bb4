"""A tiny servable fine-tuning run, built in code in a few seconds (tests, smoke checks).

`tiny_run(root)` writes under `root`:
    vocab/              the toy vocabulary (`medtok.toy`, 496 codes)
    medtok/             a MedTok trained for a few steps on it (random text features)
    base/               a random LLaMA (hidden 128, head size 32: what vLLM's CPU attention takes)
                        with a character tokenizer and chat template, as an HF directory
    run/lora_prefix/    a `PrefixLM` adapter on it (LoRA r=4 on q/k/v/o with non-zero weights,
                        projector, MedTok vectors): the layout `make demo` writes
    linker/<key>/       a code-linker index over the toy vocabulary
and returns the paths plus the in-memory MedTok vector source (the bundle export needs it: the
toy MedTok has no cached text embeddings to reload from).

The base model's token embeddings are scaled up so that its greedy choices are far from ties:
two correct implementations (HF, vLLM) then agree token for token, as they must.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HIDDEN = 128
TINY_MEDTOK = dict(text_dim=24, gnn_hidden=16, embed_dim=16, codebook_size=30, top_k=2, attn_heads=2, max_neighbors=4)


@dataclass
class TinyRun:
    root: Path
    vocab_dir: Path
    medtok_dir: Path
    base_dir: Path
    run_dir: Path
    adapter_dir: Path
    linker_dir: Path | None
    vocab: object
    vectors: object   # MedTokVectors
    linker: object | None


def tiny_base(out_dir: Path, seed: int = 0, logit_scale: float = 8.0):
    """Random 2-layer LLaMA (hidden 128, 4 heads of 32) + char tokenizer, saved as an HF dir."""
    from llm_adapter.serving import export_base_lm
    from llm_adapter.smoke import char_tokenizer, tiny_llama

    lm = tiny_llama(vocab_size=256, hidden_size=HIDDEN, num_layers=2, seed=seed)
    with torch.no_grad():  # tied embeddings: larger rows -> larger logit gaps (no near-ties)
        lm.get_input_embeddings().weight.mul_(logit_scale)
    tok = char_tokenizer()
    for c in (lm.config, lm.generation_config):  # LlamaConfig's defaults (bos 1, eos 2) are not this tokenizer's
        c.bos_token_id, c.eos_token_id, c.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    export_base_lm(lm, tok, out_dir)
    return lm, tok


def tiny_run(root: str | Path, *, linker: bool = True, seed: int = 0) -> TinyRun:
    from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
    from llm_adapter.model import PrefixLM
    from llm_adapter.vectors import MedTokVectors
    from medtok.model import MedTokConfig
    from medtok.tokenizer import MedTokTokenizer
    from medtok.toy import toy_vocabulary
    from medtok.train import TrainConfig, train

    root = Path(root)
    vocab, graph = toy_vocabulary(seed)
    vocab.save(root / "vocab")
    emb = np.random.default_rng(seed).normal(size=(len(vocab), TINY_MEDTOK["text_dim"])).astype(np.float32)
    medtok_dir = root / "medtok"
    train(TrainConfig(out_dir=str(medtok_dir), steps=3, batch_size=32, save_every=100, heldout_fraction=0.1),
          MedTokConfig(**TINY_MEDTOK), vocab=vocab, graph=graph, text_embeddings=emb, progress=False)
    tok_medtok = MedTokTokenizer.from_pretrained(medtok_dir, vocab=vocab, graph=graph, text_embeddings=emb,
                                                 progress=False)
    vectors = MedTokVectors(tok_medtok, identity=str(medtok_dir.resolve()))

    lm, tok = tiny_base(root / "base", seed)
    cfg = AdapterConfig(base_model=str((root / "base").resolve()), hidden_size=HIDDEN, vector_source="medtok",
                        medtok_checkpoint=str(medtok_dir.resolve()), max_codes=2,
                        projector=ProjectorConfig(input_dim=TINY_MEDTOK["embed_dim"], num_groups=4, hidden_size=HIDDEN,
                                                  tokens_per_code=2, mlp_hidden=64),
                        lora=LoraSettings(r=4, alpha=8))
    model = PrefixLM.build(cfg, lm=lm, tokenizer=tok, vector_source=vectors, seed=seed)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change the outputs
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    adapter_dir = model.save_pretrained(root / "run" / "lora_prefix")
    code_linker, linker_dir = None, None
    if linker:
        from qa.linker import CodeLinker

        code_linker = CodeLinker.build(vocab, root=root / "linker", verbose=False)
        linker_dir = Path(code_linker.directory)
    return TinyRun(root, root / "vocab", medtok_dir, root / "base", root / "run", Path(adapter_dir), linker_dir,
                   vocab, vectors, code_linker)


_SHARED: dict[str, TinyRun] = {}


def shared_tiny_run() -> TinyRun:
    """One `tiny_run` (with linker) per process, in a temporary directory removed at exit: the
    serving test modules share it instead of building it three times."""
    if "run" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="medtok-serve-tiny-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED["run"] = tiny_run(root, linker=True)
    return _SHARED["run"]


def synthetic_adapter(out_dir: str | Path = "runs/serve_synth/lora_prefix", lora_std: float = 0.02, seed: int = 0):
    """An untrained-but-non-trivial adapter on the real embedded SmolLM2-135M (LoRA r=8 on q/k/v/o
    with B ~ N(0, lora_std^2), a fresh projector, random code vectors): for measuring serving parity
    and speed on the real model size when no fine-tuned checkpoint exists (accuracy means nothing)."""
    from llm_adapter.config import AdapterConfig
    from llm_adapter.model import PrefixLM
    from llm_adapter.vectors import RandomVectors

    model = PrefixLM.build(AdapterConfig(base_model="smollm2", vector_source="random", max_codes=4),
                           vector_source=RandomVectors(4, 64, seed=seed), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.lm.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * lora_std)
    return model.save_pretrained(out_dir)

"""What a fine-tuning run belongs to and came from: the fingerprint its checkpoints are
resumed by (config less the keys that do not change results, training examples, prefix vectors,
base LM), and the `provenance` block of its results.json (`medbase.provenance`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llm_adapter.data import vocab_dir_of
from llm_adapter.finetune_config import FinetuneConfig
from llm_adapter.model import base_fingerprint
from llm_adapter.prerequisites import medtok_checkpoint_of
from medbase.provenance import (checkpoint_fingerprint, files_fingerprint, provenance, questions_fingerprint,
                                vocabulary_content_fingerprint, vocabulary_fingerprint)


# config keys that do not change what a run computes: a run may resume with other values
NOT_FINGERPRINTED = ("output_dir", "progress", "resume", "checkpoint_every", "threads", "device")


# keys added after the default job's figures were made: left out of the fingerprint while they
# have their default value, so checkpoints of the default job stay resumable
ADDED_KEYS = {"text_align_lr": None, "text_caption": "question"}


def _examples_digest(examples: list[tuple]) -> str:
    h = hashlib.sha256()
    for codes, prompt, answer in examples:
        h.update(json.dumps([list(codes), list(map(int, prompt)), list(map(int, answer))]).encode())
    return h.hexdigest()


def run_fingerprint(cfg: FinetuneConfig, data: dict, vectors, base_lm) -> str:
    """What a checkpoint belongs to: the config (less keys that do not change results), the
    training examples, the prefix vectors and the base LM."""
    d = {k: v for k, v in cfg.to_dict().items()
         if k not in NOT_FINGERPRINTED and not (k in ADDED_KEYS and v == ADDED_KEYS[k])}
    parts = [json.dumps(d, sort_keys=True), _examples_digest(data["qa"]), _examples_digest(data.get("align", [])),
             vectors.fingerprint() if vectors is not None else "", json.dumps(base_fingerprint(base_lm))]
    if data.get("align_text"):
        parts.append(_examples_digest(data["align_text"]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()



def run_provenance(cfg: FinetuneConfig, accelerator, vocab, train_qs, eval_sets, vectors, vocab_from_files: bool) -> dict:
    uses_medtok = vectors is not None and cfg.vector_source == "medtok"
    medtok_seed = None
    if uses_medtok:
        tc = medtok_checkpoint_of(cfg) / "train_config.json"
        medtok_seed = json.loads(tc.read_text()).get("seed") if tc.exists() else None
    data_file = Path(cfg.data_path) if cfg.data_path else None
    return provenance(
        device=str(accelerator.device),
        seeds={"finetune": cfg.seed, "medtok_training": medtok_seed},
        fingerprints={
            "vocabulary": (vocabulary_fingerprint(vocab_dir_of(cfg)) if vocab_from_files
                           else "content:" + vocabulary_content_fingerprint(vocab)),
            "medtok_checkpoint": checkpoint_fingerprint(medtok_checkpoint_of(cfg)) if uses_medtok else None,
            "prefix_vectors": vectors.fingerprint() if vectors is not None else None,
            "data_file": files_fingerprint([data_file]) if data_file and data_file.is_file() else None,
            "train_questions": questions_fingerprint(train_qs),
            "eval_questions": {s: questions_fingerprint(qs) for s, qs in eval_sets.items()},
        })

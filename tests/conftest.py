"""Shared test helpers and fixtures.

- `tiny_llama`, `char_tokenizer`: a random 2-layer LLaMA and a character tokenizer built in
  code (from `llm_adapter.smoke`, whose GPU smoke check uses them too); fixtures `tiny_lm`
  (hidden 64) and `char_tok`.
- `LLAMA31_8B_ARCH`: the published Llama-3.1-8B-Instruct architecture, for the meta-device check.
- `factory_audit(packages)`: a TorchFunctionMode recording tensor factory calls (torch.zeros,
  arange, tensor, ...) made from the given project packages without a `device=`; such a call
  lands on the default device, the class of bug that only shows on a GPU.
- `toy_questions(...)`: the ontology QA set on the toy vocabulary (vocab, train, {"test": ...}).
- `pytest_sessionstart`: builds the default vocabulary (`data/cache/vocab`, or under
  `$MEDTOK_CACHE`) once, before collection, when it is missing and `../shared/data` is present,
  so the real-data tests run on a fresh clone instead of skipping "no vocabulary" (the build is
  what `make demo` / `python scripts/build_vocab.py` do: under a minute on an idle core; a
  cached build is reused). `MEDTOK_TEST_NO_VOCAB_BUILD=1` turns it off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from llm_adapter.smoke import char_tokenizer, tiny_llama  # noqa: F401 (re-exported for the tests)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session):
    """Build the vocabulary once for the whole suite (see the module docstring). Runs before
    collection, so module-level `skipif(no vocabulary)` marks see it too."""
    import os
    import time
    if os.environ.get("MEDTOK_TEST_NO_VOCAB_BUILD"):
        return
    from medbase.paths import default_vocab_dir, shared_data_path
    vocab = default_vocab_dir()
    if (vocab / "codes.parquet").exists() or shared_data_path() is None:
        return
    from medtok.build import build_vocabulary
    t0 = time.perf_counter()
    print(f"\nbuilding the vocabulary once for the test suite -> {vocab} (python scripts/build_vocab.py)", flush=True)
    build_vocabulary(vocab, progress=False)
    print(f"vocabulary built in {time.perf_counter() - t0:.0f} s", flush=True)

LLAMA31_8B_ARCH = dict(  # config.json of meta-llama/Llama-3.1-8B-Instruct
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
    tie_word_embeddings=False,
    rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
)


class factory_audit(TorchFunctionMode):
    """`with factory_audit(("llm_adapter", "qa")) as audit: ...` then `audit.calls` lists
    "file:line function" of every factory call without a device made directly from those packages.

    The same mechanism as `torch.set_default_device` (a TorchFunctionMode over the device
    constructors), but only the project's own calls are judged: torch.optim (AdamW's step
    counter), peft and transformers create CPU tensors on purpose, so a blanket
    set_default_device("meta") trips inside them before reaching the project's code."""

    def __init__(self, packages: tuple[str, ...]):
        super().__init__()
        self.dirs = tuple(str(PROJECT_ROOT / p) for p in packages)
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None:
            f = sys._getframe(1)
            if f.f_code.co_filename.startswith(self.dirs):
                self.calls.append(f"{Path(f.f_code.co_filename).relative_to(PROJECT_ROOT)}:{f.f_lineno} "
                                  f"{getattr(func, '__name__', func)}")
        return func(*args, **kwargs)


def toy_questions(n_train: int = 24, n_test: int = 8, n_options: int = 2):
    from medtok.toy import toy_vocabulary
    from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa

    vocab, _ = toy_vocabulary()
    qs = build_ontology_qa(vocab, OntologyQAConfig(systems=("ICD10CM",), n_options=n_options,
                                                   sizes={"train": n_train, "validation": 0, "test": n_test}))
    return vocab, [q for q in qs if q.split == "train"], {"test": [q for q in qs if q.split == "test"]}


@pytest.fixture(scope="session")
def char_tok():
    return char_tokenizer()


@pytest.fixture
def tiny_lm():
    return tiny_llama()

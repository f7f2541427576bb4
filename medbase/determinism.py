"""Same seed, same machine, same result: PyTorch's deterministic kernels on the CPU.

Measured (notes/adapter-core.md): on the CPU with 2 or more threads, the backward pass of
advanced indexing with repeated indices (`t[idx]`, i.e. `index_put_(accumulate=True)`)
accumulates in a thread-dependent order, so two runs with the same seed differ in the last
bits, and MedTok training (its attention keys are gathered as `kv[keys]`, `states[centers]`)
drifted to a different tokenizer every run: `make demo` gave 0.513 and 0.487 for the prefix
arm while the no-prefix arm, which has no such gather, gave 0.343 both times.
`torch.use_deterministic_algorithms(True)` switches those kernels to a fixed order (measured:
no slower on the CPU). Results still depend on the thread count, so it is recorded in every
results.json. On CUDA deterministic kernels need CUBLAS_WORKSPACE_CONFIG and cost speed:
GPU runs are left as they are (documented as not bitwise reproducible).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def deterministic_on_cpu(device: str | torch.device | None) -> Iterator[bool]:
    """Within the block, PyTorch uses deterministic kernels when `device` is the CPU (None = CPU
    unless CUDA is available); yields whether it does. The previous setting is restored."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cpu":
        yield False
        return
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield True
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)

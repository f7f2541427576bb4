"""Which codes MedTok training never sees as a centre (the unseen-code evaluation).

Shared by training (`medtok.train`), tokenization and evaluation, so neither imports the
other for it. Two rules, combined by `heldout_mask`:
* a hashed fraction of assignable codes (the rule of every published MedTok figure);
* an explicit list of code ids (`TrainConfig.heldout_codes`), e.g. the test codes of the QA
  sets, so a "strictly unseen" MedTok never trains on them (they stay in the graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medbase.hashing import stable_fraction


def heldout_mask(code_ids, kinds, fraction: float, codes=None) -> np.ndarray:
    """Deterministic held-out set: assignable codes (kind == "code") whose hash falls below `fraction`,
    plus every row whose code id is in `codes` (any kind; None or empty = none).

    The hash is the first 8 bytes of sha1(code_id), unsalted (`stable_fraction(cid, salt=None,
    algorithm="sha1")`): the rule every published MedTok figure was measured with, pinned by a
    golden test (tests/test_medtok_splits.py).
    """
    out = np.zeros(len(code_ids), dtype=bool)
    if fraction > 0:
        for i, (cid, kind) in enumerate(zip(code_ids, kinds)):
            if kind == "code":
                out[i] = stable_fraction(cid, salt=None, algorithm="sha1") < fraction
    if codes:
        wanted = set(codes)
        out |= np.fromiter((c in wanted for c in code_ids), dtype=bool, count=len(out))
    return out


def read_code_list(value) -> list[str] | None:
    """A list of code ids from a list/tuple/set (returned sorted, deduplicated) or from the path of
    a text file with one id per line (blank lines and lines starting with '#' skipped); None stays None."""
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        lines = Path(value).read_text(encoding="utf-8").splitlines()
        value = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not all(isinstance(c, str) for c in value):
        raise TypeError("code ids must be strings")
    return sorted(set(value))

"""Which codes MedTok training never sees as a centre (the unseen-code evaluation).

Shared by training (`medtok.train`) and evaluation (`medtok.evaluate`), so neither imports
the other for it.
"""

from __future__ import annotations

import numpy as np

from medtok.common.hashing import stable_fraction


def heldout_mask(code_ids, kinds, fraction: float) -> np.ndarray:
    """Deterministic held-out set: assignable codes (kind == "code") whose hash falls below `fraction`.

    The hash is the first 8 bytes of sha1(code_id), unsalted (`stable_fraction(cid, salt=None,
    algorithm="sha1")`): the rule every published MedTok figure was measured with, pinned by a
    golden test (tests/test_medtok_splits.py).
    """
    out = np.zeros(len(code_ids), dtype=bool)
    if fraction <= 0:
        return out
    for i, (cid, kind) in enumerate(zip(code_ids, kinds)):
        if kind == "code":
            out[i] = stable_fraction(cid, salt=None, algorithm="sha1") < fraction
    return out

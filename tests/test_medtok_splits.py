"""MedTok's held-out codes: the assignment every published MedTok figure used, pinned.

The expected flags were recorded from the code as it was before `heldout_mask` moved onto
`medbase.hashing.stable_fraction` (inline sha1 of the code id, first 8 bytes / 2**64)."""

import numpy as np
import pandas as pd
import pytest

from medbase.paths import default_vocab_dir
from medtok.splits import heldout_mask

CODES = ["ATC:J01DC08", "ATC:N05CD01", "ICD10CM:A01.02", "ICD10CM:A00.0", "ICD10PCS:0016071", "ICD10PCS:0016070",
         "ICD9CM:E998.8", "ICD9CM:E999.1", "ICD9PCS:00.16", "ICD9PCS:00.01", "ICD10CM:E11.9", "ICD9CM:428.0",
         "ICD10CM:I50.9", "ICD10CM:A00.1", "ICD9CM:100.1", "ICD10CM:J45.909", "ATC:C09AA02", "ICD10PCS:0DTJ4ZZ",
         "CCS:ML1", "ICD10CM:CH01"]
KINDS = ["code"] * 18 + ["group", "group"]  # group nodes are never held out
GOLDEN = {
    0.05: [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    0.3: [1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    0.5: [1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0],
}


@pytest.mark.parametrize("fraction", sorted(GOLDEN))
def test_heldout_assignment_is_unchanged(fraction):
    assert heldout_mask(CODES, KINDS, fraction).astype(int).tolist() == GOLDEN[fraction]


def test_heldout_mask_edge_cases():
    assert not heldout_mask(CODES, KINDS, 0.0).any()
    assert heldout_mask(CODES, KINDS, 0.999999).tolist() == [k == "code" for k in KINDS]
    # the flag depends on the code id alone, not on its position or the other codes
    rev = heldout_mask(CODES[::-1], KINDS[::-1], 0.3)[::-1]
    assert rev.astype(int).tolist() == GOLDEN[0.3]


def test_heldout_count_on_the_built_vocabulary():
    """README, section 2: 8,775 held-out codes (5% of assignable codes) in the 217,848-code vocabulary."""
    path = default_vocab_dir() / "codes.parquet"
    if not path.exists():
        pytest.skip("vocabulary not built (python scripts/build_vocab.py)")
    df = pd.read_parquet(path, columns=["code_id", "kind"])
    if len(df) != 217_848:
        pytest.skip(f"a different vocabulary is built ({len(df)} codes)")
    assert int(np.sum(heldout_mask(df["code_id"], df["kind"], 0.05))) == 8_775

"""A source converts to the same MEDS bytes every time: events tied on (subject, time, code)
-- in the MIMIC-III demo, 1,047 prescription rows of one drug given twice the same day with
two NDCs (`text_value` "NS|NDC:00338004938" and "NS|NDC:00338004931") -- came out in a
different order run to run before every column became a sort key."""

from __future__ import annotations

import polars as pl
import pytest

from ehr.sources import SourceConfig, convert_source
from medbase.paths import default_vocab_dir, shared_data_path


@pytest.mark.shared_data
def test_mimic3_demo_converts_to_identical_data_twice(tmp_path):
    root = shared_data_path("ehr", "mimic3-demo")
    if root is None:
        pytest.skip("../shared/data/ehr/mimic3-demo absent")
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (scripts/build_vocab.py)")
    outs = []
    for name in ("a", "b"):
        convert_source(SourceConfig(dataset="mimic3", root=str(root), out=str(tmp_path / name), progress=False))
        outs.append(sorted((tmp_path / name / "data").rglob("*.parquet")))
    assert [p.name for p in outs[0]] == [p.name for p in outs[1]]
    for a, b in zip(*outs):
        da, db = pl.read_parquet(a), pl.read_parquet(b)
        assert da.equals(db)  # same rows in the same order, not only the same set
        # the tie the old sort left open is there to be broken
        dup = da.group_by(["subject_id", "time", "code"]).len().filter(pl.col("len") > 1)
        assert dup.height > 0

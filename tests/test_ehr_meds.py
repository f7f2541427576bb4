"""MEDS directories out and back in: the `meds` schemas, the shard invariants, and a round trip
through another reader (`meds_reader`: `meds_reader_convert` builds its database)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime as dt
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

from ehr.meds_io import MedsValidationError, read_meds, validate_meds_dir, write_labels, write_shard
from ehr.sources import SourceConfig, convert_source
from ehr.sources.codes import CodeResolver
from medbase.paths import default_vocab_dir, shared_data_path

FIX = Path(__file__).parent / "fixtures" / "ehr"


def tiny_resolver():
    df = pl.read_csv(FIX / "codes.csv", infer_schema=False)
    return CodeResolver(df.with_columns(pl.col("parents").fill_null("").str.split(";").list.filter(pl.element() != "")))


def meds_reader_convert() -> str:
    exe = shutil.which("meds_reader_convert") or str(Path(sys.executable).with_name("meds_reader_convert"))
    if not Path(exe).exists():
        pytest.skip("meds_reader_convert not installed")
    return exe


def via_meds_reader(meds_dir: Path, db: Path) -> pl.DataFrame:
    """Events as `meds_reader` sees them (its own parquet reader and database)."""
    import meds_reader
    subprocess.run([meds_reader_convert(), str(meds_dir), str(db), "--num_threads", "1"], check=True,
                   capture_output=True)
    rows = []
    with meds_reader.SubjectDatabase(str(db)) as database:
        for sid in database:
            for e in database[sid].events:
                rows.append((sid, e.time, e.code, e.numeric_value, e.text_value, e.admission_id))
    return pl.DataFrame(rows, orient="row", schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                                    "code": pl.String, "numeric_value": pl.Float32,
                                                    "text_value": pl.String, "admission_id": pl.Int64})


def canon(df: pl.DataFrame) -> pl.DataFrame:
    return df.select("subject_id", "time", "code", "numeric_value", "text_value", "admission_id").sort(
        ["subject_id", "time", "code", "text_value", "admission_id"], nulls_last=False)


@pytest.fixture(scope="module")
def fixture_meds(tmp_path_factory):
    out = tmp_path_factory.mktemp("meds")
    convert_source(SourceConfig(dataset="mimic3", root=str(FIX / "mimic3"), out=str(out), progress=False,
                                subjects_per_shard=2), resolver=tiny_resolver())
    return out


def test_written_directory_follows_the_meds_schemas(fixture_meds):
    info = validate_meds_dir(fixture_meds)
    assert info["subjects"] == 3 and sorted(p.name for p in (fixture_meds / "data").iterdir()) == ["0.parquet", "1.parquet"]
    for p in (fixture_meds / "data").glob("*.parquet"):
        meds.DataSchema.validate(pq.read_table(p))
    codes = pl.read_parquet(fixture_meds / "metadata" / "codes.parquet")
    row = codes.filter(pl.col("code") == "ICD9CM:428.0").row(0, named=True)
    assert row["description"] == "Congestive heart failure, unspecified" and row["parent_codes"] == ["ICD9CM:428"]
    assert codes.filter(pl.col("code") == "MEDICATION//vancomycin hcl")["parent_codes"].item().to_list() == ["ATC:J01XA01"]
    import json
    meta = json.loads((fixture_meds / "metadata" / "dataset.json").read_text())
    assert meta["dataset_name"] == "mimic3" and meta["meds_version"] == meds.__version__
    assert meta["medtok"]["splits"] == "hash"


def test_validation_catches_broken_invariants(tmp_path):
    ev = pl.DataFrame({"subject_id": [1, 1, 2], "time": [dt(2000, 1, 2), dt(2000, 1, 1), dt(2000, 1, 1)],
                       "code": ["A", "B", "C"]}).with_columns(pl.lit(None, dtype=pl.Float32).alias("numeric_value"),
                                                             pl.lit(None, dtype=pl.String).alias("text_value"))
    write_shard(ev, tmp_path / "a" / "data" / "0.parquet")
    with pytest.raises(MedsValidationError, match="out of time order"):
        validate_meds_dir(tmp_path / "a", require_splits=False)
    good = ev.sort("subject_id", "time")
    write_shard(good, tmp_path / "b" / "data" / "0.parquet")
    write_shard(good.filter(pl.col("subject_id") == 2), tmp_path / "b" / "data" / "1.parquet")
    with pytest.raises(MedsValidationError, match="also in another shard"):
        validate_meds_dir(tmp_path / "b", require_splits=False)
    write_shard(good, tmp_path / "c" / "data" / "0.parquet")
    with pytest.raises(MedsValidationError, match="subject_splits.parquet missing"):
        validate_meds_dir(tmp_path / "c")
    (tmp_path / "c" / "metadata").mkdir()
    leaky = pl.DataFrame({"subject_id": [1, 1, 2], "split": ["train", "held_out", "train"]})
    pq.write_table(leaky.to_arrow().cast(meds.SubjectSplitSchema.schema()),
                   tmp_path / "c" / "metadata" / "subject_splits.parquet")
    with pytest.raises(MedsValidationError, match="subjects in two splits"):
        validate_meds_dir(tmp_path / "c")


def test_round_trip_through_meds_reader(fixture_meds, tmp_path):
    ours = canon(read_meds(fixture_meds))
    theirs = canon(via_meds_reader(fixture_meds, tmp_path / "db"))
    assert ours.height == 34        # 20 + 8 + 6 events for subjects 1, 2, 3 (test_ehr_sources)
    assert theirs.equals(ours)


def test_label_table_schema(tmp_path):
    labels = pl.DataFrame({"sample_id": [1], "subject_id": [1], "prediction_time": [dt(2000, 1, 1)],
                           "boolean_value": [True], "labels": [[1, 0]]})
    write_labels(labels, tmp_path / "l.parquet")
    t = pq.read_table(tmp_path / "l.parquet")
    meds.LabelSchema.validate(t)
    assert t.column_names == ["subject_id", "prediction_time", "boolean_value"]


@pytest.mark.shared_data
def test_mimic3_demo_converts_validates_and_round_trips(tmp_path):
    root = shared_data_path("ehr", "mimic3-demo")
    if root is None:
        pytest.skip("../shared/data/ehr/mimic3-demo absent")
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (scripts/build_vocab.py)")
    res = convert_source(SourceConfig(dataset="mimic3", root=str(root), out=str(tmp_path / "m"), progress=False))
    info = validate_meds_dir(tmp_path / "m")
    assert info["subjects"] == 100
    cov = {f: c for f, _, _, c in res.coverage.iter_rows()}
    assert cov["dx_icd9"] >= 0.99 and cov["px_icd9"] >= 0.99
    assert res.ledger.skipped("admissions") == {}
    # 1,761 diagnosis rows, none lost (each a diagnosis event at its stay's discharge)
    assert res.coverage.filter(pl.col("family") == "dx_icd9")["events"].item() == 1761
    ours = canon(read_meds(tmp_path / "m"))
    theirs = via_meds_reader(tmp_path / "m", tmp_path / "db")
    assert canon(theirs).equals(ours)
    # and the same labels from the events meds_reader gives back
    registry = pytest.importorskip("ehr.tasks.registry")
    from ehr.schema import conform_events
    for name, preset in [("mortality", "paper"), ("readmission", "pyhealth_15d_discharge")]:
        task = registry.get_task(name, preset)
        a, b = task.label(read_meds(tmp_path / "m")), task.label(conform_events(theirs))
        assert a.height > 0 and a.equals(b), (name, preset)


@pytest.mark.shared_data
def test_eicu_demo_converts(tmp_path):
    root = shared_data_path("ehr", "eicu-demo")
    if root is None:
        pytest.skip("../shared/data/ehr/eicu-demo absent")
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (scripts/build_vocab.py)")
    res = convert_source(SourceConfig(dataset="eicu", root=str(root), out=str(tmp_path / "e"), progress=False))
    info = validate_meds_dir(tmp_path / "e")
    assert info["subjects"] == 100
    # 174 unit stays: one ICU admission each
    icu = read_meds(tmp_path / "e").filter(pl.col("code").str.starts_with("ICU_ADMISSION//")).height
    assert icu == 174
    assert res.ledger.skipped("patient") == {"empty row": 4}

"""The data job end to end on the fixture: convert, label, tables, report, label files."""

from __future__ import annotations

import json
from pathlib import Path

import meds
import polars as pl
import pyarrow.parquet as pq
import pytest

from ehr.convert import EhrDataConfig, resolve_tasks, run_ehr_data

FIX = Path(__file__).parent / "fixtures" / "ehr"


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    df = pl.read_csv(FIX / "codes.csv", infer_schema=False)
    df.with_columns(pl.col("parents").fill_null("").str.split(";").list.filter(pl.element() != "")
                    ).write_parquet(d / "codes.parquet")
    return str(d)


def test_convert_label_and_print(tmp_path, vocab_dir, capsys):
    pytest.importorskip("ehr.tasks.registry")
    tasks = ["mortality:in_hospital_early", "length_of_stay", "drug_recommendation"]
    rep = run_ehr_data(EhrDataConfig(dataset="mimic3", root=str(FIX / "mimic3"), out=str(tmp_path / "a"),
                                     tasks=tasks, vocab_dir=vocab_dir, progress=False, subjects_per_shard=1,
                                     workers=2))
    out = capsys.readouterr().out
    for title in ("samples per task", "code coverage per family", "unmapped codes", "source rows skipped"):
        assert title in out
    assert rep["convert"]["events"] == 34 and rep["convert"]["shards"] == 3
    on_disk = json.loads((tmp_path / "a" / "report.json").read_text())
    assert [t["preset"] for t in on_disk["tasks"]] == ["in_hospital_early", "pyhealth_10class",
                                                       "admission_10class", "ehrshot_long_los", "pyhealth_unit_10class",
                                                       "paper_5drugs"]
    mort = on_disk["tasks"][0]
    assert mort["samples"] == 4 and mort["guards"]["inputs_before_prediction_time"] == "ok"
    t = pq.read_table(tmp_path / "a" / "labels" / "mortality.in_hospital_early.parquet")
    meds.LabelSchema.validate(t)
    # labelling shard by shard (1 subject each, 2 processes) gives the labels of one pass over everything
    run_ehr_data(EhrDataConfig(dataset="mimic3", root=str(FIX / "mimic3"), out=str(tmp_path / "b"),
                               tasks=tasks, vocab_dir=vocab_dir, progress=False, print_tables=False))
    for f in sorted((tmp_path / "a" / "labels").glob("*.samples.parquet")):
        assert pl.read_parquet(f).equals(pl.read_parquet(tmp_path / "b" / "labels" / f.name)), f.name


def test_unsupported_tasks_skipped_with_reason(tmp_path, vocab_dir):
    pytest.importorskip("ehr.tasks.registry")
    rep = run_ehr_data(EhrDataConfig(dataset="eicu", root=str(FIX / "eicu"), out=str(tmp_path), vocab_dir=vocab_dir,
                                     tasks=["readmission:ehrshot_30d"], progress=False, print_tables=False))
    assert "offsets only" in rep["tasks"][0]["skipped"]
    meta = json.loads((tmp_path / "metadata" / "dataset.json").read_text())
    assert meta["medtok"]["relative_times"] is True and meta["medtok"]["discharge_stamped_pattern"] == ""


def test_task_specs_and_convert_only(tmp_path, vocab_dir):
    assert resolve_tasks(["none"]) == []
    rep = run_ehr_data(EhrDataConfig(dataset="mimic3", root=str(FIX / "mimic3"), out=str(tmp_path), tasks=["none"],
                                     vocab_dir=vocab_dir, progress=False, print_tables=False))
    assert rep["tasks"] == [] and not (tmp_path / "labels").exists()
    assert {r["family"] for r in rep["coverage"]} == {"dx_icd9", "px_icd9", "drug"}
    pytest.importorskip("ehr.tasks.registry")
    with pytest.raises(KeyError, match="unknown task"):
        resolve_tasks(["no_such_task"])
    with pytest.raises(ValueError, match="--root is required"):
        EhrDataConfig(dataset="mimic3", root="")

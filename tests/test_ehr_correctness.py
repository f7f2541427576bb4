"""Issue 20: stays paired by admission id, rows assigned by it, length of stay at discharge
without its give-aways, eICU unit-stay length of stay, and bad inputs that must fail in one
line with nothing half-written. Golden values are worked out by hand in the comments."""

from __future__ import annotations

import json
import shutil
from datetime import datetime as dt, timedelta
from pathlib import Path

import polars as pl
import pytest

from ehr import meds_io
from ehr.schema import ADMISSION_ID, conform_events
from ehr.tasks.guards import LeakageError, check_stay_length_hidden
from ehr.tasks.inputs import window_inputs
from ehr.tasks.registry import get_task
from ehr.tasks.stays import stay_code_flags, stay_stats, stays

FIX = Path(__file__).parent / "fixtures" / "ehr"
H = timedelta(hours=1)
D = timedelta(days=1)


def frame(rows):
    """rows: (subject_id, time, code, admission_id)"""
    df = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                                    ADMISSION_ID: pl.Int64}, orient="row")
    return conform_events(df)


# ---- pairing by admission id --------------------------------------------------------------

A1, A2 = dt(2150, 1, 1, 8), dt(2150, 1, 3, 8)
D1, D2 = dt(2150, 1, 5, 8), dt(2150, 1, 17, 8)     # stay 1: 4 days; stay 2: 14 days


def overlapping():
    return frame([
        (1, None, "GENDER//F", None), (1, dt(2100, 1, 1), "MEDS_BIRTH", None),
        (1, A1, "HOSPITAL_ADMISSION//EMERGENCY", 11), (1, A1 + 2 * H, "ICD10PCS:0DTJ4ZZ", 11),
        (1, A1 + 2 * H, "MEDICATION//metoprolol", 11),
        (1, A2, "HOSPITAL_ADMISSION//ELECTIVE", 12), (1, A2 + 2 * H, "ICD10PCS:0DTJ4ZZ", 12),
        (1, A2 + 2 * H, "MEDICATION//heparin", 12),
        (1, D1, "ICD10CM:I10", 11), (1, D1, "HOSPITAL_DISCHARGE//HOME", 11),
        (1, D2, "ICD10CM:E11.9", 12), (1, D2, "HOSPITAL_DISCHARGE//HOME", 12)])


def test_overlapping_admissions_paired_by_id():
    ev = overlapping()
    s = stays(ev)
    assert s.select("admit", "discharge", "admission_id").rows() == [(A1, D1, 11), (A2, D2, 12)]
    st = stay_stats(ev)
    assert st["overlapping_stays"] == 1 and st["paired_by_admission_id"] == 2 and st["stays"] == 2
    # 4 days -> class 4, 14 days -> class 8 (8-14 d); each stay's diagnosis is its own
    los = get_task("length_of_stay", "admission_10class").label(ev)
    assert los.select("prediction_time", "integer_value").rows() == [(A1, 4), (A2, 8)]
    flags = stay_code_flags(ev).sort("stay")
    assert flags.select("has_dx", "has_px", "has_drug").rows() == [(True, True, True)] * 2


def test_without_ids_the_order_rule_still_applies_and_is_wrong_here():
    """The rule for sources without ids (and what the project did before): admission 1 is
    followed by admission 2, so it is dropped; admission 2 pairs with discharge 1 (2 days)."""
    ev = overlapping().drop(ADMISSION_ID)
    assert stays(ev).select("admit", "discharge").rows() == [(A2, D1)]
    st = stay_stats(ev)
    assert st["dropped_no_discharge_before_next_admission"] == 1 and st["paired_by_admission_id"] == 0


# ---- rows dated outside their stay: assigned by id, counted ---------------------------------

def write_mimic3(root: Path, prescriptions: list[str]):
    root.mkdir(parents=True)
    (root / "PATIENTS.csv").write_text("ROW_ID,SUBJECT_ID,GENDER,DOB,DOD\n1,7,F,2050-01-01 00:00:00,\n")
    (root / "ADMISSIONS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,DISCHARGE_LOCATION,HOSPITAL_EXPIRE_FLAG\n"
        "1,7,501,2100-01-01 10:00:00,2100-01-04 12:00:00,,EMERGENCY,HOME,0\n"
        "2,7,502,2100-03-01 10:00:00,2100-03-10 12:00:00,,EMERGENCY,HOME,0\n")
    (root / "DIAGNOSES_ICD.csv").write_text("ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,7,501,1,4280\n2,7,502,1,25000\n")
    (root / "PROCEDURES_ICD.csv").write_text("ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,7,501,1,3893\n2,7,502,1,3893\n")
    (root / "PRESCRIPTIONS.csv").write_text("ROW_ID,SUBJECT_ID,HADM_ID,STARTDATE,DRUG,NDC\n" + "\n".join(prescriptions) + "\n")


@pytest.fixture(scope="module")
def tiny_vocab(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab")
    df = pl.read_csv(FIX / "codes.csv", infer_schema=False)
    df.with_columns(pl.col("parents").fill_null("").str.split(";").list.filter(pl.element() != "")
                    ).write_parquet(d / "codes.parquet")
    return str(d)


def test_drugs_dated_outside_their_stay_assigned_by_id_and_counted(tmp_path, tiny_vocab):
    from ehr.convert import EhrDataConfig, run_ehr_data
    # admission 502's only drugs: one dated inside admission 501 (2100-01-02), one decades later
    write_mimic3(tmp_path / "src", ["1,7,501,2100-01-02 00:00:00,Vancomycin,",
                                    "2,7,502,2100-01-02 00:00:00,Metoprolol Tartrate,",
                                    "3,7,502,2130-05-01 00:00:00,Metoprolol Tartrate,"])
    rep = run_ehr_data(EhrDataConfig(dataset="mimic3", root=str(tmp_path / "src"), out=str(tmp_path / "out"),
                                     tasks=["length_of_stay:pyhealth_10class", "drug_recommendation"],
                                     vocab_dir=tiny_vocab, progress=False, print_tables=False))
    st = rep["stays"]
    assert st["stays"] == 2 and st["paired_by_admission_id"] == 2 and st["overlapping_stays"] == 0
    assert st["drug_rows_dated_outside_their_stay"] == 2 and st["dx_rows_dated_outside_their_stay"] == 0
    notes = {(r["table"], r["reason"]): r["rows"] for r in rep["rows"] if r["action"] == "kept"}
    assert notes[("prescriptions", "date before admission")] == 1
    assert notes[("prescriptions", "date after discharge")] == 1
    ev = meds_io.read_meds(tmp_path / "out")
    # by id both stays have dx, px and a drug: both are LOS samples (3 d -> 3; 9 d -> 8)
    los = get_task("length_of_stay", "pyhealth_10class").label(ev)
    assert los["integer_value"].to_list() == [3, 8]
    # by time alone (ids dropped) admission 502 "has no drug" and disappears
    assert get_task("length_of_stay", "pyhealth_10class").label(ev.drop(ADMISSION_ID))["integer_value"].to_list() == [3]
    # drug recommendation: metoprolol is admission 502's label, and its row dated inside
    # admission 501 is not in 502's input (the current stay's drugs are excluded by id too)
    task = get_task("drug_recommendation")
    lab = task.label(ev)
    met = task.classes.index("metoprolol")
    assert [row[met] for row in lab["labels"].to_list()] == [0, 1]
    second = lab.filter(pl.col("stay_admission_id") == 502)
    inp = task.inputs(ev, second)
    assert not inp["code"].str.contains("metoprolol").any()
    assert inp["code"].str.contains("vancomycin").any()     # admission 501's drug: history


# ---- length of stay at discharge ----------------------------------------------------------

def two_stays():
    a0, d0, a, d = dt(2150, 1, 1, 8), dt(2150, 1, 3, 8), dt(2150, 2, 1, 8), dt(2150, 2, 6, 14)
    rows = [(1, None, "GENDER//F", None), (1, dt(2100, 1, 1), "MEDS_BIRTH", None)]
    for aid, (x, y) in ((1, (a0, d0)), (2, (a, d))):
        rows += [(1, x, "HOSPITAL_ADMISSION//EMERGENCY", aid), (1, x + 2 * H, "ICD10PCS:0DTJ4ZZ", aid),
                 (1, x + 30 * H, "MEDICATION//metoprolol", aid), (1, y, "ICD10CM:I10", aid),
                 (1, y, "HOSPITAL_DISCHARGE//HOME", aid)]
    return frame(rows), (a0, d0, a, d)


def test_los_at_discharge_inputs_hide_the_length():
    ev, (a0, d0, a, d) = two_stays()
    task = get_task("length_of_stay", "pyhealth_10class")
    lab = task.label(ev)
    assert lab.select("prediction_time", "integer_value").rows() == [(d0, 2), (d, 5)]   # 2 d; 5 d 6 h
    inp = task.inputs(ev, lab).filter(pl.col("sample_id") == lab["sample_id"][1])
    timed = inp.filter(pl.col("time").is_not_null())
    cur = timed.filter(pl.col("time") >= a)
    # the current stay: its codes kept, all at the admission time, its discharge marker gone
    assert sorted(cur["code"]) == ["HOSPITAL_ADMISSION//EMERGENCY", "ICD10CM:I10", "ICD10PCS:0DTJ4ZZ",
                                   "MEDICATION//metoprolol"]
    assert set(cur["time"]) == {a}
    # the previous stay keeps its own times and its discharge marker
    prev = timed.filter(pl.col("time") < a)
    assert (d0, "HOSPITAL_DISCHARGE//HOME") in prev.select("time", "code").rows()
    assert a0 + 30 * H in prev["time"].to_list()
    # the build runs the guard; the raw window (the old input) fails it
    from ehr.tasks.build import build_task
    assert build_task(task, ev).guards["stay_length_hidden"] == "ok"
    with pytest.raises(LeakageError, match="timed after its admission"):
        check_stay_length_hidden(lab, window_inputs(ev, lab))
    no_times = window_inputs(ev, lab).with_columns(
        pl.when(pl.col("time") >= pl.col("time").min()).then(pl.col("time")).alias("time"))
    retimed = task.inputs(ev, lab).vstack(no_times.filter(pl.col("code").str.starts_with("HOSPITAL_DISCHARGE//")
                                                          & (pl.col("time") == d)).with_columns(
        pl.lit(a).alias("time")))
    with pytest.raises(LeakageError, match="discharge marker"):
        check_stay_length_hidden(lab, retimed)


def test_other_los_presets_untouched():
    ev, (a0, d0, a, d) = two_stays()
    for preset in ("admission_10class", "ehrshot_long_los"):
        task = get_task("length_of_stay", preset)
        assert not task.hides_stay_length
        lab = task.label(ev)
        assert task.inputs(ev, lab).equals(window_inputs(ev, lab))


def test_times_only_model_at_chance_on_synthetic_cohort():
    from medbase.paths import default_vocab_dir
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (python scripts/build_vocab.py)")
    from ehr.benchmark.los_channels import synthetic_los_check
    rep = synthetic_los_check(1500, seed=0, n_boot=200)
    assert rep["times_only_features_constant"]
    lo, hi = rep["times_only"]["ci"]
    assert lo <= 0.5 <= hi and rep["times_only"]["auroc_macro"] == pytest.approx(0.5)
    # the same model on the old input reads the label off the times: the check has power
    assert rep["times_only_raw_window"]["auroc_macro"] > 0.9
    assert 0.3 < rep["counts_only"]["auroc_macro"] < 1.0 and rep["held_out"] > 100


# ---- eICU unit-stay length of stay --------------------------------------------------------

def test_unit_stay_los_on_handmade_unit_stays():
    h0 = dt(2150, 1, 1, 6)
    u0, u0_out = h0 + 3 * H, h0 + 3 * H + 2 * D + 5 * H            # 2 d 5 h -> class 2
    u1, u1_out = h0 + 4 * D, h0 + 13 * D + 1 * H                    # 9 d 1 h, but no drug: excluded
    u2, u2_out = h0 + 14 * D, h0 + 14 * D + 20 * H                  # 20 h -> class 0
    hd = h0 + 16 * D
    rows = [(5, None, "GENDER//M", None), (5, h0, "HOSPITAL_ADMISSION//Emergency Department", 9)]
    for x, y, drug in ((u0, u0_out, True), (u1, u1_out, False), (u2, u2_out, True)):
        rows += [(5, x, "ICU_ADMISSION//MICU", 9), (5, x + H, "ICD9CM:428.0", 9),
                 (5, x + H, "PROCEDURE//EICU//ventilation", 9), (5, y, "ICU_DISCHARGE//MICU", 9)]
        if drug:
            rows.append((5, x + 2 * H, "MEDICATION//furosemide", 9))
    rows.append((5, hd, "HOSPITAL_DISCHARGE//Home", 9))
    ev = frame(rows)
    task = get_task("length_of_stay", "pyhealth_unit_10class")
    lab = task.label(ev)
    assert lab.select("prediction_time", "stay_start", "integer_value").rows() == [(u0_out, u0, 2), (u2_out, u2, 0)]
    inp = task.inputs(ev, lab).filter(pl.col("sample_id") == lab["sample_id"][0])
    cur = inp.filter(pl.col("time") >= u0)
    assert set(cur["time"]) == {u0} and not cur["code"].str.starts_with("ICU_DISCHARGE//").any()
    assert (h0, "HOSPITAL_ADMISSION//Emergency Department") in inp.select("time", "code").rows()
    # the hospital-stay preset on the same data: one stay of 16 days -> class 9
    assert get_task("length_of_stay", "pyhealth_10class").label(ev)["integer_value"].to_list() == [9]


# ---- admission ids through MEDS import ------------------------------------------------------

def test_admission_id_survives_meds_import(tmp_path, tiny_vocab):
    from ehr.sources import SourceConfig, convert_source
    ev = overlapping()
    meds_io.write_shard(ev, tmp_path / "src" / "data" / "0.parquet")
    convert_source(SourceConfig(dataset="meds", root=str(tmp_path / "src"), out=str(tmp_path / "out"),
                                vocab_dir=tiny_vocab, progress=False))
    back = meds_io.read_meds(tmp_path / "out")
    assert stays(back).select("admit", "discharge", "admission_id").rows() == [(A1, D1, 11), (A2, D2, 12)]


# ---- bad inputs: one line, nothing half-written --------------------------------------------

def run_cli(args, capsys):
    from scripts.ehr_data import main
    rc = main(args + ["--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def fixture_copy(tmp_path) -> Path:
    src = tmp_path / "m3"
    shutil.copytree(FIX / "mimic3", src)
    return src


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def test_ragged_csv_row_is_one_line_and_writes_nothing(tmp_path, tiny_vocab, capsys):
    src = fixture_copy(tmp_path)
    adm = src / "Admissions.csv"
    adm.write_text(adm.read_text() + "9,1,109,2100-05-01 10:00:00,2100-05-02 10:00:00,,EMERGENCY,X,HOME,Medicare,0,extra\n")
    rc, err = run_cli(["--dataset", "mimic3", "--root", str(src), "--out", str(tmp_path / "out"),
                       "--vocab-dir", tiny_vocab], capsys)
    assert rc == 2 and len(err) == 1
    assert "Admissions.csv" in err[0] and "more fields" in err[0] and "fix:" in err[0]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_failed_run_leaves_an_existing_output_whole(tmp_path, tiny_vocab, capsys):
    out = tmp_path / "out"
    rc, _ = run_cli(["--dataset", "mimic3", "--root", str(FIX / "mimic3"), "--out", str(out),
                     "--vocab-dir", tiny_vocab, "--tasks", "mortality:in_hospital_early"], capsys)
    assert rc == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    report = (out / "report.json").read_text()
    assert json.loads(report)["config"]["out"] == str(out)
    broken = fixture_copy(tmp_path)
    (broken / "Admissions.csv").unlink()                     # a missing required table
    rc, err = run_cli(["--dataset", "mimic3", "--root", str(broken), "--out", str(out),
                       "--vocab-dir", tiny_vocab], capsys)
    assert rc == 2 and len(err) == 1 and "required table 'admissions' not found" in err[0]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert (out / "report.json").read_text() == report and leftovers(tmp_path, "out") == []
    # --debug shows the traceback instead
    from ehr.sources.tables import MissingTableError
    with pytest.raises(MissingTableError):
        run_cli(["--dataset", "mimic3", "--root", str(broken), "--out", str(out), "--vocab-dir", tiny_vocab,
                 "--debug"], capsys)


def write_old_meds(root: Path, subject_ids):
    rows = []
    for sid in subject_ids:
        rows += [(sid, None, "GENDER//F"), (sid, dt(2100, 1, 1, 8), "HOSPITAL_ADMISSION//EMERGENCY"),
                 (sid, dt(2100, 1, 2, 8), "DIAGNOSIS//ICD//9//4280"), (sid, dt(2100, 1, 2, 8), "HOSPITAL_DISCHARGE//HOME")]
    df = pl.DataFrame(rows, schema={"patient_id": pl.Int64, "timestamp": pl.Datetime("us"), "code": pl.String},
                      orient="row")
    (root / "data").mkdir(parents=True)
    df.write_parquet(root / "data" / "0.parquet")


def test_pre_03_meds_names_mapped_with_a_warning(tmp_path, tiny_vocab):
    from ehr.convert import EhrDataConfig, run_ehr_data
    write_old_meds(tmp_path / "old", [1, 2])
    with pytest.warns(UserWarning, match="MEDS < 0.3 column names patient_id -> subject_id, timestamp -> time"):
        rep = run_ehr_data(EhrDataConfig(dataset="meds", root=str(tmp_path / "old"), out=str(tmp_path / "out"),
                                         tasks=["length_of_stay:admission_10class"], vocab_dir=tiny_vocab,
                                         progress=False, print_tables=False))
    assert rep["convert"]["events"] == 8 and rep["convert"]["subjects"] == 2
    assert rep["tasks"][0]["samples"] == 2
    assert any("MEDS < 0.3 column names mapped" in r["reason"] for r in rep["rows"])


def test_meds_without_needed_columns_refused(tmp_path, tiny_vocab, capsys):
    (tmp_path / "bad" / "data").mkdir(parents=True)
    pl.DataFrame({"person": [1], "code": ["X"]}).write_parquet(tmp_path / "bad" / "data" / "0.parquet")
    rc, err = run_cli(["--dataset", "meds", "--root", str(tmp_path / "bad"), "--out", str(tmp_path / "out"),
                       "--vocab-dir", tiny_vocab], capsys)
    assert rc == 2 and len(err) == 1 and "no column subject_id, time" in err[0] and "MEDS >= 0.3" in err[0]
    assert not (tmp_path / "out").exists()


def test_subject_id_that_does_not_fit_refused_before_writing(tmp_path, tiny_vocab, capsys):
    write_old_meds(tmp_path / "big", [3, 2 ** 50])
    rc, err = run_cli(["--dataset", "meds", "--root", str(tmp_path / "big"), "--out", str(tmp_path / "out"),
                       "--vocab-dir", tiny_vocab], capsys)
    err = [e for e in err if "UserWarning" not in e and "warnings.warn" not in e]
    assert rc == 2 and len(err) == 1 and f"subject_id {2 ** 50} does not fit" in err[0] and "2^50" in err[0]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_missing_vocabulary_named_or_built(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "novocab"
    empty.mkdir()
    rc, err = run_cli(["--dataset", "mimic3", "--root", str(FIX / "mimic3"), "--out", str(tmp_path / "out"),
                       "--vocab-dir", str(empty)], capsys)
    assert rc == 2 and len(err) == 1 and f"python scripts/build_vocab.py --out {empty}" in err[0]
    assert not (tmp_path / "out").exists()
    # without --vocab-dir the default vocabulary is built when missing (as make demo does)
    import medbase.paths
    import medtok.build
    built = []
    monkeypatch.setattr(medbase.paths, "default_vocab_dir", lambda: tmp_path / "default_vocab")
    monkeypatch.setattr(medtok.build, "build_vocabulary", lambda d, progress=False: built.append(Path(d)))
    from scripts.ehr_data import ensure_vocabulary
    ensure_vocabulary(None, "mimic3")
    assert built == [tmp_path / "default_vocab"]
    assert "building it" in capsys.readouterr().err


def test_overlapping_admissions_through_the_mimic_converter(tmp_path, tiny_vocab):
    """MIMIC-III rows with admit1 < admit2 < discharge1 < discharge2: two stays of 4 and 14 days
    (by hadm_id), counted as overlapping in the conversion report."""
    from ehr.convert import EhrDataConfig, run_ehr_data
    root = tmp_path / "src"
    root.mkdir()
    (root / "PATIENTS.csv").write_text("ROW_ID,SUBJECT_ID,GENDER,DOB,DOD\n1,7,F,2050-01-01 00:00:00,\n")
    (root / "ADMISSIONS.csv").write_text(
        "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,DISCHARGE_LOCATION,HOSPITAL_EXPIRE_FLAG\n"
        "1,7,601,2100-01-01 08:00:00,2100-01-05 08:00:00,,EMERGENCY,HOME,0\n"
        "2,7,602,2100-01-03 08:00:00,2100-01-17 08:00:00,,ELECTIVE,HOME,0\n")
    (root / "DIAGNOSES_ICD.csv").write_text("ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE\n1,7,601,1,4280\n2,7,602,1,25000\n")
    rep = run_ehr_data(EhrDataConfig(dataset="mimic3", root=str(root), out=str(tmp_path / "out"),
                                     tasks=["length_of_stay:admission_10class"], vocab_dir=tiny_vocab,
                                     progress=False, print_tables=False))
    assert rep["stays"]["overlapping_stays"] == 1 and rep["stays"]["paired_by_admission_id"] == 2
    lab = pl.read_parquet(tmp_path / "out" / "labels" / "length_of_stay.admission_10class.samples.parquet")
    assert lab.select("stay_admission_id", "integer_value").rows() == [(601, 4), (602, 8)]

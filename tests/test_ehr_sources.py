"""Source loaders on tiny hand-made fixtures (tests/fixtures/ehr): events, timing rules,
bad rows counted per reason, code mapping, file-name handling. Expected values are worked
out by hand from the fixture rows (see the comments)."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from ehr.meds_io import read_meds, validate_meds_dir
from ehr.sources import MissingTableError, SourceConfig, convert_source
from ehr.sources.codes import CodeResolver, ndc11
from ehr.sources.eicu import subject_id_of

FIX = Path(__file__).parent / "fixtures" / "ehr"


def tiny_resolver() -> CodeResolver:
    return CodeResolver(tiny_codes())


def tiny_codes() -> pl.DataFrame:
    df = pl.read_csv(FIX / "codes.csv", infer_schema=False)
    return df.with_columns(pl.col("parents").fill_null("").str.split(";").list.filter(pl.element() != ""))


def convert(dataset, root, out, **kw):
    cfg = SourceConfig(dataset=dataset, root=str(root), out=str(out), progress=False, **kw)
    return convert_source(cfg, resolver=tiny_resolver())


def events_of(df, sid):
    return [(t, c) for t, c in df.filter(pl.col("subject_id") == sid).select("time", "code").iter_rows()]


def skipped(res, table):
    return res.ledger.skipped(table)


def kept(res, table):
    return {r["reason"]: r["rows"] for r in res.ledger.rows if r["table"] == table and r["action"] == "kept"}


@pytest.fixture(scope="module")
def mimic3(tmp_path_factory):
    out = tmp_path_factory.mktemp("m3")
    return convert("mimic3", FIX / "mimic3", out), read_meds(out)


def test_mimic3_bad_rows_counted_per_reason(mimic3):
    res, _ = mimic3
    assert skipped(res, "patients") == {"unparseable subject_id": 1, "duplicate subject_id": 1}
    # 301 discharged before admitted, 302 month 13, 999 not a patient, row 8 repeats row 1
    assert skipped(res, "admissions") == {"discharge before admission": 1, "unparseable admittime": 1,
                                          "unknown subject_id": 1, "duplicate row": 1}
    # 301 was dropped, empty code, row 8 repeats row 7, subject 2 with subject 1's stay
    assert skipped(res, "diagnoses_icd") == {"no valid admission (hadm_id)": 1, "missing icd9_code": 1,
                                             "duplicate row": 1, "subject_id does not match hadm_id": 1}
    assert skipped(res, "prescriptions") == {"unparseable startdate": 1, "missing drug": 1, "duplicate row": 1}
    assert skipped(res, "icustays") == {"discharge before admission": 1}
    assert kept(res, "patients") == {"age >= 90 at first admission: birth = first admission - 90 y": 1,
                                     "death from admissions.deathtime": 1,
                                     "death from hospital_expire_flag (at dischtime)": 1,
                                     "death from patients.dod (23:59:59 that day)": 1}


def test_mimic3_events_and_timing_rules(mimic3):
    res, df = mimic3
    d0, d3, d5 = "2100-01-01", "2100-01-03", "2100-01-05 12:00:00"
    expect = [
        (None, "GENDER//F"),
        (dt(2050, 6, 15), "MEDS_BIRTH"),
        (dt(2100, 1, 1, 10), "HOSPITAL_ADMISSION//EMERGENCY"),
        (dt(2100, 1, 1, 11), "ICU_ADMISSION//MICU"),
        # startdate on the admission day -> 23:59:59 that day; the ATC event beside it
        (dt(2100, 1, 1, 23, 59, 59), "ATC:J01XA01"), (dt(2100, 1, 1, 23, 59, 59), "MEDICATION//vancomycin hcl"),
        (dt(2100, 1, 3, 11), "ICU_DISCHARGE//CCU"),
        (dt(2100, 1, 3, 23, 59, 59), "ATC:C07AB02"), (dt(2100, 1, 3, 23, 59, 59), "MEDICATION//metoprolol tartrate"),
        # diagnoses and procedures at the discharge; a drug dated the discharge day at the discharge time;
        # a heparin flush keeps its name and gets no ATC event
        (dt(2100, 1, 5, 12), "ICD9CM:250.00"), (dt(2100, 1, 5, 12), "ICD9CM:428.0"),
        (dt(2100, 1, 5, 12), "ICD9CM:V58.61"), (dt(2100, 1, 5, 12), "ICD9PCS:38.93"),
        (dt(2100, 1, 5, 12), "ICD9PCS:99.04"), (dt(2100, 1, 5, 12), "MEDICATION//heparin flush (10 units/ml)"),
        (dt(2100, 1, 5, 12), "HOSPITAL_DISCHARGE//HOME"),
        (dt(2100, 2, 1, 8), "HOSPITAL_ADMISSION//EMERGENCY"),
        (dt(2100, 2, 3, 9), "DIAGNOSIS//ICD9//99999"),          # unmapped, kept
        (dt(2100, 2, 3, 9), "HOSPITAL_DISCHARGE//DEAD/EXPIRED"),
        (dt(2100, 2, 3, 9), "MEDS_DEATH"),                      # deathtime wins over dod (2100-02-03 00:00)
    ]
    assert events_of(df, 1) == expect, (d0, d3, d5)
    # subject 2: ~300 years old at admission -> birth = admission - 90 y; flag 1 without deathtime -> dischtime
    s2 = dict((c, t) for t, c in events_of(df, 2))
    assert s2["MEDS_BIRTH"] == dt(2110, 3, 1, 9, 30)
    assert s2["MEDS_DEATH"] == dt(2200, 3, 11, 18)
    # subject 3: out-of-hospital death from dod, at the end of that day
    s3 = dict((c, t) for t, c in events_of(df, 3))
    assert s3["MEDS_DEATH"] == dt(2101, 7, 4, 23, 59, 59)
    assert sorted(df["subject_id"].unique().to_list()) == [1, 2, 3]
    text = df.filter(pl.col("code") == "MEDICATION//vancomycin hcl")["text_value"].to_list()
    assert text == ["Vancomycin HCl|NDC:63323031461"]


def test_mimic3_coverage_and_unmapped(mimic3):
    res, _ = mimic3
    cov = {f: (e, r) for f, e, r, _ in res.coverage.iter_rows()}
    # dx: 428.0, 250.00, V58.61 (101), 99999 (102), 428.0 (201), 250.00 (303) -> 5 of 6
    # px: 38.93, 99.04 resolve, 0000 does not; drugs: vancomycin and metoprolol map, the flush
    # and the unknown drug do not
    assert cov == {"dx_icd9": (6, 5), "px_icd9": (3, 2), "drug": (4, 2)}
    unm = {(f, c): n for f, c, n in res.unmapped.iter_rows()}
    assert unm == {("dx_icd9", "DIAGNOSIS//ICD9//99999"): 1, ("px_icd9", "PROCEDURE//ICD9//0000"): 1,
                   ("drug", "MEDICATION//heparin flush (10 units/ml)"): 1, ("drug", "MEDICATION//zzzfantasy drug"): 1}


def test_file_names_case_insensitive_and_gz(tmp_path, mimic3):
    _, ref = mimic3
    src = tmp_path / "src"
    src.mkdir()
    names = {"PATIENTS.csv": "patients.CSV.GZ", "Admissions.csv": "ADMISSIONS.csv.gz",
             "diagnoses_icd.csv": "Diagnoses_ICD.csv", "procedures_icd.csv": "procedures_icd.csv.gz",
             "prescriptions.csv": "PRESCRIPTIONS.csv", "icustays.csv": "icustays.csv"}
    for old, new in names.items():
        data = (FIX / "mimic3" / old).read_bytes()
        (src / new).write_bytes(gzip.compress(data) if new.lower().endswith(".gz") else data)
    convert("mimic3", src, tmp_path / "out")
    got = read_meds(tmp_path / "out")
    assert got.equals(ref)


def test_missing_required_table_names_file_and_dataset(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIX / "mimic3", src)
    (src / "diagnoses_icd.csv").unlink()
    with pytest.raises(MissingTableError, match=r"mimic3: required table 'diagnoses_icd' not found"):
        convert("mimic3", src, tmp_path / "out")
    # an optional table that is absent is reported, the run goes on
    shutil.copytree(FIX / "mimic3", tmp_path / "src2")
    (tmp_path / "src2" / "icustays.csv").unlink()
    res = convert("mimic3", tmp_path / "src2", tmp_path / "out2")
    assert any(r["table"] == "icustays" and r["action"] == "noted" for r in res.ledger.rows)


def test_missing_columns_are_reported_and_the_run_goes_on(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIX / "mimic3", src)
    rx = pl.read_csv(src / "prescriptions.csv", infer_schema=False).drop("ndc")
    rx.write_csv(src / "prescriptions.csv")
    px = pl.read_csv(src / "procedures_icd.csv", infer_schema=False).drop("icd9_code")
    px.write_csv(src / "procedures_icd.csv")
    res = convert("mimic3", src, tmp_path / "out")
    noted = {(r["table"], r["reason"]) for r in res.ledger.rows if r["action"] == "noted"}
    assert ("prescriptions", "missing column ndc (set null)") in noted
    assert skipped(res, "procedures_icd") == {"missing column icd9_code": 3}
    df = read_meds(tmp_path / "out")
    assert df.filter(pl.col("code").str.starts_with("ICD9PCS:")).height == 0
    assert df.filter(pl.col("code") == "MEDICATION//vancomycin hcl")["text_value"].to_list() == ["Vancomycin HCl"]


def test_mimic4_layout(tmp_path):
    res = convert("mimic4", FIX / "mimic4", tmp_path)
    df = read_meds(tmp_path)
    assert skipped(res, "diagnoses_icd") == {"unknown icd_version": 1}
    assert skipped(res, "prescriptions") == {"missing starttime": 1}
    s10 = events_of(df, 10)
    assert (dt(2150, 4, 4, 17), "ICD9CM:428.0") in s10 and (dt(2150, 4, 4, 17), "ICD10CM:E11.9") in s10
    # chartdate -> 23:59:59 that day (the admission day too)
    assert (dt(2150, 4, 1, 23, 59, 59), "ICD10PCS:0DTJ4ZZ") in s10
    assert (dt(2150, 4, 2, 23, 59, 59), "ICD9PCS:38.93") in s10
    assert (dt(2150, 4, 1, 9), "ATC:B01AB01") in s10 and (dt(2150, 4, 1, 9), "MEDICATION//heparin") in s10
    assert (dt(2150, 4, 1, 9), "ICU_ADMISSION//Medical Intensive Care Unit (MICU)") in s10
    assert (dt(2098, 1, 1), "MEDS_BIRTH") in s10                 # 2150 - 52
    s11 = dict((c, t) for t, c in events_of(df, 11))
    assert s11["MEDS_BIRTH"] == dt(2070, 1, 1)                   # anchor_age 91 (> 89) counted as 90
    assert s11["MEDS_DEATH"] == dt(2161, 3, 5, 23, 59, 59)
    assert s11["GENDER//M"] is None


def test_eicu_timeline_codes_and_bad_rows(tmp_path):
    res = convert("eicu", FIX / "eicu", tmp_path)
    df = read_meds(tmp_path)
    assert skipped(res, "patient") == {"empty row": 1, "unparseable uniquepid": 1, "discharge before admission": 1}
    assert skipped(res, "diagnosis") == {"unknown patientunitstayid": 1, "duplicate row": 1}
    assert skipped(res, "medication") == {"cancelled order": 1, "missing drugname": 1}
    assert kept(res, "diagnosis") == {"icd9code holds several codes (split)": 2,
                                      "empty icd9code (diagnosis string kept)": 1}
    a = subject_id_of(pl.lit("002-1039"))
    sid_a = pl.select(a).item()
    ev = events_of(df, sid_a)
    # stay 10 starts 1 Jan 2015 23:36; unit 1001 8 min later; unit 1002 when 1001 ends (+2258 min);
    # hospital discharge at +2624 min; stay 11 (same year, 08:00) pushed to 1 day after that discharge
    expect = [
        (None, "GENDER//F"),
        (dt(1925, 1, 1, 23, 36), "MEDS_BIRTH"),                  # age "> 89" -> 90
        (dt(2015, 1, 1, 23, 36), "HOSPITAL_ADMISSION//Emergency Department"),
        (dt(2015, 1, 1, 23, 44), "ICU_ADMISSION//Med-Surg ICU"),
        (dt(2015, 1, 1, 23, 54), "ATC:J01XA01"), (dt(2015, 1, 1, 23, 54), "MEDICATION//vancomycin hcl 1 g iv solr"),
        (dt(2015, 1, 2, 0, 14), "ICD10CM:E23.0"), (dt(2015, 1, 2, 0, 14), "ICD9CM:253.2"),   # "253.2, E23.0"
        (dt(2015, 1, 3, 13, 14), "ICU_DISCHARGE//Med-Surg ICU"),  # a transfer: discharge sorts first
        (dt(2015, 1, 3, 13, 14), "ICU_ADMISSION//SICU"),
        # "E980.2, 965.00, T40.60": two ICD-9 codes and an ICD-10 code (not in the tiny vocabulary)
        (dt(2015, 1, 3, 13, 24), "DIAGNOSIS//ICD10//T40.60"), (dt(2015, 1, 3, 13, 24), "ICD9CM:965.00"),
        (dt(2015, 1, 3, 13, 24), "ICD9CM:E980.2"),
        (dt(2015, 1, 3, 18, 58), "ICU_DISCHARGE//SICU"),
        (dt(2015, 1, 3, 19, 20), "HOSPITAL_DISCHARGE//Home"),
        (dt(2015, 1, 4, 19, 20), "HOSPITAL_ADMISSION//Direct Admit"),
        (dt(2015, 1, 4, 19, 20), "ICU_ADMISSION//MICU"),
        (dt(2015, 1, 4, 21, 0), "DIAGNOSIS//EICU//cardiovascular|shock / hypotension|shock"),
        (dt(2015, 1, 5, 19, 20), "ICU_DISCHARGE//MICU"),
        (dt(2015, 1, 6, 19, 20), "HOSPITAL_DISCHARGE//Death"),
        (dt(2015, 1, 6, 19, 20), "MEDS_DEATH"),                  # hospitaldischargestatus Expired
    ]
    assert ev == expect
    sid_b = pl.select(subject_id_of(pl.lit("035-12345"))).item()
    b = dict((c, t) for t, c in events_of(df, sid_b))
    assert b["MEDS_DEATH"] == dt(2014, 1, 1, 15, 40)             # unit status Expired: unit discharge
    assert b["MEDICATION//hicl 8255"] == dt(2014, 1, 1, 13, 30)  # empty drugname, HICL kept; offset -30
    assert b["PROCEDURE//EICU//pulmonary|ventilation and oxygenation|mechanical ventilation"] == dt(2014, 1, 1, 14, 20)
    cov = {f: (e, r) for f, e, r, _ in res.coverage.iter_rows()}
    assert cov["dx_icd9"] == (3, 3) and cov["dx_icd10"] == (2, 1) and cov["dx_text"] == (1, 0)


def test_eicu_icd_version_preference(tmp_path):
    convert("eicu", FIX / "eicu", tmp_path / "a", eicu_icd="icd10")
    codes = read_meds(tmp_path / "a")["code"].to_list()
    assert "ICD10CM:E23.0" in codes and "ICD9CM:253.2" not in codes and "ICD9CM:965.00" not in codes
    convert("eicu", FIX / "eicu", tmp_path / "b", eicu_icd="icd9")
    codes = read_meds(tmp_path / "b")["code"].to_list()
    assert "ICD9CM:253.2" in codes and "ICD10CM:E23.0" not in codes and "DIAGNOSIS//ICD10//T40.60" not in codes


def test_eicu_subject_ids_stable_and_distinct():
    ids = pl.select(subject_id_of(pl.Series(["002-1039", "002-01039", "035-12345", "bad"]))).to_series().to_list()
    assert ids[0] == 4 * 10**12 + 2 * 10**9 + 1039 and ids[0] != ids[1] and ids[3] is None


def test_drug_ingredient_and_atc_choice():
    r = tiny_resolver()
    assert r.drug_atc("Vancomycin HCl") == "ATC:J01XA01"          # systemic before A07 / S01
    assert r.drug_atc("Vancomycin Oral Liquid") == "ATC:A07AA09"  # oral form: intestinal anti-infective
    assert r.drug_atc("Levofloxacin") == "ATC:J01MA12"
    assert r.drug_atc("Heparin Sodium") == "ATC:B01AB01"          # not C05BA03 (local) nor combinations
    assert r.drug_atc("Heparin Lock Flush") is None
    assert r.drug_atc("Metoprolol Succinate XL") == "ATC:C07AB02"
    assert r.drug_atc("ATORVASTATIN CALCIUM 40 MG PO TABS") == "ATC:C10AA05"
    assert r.drug_atc("Acetaminophen") == "ATC:N02BE01"           # US name -> INN
    assert r.drug_atc("Albuterol 0.083% Neb Soln") == "ATC:R03AC02"
    assert r.drug_atc("Unasyn") is None


def test_ndc_to_atc_is_opt_in(tmp_path):
    import zipfile
    csv = ('"ndc","rxcui","atc4","atc4_name","in_rxcui","has_min","in_tty","in_name","in_synonym",'
           '"in_umlscui","atc5","ddd","u","adm_r","whocc_note"\n'
           '"63323-314-61",1,NA,NA,1,FALSE,"IN","vancomycin",NA,NA,"J01XA01",NA,NA,NA,NA\n'
           '"0002-0800-01",2,NA,NA,2,FALSE,"IN","water",NA,NA,NA,NA,NA,NA,NA\n')
    z = tmp_path / "ndc.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ndc_map.csv", csv)
    codes = tiny_codes()
    from ehr.sources.codes import load_ndc_atc
    m = load_ndc_atc(z)
    assert m.rows() == [("63323031461", "J01XA01")]
    assert pl.select(ndc11(pl.Series(["0002-0800-01", "0", "", "63323031461", "12345-678-9"]))).to_series().to_list() \
        == ["00002080001", None, None, "63323031461", "12345067809"]
    assert SourceConfig().ndc_atc is None                         # never a default
    # with the map, an NDC maps even when the name does not
    src = tmp_path / "src"
    shutil.copytree(FIX / "mimic3", src)
    rx = pl.read_csv(src / "prescriptions.csv", infer_schema=False)
    rx.with_columns(pl.when(pl.col("row_id") == "1").then(pl.lit("Vanco Brandname")).otherwise(pl.col("drug"))
                    .alias("drug")).write_csv(src / "prescriptions.csv")
    convert_source(SourceConfig(dataset="mimic3", root=str(src), out=str(tmp_path / "o"), progress=False),
                   resolver=CodeResolver(codes, load_ndc_atc(z)))
    ev = read_meds(tmp_path / "o")
    assert events_of(ev, 1)[4:6] == [(dt(2100, 1, 1, 23, 59, 59), "ATC:J01XA01"),
                                     (dt(2100, 1, 1, 23, 59, 59), "MEDICATION//vanco brandname")]


def test_foreign_meds_directory_import(tmp_path):
    """A MIMIC-IV-MEDS-style directory: its codes mapped, its own splits kept."""
    from ehr.meds_io import write_shard, write_splits
    src = tmp_path / "foreign"
    rows = [(7, None, "GENDER//F"), (7, dt(2050, 1, 1), "MEDS_BIRTH"),
            (7, dt(2100, 1, 1, 10), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"),
            (7, dt(2100, 1, 1, 12), "MEDICATION//START//Heparin"),
            (7, dt(2100, 1, 1, 13), "LAB//50912//mg/dL"),
            (7, dt(2100, 1, 3, 10), "DIAGNOSIS//ICD//9//4280"), (7, dt(2100, 1, 3, 10), "DIAGNOSIS//ICD//10//E119"),
            (7, dt(2100, 1, 3, 10), "DIAGNOSIS//ICD//9//XXXX"), (7, dt(2100, 1, 3, 10), "PROCEDURE//ICD//10//0DTJ4ZZ"),
            (7, dt(2100, 1, 3, 10), "HOSPITAL_DISCHARGE//HOME"), (8, None, "GENDER//M"), (8, dt(2101, 1, 1), "DEATH")]
    df = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
                      orient="row").with_columns(pl.lit(None, dtype=pl.Float32).alias("numeric_value"),
                                                 pl.lit(None, dtype=pl.String).alias("text_value"))
    write_shard(df, src / "data" / "train" / "0.parquet")
    write_splits(pl.DataFrame({"subject_id": [7], "split": ["held_out"]}), src)
    res = convert("meds", src, tmp_path / "out")
    got = read_meds(tmp_path / "out")
    assert events_of(got, 7) == [
        (None, "GENDER//F"), (dt(2050, 1, 1), "MEDS_BIRTH"),
        (dt(2100, 1, 1, 10), "HOSPITAL_ADMISSION//EW EMER.//EMERGENCY ROOM"),
        (dt(2100, 1, 1, 12), "ATC:B01AB01"), (dt(2100, 1, 1, 12), "MEDICATION//heparin"),
        (dt(2100, 1, 1, 13), "LAB//50912//mg/dL"),
        (dt(2100, 1, 3, 10), "ICD9CM:428.0"), (dt(2100, 1, 3, 10), "ICD10CM:E11.9"),
        (dt(2100, 1, 3, 10), "DIAGNOSIS//ICD9//XXXX"), (dt(2100, 1, 3, 10), "ICD10PCS:0DTJ4ZZ"),
        (dt(2100, 1, 3, 10), "HOSPITAL_DISCHARGE//HOME")]
    assert events_of(got, 8) == [(None, "GENDER//M"), (dt(2101, 1, 1), "MEDS_DEATH")]
    splits = dict(pl.read_parquet(tmp_path / "out" / "metadata" / "subject_splits.parquet").iter_rows())
    assert splits[7] == "held_out"                                # theirs, not re-hashed
    assert kept(res, "subject_splits") == {"subject not in the source's splits (hashed)": 1}
    cov = {f: (e, r) for f, e, r, _ in res.coverage.iter_rows()}
    assert cov["dx_icd9"] == (2, 1) and cov["dx_icd10"] == (1, 1) and cov["drug"] == (1, 1)
    validate_meds_dir(tmp_path / "out")


def test_resolver_agrees_with_vocabulary_normalize():
    """The vectorised resolver uses the vocabulary's own spelling rules: same answers."""
    from medbase.paths import default_vocab_dir
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (scripts/build_vocab.py)")
    from medtok.codes.vocabulary import UnknownCodeError, Vocabulary
    vocab = Vocabulary.load(default_vocab_dir())
    r = CodeResolver.from_vocab_dir()
    cases = [("dx_icd9", "4280"), ("dx_icd9", "V5861"), ("dx_icd9", "E8889"), ("dx_icd9", "99999"),
             ("dx_icd10", "E119"), ("dx_icd10", "T40.60"), ("px_icd9", "3893"), ("px_icd9", "0000"),
             ("px_icd10", "0DTJ4ZZ"), ("dx_icd9", "4280x")]
    system = {"dx_icd9": "ICD9CM", "dx_icd10": "ICD10CM", "px_icd9": "ICD9PCS", "px_icd10": "ICD10PCS"}
    for fam, raw in cases:
        try:
            want = vocab.normalize(raw, system[fam])
        except UnknownCodeError:
            want = None
        assert r.resolve_one(fam, raw) == want, (fam, raw)

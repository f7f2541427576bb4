"""MIMIC-III and MIMIC-IV -> stage-1 MEDS events. The two differ only in their layouts
(declared below as data) and in how birth is given; the conversion is one function.

Rules (also in the notes / README):
- stay markers: `HOSPITAL_ADMISSION//<admission_type>` at admittime,
  `HOSPITAL_DISCHARGE//<discharge_location>` at dischtime, `ICU_ADMISSION//<first_careunit>`
  at intime, `ICU_DISCHARGE//<last_careunit>` at outtime;
- diagnoses carry the discharge time (MIMIC codes them at discharge); MIMIC-III procedures
  too (no date); MIMIC-IV procedures their `chartdate` by the date rule;
- the date rule (MIMIC-III `startdate`, MIMIC-IV `chartdate`): a date without a time is
  stamped 23:59:59 that day, or the discharge time when it is the discharge day (never
  earlier than what it records could have happened; a drug started on the admission day is
  therefore visible from the end of that day, not from the admission time);
- birth: MIMIC-III `dob`; a patient aged >= 90 at the first admission (MIMIC shifts them to
  ~300 years) gets birth = first admission - 90 years. MIMIC-IV: 1 January of
  `anchor_year - anchor_age`, anchor_age capped at 90 (MIMIC-IV writes 91 for > 89);
- death (one `MEDS_DEATH` per patient), first available of: the latest admissions.deathtime;
  the dischtime of the latest admission with hospital_expire_flag = 1; patients.dod
  (a date: 23:59:59 that day). The flag is parsed as an integer (never a truthy string);
- sex: `GENDER//F` / `GENDER//M` (static), another value `GENDER//<value>`;
- every row of a table with `hadm_id` (admissions, icustays, diagnoses, procedures,
  prescriptions) carries it as the event's `admission_id`: stays are paired by it and rows
  belong to their admission by it, whatever their date (rows dated outside their stay are
  kept at their own date and counted: "date before admission" / "date after discharge").
"""

from __future__ import annotations

import polars as pl

from ehr.sources.base import Context, stage1, end_of_day_rule
from ehr.sources.codes import ndc11
from ehr.sources.tables import Col, TableSpec, add_note, add_reason
from ehr.schema import ADMISSION_PREFIX, DISCHARGE_PREFIX, ICU_ADMISSION_PREFIX, ICU_DISCHARGE_PREFIX, \
    NDC_SEPARATOR

ID = "id"
_ADM = {"subject_id": Col("subject_id", ID), "hadm_id": Col("hadm_id", ID),
        "admittime": Col("admittime", "datetime", True), "dischtime": Col("dischtime", "datetime", True),
        "deathtime": Col("deathtime", "datetime"), "admission_type": Col("admission_type"),
        "discharge_location": Col("discharge_location"),
        "hospital_expire_flag": Col("hospital_expire_flag", "int")}
_ICU = {"subject_id": Col("subject_id", ID), "hadm_id": Col("hadm_id", ID),
        "intime": Col("intime", "datetime", True), "outtime": Col("outtime", "datetime", True),
        "first_careunit": Col("first_careunit"), "last_careunit": Col("last_careunit")}

MIMIC3 = {
    "patients": TableSpec("patients", {"subject_id": Col("subject_id", ID), "gender": Col("gender"),
                                       "dob": Col("dob", "datetime"), "dod": Col("dod", "date")}),
    "admissions": TableSpec("admissions", _ADM),
    "icustays": TableSpec("icustays", {**_ICU, "icustay_id": Col("icustay_id", ID)}, required=False),
    "diagnoses_icd": TableSpec("diagnoses_icd", {"subject_id": Col("subject_id", ID), "hadm_id": Col("hadm_id", ID),
                                                 "icd_code": Col("icd9_code", required=True),
                                                 "icd_version": Col(None, "const", const="9")}),
    "procedures_icd": TableSpec("procedures_icd", {"subject_id": Col("subject_id", ID), "hadm_id": Col("hadm_id", ID),
                                                   "icd_code": Col("icd9_code", required=True),
                                                   "icd_version": Col(None, "const", const="9")}, required=False),
    "prescriptions": TableSpec("prescriptions", {"subject_id": Col("subject_id", ID), "hadm_id": Col("hadm_id", ID),
                                                 "start": Col("startdate", "date", True),
                                                 "drug": Col("drug", required=True), "ndc": Col("ndc")},
                               required=False),
}

MIMIC4 = {
    "patients": TableSpec("hosp/patients", {"subject_id": Col("subject_id", ID), "gender": Col("gender"),
                                            "anchor_age": Col("anchor_age", "int", True),
                                            "anchor_year": Col("anchor_year", "int", True),
                                            "dod": Col("dod", "date")}),
    "admissions": TableSpec("hosp/admissions", _ADM),
    "icustays": TableSpec("icu/icustays", {**_ICU, "icustay_id": Col("stay_id", ID)}, required=False),
    "diagnoses_icd": TableSpec("hosp/diagnoses_icd", {"subject_id": Col("subject_id", ID),
                                                      "hadm_id": Col("hadm_id", ID),
                                                      "icd_code": Col("icd_code", required=True),
                                                      "icd_version": Col("icd_version", required=True)}),
    "procedures_icd": TableSpec("hosp/procedures_icd", {"subject_id": Col("subject_id", ID),
                                                        "hadm_id": Col("hadm_id", ID),
                                                        "icd_code": Col("icd_code", required=True),
                                                        "icd_version": Col("icd_version", required=True),
                                                        "chartdate": Col("chartdate", "date", True)},
                                required=False),
    "prescriptions": TableSpec("hosp/prescriptions", {"subject_id": Col("subject_id", ID),
                                                      "hadm_id": Col("hadm_id", ID),
                                                      "start": Col("starttime", "datetime", True),
                                                      "drug": Col("drug", required=True), "ndc": Col("ndc")},
                               required=False),
}
LAYOUTS = {"mimic3": MIMIC3, "mimic4": MIMIC4}
AGE_CAP = 90
EOD = pl.duration(hours=23, minutes=59, seconds=59)


def _gender_code(col: str = "gender") -> pl.Expr:
    g = pl.col(col).str.to_uppercase()
    return (pl.when(g.is_in(["F", "FEMALE"])).then(pl.lit("GENDER//F"))
            .when(g.is_in(["M", "MALE"])).then(pl.lit("GENDER//M")).otherwise("GENDER//" + g))


def convert_mimic(ctx: Context, layout: dict[str, TableSpec]) -> list[pl.LazyFrame]:
    pat = ctx.read("patients", layout["patients"])
    pat = ctx.settle(add_reason(pat, ~pl.col("subject_id").is_first_distinct(), "duplicate subject_id"), "patients")
    subjects = pat.select("subject_id").collect()["subject_id"]

    adm = ctx.read("admissions", layout["admissions"])
    adm = add_reason(adm, ~pl.col("subject_id").is_in(subjects.implode()), "unknown subject_id")
    adm = add_reason(adm, pl.col("dischtime") < pl.col("admittime"), "discharge before admission")
    adm = add_reason(adm, ~pl.col("hadm_id").is_first_distinct(), "duplicate hadm_id")
    adm = ctx.settle(adm, "admissions")
    stays = adm.select("hadm_id", pl.col("subject_id").alias("_adm_subject"), "admittime", "dischtime")

    def with_stay(lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.join(stays, on="hadm_id", how="left")
        lf = add_reason(lf, pl.col("_adm_subject").is_null(), "no valid admission (hadm_id)")
        return add_reason(lf, pl.col("_adm_subject") != pl.col("subject_id"), "subject_id does not match hadm_id")

    events = [_static_events(ctx, pat, adm)]
    events.append(stage1(adm, time="admittime", order="admission", stay="admittime", admission_id="hadm_id",
                         code=ADMISSION_PREFIX + pl.col("admission_type").fill_null("UNKNOWN")))
    events.append(stage1(adm, time="dischtime", order="discharge", stay="admittime", admission_id="hadm_id",
                         code=DISCHARGE_PREFIX + pl.col("discharge_location").fill_null("UNKNOWN")))

    icu = ctx.read("icustays", layout["icustays"])
    if icu is not None:
        icu = with_stay(icu)
        icu = add_reason(icu, pl.col("outtime") < pl.col("intime"), "discharge before admission")
        icu = ctx.settle(add_reason(icu, ~pl.col("icustay_id").is_first_distinct(), "duplicate icustay_id"), "icustays")
        events.append(stage1(icu, time="intime", order="icu_admission", stay="admittime", admission_id="hadm_id",
                             code=ICU_ADMISSION_PREFIX + pl.col("first_careunit").fill_null("UNKNOWN")))
        events.append(stage1(icu, time="outtime", order="icu_discharge", stay="admittime", admission_id="hadm_id",
                             code=ICU_DISCHARGE_PREFIX + pl.col("last_careunit").fill_null("UNKNOWN")))

    for name, kind in (("diagnoses_icd", "dx"), ("procedures_icd", "px")):
        lf = ctx.read(name, layout[name])
        if lf is None:
            continue
        lf = with_stay(lf)
        lf = add_reason(lf, ~pl.col("icd_version").is_in(["9", "10"]), "unknown icd_version")
        if "chartdate" in layout[name].columns:
            lf = add_note(lf, pl.col("chartdate").dt.date() < pl.col("admittime").dt.date(), "date before admission")
            lf = add_note(lf, pl.col("chartdate").dt.date() > pl.col("dischtime").dt.date(), "date after discharge")
            time = end_of_day_rule(pl.col("chartdate"), pl.col("dischtime"))
        else:
            time = pl.col("dischtime")   # coded at discharge
        lf = ctx.settle(lf, name)
        events.append(stage1(lf, time=time, stay="admittime", admission_id="hadm_id", family=f"{kind}_icd" + pl.col("icd_version"),
                             raw=pl.col("icd_code")))

    rx = ctx.read("prescriptions", layout["prescriptions"])
    if rx is not None:
        rx = with_stay(rx)
        date_only = layout["prescriptions"].columns["start"].kind == "date"
        rx = add_note(rx, pl.col("start").dt.date() < pl.col("admittime").dt.date(), "date before admission")
        rx = add_note(rx, pl.col("start").dt.date() > pl.col("dischtime").dt.date(), "date after discharge")
        rx = ctx.settle(rx, "prescriptions")
        time = end_of_day_rule(pl.col("start"), pl.col("dischtime")) if date_only \
            else pl.col("start")
        ndc = ndc11(pl.col("ndc"))
        text = pl.when(ndc.is_not_null()).then(pl.col("drug") + NDC_SEPARATOR + ndc).otherwise(pl.col("drug"))
        events.append(stage1(rx, time=time, stay="admittime", admission_id="hadm_id", family=pl.lit("drug"), raw="drug", text=text, ndc=ndc))
    return events


def _static_events(ctx: Context, pat: pl.LazyFrame, adm: pl.LazyFrame) -> pl.LazyFrame:
    """Sex, birth and death, one frame (small: one row per patient)."""
    first = adm.group_by("subject_id").agg(pl.col("admittime").min().alias("_first"))
    p = pat.join(first, on="subject_id", how="left")
    if "dob" in p.collect_schema().names():
        capped = pl.col("dob").dt.offset_by(f"{AGE_CAP}y") <= pl.col("_first")
        birth = pl.when(capped).then(pl.col("_first").dt.offset_by(f"-{AGE_CAP}y")).otherwise(pl.col("dob"))
        rule = f"age >= {AGE_CAP} at first admission: birth = first admission - {AGE_CAP} y"
    else:
        capped = pl.col("anchor_age") > 89
        year = pl.col("anchor_year") - pl.min_horizontal(pl.col("anchor_age"), pl.lit(AGE_CAP))
        birth = pl.datetime(year, 1, 1, time_unit="us")
        rule = f"anchor_age > 89: counted as {AGE_CAP}"
    deaths = (adm.group_by("subject_id").agg(
        pl.col("deathtime").max().alias("_d1"),
        pl.col("dischtime").filter(pl.col("hospital_expire_flag") == 1).max().alias("_d2")))
    p = p.join(deaths, on="subject_id", how="left").with_columns(
        birth.alias("_birth"), capped.fill_null(False).alias("_capped"),
        (pl.col("dod") + EOD).alias("_d3"))
    p = p.with_columns(pl.coalesce("_d1", "_d2", "_d3").alias("_death"))
    counts = p.select(pl.col("_capped").sum().alias("a"), pl.col("_d1").is_not_null().sum().alias("b"),
                      (pl.col("_d1").is_null() & pl.col("_d2").is_not_null()).sum().alias("c"),
                      (pl.col("_d1").is_null() & pl.col("_d2").is_null() & pl.col("_d3").is_not_null()).sum().alias("d"),
                      pl.col("_birth").is_null().sum().alias("e")).collect().row(0)
    for n, text in zip(counts, [rule, "death from admissions.deathtime",
                                "death from hospital_expire_flag (at dischtime)",
                                "death from patients.dod (23:59:59 that day)", "no birth (missing date of birth)"]):
        ctx.ledger.add(ctx.dataset, "patients", text, n, action="kept")
    return pl.concat([
        stage1(p.filter(pl.col("gender").is_not_null()), time=pl.lit(None), code=_gender_code(), order="birth"),
        stage1(p.filter(pl.col("_birth").is_not_null()), time="_birth", code=pl.lit("MEDS_BIRTH"), order="birth"),
        stage1(p.filter(pl.col("_death").is_not_null()), time="_death", code=pl.lit("MEDS_DEATH"), order="death"),
    ])

"""eICU-CRD -> stage-1 MEDS events.

eICU has no dates: every time is an offset in minutes from the unit (ICU) admission, plus
the hospital discharge year and the hospital admission time of day. The rule used here:
- patient = `uniquepid` ("002-1039"), subject_id = len(B)*10^12 + A*10^9 + B for "A-B"
  (stable, readable, collision-free: the length term keeps "002-01039" apart from "002-1039");
- a hospital stay (`patienthealthsystemstayid`) starts at 1 January of its
  `hospitaldischargeyear` at `hospitaladmittime24`; a patient's stays are ordered by
  (year, patienthealthsystemstayid) and a stay that would start less than one day after the
  previous stay's hospital discharge is pushed to exactly one day after it. The gap between
  two hospital stays is therefore invented: tasks must not use it (dataset.json says
  `relative_times`);
- unit admission = hospital admission - `hospitaladmitoffset` (unit stays of a hospital stay
  are thereby ordered by their hospital admission offsets); an event's time = its unit
  admission + its offset; unit discharge = unit admission + `unitdischargeoffset`, hospital
  discharge = unit admission + `hospitaldischargeoffset`;
- age: "> 89" -> 90; birth = the first hospital stay's admission - age years;
- death: unit discharge time if `unitdischargestatus` is "Expired", else hospital discharge
  time if `hospitaldischargestatus` is "Expired";
- `icd9code` holds zero, one or several codes ("253.2, E23.0", "E980.2, 965.00, T40.60"):
  split on commas; a token is ICD-9 when it looks like one (ddd[.dd], Vdd[.dd], Eddd[.d]),
  else ICD-10 (an ambiguous "V12.5" is read as ICD-9, eICU lists ICD-9 first). Option
  `eicu_icd`: "both" (default) keeps every code, "icd9" / "icd10" keep one version when the
  field has it. An empty field keeps the diagnosis string (`DIAGNOSIS//EICU//<path>`);
- every event of a hospital stay carries `patienthealthsystemstayid` as its `admission_id`
  (stays are paired and rows assigned by it); ICU markers of a unit stay are paired within
  their hospital stay in time order (unit stays of one hospital stay do not overlap);
- medication at `drugstartoffset`; cancelled orders (`drugordercancelled` = Yes) skipped;
  an empty drugname with a HICL number becomes "HICL <n>"; treatments at `treatmentoffset`.
"""

from __future__ import annotations

import polars as pl

from ehr.schema import ADMISSION_PREFIX, DISCHARGE_PREFIX, ICU_ADMISSION_PREFIX, ICU_DISCHARGE_PREFIX
from ehr.sources.base import Context, stage1
from ehr.sources.mimic import _gender_code
from ehr.sources.tables import Col, TableSpec, add_note, add_reason

ID = "id"
EICU = {
    "patient": TableSpec("patient", {
        "unit_stay": Col("patientunitstayid", ID), "hosp_stay": Col("patienthealthsystemstayid", ID),
        "uniquepid": Col("uniquepid", required=True), "gender": Col("gender"), "age": Col("age"),
        "admit_tod": Col("hospitaladmittime24", required=True),
        "hosp_admit_offset": Col("hospitaladmitoffset", "int", True),
        "admit_source": Col("hospitaladmitsource"),
        "year": Col("hospitaldischargeyear", "int", True),
        "hosp_disch_offset": Col("hospitaldischargeoffset", "int", True),
        "disch_location": Col("hospitaldischargelocation"), "hosp_status": Col("hospitaldischargestatus"),
        "unittype": Col("unittype"), "unit_disch_offset": Col("unitdischargeoffset", "int", True),
        "unit_status": Col("unitdischargestatus"), "unitvisitnumber": Col("unitvisitnumber", "int")},
        row_id_columns=()),
    "diagnosis": TableSpec("diagnosis", {
        "unit_stay": Col("patientunitstayid", ID), "offset": Col("diagnosisoffset", "int", True),
        "icd9code": Col("icd9code"), "diagnosisstring": Col("diagnosisstring")},
        row_id_columns=("diagnosisid",)),
    "medication": TableSpec("medication", {
        "unit_stay": Col("patientunitstayid", ID), "offset": Col("drugstartoffset", "int", True),
        "drugname": Col("drugname"), "hicl": Col("drughiclseqno"), "cancelled": Col("drugordercancelled")},
        row_id_columns=("medicationid",), required=False),
    "treatment": TableSpec("treatment", {
        "unit_stay": Col("patientunitstayid", ID), "offset": Col("treatmentoffset", "int", True),
        "treatmentstring": Col("treatmentstring", required=True)},
        row_id_columns=("treatmentid",), required=False),
}
ICD9_TOKEN = r"^(\d{3}(\.?\d{1,2})?|V\d{2}(\.?\d{1,2})?|E\d{3}(\.?\d)?)$"
PID = r"^(\d{1,3})-(\d{1,9})$"
AGE_CAP = 90


def subject_id_of(pid: pl.Expr) -> pl.Expr:
    """uniquepid "A-B" -> len(B)*10^12 + A*10^9 + B (null when not of that form)."""
    a = pid.str.extract(PID, 1)
    b = pid.str.extract(PID, 2)
    return (b.str.len_chars().cast(pl.Int64) * 10**12 + a.cast(pl.Int64) * 10**9 + b.cast(pl.Int64))


def _minutes(col: str | pl.Expr) -> pl.Expr:
    return pl.duration(minutes=pl.col(col) if isinstance(col, str) else col)


def convert_eicu(ctx: Context) -> list[pl.LazyFrame]:
    p = ctx.read("patient", EICU["patient"])
    tod = pl.col("admit_tod").str.extract_groups(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
    p = p.with_columns(subject_id_of(pl.col("uniquepid")).alias("subject_id"),
                       (tod.struct.field("1").cast(pl.Int64) * 3600 + tod.struct.field("2").cast(pl.Int64) * 60
                        + tod.struct.field("3").cast(pl.Int64).fill_null(0)).alias("_tod_s"))
    p = add_reason(p, pl.col("subject_id").is_null(), "unparseable uniquepid")
    p = add_reason(p, pl.col("_tod_s").is_null(), "unparseable hospitaladmittime24")
    p = add_reason(p, pl.col("unit_disch_offset") < 0, "discharge before admission")
    p = add_reason(p, pl.col("hosp_disch_offset") < pl.col("hosp_admit_offset"), "discharge before admission")
    p = add_reason(p, ~pl.col("unit_stay").is_first_distinct(), "duplicate patientunitstayid")
    age = pl.col("age").str.strip_chars()
    p = add_note(p, age.str.contains(r"^>\s*89$"), f"age '> 89' counted as {AGE_CAP}")
    p = add_note(p, pl.col("age").is_not_null() & ~age.str.contains(r"^(>\s*89|\d{1,3})$"), "unparseable age (no birth)")
    p = p.with_columns(pl.when(age.str.contains(r"^>\s*89$")).then(pl.lit(AGE_CAP))
                       .otherwise(age.cast(pl.Int64, strict=False)).alias("_age"))
    p = ctx.settle(p, "patient")

    # hospital stays: synthetic absolute start times (see the module docstring)
    hs = (p.sort(["subject_id", "hosp_stay", "unitvisitnumber", "hosp_admit_offset"], descending=[False, False, False, True])
          .group_by(["subject_id", "hosp_stay"], maintain_order=True)
          .agg(pl.col("year").first(), pl.col("_tod_s").first(), pl.col("_age").drop_nulls().first(),
               pl.col("admit_source").first(), pl.col("disch_location").first(), pl.col("gender").first(),
               (pl.col("hosp_disch_offset") - pl.col("hosp_admit_offset")).max().alias("_los_min"))
          .sort(["subject_id", "year", "hosp_stay"])
          .with_columns((pl.datetime(pl.col("year"), 1, 1, time_unit="us") + pl.duration(seconds=pl.col("_tod_s")))
                        .alias("_base"),
                        (_minutes("_los_min") + pl.duration(days=1)).alias("_span"))
          .with_columns(pl.col("_span").cum_sum().shift(1).fill_null(pl.duration(days=0)).over("subject_id").alias("_C"))
          .with_columns((pl.col("_base") - pl.col("_C")).cum_max().over("subject_id").alias("_S"))
          .with_columns((pl.col("_S") + pl.col("_C")).alias("_hadmit"))
          .with_columns((pl.col("_hadmit") + _minutes("_los_min")).alias("_hdisch"))
          .collect().lazy())
    units = (p.join(hs.select("subject_id", "hosp_stay", "_hadmit"), on=["subject_id", "hosp_stay"], how="inner")
             .with_columns((pl.col("_hadmit") - _minutes("hosp_admit_offset")).alias("_uadmit"))
             .with_columns((pl.col("_uadmit") + _minutes("unit_disch_offset")).alias("_udisch"),
                           (pl.col("_uadmit") + _minutes("hosp_disch_offset")).alias("_hdisch"))
             .collect().lazy())

    first = hs.group_by("subject_id", maintain_order=True).agg(pl.col("gender").first())
    aged = (hs.filter(pl.col("_age").is_not_null()).group_by("subject_id", maintain_order=True)
            .agg(pl.col("_hadmit").first(), pl.col("_age").first()))
    birth = pl.col("_hadmit").dt.offset_by(pl.format("-{}y", pl.col("_age")))
    deaths = (units.with_columns(pl.when(pl.col("unit_status") == "Expired").then(pl.col("_udisch"))
                                 .when(pl.col("hosp_status") == "Expired").then(pl.col("_hdisch")).alias("_death"))
              .group_by("subject_id").agg(pl.col("_death").min()).filter(pl.col("_death").is_not_null()))
    events = [
        stage1(first.filter(pl.col("gender").is_not_null()), time=pl.lit(None), code=_gender_code(), order="birth"),
        stage1(aged, time=birth, code=pl.lit("MEDS_BIRTH"), order="birth"),
        stage1(deaths, time="_death", code=pl.lit("MEDS_DEATH"), order="death"),
        stage1(hs, time="_hadmit", order="admission", stay="_hadmit", admission_id="hosp_stay", code=ADMISSION_PREFIX + pl.col("admit_source").fill_null("UNKNOWN")),
        stage1(hs, time="_hdisch", order="discharge", stay="_hadmit", admission_id="hosp_stay",
               code=DISCHARGE_PREFIX + pl.col("disch_location").fill_null("UNKNOWN")),
        stage1(units, time="_uadmit", order="icu_admission", stay="_hadmit", admission_id="hosp_stay", code=ICU_ADMISSION_PREFIX + pl.col("unittype").fill_null("UNKNOWN")),
        stage1(units, time="_udisch", order="icu_discharge", stay="_hadmit", admission_id="hosp_stay", code=ICU_DISCHARGE_PREFIX + pl.col("unittype").fill_null("UNKNOWN")),
    ]
    unit_times = units.select("unit_stay", pl.col("subject_id").alias("_sid"), "_uadmit", "_hadmit", "hosp_stay")

    def timed(lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.join(unit_times, on="unit_stay", how="left")
        return add_reason(lf, pl.col("_sid").is_null(), "unknown patientunitstayid")

    dx = timed(ctx.read("diagnosis", EICU["diagnosis"]))
    n_codes = pl.col("icd9code").str.split(",").list.eval(pl.element().str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != "")).list.len().fill_null(0)
    dx = add_note(dx, n_codes > 1, "icd9code holds several codes (split)")
    dx = add_note(dx, n_codes == 0, "empty icd9code (diagnosis string kept)")
    dx = add_reason(dx, (n_codes == 0) & pl.col("diagnosisstring").is_null(), "empty icd9code and diagnosisstring")
    dx = ctx.settle(dx, "diagnosis").with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
                                                  (pl.col("_uadmit") + _minutes("offset")).alias("_t"))
    coded = (dx.filter(pl.col("icd9code").is_not_null())
             .with_columns(pl.col("icd9code").str.split(",").alias("_tok")).explode("_tok", empty_as_null=True)
             .with_columns(pl.col("_tok").str.strip_chars().str.to_uppercase())
             .filter(pl.col("_tok") != "")
             .with_columns(pl.when(pl.col("_tok").str.contains(ICD9_TOKEN)).then(pl.lit("dx_icd9"))
                           .otherwise(pl.lit("dx_icd10")).alias("_fam")))
    if ctx.eicu_icd != "both":
        want = "dx_" + ctx.eicu_icd
        coded = coded.filter((pl.col("_fam") == want) | ~(pl.col("_fam") == want).any().over("_row"))
    events.append(stage1(coded, subject="_sid", time="_t", stay="_hadmit", admission_id="hosp_stay", family="_fam", raw="_tok"))
    events.append(stage1(dx.filter(pl.col("icd9code").is_null()), subject="_sid", time="_t", stay="_hadmit", admission_id="hosp_stay",
                         family=pl.lit("dx_text"), raw="diagnosisstring"))

    med = ctx.read("medication", EICU["medication"])
    if med is not None:
        med = timed(med)
        med = add_reason(med, pl.col("cancelled").str.to_lowercase() == "yes", "cancelled order")
        med = add_reason(med, pl.col("drugname").is_null() & pl.col("hicl").is_null(), "missing drugname")
        med = add_note(med, pl.col("drugname").is_null(), "empty drugname (HICL number kept)")
        med = ctx.settle(med, "medication")
        name = pl.coalesce(pl.col("drugname"), "HICL " + pl.col("hicl").str.replace(r"\.0$", ""))
        events.append(stage1(med, subject="_sid", time=pl.col("_uadmit") + _minutes("offset"), stay="_hadmit", admission_id="hosp_stay",
                             family=pl.lit("drug"), raw=name, text=name))
    tr = ctx.read("treatment", EICU["treatment"])
    if tr is not None:
        tr = ctx.settle(timed(tr), "treatment")
        events.append(stage1(tr, subject="_sid", time=pl.col("_uadmit") + _minutes("offset"), stay="_hadmit", admission_id="hosp_stay",
                             family=pl.lit("treatment"), raw="treatmentstring"))
    return events

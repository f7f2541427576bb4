"""The one internal event form: MEDS (package `meds` 0.4), held as polars frames.

Events: `subject_id` int64, `time` datetime[us] (null = static), `code` str,
`numeric_value` float32 (nullable), `text_value` str (nullable); a subject's events
together, sorted by time (static rows first).

Code conventions written by the project's converters (and expected by its tasks):
- `MEDS_BIRTH` (time = birth), `MEDS_DEATH` (time = death), `GENDER//F` / `GENDER//M` (static);
- stay markers `HOSPITAL_ADMISSION//<type>` / `HOSPITAL_DISCHARGE//<location>` and
  `ICU_ADMISSION//<unit>` / `ICU_DISCHARGE//<unit>` (matched by prefix);
- diagnoses and procedures resolved by the project vocabulary are written as vocabulary
  code ids (`ICD9CM:428.0`, `ICD10CM:E11.9`, `ICD9PCS:38.93`, `ICD10PCS:0DTJ4ZZ`); codes
  that do not resolve keep their source spelling under a family prefix
  (`DIAGNOSIS//ICD9//XXXX`, `PROCEDURE//ICD10//...`) and are counted as unmapped;
- drugs: `MEDICATION//<source name, lower case>` (text_value keeps the source name as
  written, and the NDC where given, as `<name>|NDC:<11 digits>`); the ingredient's ATC code,
  where the offline data maps it, is a separate `ATC:<code>` event at the same time (none for
  line flushes / lock solutions);
- eICU diagnoses without an ICD code keep their diagnosis string (`DIAGNOSIS//EICU//<path>`)
  and eICU treatments are `PROCEDURE//EICU//<path>`: kept, counted as unmapped.
MIMIC stamps diagnoses at discharge: their events carry the discharge time, so a task
predicting during the stay never sees them when its input ends at the prediction time.
"""

from __future__ import annotations

import polars as pl

SUBJECT_ID, TIME, CODE, NUMERIC_VALUE, TEXT_VALUE = "subject_id", "time", "code", "numeric_value", "text_value"
PREDICTION_TIME = "prediction_time"
# An extra, nullable column (MEDS allows extra data columns): the source's own id of the
# hospital stay an event belongs to (MIMIC `hadm_id`, eICU `patienthealthsystemstayid`), null
# where the source has none (static rows, births, deaths, a foreign MEDS dataset without it).
# Stays are paired and events assigned to stays by it (`ehr.tasks.stays`); written, read and
# imported with the MEDS columns.
ADMISSION_ID = "admission_id"

EVENT_SCHEMA: dict[str, pl.DataType] = {
    SUBJECT_ID: pl.Int64,
    TIME: pl.Datetime("us"),
    CODE: pl.String,
    NUMERIC_VALUE: pl.Float32,
    TEXT_VALUE: pl.String,
    ADMISSION_ID: pl.Int64,
}
MEDS_COLUMNS = (SUBJECT_ID, TIME, CODE, NUMERIC_VALUE, TEXT_VALUE)   # the five of `meds.DataSchema`

BIRTH = "MEDS_BIRTH"
DEATH = "MEDS_DEATH"
GENDER_PREFIX = "GENDER//"
ADMISSION_PREFIX = "HOSPITAL_ADMISSION//"
DISCHARGE_PREFIX = "HOSPITAL_DISCHARGE//"
ICU_ADMISSION_PREFIX = "ICU_ADMISSION//"
ICU_DISCHARGE_PREFIX = "ICU_DISCHARGE//"
MEDICATION_PREFIX = "MEDICATION//"
ATC_PREFIX = "ATC:"
DIAGNOSIS_SYSTEMS = ("ICD9CM", "ICD10CM")
PROCEDURE_SYSTEMS = ("ICD9PCS", "ICD10PCS")

SPLITS = ("train", "tuning", "held_out")   # MEDS split names

# Code families for coverage reports: family -> vocabulary system its source codes resolve in
# (None: the family has no vocabulary; its events count as unmapped by construction).
FAMILY_SYSTEM: dict[str, str | None] = {
    "dx_icd9": "ICD9CM", "dx_icd10": "ICD10CM", "px_icd9": "ICD9PCS", "px_icd10": "ICD10PCS",
    "drug": "ATC",            # resolved = the drug maps to an ATC code (ingredient name or NDC)
    "dx_text": None,          # eICU diagnosis rows with no ICD code: the diagnosis string is kept
    "treatment": None,        # eICU treatment strings
}
# spelling of a source code that does not resolve: `<prefix><source code>`
UNMAPPED_PREFIX = {
    "dx_icd9": "DIAGNOSIS//ICD9//", "dx_icd10": "DIAGNOSIS//ICD10//",
    "px_icd9": "PROCEDURE//ICD9//", "px_icd10": "PROCEDURE//ICD10//",
    "dx_text": "DIAGNOSIS//EICU//", "treatment": "PROCEDURE//EICU//",
}
NDC_SEPARATOR = "|NDC:"


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def conform_events(df: pl.DataFrame) -> pl.DataFrame:
    """Cast to the event schema (missing optional columns added as nulls) and sort each
    subject's events by time, static rows first."""
    for col, dtype in EVENT_SCHEMA.items():
        if col not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(col))
    df = df.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()] +
                   [c for c in df.columns if c not in EVENT_SCHEMA])
    return df.sort([SUBJECT_ID, TIME], nulls_last=False, maintain_order=True)

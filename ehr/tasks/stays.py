"""Hospital stays and code families derived from MEDS events, vectorised (polars).

Every stay-based task starts here. Rules (stated once, used by every task):
- a stay is a `HOSPITAL_ADMISSION//*` event paired with the `HOSPITAL_DISCHARGE//*` event that
  follows it among the subject's stay markers in time order; at the same instant a discharge
  comes before an admission, so a transfer whose next admission starts at the very time of the
  discharge is two stays. An admission followed by another admission (no discharge of its
  own) or by nothing is dropped: its end is unknown. A zero-length stay (admission and
  discharge at the same instant) is therefore dropped too. `stay_stats` counts them.
- in-hospital death: the discharge code names a death (`DIED`, `DEAD`, `EXPIRED`, `DEATH`,
  case-insensitive, e.g. MIMIC-III `DEAD/EXPIRED`, MIMIC-IV `DIED`) or the subject's
  `MEDS_DEATH` time falls in [admission, discharge] (the converters stamp a date-only death
  at 23:59:59 of its day, so a death on the day of a discharge home is not in-hospital).
- an event belongs to a stay when admission <= time <= discharge. Discharge-stamped families
  (diagnoses) are matched to the stay whose discharge is the first at or after the event, so a
  diagnosis stamped at a discharge that coincides with the next admission stays with its own
  stay; other events go to the latest admission at or before them.
- code families: diagnoses `ICD9CM:` / `ICD10CM:` / `DIAGNOSIS//...`, procedures `ICD9PCS:` /
  `ICD10PCS:` / `PROCEDURE//...`, drugs `MEDICATION//...` and `ATC:...`.
"""

from __future__ import annotations

import polars as pl

from ehr.schema import (ADMISSION_PREFIX, ATC_PREFIX, BIRTH, CODE, DEATH, DISCHARGE_PREFIX,
                        MEDICATION_PREFIX, SUBJECT_ID, TIME)

DEATH_DISCHARGE_PATTERN = r"(?i)(DIED|DEAD|EXPIRED|DEATH)"
DIAGNOSIS_PATTERN = r"^(ICD9CM:|ICD10CM:|DIAGNOSIS//)"
# codes a MIMIC-like source stamps at discharge (default for the discharge-stamped guard)
DISCHARGE_STAMPED_PATTERN = DIAGNOSIS_PATTERN

STAY_COLUMNS = ["subject_id", "stay", "admit", "discharge", "died", "discharge_code", "birth", "death"]
DIAGNOSIS_PREFIXES = ("ICD9CM:", "ICD10CM:", "DIAGNOSIS//")
PROCEDURE_PREFIXES = ("ICD9PCS:", "ICD10PCS:", "PROCEDURE//")


def _starts(col: str, prefixes) -> pl.Expr:
    # prefix tests, not regexes: an order of magnitude faster over millions of events
    out = pl.col(col).str.starts_with(prefixes[0])
    for p in prefixes[1:]:
        out = out | pl.col(col).str.starts_with(p)
    return out


def is_diagnosis(col: str = CODE) -> pl.Expr:
    return _starts(col, DIAGNOSIS_PREFIXES)


def is_procedure(col: str = CODE) -> pl.Expr:
    return _starts(col, PROCEDURE_PREFIXES)


def is_drug(col: str = CODE) -> pl.Expr:
    return pl.col(col).str.starts_with(MEDICATION_PREFIX) | pl.col(col).str.starts_with(ATC_PREFIX)


def _paired(events: pl.DataFrame) -> pl.DataFrame:
    """Every admission with the marker that follows it (subject's markers in time order, a
    discharge before an admission at the same instant): a discharge pairs, anything else
    leaves the admission without one (discharge null)."""
    ev = events.lazy().select(SUBJECT_ID, TIME, CODE).filter(pl.col(TIME).is_not_null())
    adm = (ev.filter(pl.col(CODE).str.starts_with(ADMISSION_PREFIX))
           .select(SUBJECT_ID, TIME, pl.lit(1, dtype=pl.Int8).alias("kind"), pl.lit(None, dtype=pl.String).alias(CODE))
           .unique(subset=[SUBJECT_ID, TIME]))
    dis = (ev.filter(pl.col(CODE).str.starts_with(DISCHARGE_PREFIX))
           .select(SUBJECT_ID, TIME, pl.lit(0, dtype=pl.Int8).alias("kind"), CODE)
           .sort(SUBJECT_ID, TIME, CODE).unique(subset=[SUBJECT_ID, TIME], keep="first"))
    m = pl.concat([adm, dis]).sort(SUBJECT_ID, TIME, "kind")
    nxt_is_dis = (pl.col("kind").shift(-1) == 0) & (pl.col(SUBJECT_ID).shift(-1) == pl.col(SUBJECT_ID))
    m = m.with_columns(
        pl.when(nxt_is_dis).then(pl.col(TIME).shift(-1)).otherwise(None).alias("discharge"),
        pl.when(nxt_is_dis).then(pl.col(CODE).shift(-1)).otherwise(None).alias("discharge_code"))
    return m.collect()


def stay_stats(events: pl.DataFrame) -> dict[str, int]:
    """Admissions kept and dropped, and discharges with no admission (for the data report)."""
    m = _paired(events)
    adm = m.filter(pl.col("kind") == 1)
    kept = adm.filter(pl.col("discharge").is_not_null()).height
    orphan = m.filter(pl.col("kind") == 0).height - kept
    return {"admissions": adm.height, "stays": kept, "dropped_no_discharge_before_next_admission": adm.height - kept,
            "discharges_without_admission": orphan}


def stays(events: pl.DataFrame) -> pl.DataFrame:
    """One row per stay: subject_id, stay (0-based order), admit, discharge, died (in-hospital
    death), discharge_code, birth and death (the subject's, null when unknown)."""
    return _stays_cached(events)


# Derived tables of one event frame, computed once and shared by every task labelled on it
# (a single entry that holds the frame itself, so its id cannot be reused while cached).
_MEMO: list = []


def memo(events: pl.DataFrame) -> dict:
    if not (_MEMO and _MEMO[0][0] is events):
        _MEMO[:] = [(events, {})]
    return _MEMO[0][1]


def _memoized(events: pl.DataFrame, key: str, fn):
    m = memo(events)
    if key not in m:
        m[key] = fn()
    return m[key]


def _stays_cached(events: pl.DataFrame) -> pl.DataFrame:
    return _memoized(events, "stays", lambda: _compute_stays(events))


def family_events(events: pl.DataFrame) -> pl.DataFrame:
    """Timed (subject_id, time, code) rows of the diagnosis, procedure and drug families
    (duplicates kept), with `fam` in {"dx", "px", "drug"}."""
    def compute():
        fam = (pl.when(is_diagnosis()).then(pl.lit("dx")).when(is_procedure()).then(pl.lit("px"))
               .when(is_drug()).then(pl.lit("drug")).otherwise(None))
        return (events.lazy().select(SUBJECT_ID, TIME, CODE).filter(pl.col(TIME).is_not_null())
                .with_columns(fam.alias("fam")).filter(pl.col("fam").is_not_null()).collect())
    return _memoized(events, "families", compute)


def code_set(events: pl.DataFrame) -> pl.Series:
    return _memoized(events, "codes", lambda: events[CODE].unique())


def subject_bounds(events: pl.DataFrame) -> pl.DataFrame:
    """Per subject: last timed event and first MEDS_DEATH time."""
    return _memoized(events, "bounds", lambda: (
        events.lazy().filter(pl.col(TIME).is_not_null()).group_by(SUBJECT_ID)
        .agg(pl.col(TIME).max().alias("last_event"), pl.col(TIME).filter(pl.col(CODE) == DEATH).min().alias("death_t"))
        .collect()))


def _compute_stays(events: pl.DataFrame) -> pl.DataFrame:
    p = (_paired(events).filter((pl.col("kind") == 1) & pl.col("discharge").is_not_null())
         .select(SUBJECT_ID, pl.col(TIME).alias("admit"), "discharge", "discharge_code"))
    life = (events.lazy().filter(pl.col(CODE).is_in([BIRTH, DEATH]) & pl.col(TIME).is_not_null())
            .group_by(SUBJECT_ID)
            .agg(pl.col(TIME).filter(pl.col(CODE) == BIRTH).min().alias("birth"),
                 pl.col(TIME).filter(pl.col(CODE) == DEATH).min().alias("death"))
            .collect())
    p = p.join(life, on=SUBJECT_ID, how="left")
    died = (pl.col("discharge_code").str.contains(DEATH_DISCHARGE_PATTERN).fill_null(False)
            | (pl.col("death").is_not_null()
               & (pl.col("death") >= pl.col("admit"))
               & (pl.col("death") <= pl.col("discharge"))).fill_null(False))
    return (p.with_columns(died.alias("died"),
                           pl.int_range(pl.len()).over(SUBJECT_ID).cast(pl.Int32).alias("stay"))
            .select(STAY_COLUMNS))


def assign_stay(df: pl.DataFrame, stay_frame: pl.DataFrame, by: str = "admit") -> pl.DataFrame:
    """`df` (subject_id, time, ...) with the `stay` (and its admit/discharge) each event belongs
    to, or null. `by="discharge"` matches discharge-stamped events to their own stay first."""
    s = stay_frame.select(SUBJECT_ID, "stay", "admit", "discharge")
    left = df.filter(pl.col(TIME).is_not_null()).sort(TIME)
    if by == "admit":
        j = left.join_asof(s.sort("admit"), left_on=TIME, right_on="admit", by=SUBJECT_ID,
                           strategy="backward", check_sortedness=False)
    elif by == "discharge":
        j = left.join_asof(s.sort("discharge"), left_on=TIME, right_on="discharge", by=SUBJECT_ID,
                           strategy="forward", check_sortedness=False)
    else:
        raise ValueError(f"by must be 'admit' or 'discharge', got {by!r}")
    inside = (pl.col(TIME) >= pl.col("admit")) & (pl.col(TIME) <= pl.col("discharge"))
    return j.with_columns(pl.when(inside).then(pl.col("stay")).otherwise(None).alias("stay"))


def stay_code_flags(events: pl.DataFrame) -> pl.DataFrame:
    """Per stay (all stays of `stays(events)`): has_dx, has_px, has_drug (any event of the
    family inside the stay; diagnoses matched by discharge)."""
    def compute():
        stay_frame = stays(events)
        fam = family_events(events).select(SUBJECT_ID, TIME, "fam").unique()
        dx = assign_stay(fam.filter(pl.col("fam") == "dx"), stay_frame, by="discharge")
        other = assign_stay(fam.filter(pl.col("fam") != "dx"), stay_frame, by="admit")
        both = pl.concat([dx.select(SUBJECT_ID, "stay", "fam"), other.select(SUBJECT_ID, "stay", "fam")])
        flags = (both.filter(pl.col("stay").is_not_null()).unique()
                 .group_by(SUBJECT_ID, "stay")
                 .agg((pl.col("fam") == "dx").any().alias("has_dx"),
                      (pl.col("fam") == "px").any().alias("has_px"),
                      (pl.col("fam") == "drug").any().alias("has_drug")))
        return (stay_frame.select(SUBJECT_ID, "stay").join(flags, on=[SUBJECT_ID, "stay"], how="left")
                .with_columns(pl.col("has_dx", "has_px", "has_drug").fill_null(False)))
    return _memoized(events, "flags", compute)


def age_years(at: str, birth: str = "birth") -> pl.Expr:
    """Completed years between `birth` and `at` (a birthday not yet reached this year counts
    one year less, as PyHealth does); null when birth is unknown."""
    a, b = pl.col(at), pl.col(birth)
    before_birthday = (a.dt.month() < b.dt.month()) | ((a.dt.month() == b.dt.month()) & (a.dt.day() < b.dt.day()))
    return (a.dt.year() - b.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def end_of_day(col: str) -> pl.Expr:
    """23:59 on the calendar day of `col` (EHRSHOT's prediction time)."""
    return pl.col(col).dt.truncate("1d") + pl.duration(hours=23, minutes=59)

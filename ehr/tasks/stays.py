"""Hospital stays and code families derived from MEDS events, vectorised (polars).

Every stay-based task starts here. Rules (stated once, used by every task):
- a stay is a `HOSPITAL_ADMISSION//*` event paired with its `HOSPITAL_DISCHARGE//*` event:
  by admission id where the markers carry one (`admission_id`: MIMIC `hadm_id`, eICU
  `patienthealthsystemstayid`), so overlapping admissions (admit1 < admit2 < discharge1 <
  discharge2) are two stays with their own ends; an id whose discharge is missing or not after
  its admission is dropped. Markers without an id pair by order: with the discharge that
  follows the admission among the subject's id-less markers in time order; at the same instant a discharge
  comes before an admission, so a transfer whose next admission starts at the very time of the
  discharge is two stays. An admission followed by another admission (no discharge of its
  own) or by nothing is dropped: its end is unknown. A zero-length stay (admission and
  discharge at the same instant) is therefore dropped too. `stay_stats` counts them.
- in-hospital death: the discharge code names a death (`DIED`, `DEAD`, `EXPIRED`, `DEATH`,
  case-insensitive, e.g. MIMIC-III `DEAD/EXPIRED`, MIMIC-IV `DIED`) or the subject's
  `MEDS_DEATH` time falls in [admission, discharge] (the converters stamp a date-only death
  at 23:59:59 of its day, so a death on the day of a discharge home is not in-hospital).
- an event with an admission id belongs to the stay of that id, whatever its time (rows dated
  outside their stay are kept at their own time and counted by `stay_stats`); an event
  without one belongs to a stay when admission <= time <= discharge. Discharge-stamped families
  (diagnoses) are matched to the stay whose discharge is the first at or after the event, so a
  diagnosis stamped at a discharge that coincides with the next admission stays with its own
  stay; other events go to the latest admission at or before them.
- code families: diagnoses `ICD9CM:` / `ICD10CM:` / `DIAGNOSIS//...`, procedures `ICD9PCS:` /
  `ICD10PCS:` / `PROCEDURE//...`, drugs `MEDICATION//...` and `ATC:...`.
"""

from __future__ import annotations

import polars as pl

from ehr.schema import (ADMISSION_ID, ADMISSION_PREFIX, ATC_PREFIX, BIRTH, CODE, DEATH, DISCHARGE_PREFIX,
                        ICU_ADMISSION_PREFIX, ICU_DISCHARGE_PREFIX,
                        MEDICATION_PREFIX, SUBJECT_ID, TIME)

DEATH_DISCHARGE_PATTERN = r"(?i)(DIED|DEAD|EXPIRED|DEATH)"
DIAGNOSIS_PATTERN = r"^(ICD9CM:|ICD10CM:|DIAGNOSIS//)"
# codes a MIMIC-like source stamps at discharge (default for the discharge-stamped guard)
DISCHARGE_STAMPED_PATTERN = DIAGNOSIS_PATTERN

STAY_COLUMNS = ["subject_id", "stay", "admit", "discharge", "died", "discharge_code", "birth", "death",
                "admission_id"]
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


def _with_ids(lf: pl.LazyFrame) -> pl.LazyFrame:
    """The frame with an `admission_id` column (null when the events carry none)."""
    if ADMISSION_ID in lf.collect_schema().names():
        return lf
    return lf.with_columns(pl.lit(None, dtype=pl.Int64).alias(ADMISSION_ID))


def _paired_by_order(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Markers without an admission id: every admission with the marker that follows it
    (a discharge before an admission at the same instant); a discharge pairs, anything else
    leaves the admission without one (discharge null)."""
    adm = (ev.filter(pl.col(CODE).str.starts_with(ADMISSION_PREFIX))
           .select(SUBJECT_ID, TIME, pl.lit(1, dtype=pl.Int8).alias("kind"), pl.lit(None, dtype=pl.String).alias(CODE))
           .unique(subset=[SUBJECT_ID, TIME]))
    dis = (ev.filter(pl.col(CODE).str.starts_with(DISCHARGE_PREFIX))
           .select(SUBJECT_ID, TIME, pl.lit(0, dtype=pl.Int8).alias("kind"), CODE)
           .sort(SUBJECT_ID, TIME, CODE).unique(subset=[SUBJECT_ID, TIME], keep="first"))
    m = pl.concat([adm, dis]).sort(SUBJECT_ID, TIME, "kind")
    nxt_is_dis = (pl.col("kind").shift(-1) == 0) & (pl.col(SUBJECT_ID).shift(-1) == pl.col(SUBJECT_ID))
    return m.with_columns(
        pl.when(nxt_is_dis).then(pl.col(TIME).shift(-1)).otherwise(None).alias("discharge"),
        pl.when(nxt_is_dis).then(pl.col(CODE).shift(-1)).otherwise(None).alias("discharge_code"),
        pl.lit(None, dtype=pl.Int64).alias(ADMISSION_ID))


def _paired_by_id(ev: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Markers with an admission id: the admission (earliest admission marker of the id) and
    the discharge of the same id (earliest; ties by code). A discharge not after its
    admission leaves it without one. Returns (admissions with discharge or null, discharges)."""
    adm = (ev.filter(pl.col(CODE).str.starts_with(ADMISSION_PREFIX))
           .group_by(SUBJECT_ID, ADMISSION_ID).agg(pl.col(TIME).min()))
    dis = (ev.filter(pl.col(CODE).str.starts_with(DISCHARGE_PREFIX)).sort(SUBJECT_ID, ADMISSION_ID, TIME, CODE)
           .group_by(SUBJECT_ID, ADMISSION_ID, maintain_order=True)
           .agg(pl.col(TIME).first().alias("discharge"), pl.col(CODE).first().alias("discharge_code")))
    ok = pl.col("discharge") > pl.col(TIME)
    paired = (adm.join(dis, on=[SUBJECT_ID, ADMISSION_ID], how="left")
              .with_columns(pl.when(ok).then(pl.col("discharge")).alias("discharge"),
                            pl.when(ok).then(pl.col("discharge_code")).alias("discharge_code"),
                            pl.lit(1, dtype=pl.Int8).alias("kind")))
    return paired, dis


def _paired(events: pl.DataFrame) -> pl.DataFrame:
    """Every admission (kind 1) with its discharge (null when it has none), paired by
    admission id where the markers carry one and by marker order where they do not; plus
    (kind 0) the discharges, for the orphan count."""
    ev = _with_ids(events.lazy()).select(SUBJECT_ID, TIME, CODE, ADMISSION_ID).filter(
        pl.col(TIME).is_not_null() & (pl.col(CODE).str.starts_with(ADMISSION_PREFIX)
                                      | pl.col(CODE).str.starts_with(DISCHARGE_PREFIX)))
    by_id, dis_id = _paired_by_id(ev.filter(pl.col(ADMISSION_ID).is_not_null()))
    by_order = _paired_by_order(ev.filter(pl.col(ADMISSION_ID).is_null()))
    cols = [SUBJECT_ID, TIME, "kind", "discharge", "discharge_code", ADMISSION_ID]
    dis_rows = dis_id.select(SUBJECT_ID, pl.col("discharge").alias(TIME), pl.lit(0, dtype=pl.Int8).alias("kind"),
                             pl.lit(None, dtype=pl.Datetime("us")).alias("discharge"),
                             pl.col("discharge_code"), ADMISSION_ID)
    return (pl.concat([by_id.select(cols), dis_rows.select(cols), by_order.select(cols)], how="vertical_relaxed")
            .sort(SUBJECT_ID, TIME, "kind").collect())


def stay_stats(events: pl.DataFrame) -> dict[str, int]:
    """Admissions kept and dropped, discharges with no admission, overlapping stays and rows
    dated outside the stay their admission id names (for the data report)."""
    m = _paired(events)
    adm = m.filter(pl.col("kind") == 1)
    kept = adm.filter(pl.col("discharge").is_not_null()).height
    orphan = m.filter(pl.col("kind") == 0).height - kept
    s = stays(events)
    out = {"admissions": adm.height, "stays": kept,
           "paired_by_admission_id": adm.filter(pl.col("discharge").is_not_null()
                                                & pl.col(ADMISSION_ID).is_not_null()).height,
           "dropped_no_discharge_before_next_admission": adm.height - kept,
           "discharges_without_admission": max(orphan, 0),
           "overlapping_stays": overlapping_stays(s)}
    out.update(outside_stay_counts(events))
    return out


def overlapping_stays(stay_frame: pl.DataFrame) -> int:
    """Stays that start before an earlier-starting stay of the same subject has ended."""
    if not stay_frame.height:
        return 0
    prev_end = (pl.col("discharge").cum_max().shift(1).over(SUBJECT_ID))
    return int(stay_frame.sort(SUBJECT_ID, "admit").select((pl.col("admit") < prev_end).fill_null(False).sum()).item())


def outside_stay_counts(events: pl.DataFrame) -> dict[str, int]:
    """Diagnosis / procedure / drug source rows (derived `ATC:` events not counted) whose admission id names a stay but whose time lies
    outside [admission, discharge] of that stay (the rule: kept at their own time, and
    belonging to the stay their id names)."""
    fam = family_events(events)
    s = stays(events)
    if ADMISSION_ID not in fam.columns or not s.height:
        return {f"{f}_rows_dated_outside_their_stay": 0 for f in ("dx", "px", "drug")}
    j = fam.filter(pl.col(ADMISSION_ID).is_not_null() & ~pl.col(CODE).str.starts_with(ATC_PREFIX)).join(
        s.select(SUBJECT_ID, ADMISSION_ID, "admit", "discharge"), on=[SUBJECT_ID, ADMISSION_ID], how="inner")
    out = j.filter((pl.col(TIME) < pl.col("admit")) | (pl.col(TIME) > pl.col("discharge"))).group_by("fam").len()
    n = dict(out.iter_rows())
    return {f"{f}_rows_dated_outside_their_stay": int(n.get(f, 0)) for f in ("dx", "px", "drug")}


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
    """Timed (subject_id, time, code, admission_id) rows of the diagnosis, procedure and drug
    families (duplicates kept), with `fam` in {"dx", "px", "drug"}."""
    def compute():
        fam = (pl.when(is_diagnosis()).then(pl.lit("dx")).when(is_procedure()).then(pl.lit("px"))
               .when(is_drug()).then(pl.lit("drug")).otherwise(None))
        return (_with_ids(events.lazy()).select(SUBJECT_ID, TIME, CODE, ADMISSION_ID).filter(pl.col(TIME).is_not_null())
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
         .select(SUBJECT_ID, pl.col(TIME).alias("admit"), "discharge", "discharge_code", ADMISSION_ID)
         .sort(SUBJECT_ID, "admit", "discharge"))
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
    """`df` (subject_id, time, [admission_id], ...) with the `stay` (and its admit/discharge)
    each event belongs to, or null. A row with an admission id belongs to the stay of that id
    (null when that admission is not a stay), whatever its time; a row without one belongs
    to a stay by time: `by="admit"` the latest admission at or before it, `by="discharge"`
    (discharge-stamped events) the first discharge at or after it; inside [admit, discharge]."""
    if by not in ("admit", "discharge"):
        raise ValueError(f"by must be 'admit' or 'discharge', got {by!r}")
    s = stay_frame.select(SUBJECT_ID, "stay", "admit", "discharge", *([ADMISSION_ID] if ADMISSION_ID in stay_frame.columns else []))
    left = df.filter(pl.col(TIME).is_not_null())
    parts = []
    if ADMISSION_ID in left.columns and ADMISSION_ID in s.columns:
        ided = left.filter(pl.col(ADMISSION_ID).is_not_null())
        if ided.height:
            parts.append(ided.join(s.filter(pl.col(ADMISSION_ID).is_not_null()), on=[SUBJECT_ID, ADMISSION_ID],
                                   how="left"))
        left = left.filter(pl.col(ADMISSION_ID).is_null())
    s = s.drop(ADMISSION_ID, strict=False)
    left = left.sort(TIME)
    if by == "admit":
        j = left.join_asof(s.sort("admit"), left_on=TIME, right_on="admit", by=SUBJECT_ID,
                           strategy="backward", check_sortedness=False)
    else:
        j = left.join_asof(s.sort("discharge"), left_on=TIME, right_on="discharge", by=SUBJECT_ID,
                           strategy="forward", check_sortedness=False)
    inside = (pl.col(TIME) >= pl.col("admit")) & (pl.col(TIME) <= pl.col("discharge"))
    parts.append(j.with_columns(pl.when(inside).then(pl.col("stay")).otherwise(None).alias("stay")))
    cols = parts[-1].columns
    return pl.concat([p.select(cols) for p in parts], how="vertical_relaxed").sort(TIME)


def stay_code_flags(events: pl.DataFrame) -> pl.DataFrame:
    """Per stay (all stays of `stays(events)`): has_dx, has_px, has_drug (any event of the
    family inside the stay; diagnoses matched by discharge)."""
    def compute():
        stay_frame = stays(events)
        fam = family_events(events).select(SUBJECT_ID, TIME, ADMISSION_ID, "fam").unique()
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


def icu_stays(events: pl.DataFrame) -> pl.DataFrame:
    """One row per ICU (unit) stay: subject_id, stay (0-based order), admit, discharge,
    admission_id (of the hospital stay the markers carry). `ICU_ADMISSION//` is paired with
    the `ICU_DISCHARGE//` that follows it among the markers of the same hospital stay
    (admission id; the subject's id-less markers together) in time order, a discharge first at
    the same instant (unit stays of one hospital stay do not overlap); unpaired ones dropped."""
    def compute():
        ev = _with_ids(events.lazy()).select(SUBJECT_ID, TIME, CODE, ADMISSION_ID).filter(pl.col(TIME).is_not_null())
        adm = (ev.filter(pl.col(CODE).str.starts_with(ICU_ADMISSION_PREFIX))
               .select(SUBJECT_ID, ADMISSION_ID, TIME, pl.lit(1, dtype=pl.Int8).alias("kind")))
        dis = (ev.filter(pl.col(CODE).str.starts_with(ICU_DISCHARGE_PREFIX))
               .select(SUBJECT_ID, ADMISSION_ID, TIME, pl.lit(0, dtype=pl.Int8).alias("kind")))
        m = pl.concat([adm, dis]).sort(SUBJECT_ID, ADMISSION_ID, TIME, "kind", nulls_last=False)
        same = (pl.col(SUBJECT_ID).shift(-1) == pl.col(SUBJECT_ID)) & (
            (pl.col(ADMISSION_ID).shift(-1) == pl.col(ADMISSION_ID))
            | (pl.col(ADMISSION_ID).shift(-1).is_null() & pl.col(ADMISSION_ID).is_null()))
        nxt = same.fill_null(False) & (pl.col("kind").shift(-1) == 0)
        out = (m.with_columns(pl.when(nxt).then(pl.col(TIME).shift(-1)).alias("discharge"))
               .filter((pl.col("kind") == 1) & pl.col("discharge").is_not_null() & (pl.col("discharge") > pl.col(TIME)))
               .select(SUBJECT_ID, pl.col(TIME).alias("admit"), "discharge", ADMISSION_ID)
               .sort(SUBJECT_ID, "admit").collect())
        return out.with_columns(pl.int_range(pl.len()).over(SUBJECT_ID).cast(pl.Int32).alias("stay"))
    return _memoized(events, "icu_stays", compute)


def icu_stay_code_flags(events: pl.DataFrame) -> pl.DataFrame:
    """Per ICU stay: has_dx, has_px, has_drug (an event of the family timed inside the unit
    stay, admission <= time <= discharge, of the same hospital stay when ids are given)."""
    def compute():
        u = icu_stays(events)
        fam = family_events(events).select(SUBJECT_ID, TIME, ADMISSION_ID, "fam").unique().sort(TIME)
        j = (fam.join_asof(u.select(SUBJECT_ID, "stay", "admit", "discharge", pl.col(ADMISSION_ID).alias("_aid"))
                           .sort("admit"), left_on=TIME, right_on="admit", by=SUBJECT_ID, strategy="backward",
                           check_sortedness=False)
             .filter((pl.col(TIME) <= pl.col("discharge"))
                     & (pl.col(ADMISSION_ID).is_null() | pl.col("_aid").is_null()
                        | (pl.col(ADMISSION_ID) == pl.col("_aid")))))
        flags = j.group_by(SUBJECT_ID, "stay").agg((pl.col("fam") == "dx").any().alias("has_dx"),
                                                   (pl.col("fam") == "px").any().alias("has_px"),
                                                   (pl.col("fam") == "drug").any().alias("has_drug"))
        return (u.select(SUBJECT_ID, "stay").join(flags, on=[SUBJECT_ID, "stay"], how="left")
                .with_columns(pl.col("has_dx", "has_px", "has_drug").fill_null(False)))
    return _memoized(events, "icu_flags", compute)


def age_years(at: str, birth: str = "birth") -> pl.Expr:
    """Completed years between `birth` and `at` (a birthday not yet reached this year counts
    one year less, as PyHealth does); null when birth is unknown."""
    a, b = pl.col(at), pl.col(birth)
    before_birthday = (a.dt.month() < b.dt.month()) | ((a.dt.month() == b.dt.month()) & (a.dt.day() < b.dt.day()))
    return (a.dt.year() - b.dt.year() - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def end_of_day(col: str) -> pl.Expr:
    """23:59 on the calendar day of `col` (EHRSHOT's prediction time)."""
    return pl.col(col).dt.truncate("1d") + pl.duration(hours=23, minutes=59)

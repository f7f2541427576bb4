"""Hand-made patients in the MEDS event form, for boundary tests and small fixtures.

    stay("2150-01-01 08:00", "2150-01-05 10:00", dx=["ICD10CM:I10"], px=["ICD10PCS:0DTJ4ZZ"],
         drugs=["metoprolol"], died=False)

A stay writes `HOSPITAL_ADMISSION//EMERGENCY` at admission, its drugs (`MEDICATION//<name>`)
and procedures 2 h after admission (or at `event_hours`), its diagnoses at discharge (as MIMIC
stamps them) and `HOSPITAL_DISCHARGE//HOME` (or `//DIED` with `MEDS_DEATH` at the same time).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from ehr.schema import BIRTH, DEATH, conform_events


def ts(s: str | datetime) -> datetime:
    return s if isinstance(s, datetime) else datetime.fromisoformat(s)


@dataclass
class Stay:
    admit: datetime
    discharge: datetime
    dx: list[str] = field(default_factory=lambda: ["ICD10CM:I10"])
    px: list[str] = field(default_factory=lambda: ["ICD10PCS:0DTJ4ZZ"])
    drugs: list[str] = field(default_factory=lambda: ["metoprolol"])
    died: bool = False
    event_hours: float = 2.0
    dx_at: str = "discharge"        # "discharge" (MIMIC) or "admission" (a leaky loader)


def stay(admit, discharge, **kw) -> Stay:
    return Stay(ts(admit), ts(discharge), **kw)


def patient_events(subject_id: int, stays: list[Stay], birth: str | datetime | None = "2100-01-01",
                   sex: str = "F", death: str | datetime | None = None, extra: list[tuple] = ()) -> list[tuple]:
    rows: list[tuple] = [(subject_id, None, f"GENDER//{sex}")]
    if birth is not None:
        rows.append((subject_id, ts(birth), BIRTH))
    for s in stays:
        rows.append((subject_id, s.admit, "HOSPITAL_ADMISSION//EMERGENCY"))
        t_in = min(s.admit + timedelta(hours=s.event_hours), s.discharge)
        rows += [(subject_id, t_in, f"MEDICATION//{d}") for d in s.drugs]
        rows += [(subject_id, t_in, p) for p in s.px]
        t_dx = s.discharge if s.dx_at == "discharge" else s.admit
        rows += [(subject_id, t_dx, d) for d in s.dx]
        rows.append((subject_id, s.discharge, "HOSPITAL_DISCHARGE//" + ("DIED" if s.died else "HOME")))
        if s.died:
            rows.append((subject_id, s.discharge, DEATH))
    if death is not None:
        rows.append((subject_id, ts(death), DEATH))
    rows += [(subject_id, ts(t) if t is not None else None, c) for t, c in extra]
    return rows


def events_frame(rows: list[tuple]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
                      orient="row")
    return conform_events(df)


GAPS_H = [0, 3, 20, 24 * 14, 24 * 15 - 1, 24 * 15, 24 * 15 + 1, 24 * 16, 24 * 29, 24 * 30, 24 * 31, 24 * 200, 24 * 400]
LOS_H = [1, 23, 24, 25, 24 * 2, 24 * 7 - 1, 24 * 7, 24 * 8, 24 * 14, 24 * 15, 24 * 40]
DX = ["ICD10CM:I10", "ICD9CM:401.9", "ICD10CM:E11.9", "ICD9CM:428.0", "ICD10CM:A41.9", "DIAGNOSIS//ICD//10//J189",
      "ICD10CM:I50.9", "DIAGNOSIS//ICD9//0389", "ICD10CM:Z99.89", "ICD10CM:N18.6"]
DRUG = ["Heparin Flush", "heparin sodium", "metoprolol tartrate", "vancomycin", "aspirin", "levofloxacin",
        "atorvastatin calcium"]


def edge_cohort(n: int, seed: int, clean: bool = False) -> pl.DataFrame:
    """Random patients built from boundary values: gaps of 0 h, 3 h, 14/15/16/30 days (and one
    hour either side), stays of 23-25 h, 7 days, 14-15 days, in-stay and later deaths, minors,
    unknown births, stays without procedures or drugs, heparin flushes, ATC-only drug events,
    admissions without a discharge. `clean=True` leaves out the malformed or same-instant cases
    (admissions without a discharge, next admission at the very discharge time)."""
    rng = random.Random(seed)
    rows = []
    for sid in range(1, n + 1):
        t = datetime(2150, 1, 1) + timedelta(hours=rng.randrange(0, 24 * 300))
        stays_ = []
        for _ in range(rng.choice([1, 1, 2, 3, 4, 5])):
            los = timedelta(hours=rng.choice(LOS_H) + rng.choice([0, 0, 0.5]))
            died = rng.random() < 0.08
            stays_.append(stay(t, t + los, dx=rng.sample(DX, rng.randint(0, 3)),
                               px=["ICD10PCS:0DTJ4ZZ"] if rng.random() < 0.85 else [],
                               drugs=rng.sample(DRUG, rng.randint(0, 3)), died=died,
                               event_hours=rng.choice([0, 2, 30])))
            if died:
                break
            t = t + los + timedelta(hours=rng.choice(GAPS_H[1:] if clean else GAPS_H))
        birth = rng.choice([datetime(2100, 6, 1), datetime(2140, 3, 3), None, datetime(2132, 1, 1)])
        death = None
        if not stays_[-1].died and rng.random() < 0.15:
            death = stays_[-1].discharge + timedelta(days=rng.choice([0.2, 10, 200, 500]))
        extra = []
        if not clean and rng.random() < 0.1:   # an admission with no discharge of its own
            extra.append((stays_[0].admit - timedelta(days=3), "HOSPITAL_ADMISSION//EMERGENCY"))
        if rng.random() < 0.1:
            extra.append((stays_[0].admit + timedelta(hours=1), "ATC:J01XA01"))
        rows += patient_events(sid, stays_, birth=birth, death=death, extra=extra)
    return events_frame(rows)

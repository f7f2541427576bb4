"""Issue 22 tasks on hand-made patients at their boundaries: emergency admission (next admission
within 30 days AND of an emergency type) and ICU readmission (a later unit stay in the same
hospital stay)."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from ehr.schema import conform_events
from ehr.tasks.build import build_task
from ehr.tasks.registry import DEFAULT_SUITE, TASKS, get_task
from tests.handmade_patients import events_frame, patient_events, stay

A = datetime(2150, 1, 1, 8, 0)
D = datetime(2150, 1, 3, 10, 0)


def typed(rows: list[tuple], types: dict) -> list[tuple]:
    """The hand-made rows with the admission marker at each time in `types` renamed to that type."""
    return [(s, t, f"HOSPITAL_ADMISSION//{types[t]}") if c.startswith("HOSPITAL_ADMISSION//") and t in types
            else (s, t, c) for s, t, c in rows]


def emergency_label(next_admit, next_type="EMERGENCY", **kw):
    rows = patient_events(1, [stay(A, D), stay(next_admit, next_admit + timedelta(days=2))], **kw)
    lab = get_task("emergency_admission").label(events_frame(typed(rows, {next_admit: next_type})))
    first = lab.filter(pl.col("stay_start") == A)
    return first["boolean_value"].to_list()


def test_registered_but_not_in_default_suite():
    assert TASKS["emergency_admission"] == ["next_30d"]
    assert TASKS["icu_readmission"] == ["same_hospital_stay", "pyhealth_same_hospital_stay"]
    assert not {n for n, _ in DEFAULT_SUITE} & {"emergency_admission", "icu_readmission"}


@pytest.mark.parametrize("gap,expected", [(timedelta(hours=1), True), (timedelta(days=29), True),
                                          (timedelta(days=30), True), (timedelta(days=30, minutes=1), False),
                                          (timedelta(days=45), False)])
def test_emergency_admission_30_day_boundary(gap, expected):
    assert emergency_label(D + gap) == [expected]


@pytest.mark.parametrize("kind,expected", [("EMERGENCY", True), ("EW EMER.", True), ("DIRECT EMER.", True),
                                           ("direct emer.", True), ("URGENT", False), ("ELECTIVE", False),
                                           ("OBSERVATION ADMIT", False), ("EU OBSERVATION", False)])
def test_emergency_admission_types(kind, expected):
    assert emergency_label(D + timedelta(days=5), kind) == [expected]


def test_emergency_admission_only_the_next_admission_counts():
    nxt, later = D + timedelta(days=3), D + timedelta(days=10)
    rows = patient_events(1, [stay(A, D), stay(nxt, nxt + timedelta(days=1)), stay(later, later + timedelta(days=1))])
    lab = get_task("emergency_admission").label(events_frame(typed(rows, {nxt: "ELECTIVE"})))
    # first stay: next is elective -> negative (the emergency after it does not count);
    # second stay: next is an emergency 6 days after its discharge -> positive; last: no next -> negative
    assert lab.sort("stay_start")["boolean_value"].to_list() == [False, True, False]
    assert lab.sort("stay_start")["prediction_time"].to_list()[0] == D


def test_emergency_admission_exclusions():
    # death at discharge: no sample; next admission at the very discharge instant: no sample
    died = events_frame(patient_events(1, [stay(A, D, died=True)]))
    assert get_task("emergency_admission").label(died).height == 0
    assert emergency_label(D) == []
    # a single stay: negative (no censoring)
    single = events_frame(patient_events(1, [stay(A, D)]))
    assert get_task("emergency_admission").label(single)["boolean_value"].to_list() == [False]


def test_emergency_admission_needs_calendar():
    ev = events_frame(patient_events(1, [stay(A, D), stay(D + timedelta(days=3), D + timedelta(days=5))]))
    b = build_task(get_task("emergency_admission"), ev, meta={"medtok": {"relative_times": True}})
    assert b.skipped and "offsets" in b.skipped


# ---- ICU readmission ----------------------------------------------------------------------
def icu_frame(units: list[tuple], hosp: list[tuple], death=None) -> pl.DataFrame:
    """units: (admission_id, unit admit, unit discharge); hosp: (admission_id, admit, discharge)."""
    rows = [(1, None, "GENDER//F", None), (1, datetime(2100, 1, 1), "MEDS_BIRTH", None)]
    for aid, a, d in hosp:
        rows += [(1, a, "HOSPITAL_ADMISSION//EMERGENCY", aid), (1, d, "HOSPITAL_DISCHARGE//HOME", aid)]
    for aid, a, d in units:
        rows += [(1, a, "ICU_ADMISSION//MICU", aid), (1, a + timedelta(hours=1), "ICD9CM:428.0", aid),
                 (1, a + timedelta(hours=1), "PROCEDURE//EICU//x", aid), (1, a + timedelta(hours=1),
                                                                         "MEDICATION//heparin", aid),
                 (1, d, "ICU_DISCHARGE//MICU", aid)]
    if death is not None:
        rows.append((1, death, "MEDS_DEATH", None))
    df = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                                    "admission_id": pl.Int64}, orient="row")
    return conform_events(df)


H0, H1 = datetime(2150, 1, 1), datetime(2150, 1, 20)


def test_icu_readmission_same_hospital_stay_only():
    u1 = (7, H0 + timedelta(hours=2), H0 + timedelta(days=2))
    u2 = (7, H0 + timedelta(days=5), H0 + timedelta(days=6))              # same hospital stay: readmission
    u3 = (8, datetime(2150, 3, 1, 2), datetime(2150, 3, 2))                  # next hospital stay: not
    ev = icu_frame([u1, u2, u3], [(7, H0, H1), (8, datetime(2150, 3, 1), datetime(2150, 3, 5))])
    lab = get_task("icu_readmission").label(ev).sort("prediction_time")
    assert lab["boolean_value"].to_list() == [True, False, False]
    assert lab["prediction_time"].to_list() == [u1[2], u2[2], u3[2]]
    assert lab["stay_admission_id"].to_list() == [7, 7, 8]


def test_icu_readmission_death_and_missing_id():
    u1 = (7, H0 + timedelta(hours=2), H0 + timedelta(days=2))
    u2 = (7, H0 + timedelta(days=5), H0 + timedelta(days=6))
    # death inside the second unit stay: that stay gives no sample; the first is still positive
    lab = get_task("icu_readmission").label(icu_frame([u1, u2], [(7, H0, H1)], death=u2[2]))
    assert lab["boolean_value"].to_list() == [True]
    # death at the first unit discharge (boundary, inclusive): no sample for it
    lab = get_task("icu_readmission").label(icu_frame([u1], [(7, H0, H1)], death=u1[2]))
    assert lab.height == 0
    # death later in the hospital stay, after the last unit stay: negative
    lab = get_task("icu_readmission").label(icu_frame([u1], [(7, H0, H1)], death=u1[2] + timedelta(minutes=1)))
    assert lab["boolean_value"].to_list() == [False]
    # a unit stay without a hospital-stay id gives no sample
    lab = get_task("icu_readmission").label(icu_frame([(None, u1[1], u1[2])], [(7, H0, H1)]))
    assert lab.height == 0


def test_icu_readmission_builds_on_offset_only_data():
    u1 = (7, H0 + timedelta(hours=2), H0 + timedelta(days=2))
    u2 = (7, H0 + timedelta(days=5), H0 + timedelta(days=6))
    ev = icu_frame([u1, u2], [(7, H0, H1)])
    for preset in TASKS["icu_readmission"]:
        b = build_task(get_task("icu_readmission", preset), ev, meta={"medtok": {"relative_times": True}})
        assert b.skipped is None, b.skipped
        assert b.labels["boolean_value"].to_list() == [True, False]


# ---- the demo data (pipeline checks; the counts the issue states) -------------------------
def _demo(name):
    from medbase.paths import shared_data_path

    root = shared_data_path("ehr", f"{name}-demo")
    if root is None:
        pytest.skip(f"shared {name} demo not found")
    from ehr.benchmark.data import load_cohort

    return load_cohort(name, root)


def test_demo_counts():
    m = _demo("mimic3")
    b = build_task(get_task("emergency_admission"), m.events, m.splits, m.meta)
    assert b.skipped is None and int(b.labels["boolean_value"].sum()) == 10       # "about 10 positives"
    e = _demo("eicu")
    b = build_task(get_task("icu_readmission"), e.events, e.splits, e.meta)
    assert b.skipped is None and int(b.labels["boolean_value"].sum()) == 30       # "30 such pairs"
    assert build_task(get_task("emergency_admission"), e.events, e.splits, e.meta).skipped   # offsets only

"""Task labels on hand-made patients at the boundaries of each definition."""

from datetime import datetime, timedelta

import polars as pl
import pytest

from ehr.tasks.base import TaskNotSupported
from ehr.tasks.build import build_task
from ehr.tasks.ccs import PHENOTYPE_CCS, ccs_of
from ehr.tasks.registry import DEFAULT_SUITE, TASKS, get_task
from ehr.tasks.stays import stay_stats, stays
from tests.handmade_patients import events_frame, patient_events, stay

A = datetime(2150, 1, 1, 8, 0)            # first admission
D = datetime(2150, 1, 3, 10, 0)           # its discharge
PT = datetime(2150, 1, 3, 23, 59)         # 23:59 on the discharge day (EHRSHOT)


def two_stays(next_admit: datetime, **kw) -> pl.DataFrame:
    return events_frame(patient_events(1, [stay(A, D), stay(next_admit, next_admit + timedelta(days=2))], **kw))


def one_label(name, preset, ev):
    lab = get_task(name, preset).label(ev)
    first = lab.filter(pl.col("stay_start") == A)
    assert first.height == 1, lab
    return first[get_task(name, preset).value_column][0]


# ---- readmission: 14 vs 15 vs 16 days by each preset's own gap -----------------------------
@pytest.mark.parametrize("gap,expected", [(timedelta(days=14), True), (timedelta(days=15), True),
                                          (timedelta(days=15, hours=23), True),   # .days == 15
                                          (timedelta(days=16), False)])
def test_readmission_paper_admission_to_admission(gap, expected):
    assert one_label("readmission", "paper_15d_admit", two_stays(A + gap)) is expected


@pytest.mark.parametrize("gap,expected", [(timedelta(days=14), True), (timedelta(days=14, hours=23, minutes=59), True),
                                          (timedelta(days=15), False), (timedelta(days=16), False)])
def test_readmission_pyhealth_discharge_to_admission(gap, expected):
    assert one_label("readmission", "pyhealth_15d_discharge", two_stays(D + gap)) is expected


@pytest.mark.parametrize("gap,expected", [(timedelta(days=14), True), (timedelta(days=15), True),
                                          (timedelta(days=16), True), (timedelta(days=30), True),
                                          (timedelta(days=30, minutes=1), False)])
def test_readmission_ehrshot_30_days_from_2359(gap, expected):
    assert one_label("readmission", "ehrshot_30d", two_stays(PT + gap)) is expected


def test_readmission_same_day_transfer_by_preset():
    ev = two_stays(D + timedelta(hours=3))           # next admission on the discharge day
    assert one_label("readmission", "paper_15d_admit", ev) is True
    assert one_label("readmission", "pyhealth_15d_discharge", ev) is True
    lab = get_task("readmission", "ehrshot_30d").label(ev)
    assert lab.filter(pl.col("stay_start") == A).height == 0   # skipped: back in hospital at 23:59


def test_readmission_single_admission_and_death():
    single = events_frame(patient_events(1, [stay(A, D)]))
    assert get_task("readmission", "paper_15d_admit").label(single).height == 0
    assert get_task("readmission", "pyhealth_15d_discharge").label(single).height == 0
    assert get_task("readmission", "ehrshot_30d").label(single)["boolean_value"].to_list() == [False]
    died = events_frame(patient_events(1, [stay(A, D, died=True)]))
    for preset in TASKS["readmission"]:
        assert get_task("readmission", preset).label(died).height == 0


def test_readmission_pyhealth_minors_and_required_codes():
    nxt = D + timedelta(days=3)
    # 18th birthday on the admission day: an adult; one day later: a minor
    assert get_task("readmission", "pyhealth_15d_discharge").label(two_stays(nxt, birth="2132-01-01")).height == 1
    assert get_task("readmission", "pyhealth_15d_discharge").label(two_stays(nxt, birth="2132-01-02")).height == 0
    # a stay without a procedure gives no sample but still counts as the next admission
    ev = events_frame(patient_events(1, [stay(A, D), stay(nxt, nxt + timedelta(days=1), px=[]),
                                         stay(nxt + timedelta(days=40), nxt + timedelta(days=41))]))
    lab = get_task("readmission", "pyhealth_15d_discharge").label(ev)
    assert lab["stay_start"].to_list() == [A] and lab["boolean_value"].to_list() == [True]


# ---- mortality ---------------------------------------------------------------------------
def test_mortality_paper_next_admission():
    ev = events_frame(patient_events(1, [stay(A, D), stay(D + timedelta(days=30), D + timedelta(days=33), died=True)]))
    lab = get_task("mortality", "paper").label(ev)
    assert lab["boolean_value"].to_list() == [True] and lab["prediction_time"].to_list() == [D]
    single = events_frame(patient_events(1, [stay(A, D, died=True)]))
    assert get_task("mortality", "paper").label(single).height == 0


@pytest.mark.parametrize("los,died,expected", [
    (timedelta(days=3), True, True),            # death at the end of a 3-day stay
    (timedelta(days=3), False, False),
    (timedelta(hours=24), True, None),          # ends exactly at the prediction time: excluded
    (timedelta(hours=20), True, None),
    (timedelta(hours=24, minutes=1), True, True)])
def test_in_hospital_mortality_early(los, died, expected):
    ev = events_frame(patient_events(1, [stay(A, A + los, died=died)]))
    lab = get_task("mortality", "in_hospital_early").label(ev)
    assert lab["boolean_value"].to_list() == ([] if expected is None else [expected])
    if expected is not None:
        assert lab["prediction_time"][0] == A + timedelta(hours=24)


def test_death_after_discharge_is_not_in_hospital():
    ev = events_frame(patient_events(1, [stay(A, D)], death=D + timedelta(hours=2)))
    s = stays(ev)
    assert s["died"].to_list() == [False]
    ev = events_frame(patient_events(1, [stay(A, D)], death=D))   # MEDS_DEATH at the discharge
    assert stays(ev)["died"].to_list() == [True]


# ---- length of stay ----------------------------------------------------------------------
@pytest.mark.parametrize("los,cls", [(timedelta(hours=23, minutes=59), 0), (timedelta(hours=24), 1),
                                     (timedelta(days=7, hours=23), 7), (timedelta(days=8), 8),
                                     (timedelta(days=14, hours=23), 8), (timedelta(days=15), 9)])
def test_los_ten_classes(los, cls):
    ev = events_frame(patient_events(1, [stay(A, A + los)]))
    for preset in ("pyhealth_10class", "admission_10class"):
        assert get_task("length_of_stay", preset).label(ev)["integer_value"].to_list() == [cls]


@pytest.mark.parametrize("los,expected", [(timedelta(days=7), True), (timedelta(days=7) - timedelta(minutes=1), False),
                                          (timedelta(hours=14), None)])   # discharged 22:00 on admission day
def test_long_los_ehrshot(los, expected):
    ev = events_frame(patient_events(1, [stay(A, A + los)]))
    lab = get_task("length_of_stay", "ehrshot_long_los").label(ev)
    assert lab["boolean_value"].to_list() == ([] if expected is None else [expected])


# ---- phenotype mapping and labels ----------------------------------------------------------
@pytest.mark.parametrize("code,ccs", [
    ("ICD9CM:428.0", 108), ("ICD9CM:486", 122), ("ICD9CM:038.9", 2), ("ICD9CM:584.9", 157), ("ICD9CM:250.00", 49),
    ("ICD9CM:401.9", 98), ("ICD9CM:272.4", 53), ("ICD9CM:427.31", 106), ("ICD9CM:785.52", 249),
    ("DIAGNOSIS//ICD9//4280", 108),
    ("ICD10CM:I50.9", 108), ("ICD10CM:J18.9", 122), ("ICD10CM:A41.9", 2), ("ICD10CM:N17.9", 157),
    ("ICD10CM:E11.9", 49), ("ICD10CM:I10", 98), ("ICD10CM:E78.5", 53), ("ICD10CM:N18.6", 158),
    ("ICD10CM:J44.9", 127), ("ICD10CM:I48.91", 106), ("DIAGNOSIS//ICD//10//R6521", 249)])
def test_phenotype_ccs_mapping(code, ccs):
    assert ccs_of(code) == ccs
    assert ccs in PHENOTYPE_CCS


def test_phenotype_labels_from_discharge_diagnoses_only():
    ev = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:I50.9", "ICD9CM:038.9", "ICD10CM:Z99.89"])]))
    task = get_task("phenotype", "mimic3-benchmarks")
    lab = task.label(ev)
    vec = dict(zip(PHENOTYPE_CCS, lab["labels"][0].to_list()))
    assert vec[108] == 1 and vec[2] == 1 and sum(vec.values()) == 2
    assert lab["prediction_time"][0] == A + timedelta(hours=24)
    inputs = task.inputs(ev, lab)
    assert not inputs["code"].str.starts_with("ICD10CM").any()   # diagnoses come at discharge


def test_phenotype_input_drops_the_stays_own_timed_diagnoses():
    # a source that times diagnoses inside the stay (eICU): the early one is a label, not an input
    ev = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:I50.9"], dx_at="admission")]))
    task = get_task("phenotype", "mimic3-benchmarks")
    lab = task.label(ev)
    assert dict(zip(PHENOTYPE_CCS, lab["labels"][0].to_list()))[108] == 1
    assert "ICD10CM:I50.9" not in task.inputs(ev, lab)["code"].to_list()


# ---- drug recommendation -----------------------------------------------------------------
def test_drug_recommendation_labels_and_inputs():
    s1 = stay(A, D, drugs=["vancomycin"])
    s2 = stay(D + timedelta(days=10), D + timedelta(days=12), drugs=["Heparin Flush", "metoprolol tartrate"])
    ev = events_frame(patient_events(1, [s1, s2], extra=[(D + timedelta(days=10, hours=3), "ATC:C10AA05")]))
    task = get_task("drug_recommendation", "paper_5drugs")
    lab = task.label(ev)
    assert lab["categorical_value"].to_list() == ["vancomycin", "metoprolol|atorvastatin"]  # a flush is not heparin
    inputs = task.inputs(ev, lab)
    second = inputs.filter(pl.col("sample_id") == lab["sample_id"][1])
    assert "MEDICATION//vancomycin" in second["code"].to_list()          # previous stay's drug: allowed
    assert not second.filter(pl.col("time") >= s2.admit)["code"].str.contains("^(MEDICATION//|ATC:)").any()
    assert "ICD10CM:I10" in second.filter(pl.col("time") == s2.discharge)["code"].to_list()


# ---- new diagnosis -----------------------------------------------------------------------
@pytest.mark.parametrize("after,expected", [(timedelta(hours=12), None), (timedelta(days=1), None),
                                            (timedelta(days=1, minutes=1), True), (timedelta(days=365), True),
                                            (timedelta(days=365, minutes=1), False)])
def test_new_diagnosis_window(after, expected):
    t = PT + after
    ev = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:E11.9"]), stay(t - timedelta(hours=6), t, dx=["ICD10CM:I10"])],
                                     extra=[(datetime(2160, 1, 1), "MEDS_DEATH")]))
    lab = get_task("new_diagnosis_hypertension", "ehrshot_365d").label(ev)
    first = lab.filter(pl.col("stay_start") == A)["boolean_value"].to_list()
    assert first == ([] if expected is None else [expected])


def test_new_diagnosis_censoring():
    ev = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:E11.9"])]))   # record ends at D
    assert get_task("new_diagnosis_hypertension", "ehrshot_365d").label(ev)["boolean_value"].to_list() == [False]
    assert get_task("new_diagnosis_hypertension", "censored_365d").label(ev).height == 0
    dead = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:E11.9"])], death=D + timedelta(days=20)))
    assert get_task("new_diagnosis_hypertension", "censored_365d").label(dead)["boolean_value"].to_list() == [False]
    icd9 = events_frame(patient_events(1, [stay(A, D, dx=["ICD10CM:E11.9"]),
                                           stay(D + timedelta(days=50), D + timedelta(days=52), dx=["ICD9CM:401.9"])]))
    assert get_task("new_diagnosis", "ehrshot_365d", condition="hypertension").label(icd9)["boolean_value"][0] is True


# ---- contract, support and identity -------------------------------------------------------
def test_label_table_contract_and_stable_ids():
    ev = events_frame(patient_events(7, [stay(A, D), stay(D + timedelta(days=5), D + timedelta(days=9))])
                      + patient_events(9, [stay(A, D)]))
    for name, preset in DEFAULT_SUITE:
        task = get_task(name, preset)
        lab = task.label(ev)
        for col in ("sample_id", "subject_id", "prediction_time", "input_start", task.value_column, "task", "preset"):
            assert col in lab.columns
        assert (lab["preset"] == preset).all() and lab["sample_id"].n_unique() == lab.height
        # labelling one subject alone gives the same sample ids (shard-independent)
        alone = task.label(ev.filter(pl.col("subject_id") == 7))
        assert alone["sample_id"].to_list() == lab.filter(pl.col("subject_id") == 7)["sample_id"].to_list()
        assert set(task.describe()) >= {"prediction_time", "input_window", "exclusions", "label"}


def test_unsupported_tasks_are_skipped_with_reason():
    ev = events_frame(patient_events(1, [stay(A, D)]))
    b = build_task(get_task("readmission", "ehrshot_30d"), ev, meta={"medtok": {"relative_times": True},
                                                                      "dataset_name": "eicu"})
    assert b.skipped and "offsets" in b.skipped and b.labels is None
    assert build_task(get_task("mortality", "in_hospital_early"), ev, meta={"medtok": {"relative_times": True}}).skipped is None
    no_drugs = ev.filter(~pl.col("code").str.starts_with("MEDICATION//"))
    with pytest.raises(TaskNotSupported, match="drug"):
        get_task("drug_recommendation").check_support(no_drugs)


def test_registry_and_keys():
    with pytest.raises(KeyError, match="presets"):
        get_task("readmission", "30d")
    with pytest.raises(KeyError, match="unknown task"):
        get_task("sepsis")
    keys = {get_task(n, p).key() for n, p in DEFAULT_SUITE}
    assert len(keys) == len(DEFAULT_SUITE)
    assert get_task("new_diagnosis", condition="lupus").name == "new_diagnosis_lupus"


def test_stay_pairing_rules():
    lone = (A - timedelta(days=3), "HOSPITAL_ADMISSION//EMERGENCY")      # no discharge of its own
    ev = events_frame(patient_events(1, [stay(A, D), stay(D, D + timedelta(days=1))], extra=[lone]))
    s = stays(ev)
    assert s.select("admit", "discharge").rows() == [(A, D), (D, D + timedelta(days=1))]   # instant transfer: 2 stays
    assert stay_stats(ev)["dropped_no_discharge_before_next_admission"] == 1

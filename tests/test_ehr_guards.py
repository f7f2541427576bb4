"""The leakage guards pass on clean builds and fire on deliberately leaky fixtures."""

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
import pytest

from ehr.tasks.base import Task

from ehr.splits import assign_splits
from ehr.tasks.build import build_task
from ehr.tasks.guards import LeakageError, check_discharge_stamped, check_inputs, check_labels, check_splits
from ehr.tasks.mortality import Mortality, PRESETS
from ehr.tasks.registry import DEFAULT_SUITE, get_task
from tests.handmade_patients import events_frame, patient_events, stay

A = datetime(2150, 1, 1, 8, 0)


def cohort(dx_at="discharge"):
    rows = []
    for sid in range(1, 41):
        t = A + timedelta(days=sid)
        rows += patient_events(sid, [stay(t, t + timedelta(days=3), dx=["ICD10CM:I10", "ICD10CM:A41.9"], dx_at=dx_at,
                                          died=sid % 7 == 0),
                                     stay(t + timedelta(days=20), t + timedelta(days=24), dx_at=dx_at)])
    return events_frame(rows)


def test_clean_builds_pass_every_guard():
    ev = cohort()
    splits = assign_splits(ev["subject_id"].unique(), seed=1)
    for name, preset in DEFAULT_SUITE:
        b = build_task(get_task(name, preset), ev, splits=splits)
        if preset == "pyhealth_unit_10class":     # this cohort has no ICU stays
            assert "no ICU admissions" in b.skipped
            continue
        assert b.skipped is None
        assert b.guards["labels"] == "ok" and b.guards["inputs_before_prediction_time"] == "ok"
        assert b.guards["patient_level_splits"] == "ok"
        if get_task(name, preset).in_stay:
            assert b.guards["no_discharge_stamped_codes_in_stay"] == "ok"


def test_diagnoses_stamped_at_admission_fire_the_discharge_stamped_guard():
    # a loader that stamps a visit's diagnoses at its admission (PyHealth 1.x style)
    leaky = cohort(dx_at="admission")
    for name, preset in [("mortality", "in_hospital_early"), ("mortality", "in_hospital_48h"),
                         ("length_of_stay", "ehrshot_long_los")]:
        for mode in ("full", "ranges"):
            with pytest.raises(LeakageError, match="discharge-stamped"):
                build_task(get_task(name, preset), leaky, with_inputs=mode)
    # phenotype drops the stay's own diagnoses from its input, so even this loader cannot leak them
    for mode in ("full", "ranges"):
        assert build_task(get_task("phenotype", "mimic3-benchmarks"), leaky, with_inputs=mode).guards
    # a source that declares it stamps nothing at discharge (timed diagnoses) is not flagged
    b = build_task(get_task("mortality", "in_hospital_early"), leaky, meta={"discharge_stamped_pattern": ""})
    assert b.guards["no_discharge_stamped_codes_in_stay"].startswith("skipped")


@dataclass
class PeekingMortality(Mortality):
    """A task whose input window reaches past the prediction time (the whole record)."""

    def inputs(self, events, labels):
        return (labels.select("sample_id", "subject_id")
                .join(events.select("subject_id", "time", "code"), on="subject_id")
                .select("sample_id", "subject_id", "time", "code"))


def test_input_after_prediction_time_fires():
    task = PeekingMortality(preset="in_hospital_early", **PRESETS["in_hospital_early"])
    with pytest.raises(LeakageError, match="after the prediction time"):
        build_task(task, cohort())


def test_input_before_input_start_and_unknown_samples_fire():
    ev = cohort()
    task = get_task("mortality", "in_hospital_early")
    lab = task.label(ev)
    inputs = task.inputs(ev, lab)
    late_start = lab.with_columns((pl.col("prediction_time") - timedelta(hours=1)).alias("input_start"))
    with pytest.raises(LeakageError, match="before input_start"):
        check_inputs(late_start, inputs)
    with pytest.raises(LeakageError, match="not in the label table"):
        check_inputs(lab.head(3), inputs)
    # the guard sees a single leaked row among thousands
    leak = inputs.head(1).with_columns(pl.lit(datetime(2200, 1, 1)).cast(pl.Datetime("us")).alias("time"))
    with pytest.raises(LeakageError, match="1 violation"):
        check_inputs(lab, pl.concat([inputs, leak]))
    check_discharge_stamped(lab, inputs, ev)   # clean: no error


def test_splits_guard():
    ev = cohort()
    splits = assign_splits(ev["subject_id"].unique(), seed=0)
    task = get_task("readmission", "ehrshot_30d")
    lab = task.label(ev).join(splits, on="subject_id")
    check_splits(splits, lab)
    twice = pl.concat([splits, splits.head(1).with_columns(pl.lit("held_out").alias("split"))])
    with pytest.raises(LeakageError, match="more than one split"):
        check_splits(twice)
    moved = lab.with_columns(pl.when(pl.col("sample_id") == lab["sample_id"][0]).then(pl.lit("xx"))
                             .otherwise(pl.col("split")).alias("split"))
    with pytest.raises(LeakageError, match="different split"):
        check_splits(splits, moved)
    with pytest.raises(LeakageError, match="no split"):
        check_splits(splits.filter(pl.col("subject_id") != lab["subject_id"][0]), lab)
    with pytest.raises(LeakageError, match="split name"):
        check_splits(splits.with_columns(pl.lit("test").alias("split")))


def test_label_contract_guard():
    ev = cohort()
    task = get_task("length_of_stay", "pyhealth_10class")
    lab = task.label(ev)
    with pytest.raises(LeakageError, match="duplicate sample_id"):
        check_labels(task, pl.concat([lab, lab.head(1)]))
    with pytest.raises(LeakageError, match="out of range"):
        check_labels(task, lab.with_columns(pl.lit(10, dtype=pl.Int64).alias("integer_value")))
    with pytest.raises(LeakageError, match="preset"):
        check_labels(get_task("length_of_stay", "admission_10class"), lab)


def test_range_mode_guards_agree_with_full_mode():
    """Large builds guard input windows as row ranges; same verdicts as materialised inputs."""
    ev = cohort()
    for name, preset in DEFAULT_SUITE:
        task = get_task(name, preset)
        full = build_task(task, ev, with_inputs="full")
        ranged = build_task(task, ev, with_inputs="ranges")
        if full.skipped:
            continue
        own_inputs = type(task).inputs is not Task.inputs    # materialised in range mode too
        assert (ranged.inputs is None) != own_inputs
        assert ranged.guards["inputs_before_prediction_time"].startswith("ok")
        if full.labels.height and task.input_exclusion() is None and not own_inputs:   # no exclusions: window == inputs
            assert ranged.stats["input_events_window"] == full.stats["input_events"]
    leaky = cohort(dx_at="admission")
    with pytest.raises(LeakageError, match="discharge-stamped"):
        build_task(get_task("mortality", "in_hospital_early"), leaky, with_inputs="ranges")
    # a task with its own (peeking) input window is materialised and caught in range mode too
    task = PeekingMortality(preset="in_hospital_early", **PRESETS["in_hospital_early"])
    with pytest.raises(LeakageError, match="after the prediction time"):
        build_task(task, ev, with_inputs="ranges")


def test_range_guard_sees_a_window_past_the_prediction_time():
    from ehr.tasks.guards import check_input_ranges
    from ehr.tasks.inputs import input_ranges
    ev = cohort()
    task = get_task("mortality", "in_hospital_early")
    lab = task.label(ev)
    ranges, arrays = input_ranges(ev, lab)
    check_input_ranges(lab, ranges, arrays["events"])
    wider = ranges.with_columns(pl.when(pl.col("sample_id") == ranges["sample_id"][3])
                                .then(pl.col("n_timed") + 1).otherwise(pl.col("n_timed")).alias("n_timed"))
    with pytest.raises(LeakageError, match="after the prediction time"):
        check_input_ranges(lab, wider, arrays["events"])

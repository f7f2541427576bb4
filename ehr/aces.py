"""ACES (`es-aces` 0.7.3) task configs for tasks ACES can express, and an in-process runner.

ACES describes a task as a trigger event plus windows with inclusive/exclusive bounds, `has`
constraints and a label window; it reads MEDS shards. These configs state the project's
definitions in that language, so the project's labels can be checked against an independent
extractor and timed against it on the same data:

- `mortality/in_hospital_early`: trigger = admission; no discharge or death in (admission,
  +24 h]; label = a death (MEDS_DEATH or a death discharge code) up to the first discharge or
  death after +24 h; prediction time = admission + 24 h.
- `readmission/pyhealth_15d_discharge`: trigger = discharge; the stay ending there (from the
  admission before it) holds a diagnosis, a procedure and a drug and no death; a later admission
  exists; label = an admission in (discharge, +15 d); prediction time = the discharge. ACES has
  no age: the project's minors rule (< 18 at admission) is applied to ACES's rows afterwards.
- `mortality/paper`: trigger = discharge; the stay ending there holds a diagnosis, a procedure
  and a drug; label = a death in the next stay (next admission up to its discharge or death).

- `mortality/in_hospital_48h`: as in_hospital_early with 48 h.
- `readmission/paper_15d_admit`: trigger = admission; the stay up to its first discharge holds
  a diagnosis, a procedure and a drug and no death; a later admission exists; label = an
  admission in (this admission, +16 d) (next admission - this admission <= 15 whole days).
- `length_of_stay/pyhealth_10class` and `admission_10class`: ACES labels are binary, so each is
  checked through 9 cumulative configs "stay < t whole days" (t = 1..8, 15: label = a discharge
  in (admission, admission + t d), which holds exactly when the first discharge after the
  admission is that early); the ten classes are rebuilt from them (`los_classes_from_aces`).
  pyhealth_10class requires dx, px and drug in the stay and indexes at the discharge;
  admission_10class indexes at the admission.

These configs were written from the project's own rules (their sources: PyHealth's and the
MedTok code's task functions, as the notes state), so agreement confirms the implementation
of those rules by an independent extractor, not the definitions themselves.

Known differences (tested): a next admission at the very instant of a discharge is a
readmission for the project (gap 0 < 15 days) but not for ACES, whose windows start strictly
after the trigger; an admission without a discharge of its own is dropped by the project's
stay rule, while ACES pairs it with the next discharge; ACES predicates see codes and times,
not admission ids, so a stay whose drug rows the source dates outside it (MIMIC-III demo:
subject 10088, admission 169938) has a drug for the project (by `hadm_id`) and none for ACES
(one extra sample in mortality/paper, readmission/paper_15d_admit and
length_of_stay/pyhealth_10class). Otherwise, on the MIMIC-III demo and the boundary fixture,
the labels are identical.
Not expressible in ACES (so not compared; reasons in `NOT_EXPRESSIBLE`): calendar-day
prediction times (EHRSHOT's 23:59: readmission/ehrshot_30d, ehrshot_long_los), the
first-diagnosis rule of new-diagnosis tasks, the multi-label phenotype and drug tasks, and the
unit-stay LOS (its code requirement needs admission ids).
Run: `run_aces(task_key, shard_path)`; CLI equivalent: `write_configs(dir)` then
`aces-cli data=sharded data.standard=meds data.root=... config_path=dir/<task>.yaml ...`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import polars as pl

from ehr.schema import PREDICTION_TIME, SUBJECT_ID
from ehr.tasks.stays import age_years, stays

DEATH_CODES = {"death": {"code": "MEDS_DEATH"},
               "died_discharge": {"code": {"regex": "^HOSPITAL_DISCHARGE//.*(?i:DIED|DEAD|EXPIRED|DEATH)"}},
               "death_any": {"expr": "or(death, died_discharge)"}}
STAY_CODES = {"admission": {"code": {"regex": "^HOSPITAL_ADMISSION//"}},
              "discharge": {"code": {"regex": "^HOSPITAL_DISCHARGE//"}},
              "discharge_or_death": {"expr": "or(discharge, death)"}}
FAMILY_CODES = {"dx": {"code": {"regex": "^(ICD9CM:|ICD10CM:|DIAGNOSIS//)"}},
                "px": {"code": {"regex": "^(ICD9PCS:|ICD10PCS:|PROCEDURE//)"}},
                "drug": {"code": {"regex": "^(MEDICATION//|ATC:)"}}}

CONFIGS: dict[str, dict] = {
    "mortality/in_hospital_early": {
        "description": "in-hospital death predicted 24 h after admission (project preset in_hospital_early)",
        "predicates": {**STAY_CODES, **DEATH_CODES},
        "trigger": "admission",
        "windows": {
            "input": {"start": None, "end": "trigger + 24h", "start_inclusive": True, "end_inclusive": True,
                      "index_timestamp": "end"},
            "gap": {"start": "trigger", "end": "start + 24h", "start_inclusive": False, "end_inclusive": True,
                    "has": {"discharge_or_death": "(None, 0)"}},
            "target": {"start": "gap.end", "end": "start -> discharge_or_death", "start_inclusive": False,
                       "end_inclusive": True, "label": "death_any"},
        },
    },
    "readmission/pyhealth_15d_discharge": {
        "description": "next admission - discharge < 15 days (project preset pyhealth_15d_discharge, minors after)",
        "predicates": {**STAY_CODES, **DEATH_CODES, **FAMILY_CODES},
        "trigger": "discharge",
        "windows": {
            "stay": {"start": "end <- admission", "end": "trigger", "start_inclusive": True, "end_inclusive": True,
                     "has": {"dx": "(1, None)", "px": "(1, None)", "drug": "(1, None)", "death_any": "(None, 0)"}},
            "target": {"start": "trigger", "end": "start + 15d", "start_inclusive": False, "end_inclusive": False,
                       "label": "admission", "index_timestamp": "start"},
            "future": {"start": "trigger", "end": None, "start_inclusive": False, "end_inclusive": True,
                       "has": {"admission": "(1, None)"}},
        },
    },
    "mortality/paper": {
        "description": "death in the next admission, predicted at this discharge (project preset paper)",
        "predicates": {**STAY_CODES, **DEATH_CODES, **FAMILY_CODES},
        "trigger": "discharge",
        "windows": {
            "stay": {"start": "end <- admission", "end": "trigger", "start_inclusive": True, "end_inclusive": True,
                     "has": {"dx": "(1, None)", "px": "(1, None)", "drug": "(1, None)"},
                     "index_timestamp": "end"},
            "until_next": {"start": "trigger", "end": "start -> admission", "start_inclusive": False,
                           "end_inclusive": True},
            "next_stay": {"start": "until_next.end", "end": "start -> discharge_or_death", "start_inclusive": True,
                          "end_inclusive": True, "label": "death_any"},
        },
    },
}
CONFIGS["mortality/in_hospital_48h"] = {
    **CONFIGS["mortality/in_hospital_early"],
    "description": "in-hospital death predicted 48 h after admission (project preset in_hospital_48h)",
    "windows": {
        "input": {"start": None, "end": "trigger + 48h", "start_inclusive": True, "end_inclusive": True,
                  "index_timestamp": "end"},
        "gap": {"start": "trigger", "end": "start + 48h", "start_inclusive": False, "end_inclusive": True,
                "has": {"discharge_or_death": "(None, 0)"}},
        "target": {"start": "gap.end", "end": "start -> discharge_or_death", "start_inclusive": False,
                   "end_inclusive": True, "label": "death_any"},
    },
}
CONFIGS["readmission/paper_15d_admit"] = {
    "description": "next admission - this admission <= 15 whole days (< 16 d), predicted at this discharge "
                   "(project preset paper_15d_admit, the MedTok code)",
    "predicates": {**STAY_CODES, **DEATH_CODES, **FAMILY_CODES},
    "trigger": "admission",
    "windows": {
        "stay": {"start": "trigger", "end": "start -> discharge", "start_inclusive": True, "end_inclusive": True,
                 "has": {"dx": "(1, None)", "px": "(1, None)", "drug": "(1, None)", "death_any": "(None, 0)"},
                 "index_timestamp": "end"},
        "target": {"start": "trigger", "end": "start + 16d", "start_inclusive": False, "end_inclusive": False,
                   "label": "admission"},
        "future": {"start": "stay.end", "end": None, "start_inclusive": False, "end_inclusive": True,
                   "has": {"admission": "(1, None)"}},
    },
}
# Length of stay, 10 classes (PyHealth's bins over whole days). ACES labels are binary, but the
# 10 classes are a function of the 9 cumulative ones "stay < t days" for t in LOS_THRESHOLDS: the
# first discharge after the admission falls in [admission, admission + t d) exactly when the
# stay is shorter than t whole days. `los_classes_from_aces` rebuilds the class.
LOS_THRESHOLDS = (1, 2, 3, 4, 5, 6, 7, 8, 15)
for _preset, _at, _has in (("pyhealth_10class", "end", {"dx": "(1, None)", "px": "(1, None)", "drug": "(1, None)"}),
                           ("admission_10class", "start", {})):
    for _t in LOS_THRESHOLDS:
        CONFIGS[f"length_of_stay/{_preset}@lt{_t}d"] = {
            "description": f"stay shorter than {_t} whole days (one of the cumulative binaries of project "
                           f"preset {_preset}; prediction at the {'discharge' if _at == 'end' else 'admission'})",
            "predicates": {**STAY_CODES, **FAMILY_CODES},
            "trigger": "admission",
            "windows": {
                "stay": {"start": "trigger", "end": "start -> discharge", "start_inclusive": True,
                         "end_inclusive": True, **({"has": _has} if _has else {}), "index_timestamp": _at},
                "target": {"start": "trigger", "end": f"start + {_t * 24}h", "start_inclusive": False,
                           "end_inclusive": False, "label": "discharge"},
            },
        }
TASKS = list(CONFIGS)
# the project presets each config (or config family) checks; `compare_preset` runs them
PRESET_CHECKS = {
    "mortality/in_hospital_early": ["mortality/in_hospital_early"],
    "mortality/in_hospital_48h": ["mortality/in_hospital_48h"],
    "mortality/paper": ["mortality/paper"],
    "readmission/pyhealth_15d_discharge": ["readmission/pyhealth_15d_discharge"],
    "readmission/paper_15d_admit": ["readmission/paper_15d_admit"],
    "length_of_stay/pyhealth_10class": [f"length_of_stay/pyhealth_10class@lt{t}d" for t in LOS_THRESHOLDS],
    "length_of_stay/admission_10class": [f"length_of_stay/admission_10class@lt{t}d" for t in LOS_THRESHOLDS],
}
# presets ACES cannot express, and why
NOT_EXPRESSIBLE = {
    "readmission/ehrshot_30d": "prediction at 23:59 on the discharge day: ACES times are offsets from events, "
                               "not calendar days",
    "length_of_stay/ehrshot_long_los": "prediction at 23:59 on the admission day (calendar day)",
    "length_of_stay/pyhealth_unit_10class": "expressible with ICU markers, but the unit stay's dx/px/drug "
                                            "requirement needs events inside the unit stay of the same hospital stay "
                                            "(admission id), which ACES predicates cannot see; not compared",
    "new_diagnosis_*/ehrshot_365d, censored_365d": "first diagnosis of a code set (none before, across all "
                                                   "history) and 23:59 prediction times; censoring needs the "
                                                   "record's end",
    "phenotype/mimic3-benchmarks": "multi-label over 25 CCS categories of the stay's discharge diagnoses; each "
                                   "would be a predicate over hundreds of ICD codes, and the diagnoses are "
                                   "stamped at the discharge, outside an admission + 24 h window",
    "drug_recommendation/paper_5drugs": "multi-label over the stay's drugs, with the current stay's drugs removed "
                                        "from the input (ACES labels samples, it does not shape inputs)",
}
__all__ = ["CONFIGS", "TASKS", "PRESET_CHECKS", "NOT_EXPRESSIBLE", "write_configs", "load_config", "run_aces",
           "apply_project_rules", "compare", "aces_labels_for_preset", "compare_preset"]


def write_configs(out_dir: str | Path) -> dict[str, Path]:
    """One ACES YAML per task (`mortality__in_hospital_early.yaml`, ...)."""
    import yaml
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, cfg in CONFIGS.items():
        p = out / (key.replace("/", "__") + ".yaml")
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        paths[key] = p
    return paths


def load_config(task_key: str):
    """ACES's TaskExtractorConfig for one of TASKS (through its own YAML loader)."""
    from aces.config import TaskExtractorConfig
    if task_key not in CONFIGS:
        raise KeyError(f"ACES configs exist for {TASKS}; got {task_key!r}")
    with tempfile.TemporaryDirectory() as d:
        return TaskExtractorConfig.load(config_path=write_configs(d)[task_key])


def run_aces(task_key: str, shard_path: str | Path) -> pl.DataFrame:
    """ACES's labels for one MEDS shard file: subject_id, prediction_time, boolean_value.
    The config is loaded afresh for every query: es-aces 0.7.3 mutates a TaskExtractorConfig
    while querying, so reusing one on a second shard shifts its windows (a 24 h input window
    became 48 h in our runs)."""
    from aces import predicates, query
    from omegaconf import DictConfig
    cfg = load_config(task_key)
    logging.getLogger("aces").setLevel(logging.WARNING)
    pred = predicates.get_predicates_df(cfg, DictConfig({"path": str(shard_path), "standard": "meds"}))
    res = query.query(cfg, pred)
    if res.is_empty():
        return pl.DataFrame(schema={SUBJECT_ID: pl.Int64, PREDICTION_TIME: pl.Datetime("us"),
                                    "boolean_value": pl.Boolean})
    return res.select(pl.col("subject_id").cast(pl.Int64), pl.col("index_timestamp").alias(PREDICTION_TIME),
                      (pl.col("label") > 0).alias("boolean_value"))


def apply_project_rules(task_key: str, aces_labels: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Rules ACES cannot state, applied to its rows: PyHealth's minors exclusion (age < 18 at the
    admission of the stay, from MEDS_BIRTH)."""
    if task_key != "readmission/pyhealth_15d_discharge" or aces_labels.is_empty():
        return aces_labels
    s = stays(events).select(SUBJECT_ID, "admit", "discharge", "birth")
    j = aces_labels.join(s, left_on=[SUBJECT_ID, PREDICTION_TIME], right_on=[SUBJECT_ID, "discharge"], how="left")
    return j.filter(age_years("admit").fill_null(99) >= 18).select(aces_labels.columns)


def compare(ours: pl.DataFrame, theirs: pl.DataFrame) -> dict:
    """Row-level agreement of two binary label tables keyed by (subject_id, prediction_time)."""
    a = ours.select(SUBJECT_ID, PREDICTION_TIME, pl.col("boolean_value").alias("ours"))
    b = theirs.select(SUBJECT_ID, PREDICTION_TIME, pl.col("boolean_value").alias("aces"))
    j = a.join(b, on=[SUBJECT_ID, PREDICTION_TIME], how="full", coalesce=True)
    return {"ours": a.height, "aces": b.height,
            "only_ours": j.filter(pl.col("aces").is_null()).height,
            "only_aces": j.filter(pl.col("ours").is_null()).height,
            "label_disagree": j.filter(pl.col("ours").is_not_null() & pl.col("aces").is_not_null()
                                       & (pl.col("ours") != pl.col("aces"))).height}


def los_classes_from_aces(cumulative: dict[int, pl.DataFrame]) -> pl.DataFrame:
    """{threshold t: ACES labels of "stay < t whole days"} -> subject_id, prediction_time,
    integer_value (PyHealth's class: <1 d -> 0, 1..7 -> days, 8-14 -> 8, > 14 -> 9)."""
    keys = [SUBJECT_ID, PREDICTION_TIME]
    base = None
    for t in LOS_THRESHOLDS:
        df = cumulative[t].select(*keys, pl.col("boolean_value").cast(pl.Int64).alias(f"lt{t}"))
        base = df if base is None else base.join(df, on=keys, how="full", coalesce=True)
    # class = number of thresholds the stay reaches, mapped onto the bins
    reached = sum((1 - pl.col(f"lt{t}").fill_null(0)) for t in LOS_THRESHOLDS)
    return base.select(*keys, reached.cast(pl.Int64).alias("integer_value"))


def aces_labels_for_preset(preset_key: str, shard_path, events: pl.DataFrame) -> pl.DataFrame:
    """ACES's labels for one project preset on one shard (binary presets: boolean_value;
    length of stay: integer_value rebuilt from the cumulative configs)."""
    keys = PRESET_CHECKS[preset_key]
    if preset_key.startswith("length_of_stay/"):
        return los_classes_from_aces({int(k.split("@lt")[1][:-1]): run_aces(k, shard_path) for k in keys})
    return apply_project_rules(keys[0], run_aces(keys[0], shard_path), events)


def compare_preset(preset_key: str, ours: pl.DataFrame, theirs: pl.DataFrame) -> dict:
    """Row-level agreement keyed by (subject_id, prediction_time), on the preset's label column."""
    col = "integer_value" if "integer_value" in theirs.columns else "boolean_value"
    a = ours.select(SUBJECT_ID, PREDICTION_TIME, pl.col(col).alias("ours"))
    b = theirs.select(SUBJECT_ID, PREDICTION_TIME, pl.col(col).alias("aces"))
    j = a.join(b, on=[SUBJECT_ID, PREDICTION_TIME], how="full", coalesce=True)
    return {"ours": a.height, "aces": b.height,
            "only_ours": j.filter(pl.col("aces").is_null()).height,
            "only_aces": j.filter(pl.col("ours").is_null()).height,
            "label_disagree": j.filter(pl.col("ours").is_not_null() & pl.col("aces").is_not_null()
                                       & (pl.col("ours") != pl.col("aces"))).height}

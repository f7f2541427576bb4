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

Known difference (tested): a next admission at the very instant of a discharge is a readmission
for the project (gap 0 < 15 days) but not for ACES, whose windows start strictly after the
trigger; an admission without a discharge of its own is dropped by the project's stay rule,
while ACES pairs it with the next discharge. On clean data (the MIMIC-III demo, the synthetic
cohort) the labels are identical.
Not expressible in ACES (so not compared): calendar-day prediction times (EHRSHOT's 23:59),
multi-class and multi-label labels (length of stay classes, phenotypes, drugs), and the
first-diagnosis rule of new-diagnosis tasks.
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
TASKS = list(CONFIGS)
__all__ = ["CONFIGS", "TASKS", "write_configs", "load_config", "run_aces", "apply_project_rules", "compare"]


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

"""All tasks and their presets: `get_task(name, preset)`, `TASKS`, `all_tasks()`.

`TASKS[name]` lists the presets of each task (the first is the default). New-diagnosis tasks
are one per condition (`new_diagnosis_hypertension`, ...), like EHRSHOT's separate tasks;
`get_task("new_diagnosis", preset, condition=...)` builds any of them.
"""

from __future__ import annotations

from ehr.tasks import drug_recommendation, length_of_stay, mortality, new_diagnosis, phenotype, readmission
from ehr.tasks import emergency_admission, icu_readmission  # issue 22 tasks
from ehr.tasks.base import Task

_MODULES = {
    "mortality": mortality,
    "readmission": readmission,
    "length_of_stay": length_of_stay,
    "phenotype": phenotype,
    "drug_recommendation": drug_recommendation,
}

TASKS: dict[str, list[str]] = {name: list(m.PRESETS) for name, m in _MODULES.items()}
for _cond in new_diagnosis.CONDITIONS:
    TASKS[f"new_diagnosis_{_cond}"] = list(new_diagnosis.PRESETS)

# the task/preset pairs the benchmark labels by default (one new-diagnosis condition)
DEFAULT_SUITE: list[tuple[str, str]] = [
    (name, preset) for name in _MODULES for preset in TASKS[name]
] + [("new_diagnosis_hypertension", p) for p in new_diagnosis.PRESETS]

# issue 22 (the hierarchical-ICD paper's tasks): registered, not in DEFAULT_SUITE (today's grids unchanged)
_MODULES.update({"emergency_admission": emergency_admission, "icu_readmission": icu_readmission})
TASKS.update({name: list(_MODULES[name].PRESETS) for name in ("emergency_admission", "icu_readmission")})


def get_task(name: str, preset: str | None = None, **kwargs) -> Task:
    """The task `name` under `preset` (default: its first preset). Unknown names or presets
    raise KeyError listing the valid ones."""
    if name == "new_diagnosis" or name.startswith("new_diagnosis_"):
        condition = kwargs.pop("condition", None) or (name[len("new_diagnosis_"):] if name != "new_diagnosis" else "hypertension")
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return new_diagnosis.make(preset or list(new_diagnosis.PRESETS)[0], condition=condition)
    if name not in _MODULES:
        raise KeyError(f"unknown task {name!r}; tasks: {sorted(TASKS)}")
    if kwargs:
        raise TypeError(f"unexpected arguments {sorted(kwargs)} (presets are fixed definitions)")
    mod = _MODULES[name]
    return mod.make(preset or list(mod.PRESETS)[0])


def all_tasks(suite: list[tuple[str, str]] | None = None) -> list[Task]:
    return [get_task(n, p) for n, p in (suite or DEFAULT_SUITE)]

"""Per-subject reference implementations of every task (plain Python loops, written from the
stated definitions, independently of the vectorised polars code). Tests compare the two."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import polars as pl
import pytest

from ehr.tasks.ccs import PHENOTYPE_CCS, icd9_to_ccs, icd10_to_ccs
from ehr.tasks.drug_recommendation import DRUGS
from ehr.tasks.new_diagnosis import CONDITIONS
from ehr.tasks.registry import DEFAULT_SUITE, get_task
from tests.handmade_patients import edge_cohort

DEATH_RE = re.compile(r"(DIED|DEAD|EXPIRED|DEATH)", re.I)
DX_RE = re.compile(r"^(ICD9CM:|ICD10CM:|DIAGNOSIS//)")
PX_RE = re.compile(r"^(ICD9PCS:|ICD10PCS:|PROCEDURE//)")
ICD_RE = re.compile(r"^(?:ICD(9|10)CM:|DIAGNOSIS//ICD(?://)?(9|10)//)(.+)$")


def by_subject(events) -> dict[int, list[tuple]]:
    out: dict[int, list[tuple]] = {}
    for s, t, c in events.select("subject_id", "time", "code").iter_rows():
        out.setdefault(s, []).append((t, c))
    return out


def is_drug(c):
    return c.startswith("MEDICATION//") or c.startswith("ATC:")


def subject_stays(rows):
    # markers in time order, a discharge before an admission at the same instant; an admission
    # pairs with the marker right after it when that is a discharge
    marks = sorted({(t, 1, None) for t, c in rows if t is not None and c.startswith("HOSPITAL_ADMISSION//")}
                   | {(t, 0, min(c2 for t2, c2 in rows if t2 == t and c2.startswith("HOSPITAL_DISCHARGE//")))
                      for t, c in rows if t is not None and c.startswith("HOSPITAL_DISCHARGE//")},
                   key=lambda m: (m[0], m[1]))
    dis, stays = {}, []
    for k, (t, kind, code) in enumerate(marks):
        if kind == 1 and k + 1 < len(marks) and marks[k + 1][1] == 0:
            stays.append([t, marks[k + 1][0]])
            dis[marks[k + 1][0]] = marks[k + 1][2]
    births = [t for t, c in rows if c == "MEDS_BIRTH" and t is not None]
    deaths = [t for t, c in rows if c == "MEDS_DEATH" and t is not None]
    birth, death = (min(births) if births else None), (min(deaths) if deaths else None)
    out = []
    for a, d in stays:
        died = bool(DEATH_RE.search(dis[d])) or (death is not None and a <= death <= d)
        fam = set()
        for t, c in rows:
            if t is None:
                continue
            if DX_RE.match(c):
                # discharge-stamped: the stay whose discharge is the first at or after t
                own = next((s for s in stays if s[1] >= t), None)
                if own == [a, d] and a <= t <= d:
                    fam.add("dx")
            elif a <= t <= d:
                own = max((s for s in stays if s[0] <= t), key=lambda s: s[0])
                if own == [a, d]:
                    if PX_RE.match(c):
                        fam.add("px")
                    elif is_drug(c):
                        fam.add("drug")
        out.append(dict(admit=a, discharge=d, died=died, fam=fam, birth=birth, death=death))
    return out


def age(at: datetime, birth: datetime | None):
    if birth is None:
        return None
    return at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))


def eod(t: datetime) -> datetime:
    return datetime(t.year, t.month, t.day, 23, 59)


def full(s):
    return {"dx", "px", "drug"} <= s["fam"]


def ref_readmission(events, preset):
    out = []
    for sid, rows in by_subject(events).items():
        st = subject_stays(rows)
        for i, s in enumerate(st):
            nxt = st[i + 1]["admit"] if i + 1 < len(st) else None
            if s["died"]:
                continue
            if preset == "paper_15d_admit":
                if nxt is None or not full(s):
                    continue
                out.append((sid, s["discharge"], (nxt - s["admit"]).days <= 15))
            elif preset == "pyhealth_15d_discharge":
                a = age(s["admit"], s["birth"])
                if nxt is None or not full(s) or (a is not None and a < 18):
                    continue
                out.append((sid, s["discharge"], (nxt - s["discharge"]) < timedelta(days=15)))
            else:
                pt = eod(s["discharge"])
                if nxt is not None and nxt <= pt:
                    continue
                out.append((sid, pt, nxt is not None and nxt - pt <= timedelta(days=30)))
    return out


def ref_mortality(events, preset):
    out = []
    for sid, rows in by_subject(events).items():
        st = subject_stays(rows)
        for i, s in enumerate(st):
            if preset == "paper":
                if i + 1 < len(st) and full(s):
                    out.append((sid, s["discharge"], st[i + 1]["died"]))
            else:
                h = 24 if preset == "in_hospital_early" else 48
                pt = s["admit"] + timedelta(hours=h)
                end = min(s["discharge"], s["death"]) if (s["died"] and s["death"]) else s["discharge"]
                if end > pt:
                    out.append((sid, pt, s["died"]))
    return out


def los_bin(days):
    return 0 if days < 1 else days if days <= 7 else 8 if days <= 14 else 9


def ref_los(events, preset):
    out = []
    for sid, rows in by_subject(events).items():
        for s in subject_stays(rows):
            los = s["discharge"] - s["admit"]
            if preset == "pyhealth_10class":
                if full(s):
                    out.append((sid, s["discharge"], los_bin(los.days)))
            elif preset == "admission_10class":
                out.append((sid, s["admit"], los_bin(los.days)))
            else:
                pt = eod(s["admit"])
                if s["discharge"] > pt:
                    out.append((sid, pt, los >= timedelta(days=7)))
    return out


def ccs(code):
    m = ICD_RE.match(code)
    if not m:
        return None
    v, icd = m.group(1) or m.group(2), m.group(3).replace(".", "").upper()
    return (icd9_to_ccs() if v == "9" else icd10_to_ccs()).get(icd)


def ref_phenotype(events, preset="mimic3-benchmarks"):
    out = []
    for sid, rows in by_subject(events).items():
        st = subject_stays(rows)
        for s in st:
            pt = s["admit"] + timedelta(hours=24)
            if s["discharge"] <= pt:
                continue
            dx = [c for t, c in rows if t is not None and DX_RE.match(c) and s["admit"] <= t <= s["discharge"]
                  and next((x for x in st if x["discharge"] >= t), None) is s]
            if not dx:
                continue
            cats = {ccs(c) for c in dx}
            out.append((sid, pt, tuple(int(c in cats) for c in PHENOTYPE_CCS)))
    return out


def drug_hits(code):
    name = code[len("MEDICATION//"):].lower() if code.startswith("MEDICATION//") else None
    hits = []
    for drug, pattern, atc in DRUGS:
        ok = code == f"ATC:{atc}"
        if name is not None and re.search(pattern, name):
            ok = ok or not (drug == "heparin" and re.search(r"\b(flush|lock)\b", name))
        hits.append(ok)
    return hits


def ref_drugs(events, preset="paper_5drugs"):
    out = []
    for sid, rows in by_subject(events).items():
        st = subject_stays(rows)
        for s in st:
            if not full(s):
                continue
            got = [False] * len(DRUGS)
            for t, c in rows:
                if t is not None and is_drug(c) and s["admit"] <= t <= s["discharge"] \
                        and max((x for x in st if x["admit"] <= t), key=lambda x: x["admit"]) is s:
                    got = [g or h for g, h in zip(got, drug_hits(c))]
            out.append((sid, s["discharge"], tuple(int(g) for g in got)))
    return out


def is_condition(code, condition):
    m = ICD_RE.match(code)
    if not m:
        return False
    v, icd = m.group(1) or m.group(2), m.group(3).replace(".", "").upper()
    ten, nine = CONDITIONS[condition]
    return any(icd.startswith(p) for p in (ten if v == "10" else nine))


def ref_new_diagnosis(events, preset, condition="hypertension"):
    out = []
    for sid, rows in by_subject(events).items():
        st = subject_stays(rows)
        dx = [t for t, c in rows if t is not None and DX_RE.match(c) and is_condition(c, condition)]
        first = min(dx) if dx else None
        timed = [t for t, _ in rows if t is not None]
        last = max(timed) if timed else None
        dead = any(c == "MEDS_DEATH" and t is not None for t, c in rows)
        seen = set()
        for s in st:
            if s["died"]:
                continue
            pt = eod(s["discharge"])
            if pt in seen:
                continue
            if first is not None and first <= pt + timedelta(days=1):
                continue
            pos = first is not None and first <= pt + timedelta(days=365)
            if preset == "censored_365d" and not pos and not (last >= pt + timedelta(days=365) or dead):
                continue
            seen.add(pt)
            out.append((sid, pt, pos))
    return out


REFERENCE = {
    "mortality": ref_mortality, "readmission": ref_readmission, "length_of_stay": ref_los,
    "phenotype": ref_phenotype, "drug_recommendation": ref_drugs,
    "new_diagnosis_hypertension": ref_new_diagnosis,
}


def ref_labels(task, events) -> list[tuple]:
    return sorted(REFERENCE[task.name](events, task.preset))


def vec_labels(task, labels) -> list[tuple]:
    vc = task.value_column
    rows = labels.select("subject_id", "prediction_time", vc).iter_rows()
    if task.kind == "multilabel":
        return sorted((s, t, tuple(v)) for s, t, v in rows)
    if task.kind == "binary":
        return sorted((s, t, bool(v)) for s, t, v in rows)
    return sorted((s, t, int(v)) for s, t, v in rows)


def ref_inputs(task, events, labels) -> list[tuple]:
    """(sample_id, time, code) each sample sees, by the default rule plus drug exclusion."""
    rows = by_subject(events)
    out = []
    for sid, subj, pt, start, stay_start in labels.select(
            "sample_id", "subject_id", "prediction_time", "input_start", "stay_start").iter_rows():
        for t, c in rows[subj]:
            if t is None or ((start is None or t >= start) and t <= pt):
                if task.name == "drug_recommendation" and t is not None and is_drug(c) and t >= stay_start:
                    continue
                if task.name == "phenotype" and t is not None and DX_RE.match(c) and t >= stay_start:
                    continue
                out.append((sid, t, c))
    return sorted(out, key=lambda r: (r[0], r[1] is not None, r[1] or datetime.min, r[2]))


# ---------------------------------------------------------------------------------------
# tests: vectorised == reference, on random edge-heavy patients and a synthetic cohort

@pytest.fixture(scope="module")
def cohort():
    return edge_cohort(400, seed=3)


# unit-stay LOS has its own hand-made test (tests/test_ehr_tasks.py); these cohorts have no ICU stays
HOSPITAL_SUITE = [p for p in DEFAULT_SUITE if p != ("length_of_stay", "pyhealth_unit_10class")]


@pytest.mark.parametrize("name,preset", HOSPITAL_SUITE)
def test_vectorised_equals_reference(cohort, name, preset):
    task = get_task(name, preset)
    labels = task.label(cohort)
    assert labels.height > 0
    assert vec_labels(task, labels) == ref_labels(task, cohort)


@pytest.mark.parametrize("name,preset", [("drug_recommendation", "paper_5drugs"), ("mortality", "in_hospital_early"),
                                         ("readmission", "ehrshot_30d"), ("phenotype", "mimic3-benchmarks")])
def test_inputs_equal_reference(cohort, name, preset):
    task = get_task(name, preset)
    sub = cohort.filter(pl.col("subject_id") <= 120)
    labels = task.label(sub)
    got = task.inputs(sub, labels)
    got_rows = sorted(got.select("sample_id", "time", "code").iter_rows(),
                      key=lambda r: (r[0], r[1] is not None, r[1] or datetime.min, r[2]))
    assert got_rows == ref_inputs(task, sub, labels)


def test_synthetic_cohort_vectorised_equals_reference():
    from medbase.paths import default_vocab_dir
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built (python scripts/build_vocab.py)")
    from ehr.synthetic.cohort import SyntheticConfig, generate
    ev = generate(SyntheticConfig(n_patients=80, seed=11, scenario="hierarchy")).events
    for name, preset in HOSPITAL_SUITE:
        task = get_task(name, preset)
        assert vec_labels(task, task.label(ev)) == ref_labels(task, ev), (name, preset)

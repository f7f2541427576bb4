"""The synthetic cohort: deterministic, says it is synthetic, every task labellable, scenarios
planted as documented, rarity recorded, valid MEDS, no tokenizer involved."""

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from medbase.paths import default_vocab_dir

pytestmark = pytest.mark.skipif(not (default_vocab_dir() / "codes.parquet").exists(),
                                reason="vocabulary cache not built (python scripts/build_vocab.py)")


@pytest.fixture(scope="module")
def small():
    from ehr.synthetic.cohort import SyntheticConfig, generate
    return generate(SyntheticConfig(n_patients=800, seed=11, scenario="hierarchy", subjects_per_shard=300))


def test_deterministic_by_seed(small):
    from ehr.synthetic.cohort import SyntheticConfig, generate
    again = generate(SyntheticConfig(n_patients=800, seed=11, scenario="hierarchy", subjects_per_shard=300))
    assert small.events.equals(again.events)
    assert small.truth.equals(again.truth)
    other = generate(SyntheticConfig(n_patients=100, seed=12, scenario="null"))
    assert not small.events.head(other.events.height).equals(other.events)


def test_events_are_meds_shaped_and_synthetic(small):
    from ehr.schema import EVENT_SCHEMA
    ev = small.events
    assert dict(ev.schema) == EVENT_SCHEMA
    assert small.meta["synthetic"] is True and "SYNTHETIC" in small.meta["note"]
    assert ev["subject_id"].n_unique() == 800
    fam = ev.select(pl.col("code").str.extract(r"^([A-Z0-9_]+)[:/]", 1).alias("f"))["f"].value_counts()
    have = set(fam["f"].drop_nulls().to_list())
    assert {"ICD10CM", "ICD10PCS", "MEDICATION", "ATC", "LAB", "HOSPITAL_ADMISSION", "HOSPITAL_DISCHARGE",
            "GENDER"} <= have
    assert set(ev.filter(pl.col("time").is_null())["code"].unique()) <= {"GENDER//F", "GENDER//M"}
    # real vocabulary codes only
    from ehr.synthetic.world import load_code_table
    known = set(load_code_table()["code_id"])
    dx = ev.filter(pl.col("code").str.starts_with("ICD10"))["code"].unique().to_list()
    assert set(dx) <= known


def test_every_task_can_be_labelled(small):
    from ehr.tasks.build import build_task
    from ehr.tasks.registry import DEFAULT_SUITE, get_task
    for name, preset in DEFAULT_SUITE:
        task = get_task(name, preset)
        b = build_task(task, small.events, splits=small.splits, meta=small.meta, with_inputs=False)
        if preset == "pyhealth_unit_10class":     # the generator writes no ICU stays
            assert "no ICU admissions" in b.skipped
            continue
        assert b.skipped is None and b.labels.height > 50, (name, preset)
        v = b.labels[task.value_column]
        if task.kind == "binary":
            assert 0 < v.cast(pl.Float64).mean() < 1, (name, preset)
        elif task.kind == "multiclass":
            assert v.n_unique() == 10
        else:
            assert (np.array(v.to_list()).sum(axis=0) > 0).sum() >= 3, (name, preset)


def test_hierarchy_scenario_effects_shared_within_category():
    from ehr.synthetic.world import get_world
    w = get_world(11, "hierarchy")
    eff = pl.from_pandas(w.effects)
    cats = set(w.groups.loc[w.groups["level"] == "category", "group"])
    inside = eff.filter(pl.col("category").is_in(list(cats)))
    # every code of an informative category carries the same effect (rare ones included)
    assert inside.group_by("category").agg(pl.col("effect").n_unique().alias("n"))["n"].max() == 1
    sizes = inside.group_by("category").len()["len"]
    assert sizes.min() >= 4
    # the null world plants nothing; cross-cutting groups span chapters
    assert len(get_world(11, "null").effects) == 0
    cc = get_world(11, "cross-cutting")
    spans = pl.from_pandas(cc.effects).group_by("ccs").agg(pl.col("chapter").n_unique().alias("n"))
    assert spans["n"].min() >= 2


def test_outcomes_follow_the_planted_signal(small):
    """Under `hierarchy` in-hospital death rises with the code score; under `null` the score is 0."""
    from ehr.synthetic.cohort import SyntheticConfig, generate
    from ehr.tasks.registry import get_task
    lab = get_task("mortality", "in_hospital_early").label(small.events).join(
        small.truth.select("subject_id", "mean_code_score"), on="subject_id")
    hi = lab.filter(pl.col("mean_code_score") > lab["mean_code_score"].quantile(0.75))["boolean_value"].mean()
    lo = lab.filter(pl.col("mean_code_score") < lab["mean_code_score"].quantile(0.25))["boolean_value"].mean()
    assert hi > 2 * lo
    null = generate(SyntheticConfig(n_patients=200, seed=11, scenario="null"))
    assert (null.truth["mean_code_score"] == 0).all() and (null.truth["n_informative"] == 0).all()


def test_rarity_of_informative_codes_recorded(small):
    t = small.truth
    row = t.filter(pl.col("n_informative") >= 2).row(0, named=True)
    assert row["min_informative_train_subjects"] == min(row["informative_train_subjects"])
    # train_subjects is the number of train subjects whose record holds the code
    code = row["informative_codes"][0]
    train = small.splits.filter(pl.col("split") == "train")["subject_id"]
    direct = small.events.filter((pl.col("code") == code) & pl.col("subject_id").is_in(train.implode()))["subject_id"].n_unique()
    assert small.code_effects.filter(pl.col("code") == code)["train_subjects"][0] == direct
    assert (t["min_informative_train_subjects"].drop_nulls() <= 5).sum() > 0   # rare carriers exist


def test_written_meds_directory_validates(tmp_path):
    from ehr import meds_io
    from ehr.synthetic.cohort import SyntheticConfig, write_synthetic_meds
    cfg = SyntheticConfig(n_patients=300, seed=11, scenario="null", subjects_per_shard=120)
    res = write_synthetic_meds(cfg, tmp_path / "syn")
    out = meds_io.validate_meds_dir(tmp_path / "syn")
    assert out["subjects"] == 300 and out["events"] == res["events"] and len(res["shards"]) == 3
    meta = json.loads((tmp_path / "syn" / "metadata" / "dataset.json").read_text())
    assert meta["medtok"]["synthetic"] is True and meta["medtok"]["scenario"] == "null"
    assert (tmp_path / "syn" / "synthetic" / "truth.parquet").exists()


def test_generator_imports_no_tokenizer():
    # everything the generator imports, including its lazy imports, pulls in no tokenizer/model
    code = ("import sys, ehr.synthetic.cohort, ehr.synthetic.world, ehr.tasks.ccs, ehr.meds_io, "
            "medtok.codes.vocabulary, medbase.paths; "
            "bad = [m for m in sys.modules if m.startswith(('medtok.model', 'medtok.tokenizer', 'medtok.train', "
            "'medtok.graph', 'torch', 'transformers'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(default_vocab_dir().parents[2]))

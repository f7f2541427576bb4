"""Throughput benchmark (slow; `pytest -m slow tests/test_ehr_scale.py -s`): a MIMIC-IV-sized
synthetic cohort (100,000 patients, >= 20 M events) generated, written as MEDS and labelled for
every task, then the ACES-expressible tasks labelled by ACES on the same shards. Prints the
figures (no wall-clock assertion: the machine is shared); checks sizes and ACES agreement.
Same as `python scripts/ehr_synthetic.py bench --out DIR --patients 100000`."""

import json

import pytest

from medbase.paths import default_vocab_dir


@pytest.mark.slow
def test_throughput_100k_patients(tmp_path):
    if not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("vocabulary cache not built")
    from ehr.benchmark.labelling_throughput import run_throughput
    from ehr.tasks.registry import DEFAULT_SUITE
    rep = run_throughput(tmp_path, n_patients=100_000)
    print(json.dumps({k: v for k, v in rep.items() if k != "tasks"}, indent=1))
    assert rep["events"] >= 20_000_000
    assert not rep["skipped"] and len(rep["tasks"]) == len(DEFAULT_SUITE)
    for key, row in rep["aces"].items():
        if key != "total":
            assert row["only_ours"] == row["only_aces"] == row["label_disagree"] == 0, (key, row)

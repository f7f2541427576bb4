"""Benchmark (slow, not in the default run): the MIMIC-III demo replicated K times (subject,
admission and ICU-stay ids shifted per copy) converted to MEDS; prints events/s and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m slow -s tests/test_ehr_sources_scale.py
    EHR_SCALE_COPIES=300 ...   (30,000 patients, 3.1 M prescription rows, 6.2 M events)
"""

from __future__ import annotations

import os
import resource
import time

import polars as pl
import pytest

from ehr.sources import SourceConfig, convert_source
from medbase.paths import default_vocab_dir, shared_data_path

TABLES = ["patients", "admissions", "icustays", "diagnoses_icd", "procedures_icd", "prescriptions"]
SHIFT = {"subject_id": 1_000_000, "hadm_id": 1_000_000, "icustay_id": 1_000_000}


def replicate(src, dst, copies: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        df = pl.read_csv(src / f"{name}.csv.gz", infer_schema=False)
        rep = pl.concat([df.with_columns(pl.lit(k, dtype=pl.Int64).alias("_k")) for k in range(copies)])
        rep = rep.with_columns([(pl.col(c).cast(pl.Int64) + pl.col("_k") * s).cast(pl.String).alias(c)
                                for c, s in SHIFT.items() if c in rep.columns]).drop("_k")
        rep.write_csv(dst / f"{name}.csv")


@pytest.mark.slow
@pytest.mark.shared_data
def test_replicated_demo_conversion_throughput(tmp_path):
    src = shared_data_path("ehr", "mimic3-demo")
    if src is None or not (default_vocab_dir() / "codes.parquet").exists():
        pytest.skip("needs ../shared/data/ehr/mimic3-demo and the vocabulary cache")
    copies = int(os.environ.get("EHR_SCALE_COPIES", "100"))
    one = convert_source(SourceConfig(dataset="mimic3", root=str(src), out=str(tmp_path / "one"), progress=False))
    replicate(src, tmp_path / "csv", copies)
    t0 = time.perf_counter()
    res = convert_source(SourceConfig(dataset="mimic3", root=str(tmp_path / "csv"), out=str(tmp_path / "meds"),
                                      subjects_per_shard=5000, progress=False))
    dt = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\n{copies} copies: {res.assembled.subjects:,} subjects, {res.assembled.events:,} events, "
          f"{res.assembled.shards} shards in {dt:.1f} s = {res.assembled.events / dt:,.0f} events/s; "
          f"peak RSS {peak_gib:.2f} GiB (this process, CSV pages mapped included)")
    assert res.assembled.events == copies * one.assembled.events
    assert res.coverage.select("family", "coverage").equals(one.coverage.select("family", "coverage"))

"""The benchmark command end to end on the tiny model (slow: starts vLLM; `pytest -m slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_benchmark_runs_every_part_on_the_tiny_model(tmp_path):
    if not (ROOT / ".venv-vllm" / "bin" / "python").exists():
        pytest.skip("needs .venv-vllm (`make serve-env`)")
    from serve.bench import BenchConfig, run_benchmark
    from serve.bundle import prepare_bundle
    from tests.serve_fixtures import shared_tiny_run

    run = shared_tiny_run()
    bundle = prepare_bundle(run.run_dir, run.root / "bundle", vector_source=run.vectors)
    b = BenchConfig(checkpoint=str(run.run_dir), export_dir=str(bundle.directory), out_dir=str(tmp_path),
                    n_parity=6, parity_new_tokens=16, n_describe=8, describe_new_tokens=8, load_clients=4,
                    sweep_clients=[8], load_requests=16, load_max_tokens=16, load_min_seconds=2,
                    hf_batch_sizes=[1, 4], n_gateway=10, meddx=None, linker_index=str(run.linker_dir),
                    vocab_dir=str(run.vocab_dir), max_model_len=512)
    rec = run_benchmark(b)
    p = rec["parity"]
    assert p["fp32_rows_vllm_vs_hf"]["exact_match"] == 6 and p["letters_equal_harness"] == 6
    assert rec["load"]["failed"] == 0 and rec["load"]["requests"] >= 16 and rec["load"]["vllm_direct"]["failed"] == 0
    assert set(rec["load"]["sweep"]) == {4, 8} and rec["load"]["hf_reference"]["best_batch_size"] in (1, 4)
    assert set(rec["describe"]["arms"]) == {"prefix", "no prefix (same adapter)"}
    assert rec["gateway"]["n"] == 10 and rec["bytes_per_request"]["bfloat16"] < rec["bytes_per_request"]["float32"]
    assert json.loads((tmp_path / "bench.json").read_text())["parity"]["n"] == 6

"""Synthetic EHR cohort: generate a MEDS directory, or run the throughput benchmark.

    python scripts/ehr_synthetic.py generate --out runs/synthetic --patients 10000 --scenario hierarchy
    python scripts/ehr_synthetic.py bench --out runs/ehr_throughput --patients 100000
    python scripts/ehr_synthetic.py signal --patients 8000     # how much of each scenario a model recovers
    python scripts/ehr_synthetic.py los-channels --patients 10000 --json results/ehr_data/los_channels_synthetic.json
        # length of stay at discharge: times-only model at chance, counts-only beside it
    /usr/bin/time -v python scripts/ehr_synthetic.py bench ...     # peak memory (Maximum resident set size)

Every output is marked synthetic (metadata/dataset.json `medtok.synthetic: true`).
"""

from __future__ import annotations

import argparse
import json

from ehr.benchmark.labelling_throughput import run_throughput, signal_check
from ehr.synthetic.cohort import SyntheticConfig, write_synthetic_meds
from ehr.synthetic.world import SCENARIOS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("generate", "bench"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--patients", type=int, default=100_000 if name == "bench" else 10_000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--scenario", choices=SCENARIOS, default="hierarchy")
        p.add_argument("--subjects-per-shard", type=int, default=10_000)
    sub.choices["bench"].add_argument("--no-aces", action="store_true", help="skip the ACES comparison")
    sig = sub.add_parser("signal")
    sig.add_argument("--patients", type=int, default=8000)
    sig.add_argument("--seed", type=int, default=0)
    sig.add_argument("--effect-scale", type=float, default=None)
    los = sub.add_parser("los-channels")
    los.add_argument("--patients", type=int, default=10_000)
    los.add_argument("--seed", type=int, default=0)
    los.add_argument("--scenario", choices=SCENARIOS, default="hierarchy")
    los.add_argument("--json", default=None, help="also write the report here")
    a = ap.parse_args(argv)
    if a.cmd == "los-channels":
        from pathlib import Path

        from ehr.benchmark.los_channels import synthetic_los_check
        rep = synthetic_los_check(a.patients, a.seed, a.scenario)
        rep["command"] = (f"python scripts/ehr_synthetic.py los-channels --patients {a.patients} --seed {a.seed} "
                          f"--scenario {a.scenario}")
        text = json.dumps(rep, indent=1, default=str)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(text + "\n")
        print(text)
        return 0
    if a.cmd == "signal":
        rows = signal_check(a.patients, a.seed, effect_scale=a.effect_scale)
        print(f"{'scenario':14s} {'task':42s} {'samples':>8s} {'prev':>6s} {'oracle':>7s} {'LR-cat':>7s}")
        for r in rows:
            print(f"{r['scenario']:14s} {r['task']:42s} {r['samples']:8d} {r['prevalence']:6.3f} "
                  f"{r['oracle_auroc']:7.3f} {r['lr_category_auroc']:7.3f}")
        return 0
    if a.cmd == "generate":
        cfg = SyntheticConfig(n_patients=a.patients, seed=a.seed, scenario=a.scenario,
                              subjects_per_shard=a.subjects_per_shard)
        res = write_synthetic_meds(cfg, a.out, progress=True)
        print(json.dumps({k: v for k, v in res.items() if k != "shards"}, indent=1))
        return 0
    rep = run_throughput(a.out, n_patients=a.patients, seed=a.seed, scenario=a.scenario,
                         subjects_per_shard=a.subjects_per_shard, aces=not a.no_aces, progress=True)
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

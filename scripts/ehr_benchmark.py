"""EHR benchmark grid: flat vs hierarchical ICD vs text / MedTok code tokens inside EHR models.

    python scripts/ehr_benchmark.py --dataset mimic3 --root ../shared/data/ehr/mimic3-demo --out runs/ehr_mimic3
    python scripts/ehr_benchmark.py --dataset synthetic --root runs/ehr_synthetic/data/hierarchy \
        --synthetic-patients 20000 --synthetic-scenario hierarchy --tokenizers flat hier-111 text medtok
    python scripts/ehr_benchmark.py --build-medtok --systems ICD9CM ICD9PCS      # MedTok checkpoints only
    python scripts/ehr_benchmark.py --transfer --dataset mimic3 --root A --target-dataset eicu --target-root B ...

Resumable: rerun the same command and finished cells are read, not recomputed. All logic is in
`ehr.benchmark`; this script only parses arguments.
"""

from __future__ import annotations

import argparse
import logging


from ehr.benchmark.cells import DEFAULT_MODELS, MODELS
from ehr.benchmark.commands import run_command
from ehr.benchmark.data import DATASETS
from ehr.benchmark.tokenizers import DEFAULT_TOKENIZERS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=DATASETS, default="mimic3")
    ap.add_argument("--root", default="", help="source directory (synthetic: the MEDS dir, generated if absent)")
    ap.add_argument("--out", default="runs/ehr_benchmark")
    ap.add_argument("--tasks", nargs="+", default=None, help="name or name:preset (default: every default task)")
    ap.add_argument("--tokenizers", nargs="+", default=list(DEFAULT_TOKENIZERS),
                    help="flat, hier[-XYZ][-tok], text, medtok, medtok-text, medtok-graph, medtok-ids, medtok-n3000; "
                         "'ablation' = the 8 hier-XYZ combinations")
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=1, help="processes running cells in parallel")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--medtok-steps", type=int, default=600)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--synthetic-patients", type=int, default=2000)
    ap.add_argument("--synthetic-scenario", default="hierarchy")
    ap.add_argument("--synthetic-seed", type=int, default=0)
    ap.add_argument("--rare-train-subjects", type=int, default=10)
    ap.add_argument("--no-build-medtok", action="store_true", help="fail instead of training missing MedTok checkpoints")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--report-only", action="store_true",
                    help="write the tables / report from the cells finished so far; train nothing")
    ap.add_argument("--build-medtok", action="store_true", help="only train/cache the MedTok checkpoints for --systems")
    ap.add_argument("--systems", nargs="+", default=["ICD9CM", "ICD9PCS"])
    ap.add_argument("--synthetic-suite", action="store_true",
                    help="the synthetic experiment: every scenario x tokenizers + the level ablation, under --out")
    ap.add_argument("--scenarios", nargs="+", default=None, help="synthetic suite scenarios (default: all four)")
    ap.add_argument("--keep-codes", default=None, help="regex: only these codes become model inputs (default: all)")
    ap.add_argument("--throughput", action="store_true",
                    help="measure training / inference samples/s of the neural models on the first --tasks task")
    ap.add_argument("--transfer", action="store_true", help="train on --dataset, linear probe on --target-dataset")
    ap.add_argument("--target-dataset", choices=DATASETS, default=None)
    ap.add_argument("--target-root", default="")
    ap.add_argument("--target-synthetic-scenario", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(run_command(vars(a)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

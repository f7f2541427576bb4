"""Convert an EHR source to MEDS, label the prediction tasks, print the tables.

    python scripts/ehr_data.py --dataset mimic3 --root ../shared/data/ehr/mimic3-demo --out runs/ehr/mimic3
    python scripts/ehr_data.py --dataset eicu --root ../shared/data/ehr/eicu-demo --out runs/ehr/eicu
    python scripts/ehr_data.py --dataset meds --root PATH/TO/MIMIC-IV-MEDS --out runs/ehr/mimic4meds --tasks mortality
    python scripts/ehr_data.py --dataset synthetic --n-patients 1000 --scenario hierarchy --out runs/ehr/synth

The logic lives in `ehr.convert.run_ehr_data`; this script only parses arguments.
"""

from __future__ import annotations

import argparse

from ehr.convert import DATASETS, EhrDataConfig, run_ehr_data


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", default="", help="source directory (CSV tables or a MEDS directory)")
    p.add_argument("--out", required=True, help="output MEDS directory (labels and report.json inside)")
    p.add_argument("--tasks", nargs="*", default=["all"],
                   help="task names (all presets), name:preset, 'all' (default suite) or 'none'")
    p.add_argument("--seed", type=int, default=0, help="split seed (and synthetic generator seed)")
    p.add_argument("--subjects-per-shard", type=int, default=20_000)
    p.add_argument("--vocab-dir", default=None)
    p.add_argument("--ndc-atc", default=None,
                   help="opt-in: NDC->ATC zip (fabkury ndc_map; CC BY-NC-SA, non-commercial use only)")
    p.add_argument("--eicu-icd", default="both", choices=["both", "icd9", "icd10"])
    p.add_argument("--n-patients", type=int, default=None, help="synthetic: cohort size")
    p.add_argument("--scenario", default=None, help="synthetic: hierarchy | cross-cutting | code-level | null")
    p.add_argument("--top-n", type=int, default=15, help="unmapped codes listed")
    p.add_argument("--workers", type=int, default=1, help="processes labelling shards in parallel")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    synthetic = {k: v for k, v in (("n_patients", a.n_patients), ("scenario", a.scenario)) if v is not None}
    if synthetic and a.dataset != "synthetic":
        p.error("--n-patients / --scenario apply to --dataset synthetic only")
    cfg = EhrDataConfig(dataset=a.dataset, root=a.root, out=a.out, tasks=a.tasks or ["none"], seed=a.seed,
                        subjects_per_shard=a.subjects_per_shard, vocab_dir=a.vocab_dir, ndc_atc=a.ndc_atc,
                        eicu_icd=a.eicu_icd, synthetic=synthetic, top_n=a.top_n, workers=a.workers,
                        progress=not a.no_progress)
    run_ehr_data(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

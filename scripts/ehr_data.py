"""Convert an EHR source to MEDS, label the prediction tasks, print the tables.

    python scripts/ehr_data.py --dataset mimic3 --root ../shared/data/ehr/mimic3-demo --out runs/ehr/mimic3
    python scripts/ehr_data.py --dataset eicu --root ../shared/data/ehr/eicu-demo --out runs/ehr/eicu
    python scripts/ehr_data.py --dataset meds --root PATH/TO/MIMIC-IV-MEDS --out runs/ehr/mimic4meds --tasks mortality
    python scripts/ehr_data.py --dataset synthetic --n-patients 1000 --scenario hierarchy --out runs/ehr/synth

The logic lives in `ehr.convert.run_ehr_data`; this script parses arguments, builds the
default vocabulary when it is missing (as `make demo` does; under a minute), and prints one
line for an expected error (missing table, unreadable CSV, refused MEDS directory, ...) with
exit status 2; `--debug` shows the traceback instead. The output appears only when the run
succeeds (written in a staging directory, then renamed into place).
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from ehr.convert import DATASETS, EhrDataConfig, run_ehr_data
from ehr.meds_io import MedsValidationError
from ehr.sources.meds_dir import MedsImportError
from ehr.sources.tables import MissingTableError, SourceTableError
from ehr.tasks.guards import LeakageError

# errors a user can fix from the message alone: one line, no traceback (unless --debug)
EXPECTED = (MissingTableError, SourceTableError, MedsImportError, MedsValidationError, FileNotFoundError,
            NotADirectoryError, PermissionError, KeyError, ValueError, pl.exceptions.PolarsError, LeakageError)
BUILD_VOCAB = "python scripts/build_vocab.py"


def ensure_vocabulary(vocab_dir: str | None, dataset: str) -> None:
    """The default vocabulary is built when missing (`make demo`'s first stage); a --vocab-dir
    that holds none is an error naming the command that builds it."""
    from pathlib import Path

    from medbase.paths import default_vocab_dir
    if dataset == "synthetic" and vocab_dir is None:
        d = default_vocab_dir()
    else:
        d = Path(vocab_dir) if vocab_dir else default_vocab_dir()
    if (d / "codes.parquet").exists():
        return
    if vocab_dir:
        raise FileNotFoundError(f"no vocabulary at {d} (codes.parquet); build it with: {BUILD_VOCAB} --out {d}")
    print(f"no vocabulary at {d}: building it (as make demo does; under a minute; same as `{BUILD_VOCAB}`)",
          file=sys.stderr, flush=True)
    from medtok.build import build_vocabulary
    build_vocabulary(d, progress=False)


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
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    a = p.parse_args(argv)
    synthetic = {k: v for k, v in (("n_patients", a.n_patients), ("scenario", a.scenario)) if v is not None}
    if synthetic and a.dataset != "synthetic":
        p.error("--n-patients / --scenario apply to --dataset synthetic only")
    try:
        ensure_vocabulary(a.vocab_dir, a.dataset)
        cfg = EhrDataConfig(dataset=a.dataset, root=a.root, out=a.out, tasks=a.tasks or ["none"], seed=a.seed,
                            subjects_per_shard=a.subjects_per_shard, vocab_dir=a.vocab_dir, ndc_atc=a.ndc_atc,
                            eicu_icd=a.eicu_icd, synthetic=synthetic, top_n=a.top_n, workers=a.workers,
                            progress=not a.no_progress)
        run_ehr_data(cfg)
    except EXPECTED as e:
        if a.debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):
            msg = str(e.args[0]) if e.args else msg
        print(f"error: {msg} (nothing written to {a.out}; --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

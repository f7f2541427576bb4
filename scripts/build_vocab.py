"""Build the offline code vocabulary + knowledge graph and print its statistics.

    python scripts/build_vocab.py --out data/cache/vocab [--systems ICD10CM ICD9CM ...]
        [--extra-codes FILE ...] [--atc-file FILE] [--kg-mondo DIR] [--kg-primekg FILE] [--kg-hetionet DIR]
"""

import argparse
import json

from medbase.paths import default_vocab_dir
from medtok.build import DEFAULT_SYSTEMS, build_vocabulary, format_statistics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(default_vocab_dir()))
    ap.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS)
    ap.add_argument("--extra-codes", nargs="*", default=[], help="CSV/parquet code files, MEDS codes.parquet, MIMIC d_icd_* tables")
    ap.add_argument("--atc-file", help="full WHO ATC CSV (atc_code, atc_name) instead of the packaged table")
    ap.add_argument("--kg-mondo", help="directory of MONDO SSSOM mapping files (*.sssom.tsv[.gz])")
    ap.add_argument("--kg-primekg", help="PrimeKG kg.csv (12-column schema), may be gzipped")
    ap.add_argument("--kg-hetionet", help="Hetionet directory (nodes TSV + SIF edges)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache matches")
    ap.add_argument("--json", help="also write the statistics here")
    a = ap.parse_args(argv)
    _, _, stats = build_vocabulary(a.out, a.systems, a.extra_codes, a.atc_file, a.kg_mondo, a.kg_primekg,
                                   a.kg_hetionet, force=a.force)
    print(format_statistics(stats))
    print(f"build time: {stats.get('build_seconds', 0)} s{' (cached)' if stats.get('cached') else ''} -> {a.out}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(stats, f, indent=1, default=str)


if __name__ == "__main__":
    main()

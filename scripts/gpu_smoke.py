"""Smoke check of every training and inference entry point on a GPU, a few steps each.

    python scripts/gpu_smoke.py                 # CUDA when torch sees one
    python scripts/gpu_smoke.py --device cpu    # the same stages on the CPU

Needs no download, cache or package registry (toy vocabulary, random text features, a tiny
LLaMA and a character tokenizer built in code); a couple of minutes with imports. Prints
OK / FAIL per stage (`llm_adapter.smoke` lists them) and exits 1 if any stage failed.
"""

from __future__ import annotations

import argparse
import sys

from llm_adapter.smoke import run_smoke


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    ap.add_argument("--out", default=None, help="working directory (default: a new temporary one)")
    a = ap.parse_args(argv)
    report = run_smoke(a.device, a.out)
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

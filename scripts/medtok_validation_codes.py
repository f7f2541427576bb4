"""Write the codes MedTok's validation split must avoid: the union of the QA test splits
(ontology, relational and knowledge-graph questions all split codes by `qa.datasets.ontology.code_split`)
over every split seed, one code id per line (issue 21).

    python scripts/medtok_validation_codes.py --out runs/medtok_val_exclude.txt --split-seeds 0 1 2
    python scripts/train_medtok.py --val-every 50 --val-exclude-codes runs/medtok_val_exclude.txt ...

MedTok's own held-out codes are excluded by the training job itself (`medtok.validation`).
"""

from __future__ import annotations

import argparse

from medtok.loading import load_vocabulary
from qa.datasets.ontology import vocab_code_splits


def qa_test_code_ids(vocab, split_seeds=(0, 1, 2), split_fractions=(0.7, 0.15, 0.15)) -> list[str]:
    ids = vocab.codes["code_id"].to_numpy()
    out: set[str] = set()
    for s in split_seeds:
        out.update(str(c) for c in ids[vocab_code_splits(vocab, tuple(split_fractions), int(s)) == "test"])
    return sorted(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split-fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15])
    a = ap.parse_args(argv)
    vocab, _ = load_vocabulary(a.vocab)
    codes = qa_test_code_ids(vocab, a.split_seeds, a.split_fractions)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(f"# QA test-split codes, split seeds {a.split_seeds}, fractions {a.split_fractions}\n")
        f.write("".join(c + "\n" for c in codes))
    print(f"{len(codes)} codes -> {a.out}")


if __name__ == "__main__":
    main()

"""Link medical codes in text, offline.

    python scripts/link_codes.py "pt with CHF and COPD"
    python scripts/link_codes.py --file questions.txt --json          # one text per line
    python scripts/link_codes.py --evaluate --out runs/linker/report.json
    python scripts/link_codes.py --sentences dev [--details] [--set lay_synonyms=false ...]
First use builds the KB + TF-IDF/HNSW index for the project vocabulary (minutes) and caches
it under data/cache/linker/; later runs load it in seconds. Results go to stdout (with --json,
nothing else does); index building and progress messages go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from qa.linker.commands import evaluate_command, link_command, parse_overrides, read_texts, sentences_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="texts to link")
    p.add_argument("--file", help="read texts from this file, one per line")
    p.add_argument("--index-dir", help="a built linker index (default: build/reuse one for the project vocabulary)")
    p.add_argument("--vocab-dir", help="vocabulary directory (default: data/cache/vocab)")
    p.add_argument("--systems", nargs="+", help="code systems to link to (default ICD10CM)")
    p.add_argument("--threshold", type=float, help="minimum link score (default 0.7)")
    p.add_argument("--extra-aliases", nargs="+", default=[],
                   help="local scispacy KB files (.jsonl of Entity records keyed by code_id), e.g. from a UMLS release")
    p.add_argument("--rebuild", action="store_true", help="rebuild the index even if cached")
    p.add_argument("--json", action="store_true", help="print JSON (alone on stdout) instead of a table")
    p.add_argument("--evaluate", action="store_true", help="held-out alias accuracy, MedDDx coverage, throughput")
    p.add_argument("--meddx", help="MedDDx.json path (default: the shared copy)")
    p.add_argument("--no-heldout", action="store_true", help="with --evaluate: skip the held-out alias test")
    p.add_argument("--out", help="write the evaluation report here (JSON)")
    p.add_argument("--sentences", nargs="+", choices=["dev", "test"],
                   help="end-to-end figures on the project's sentence set (qa/linker/sentences/), as JSON")
    p.add_argument("--details", action="store_true", help="with --sentences: every sentence's links and errors")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="other LinkerConfig fields, e.g. --set lay_synonyms=false phrase_mentions=false")
    args = p.parse_args(argv)

    overrides = parse_overrides(args.set)
    if args.evaluate:
        print(evaluate_command(vocab_dir=args.vocab_dir, systems=args.systems, threshold=args.threshold,
                               extra_aliases=args.extra_aliases, meddx=args.meddx, heldout=not args.no_heldout,
                               out=args.out, overrides=overrides))
        return 0
    if args.sentences:
        print(sentences_command(args.sentences, details=args.details, out=args.out, index_dir=args.index_dir,
                                vocab_dir=args.vocab_dir, systems=args.systems, threshold=args.threshold,
                                extra_aliases=args.extra_aliases, overrides=overrides))
        return 0
    texts = read_texts(args.texts, args.file)
    if not texts:
        p.error("give texts to link, --file, or --evaluate")
    print(link_command(texts, as_json=args.json, index_dir=args.index_dir, vocab_dir=args.vocab_dir,
                       systems=args.systems, threshold=args.threshold, extra_aliases=args.extra_aliases,
                       rebuild=args.rebuild, overrides=overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())

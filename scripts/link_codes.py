"""Link medical codes in text, offline.

    python scripts/link_codes.py "pt with CHF and COPD"
    python scripts/link_codes.py --file questions.txt --json          # one text per line
    python scripts/link_codes.py --evaluate --out runs/linker/report.json
First use builds the KB + TF-IDF/HNSW index for the project vocabulary (minutes) and caches
it under data/cache/linker/; later runs load it in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--evaluate", action="store_true", help="held-out alias accuracy, MedDDx coverage, throughput")
    p.add_argument("--meddx", help="MedDDx.json path (default: the shared copy)")
    p.add_argument("--no-heldout", action="store_true", help="with --evaluate: skip the held-out alias test")
    p.add_argument("--out", help="write the evaluation report here (JSON)")
    args = p.parse_args(argv)

    from medtok.codes.vocabulary import Vocabulary
    from medtok.paths import default_vocab_dir
    from qa.linker import CodeLinker, LinkerConfig

    config_kw = {k: v for k, v in (("systems", args.systems), ("threshold", args.threshold)) if v is not None}
    if args.extra_aliases:
        config_kw["extra_alias_files"] = tuple(args.extra_aliases)
    if args.evaluate:
        from qa.linker.evaluate import evaluate

        from medtok.graph.graph import CodeGraph

        vdir = Path(args.vocab_dir or default_vocab_dir())
        vocab = Vocabulary.load(vdir)
        graph = CodeGraph.load(vdir) if (vdir / "graph" / "meta.json").exists() else None
        report = evaluate(vocab, LinkerConfig(**config_kw), graph=graph, meddx_path=args.meddx,
                          heldout=not args.no_heldout, out=args.out)
        print(json.dumps(report, indent=2, default=str))
        return 0

    texts = list(args.texts)
    if args.file:
        texts += [line.rstrip("\n") for line in open(args.file) if line.strip()]
    if not texts:
        p.error("give texts to link, --file, or --evaluate")
    if args.index_dir:
        runtime = {k: v for k, v in config_kw.items() if k == "threshold"}
        linker = CodeLinker.from_pretrained(args.index_dir, **runtime)
    else:
        vocab = graph = None
        if args.vocab_dir:
            from medtok.graph.graph import CodeGraph

            vocab = Vocabulary.load(args.vocab_dir)
            graph = CodeGraph.load(args.vocab_dir) if (Path(args.vocab_dir) / "graph" / "meta.json").exists() else None
        linker = CodeLinker.build(vocab, LinkerConfig(**config_kw), graph=graph, rebuild=args.rebuild)
    results = linker.link_batch(texts, systems=args.systems, progress=len(texts) > 100)
    if args.json:
        print(json.dumps([{"text": t, "codes": [c.to_dict() for c in r]} for t, r in zip(texts, results)], indent=2))
    else:
        for t, r in zip(texts, results):
            print(t)
            for c in r:
                print(f"  [{c.start}:{c.end}] {c.mention!r:32} -> {c.code_id:16} {c.score:.3f}  {c.description}  ({c.source})")
            if not r:
                print("  (no codes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

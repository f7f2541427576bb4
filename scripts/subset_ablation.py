"""The MedTok subset ablation (medtok.subset_ablation, issue 21): 5 ICD-10-CM + 5 ICD-9-CM chapters
with their GEM edges, kappa by step (whole-subset intrinsic kappa and validation kappa), one
flag per ablation; each cell's result is written to OUT/cells/<cell>.json, so a sweep resumes
cell by cell.

    python scripts/subset_ablation.py --threads 1                                  # the default recipe, seed 0
    python scripts/subset_ablation.py --nce-temperature 0.5 --seeds 0 1            # one ablation, two seeds
    python scripts/subset_ablation.py --no-nce
    python scripts/subset_ablation.py --unit-init --reset-restarted-adam
    python scripts/subset_ablation.py --sweep temperature --seeds 0 1 --threads 1  # a named grid (SWEEPS)
    python scripts/subset_ablation.py --sweep hygiene --seeds 0 1 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import tempfile


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/medtok_subset")
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--roots", nargs="+", default=None, help="subset roots (default: medtok.subset_ablation.DEFAULT_ROOTS)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--codebook-size", type=int, default=480)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--text-threads", default=None, help="text-embedding threads: an int or 'free'")
    ap.add_argument("--qa-split-seeds", type=int, nargs="*", default=[0, 1, 2],
                    help="exclude the QA test splits of these split seeds from validation (none: no exclusion)")
    ap.add_argument("--sweep", default=None, help="a named grid of cells: temperature | split_temperature | hygiene")
    g = ap.add_argument_group("ablations (one cell; combine freely)")
    g.add_argument("--nce-temperature", type=float, help="both InfoNCE temperatures")
    g.add_argument("--shared-nce-temperature", type=float)
    g.add_argument("--specific-nce-temperature", type=float)
    g.add_argument("--no-nce", action="store_true", help="no InfoNCE terms (nce_weight 0)")
    g.add_argument("--unit-init", action="store_true", help="unit-norm initial codebook rows")
    g.add_argument("--restart-at-codebook-norm", action="store_true", help="restarts re-seated at the codebook norm")
    g.add_argument("--reset-restarted-adam", action="store_true", help="AdamW state reset for re-seated rows")
    g.add_argument("--weight-temperature", type=float, help="the Eq. 4 top-K weight temperature")
    g.add_argument("--kl-weight", type=float, help="scale of the KL term")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch  # after argparse: --help stays fast

    from medtok.loading import load_vocabulary  # the project's modules load torch: after argparse too
    from medtok.subset_ablation import SWEEPS, SubsetAblationConfig, format_subset_table, run_subset_ablation
    from medtok_validation_codes import qa_test_code_ids  # the sibling script (QA layer, above medtok)

    if a.threads:
        torch.set_num_threads(a.threads)
    change = {k: v for k, v in (("nce_temperature", a.nce_temperature),
                                ("shared_nce_temperature", a.shared_nce_temperature),
                                ("specific_nce_temperature", a.specific_nce_temperature),
                                ("nce_weight", 0.0 if a.no_nce else None),
                                ("codebook_init", "unit" if a.unit_init else None),
                                ("restart_norm", "codebook" if a.restart_at_codebook_norm else None),
                                ("restart_reset_optimizer", True if a.reset_restarted_adam else None),
                                ("temperature", a.weight_temperature), ("kl_weight", a.kl_weight)) if v is not None}
    cells = SWEEPS[a.sweep] if a.sweep else [change]
    vocab, graph = load_vocabulary(a.vocab)
    exclude = None
    if a.qa_split_seeds:
        exclude = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False).name
        with open(exclude, "w") as f:
            f.write("".join(c + "\n" for c in qa_test_code_ids(vocab, a.qa_split_seeds)))
    kw = dict(out_root=a.out, vocab_dir=a.vocab, steps=a.steps, batch_size=a.batch_size, codebook_size=a.codebook_size,
              eval_every=a.eval_every, seeds=a.seeds, val_exclude_codes=exclude, text_encoder_threads=a.text_threads)
    if a.roots:
        kw["roots"] = a.roots
    results, summary = run_subset_ablation(SubsetAblationConfig(**kw), cells, vocab=vocab, graph=graph)
    print(format_subset_table(results))
    print(f"-> {summary}")


if __name__ == "__main__":
    main()

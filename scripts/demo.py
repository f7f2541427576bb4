"""`make demo`: the main job on the embedded default, offline on CPU, in three visible stages.

1. vocabulary + knowledge graph: built (or the cache reused), statistics printed;
2. the MedTok tokenizer of the QA set's code system (ICD-10-CM, data/cache/medtok_icd10cm):
   trained on first use (text embeddings, then 600 steps), reused afterwards;
3. the fine-tuning job with no arguments: LoRA vs LoRA + MedTok prefix on the ontology-derived
   QA set (held-out codes) with SmolLM2-135M; prints the table, writes
   runs/finetune_qa/results.json and curves.png.

    python scripts/demo.py                  # all three stages
    python scripts/demo.py --prepare-only   # stages 1 and 2 (what scripts/finetune_qa.py needs)
"""

import argparse

from llm_adapter.prepare import demo


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare-only", action="store_true", help="make the prerequisites, do not fine-tune")
    demo(prepare_only=ap.parse_args(argv).prepare_only)


if __name__ == "__main__":
    main()

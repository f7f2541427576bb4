"""`make demo`: the main job on the embedded default, offline on CPU.

1. builds (or reuses) the vocabulary + knowledge graph and prints its statistics;
2. runs the fine-tuning job with no arguments, which trains (first run) or reuses its MedTok
   (ICD-10-CM, data/cache/medtok_icd10cm) and compares LoRA vs LoRA + MedTok prefix on the
   ontology-derived QA set (held-out codes) with SmolLM2-135M; prints the table, writes
   runs/finetune_qa/results.json and curves.png.
"""

import time

from medtok.build import build_vocabulary, format_statistics
from medtok.paths import default_vocab_dir


def main() -> None:
    t0 = time.perf_counter()
    _, _, stats = build_vocabulary(default_vocab_dir())
    print(format_statistics(stats))

    from llm_adapter.finetune import finetune
    from llm_adapter.finetune_config import FinetuneConfig

    finetune(FinetuneConfig())
    print(f"demo wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

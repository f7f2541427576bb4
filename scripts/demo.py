"""`make demo`: the main job on the embedded default, offline on CPU.

1. builds (or reuses) the vocabulary + knowledge graph and prints its statistics;
2. trains (or reuses) the MedTok tokenizer at data/cache/medtok (CPU default config);
3. runs the fine-tuning job with no arguments: LoRA vs LoRA + MedTok prefix on the
   ontology-derived QA set (held-out codes), SmolLM2-135M; prints the table, writes
   runs/finetune_qa/results.json and curves.png.
"""

import time
from pathlib import Path

from medtok.codes.build import build_vocabulary, format_statistics
from medtok.paths import cache_dir, default_vocab_dir


def main() -> None:
    t0 = time.perf_counter()
    _, _, stats = build_vocabulary(default_vocab_dir())
    print(format_statistics(stats))

    ckpt = cache_dir() / "medtok"
    if not (ckpt / "model.safetensors").exists():
        from medtok.train import TrainConfig, train

        print(f"training MedTok (CPU default) -> {ckpt}")
        train(TrainConfig(out_dir=str(ckpt)))
    else:
        print(f"reusing MedTok checkpoint {ckpt}")

    from llm_adapter.finetune import finetune
    from llm_adapter.finetune_config import FinetuneConfig

    finetune(FinetuneConfig(medtok_checkpoint=str(ckpt)))
    print(f"demo wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

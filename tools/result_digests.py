"""Digests of what a checkout computes, to show that a refactor changed no result bit for bit.

    python tools/result_digests.py CHECKOUT OUT.json VOCAB_DIR     # once per checkout, then diff the files

Runs, from the checkout given (its packages first on sys.path), small deterministic jobs on the
paths a refactor moves, with 2 threads, and writes sha256 prefixes of their outputs:
* MedTok trained 40 steps on the toy vocabulary (deterministic CPU kernels): weights, tokens;
* the fine-tuning job, both arms, on a tiny LLaMA + char tokenizer + toy questions: scores,
  curves, summary (wall-clock fields left out), adapter weights;
* the EHR data job on the MIMIC-III demo (needs ../shared/data): every task's labels, and the
  MEDS events (rows sorted on every column: before commit e3a3e98 tied events came out in
  a different order run to run, at any commit);
* a 300-patient synthetic cohort.
VOCAB_DIR is a built vocabulary (scripts/build_vocab.py) that both checkouts read.
"""

import hashlib
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

TIMING_KEYS = {"seconds", "tokens_per_s", "elapsed_s", "wall_s", "examples_per_s", "peak_rss_mib"}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def _import_first(*names):
    for n in names:
        try:
            return importlib.import_module(n)
        except ImportError:
            pass
    raise ImportError(names)


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def digests(vocab_dir: str) -> dict:
    import numpy as np
    import polars as pl
    import torch

    res, tmp = {}, Path(tempfile.mkdtemp())
    torch.set_num_threads(2)
    det = _import_first("medbase.determinism", "medtok.common.determinism")
    from medtok.model import MedTokConfig
    from medtok.tokenizer import MedTokTokenizer
    from medtok.toy import toy_vocabulary
    from medtok.train import TrainConfig, train
    vocab, graph = toy_vocabulary()
    text = np.random.default_rng(0).normal(size=(len(vocab), 24)).astype(np.float32)
    cfg = MedTokConfig(text_dim=24, gnn_hidden=16, embed_dim=16, codebook_size=30, top_k=2, attn_heads=2,
                       max_neighbors=4)
    with det.deterministic_on_cpu(torch.device("cpu")):
        train(TrainConfig(out_dir=str(tmp / "medtok"), steps=40, batch_size=32), cfg, vocab=vocab, graph=graph,
              text_embeddings=text, progress=False)
    res["medtok_weights"] = _sha((tmp / "medtok" / "model.safetensors").read_bytes())
    tok = MedTokTokenizer.from_pretrained(str(tmp / "medtok"), vocab=vocab, graph=graph, text_embeddings=text,
                                          progress=False)
    enc = tok.encode(vocab.codes["code_id"][:200].tolist())
    res["medtok_tokens"] = _sha(enc.ids.numpy().tobytes() + enc.vectors.detach().numpy().tobytes())

    from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
    from llm_adapter.finetune import finetune
    from llm_adapter.finetune_config import FinetuneConfig, StageConfig
    from tests.conftest import char_tokenizer, tiny_llama, toy_questions
    adapter = AdapterConfig(base_model="tiny", hidden_size=32, max_codes=1,
                            projector=ProjectorConfig(hidden_size=32, tokens_per_code=2, mlp_hidden=32),
                            lora=LoraSettings(r=2, alpha=4, target_modules=("q_proj", "v_proj")))
    fcfg = FinetuneConfig(output_dir=str(tmp / "run"), vector_source="random", adapter=adapter,
                          align=StageConfig(steps=6, batch_size=4, lr=1e-3, warmup=0), align_codes=16,
                          qa=StageConfig(steps=8, batch_size=4, lr=1e-3, warmup=1), train_eval_size=4,
                          eval_every=2, eval_batch_size=8, progress=False, bf16_autocast=False,
                          scorings=["letter", "option"])
    r = finetune(fcfg, lm=tiny_llama(vocab_size=256, hidden_size=32, num_layers=2, seed=0),
                 tokenizer=char_tokenizer(), questions=toy_questions())
    kept = {arm: {"scores": a["scores"], "curves": {k: [(c["loss"], c["grad_norm"]) for c in v]
                                                    for k, v in a["curves"].items()}}
            for arm, a in r["arms"].items()}
    res["finetune_scores_and_curves"] = _sha(json.dumps(kept, sort_keys=True).encode())
    res["finetune_summary"] = _sha(json.dumps(_untimed(r["summary"]), sort_keys=True, default=float).encode())
    res["finetune_adapters"] = _sha(b"".join(p.read_bytes() for p in sorted((tmp / "run").glob("*/adapter_model.safetensors"))))

    conv = importlib.import_module("ehr.convert")
    shared = Path(os.environ.get("MEDTOK_SHARED_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    if (shared / "ehr" / "mimic3-demo").is_dir():
        conv.run_ehr_data(conv.EhrDataConfig(dataset="mimic3", root=str(shared / "ehr" / "mimic3-demo"),
                                             out=str(tmp / "ehr"), tasks=["all"], vocab_dir=vocab_dir, progress=False))
        for p in sorted((tmp / "ehr" / "labels").glob("*.parquet")):
            res["ehr_labels/" + p.name] = _sha(pl.read_parquet(p).write_json().encode())
        for p in sorted((tmp / "ehr" / "data").rglob("*.parquet")):
            df = pl.read_parquet(p)
            res["ehr_events/" + p.name] = _sha(df.sort(df.columns, nulls_last=True).write_json().encode())
    syn = _import_first("ehr.synthetic.cohort", "ehr.synthetic")
    co = syn.generate(syn.SyntheticConfig(n_patients=300, seed=3, vocab_dir=vocab_dir))
    res["synthetic_cohort"] = _sha(b"".join(getattr(co, f).write_json().encode()
                                            for f in ("events", "truth", "code_effects", "splits")
                                            if getattr(co, f) is not None))
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__)
        return 2
    checkout, out, vocab_dir = Path(argv[0]).resolve(), Path(argv[1]), argv[2]
    sys.path.insert(0, str(checkout))
    os.chdir(checkout)
    res = digests(vocab_dir)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

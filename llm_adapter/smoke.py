"""Smoke check of every training and inference entry point on one device, a few steps each.

    python scripts/gpu_smoke.py                 # on CUDA (the default when torch sees a GPU)
    python scripts/gpu_smoke.py --device cpu    # the same stages on the CPU (what the test runs)

Sized for a bare GPU machine (no package index, nothing pre-built):
nothing is downloaded or read from a cache. The inputs are the toy vocabulary
(`medtok.toy`, 496 codes), random text features, a 2-layer LLaMA and a character-level
tokenizer built here in code (`tiny_llama`, `char_tokenizer`; the tests use them too).
Stages, each printed as OK / FAIL with its time (a failed stage skips only the stages that
need its output):

  medtok_train      MedTok training (`medtok.train.train`, TrainConfig.device), with dead-entry
                    restarts every 2 steps so `restart_dead` runs on the device
  medtok_tokenize   whole-vocabulary tokenization (`MedTokTokenizer.encode_all`) with the model
                    on the device, then `encode` of single codes
  finetune          the fine-tuning job, both arms (LoRA; LoRA + MedTok prefix): caption
                    alignment and QA stages with gradient accumulation 2 and bf16 autocast,
                    checkpoints, letter and option scoring of both arms
  resume            the job again in the same directory: arms restored from their checkpoints
                    (one arm's record removed so its checkpoints are loaded onto the device),
                    same predictions
  reload_score      the saved prefix adapter reloaded (`PrefixLM.from_pretrained`) on the
                    device, scored both ways: the same predictions as in the job
  qa_harness        the QA harness on the base LM alone: letter log-likelihood and generation
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from llm_adapter.config import AdapterConfig, LoraSettings, ProjectorConfig
from llm_adapter.finetune import finetune, score
from llm_adapter.finetune_config import FinetuneConfig, StageConfig
from llm_adapter.model import PrefixLM
from llm_adapter.vectors import MedTokVectors
from medtok.model import MedTokConfig
from medtok.tokenizer import MedTokTokenizer
from medtok.toy import toy_vocabulary
from medtok.train import TrainConfig, train
from qa.datasets.ontology import OntologyQAConfig, build_ontology_qa
from qa.harness import evaluate_questions

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_MEDTOK = dict(text_dim=24, gnn_hidden=16, embed_dim=16, codebook_size=192, top_k=2, attn_heads=2, max_neighbors=4)
HIDDEN = 32


def tiny_llama(vocab_size: int = 256, hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """A randomly initialised LLaMA (4 heads, 2 KV heads, tied embeddings), in eval mode, on the CPU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def char_tokenizer():
    """A character-level fast tokenizer with a ChatML chat template; ids < 256 (pairs with
    `tiny_llama(vocab_size=256)`). Specials: <pad>=0, <unk>=1, <|im_start|>=2, <|im_end|>=3 (eos)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    tk = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def _finetune_config(out: Path, medtok_dir: Path, device: str) -> FinetuneConfig:
    adapter = AdapterConfig(base_model="tiny", hidden_size=HIDDEN, max_codes=1,
                            projector=ProjectorConfig(hidden_size=HIDDEN, tokens_per_code=2, mlp_hidden=32),
                            lora=LoraSettings(r=2, alpha=4, target_modules=("q_proj", "v_proj")))
    return FinetuneConfig(output_dir=str(out), vector_source="medtok", medtok_checkpoint=str(medtok_dir),
                          adapter=adapter, align=StageConfig(steps=2, batch_size=4, lr=1e-3, warmup=0),
                          align_codes=16, qa=StageConfig(steps=4, batch_size=2, grad_accum=2, lr=1e-3, warmup=1),
                          train_eval_size=4, eval_every=2, eval_batch_size=8, checkpoint_every=2,
                          progress=False, bf16_autocast=True, device=device, score_base_before_qa=True)


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise AssertionError(f"{name} has non-finite values")


def run_smoke(device: str | None = None, out_dir: str | Path | None = None, verbose: bool = True) -> dict:
    """Run every stage on `device` (None: cuda when available); returns {stage: {ok, seconds, error}}."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device")
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="medtok-smoke-"))
    report: dict[str, dict] = {}
    state: dict = {}

    def stage(name: str, needs: tuple[str, ...], fn) -> None:
        missing = [n for n in needs if not report.get(n, {}).get("ok")]
        if missing:
            report[name] = {"ok": False, "seconds": 0.0, "error": f"skipped: needs {', '.join(missing)}"}
        else:
            t0 = time.perf_counter()
            try:
                fn()
                report[name] = {"ok": True, "seconds": time.perf_counter() - t0, "error": None}
            except Exception as e:  # noqa: BLE001 - a smoke check reports every failure and goes on
                report[name] = {"ok": False, "seconds": time.perf_counter() - t0,
                                "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        if verbose:
            r = report[name]
            print(f"{'OK  ' if r['ok'] else 'FAIL'} {name:<16} {r['seconds']:6.1f} s"
                  + ("" if r["ok"] else f"  {r['error']}"), flush=True)
            if not r["ok"] and r.get("traceback"):
                print(r["traceback"], flush=True)

    vocab, graph = toy_vocabulary()
    emb = np.random.default_rng(0).normal(size=(len(vocab), TINY_MEDTOK["text_dim"])).astype(np.float32)
    medtok_dir = out / "medtok"

    def medtok_train():
        # restart_idle=1: entries unused in the last step are re-seated, so restart_dead runs
        train(TrainConfig(out_dir=str(medtok_dir), steps=4, batch_size=32, save_every=2, restart_every=2,
                          restart_idle=1, device=device),
              MedTokConfig(**TINY_MEDTOK), vocab=vocab, graph=graph, text_embeddings=emb, progress=False)
        losses = [json.loads(line)["total"] for line in (medtok_dir / "train_log.jsonl").read_text().splitlines()]
        if len(losses) != 4 or not np.isfinite(losses).all():
            raise AssertionError(f"training log: {losses}")

    def medtok_tokenize():
        tok = MedTokTokenizer.from_pretrained(medtok_dir, vocab=vocab, graph=graph, text_embeddings=emb,
                                              progress=False)
        tok.model.to(device)  # the tokenizer takes the device of its model
        enc = tok.encode_all(progress=False)
        if enc.vectors.shape != (len(vocab), 4, TINY_MEDTOK["embed_dim"]):
            raise AssertionError(f"vectors {tuple(enc.vectors.shape)}")
        _check_finite("token vectors", enc.vectors)
        one = tok.encode(["ICD10CM:A00.1"])
        if not torch.equal(one.ids, enc.ids[[vocab.index_of("ICD10CM:A00.1")]]):
            raise AssertionError("encode of one code differs from its row of encode_all")
        state["vectors"] = MedTokVectors(tok, identity=str(medtok_dir.resolve()))

    qs = build_ontology_qa(vocab, OntologyQAConfig(systems=("ICD10CM",), sizes={"train": 24, "validation": 0, "test": 8},
                                                   n_options=2))
    questions = (vocab, [q for q in qs if q.split == "train"], {"test": [q for q in qs if q.split == "test"]})
    tok = char_tokenizer()
    cfg = _finetune_config(out / "finetune", medtok_dir, device)

    def run_finetune():
        res = finetune(cfg, lm=tiny_llama(hidden_size=HIDDEN), tokenizer=tok, questions=questions,
                       vector_source=state["vectors"])
        if not res["provenance"]["device"].startswith(device):
            raise AssertionError(f"ran on {res['provenance']['device']}, not {device}")
        for arm, r in res["arms"].items():
            for stage_name, curve in r["curves"].items():
                if not all(np.isfinite([c["loss"], c["grad_norm"]]).all() for c in curve):
                    raise AssertionError(f"{arm}/{stage_name}: non-finite loss or gradient")
            if set(r["scores"]) != {"letter", "option", "option@pre_qa"}:
                raise AssertionError(f"{arm}: scores {sorted(r['scores'])}")
        state["results"] = res

    def resume():
        (Path(cfg.output_dir) / "lora_prefix" / "arm_result.json").unlink()
        res = finetune(cfg, lm=tiny_llama(hidden_size=HIDDEN), tokenizer=tok, questions=questions,
                       vector_source=state["vectors"])
        for arm, r in res["arms"].items():
            for sc, per in r["scores"].items():
                for split, rec in per.items():
                    if rec["pred"] != state["results"]["arms"][arm]["scores"][sc][split]["pred"]:
                        raise AssertionError(f"{arm} {sc} {split}: resumed predictions differ")

    def reload_score():
        model = PrefixLM.from_pretrained(Path(cfg.output_dir) / "lora_prefix", lm=tiny_llama(hidden_size=HIDDEN),
                                         tokenizer=tok, vector_source=state["vectors"]).to(device)
        model.bf16_autocast = cfg.bf16_autocast
        for sc in ("letter", "option"):
            r = score(model, tok, questions[2]["test"], 8, False, sc)
            if r.pred.tolist() != state["results"]["arms"]["lora+prefix"]["scores"][sc]["test"]["pred"]:
                raise AssertionError(f"{sc}: reloaded adapter predicts differently")

    def qa_harness():
        lm = tiny_llama(hidden_size=HIDDEN).to(device)
        for mode in ("loglik", "generate"):
            r = evaluate_questions(lm, tok, questions[2]["test"], mode=mode, n_boot=200, progress=False,
                                   max_new_tokens=2)
            if r["n"] != len(questions[2]["test"]):
                raise AssertionError(f"{mode}: scored {r['n']} questions")

    stage("medtok_train", (), medtok_train)
    stage("medtok_tokenize", ("medtok_train",), medtok_tokenize)
    stage("finetune", ("medtok_tokenize",), run_finetune)
    stage("resume", ("finetune",), resume)
    stage("reload_score", ("finetune",), reload_score)
    stage("qa_harness", (), qa_harness)
    if verbose:
        n_ok = sum(r["ok"] for r in report.values())
        print(f"{n_ok}/{len(report)} stages OK on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, "
              f"torch {torch.__version__}); outputs in {out}", flush=True)
    return report

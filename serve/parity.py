"""Parity of the vLLM backend with HF/peft: token-level comparison, the HF references (computed in
process before vLLM starts) and the same measurements through a running service."""

from __future__ import annotations

import time

import numpy as np
import torch

from qa.scoring import score_multiple_choice
from serve.backends.base import SamplingSpec
from serve.backends.hf import HFBackend
from serve.backends.vllm_server import VLLMServerBackend
from serve.embeds import PromptBuilder


def trim(ids, stop_ids) -> list[int]:
    """Token ids up to and including the first stop token (HF and vLLM both stop there)."""
    out = []
    for t in ids:
        out.append(int(t))
        if int(t) in stop_ids:
            break
    return out


def compare(reference: list[list[int]], got: list[list[int]], stop_ids) -> dict:
    """Exact-match count and the first mismatch (index, both sequences, first differing position)."""
    stop = set(stop_ids)
    n_match, first = 0, None
    for i, (a, b) in enumerate(zip(reference, got)):
        a, b = trim(a, stop), trim(b, stop)
        if a == b:
            n_match += 1
        elif first is None:
            pos = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            first = {"index": i, "position": pos, "reference": a, "got": b}
    return {"n": len(reference), "exact_match": n_match, "first_mismatch": first}


# ---- HF references (in process, before vLLM runs) ------------------------------------------------
def hf_references(bundle, vocab, questions, b, describe_prompts) -> dict:

    fp32, bf16 = PromptBuilder(bundle, vocab, "float32"), PromptBuilder(bundle, vocab, "bfloat16")
    hf = HFBackend(bundle, fp32)
    spec = SamplingSpec(b.parity_new_tokens, ignore_eos=True)
    prompts = [(q.question.strip() + "\nAnswer:", list(q.codes)) for q in questions]
    out = {"prompts": prompts, "tokens_fp32": [], "tokens_bf16": []}
    model = hf.model
    if "parity" in b.parts:
        t0 = time.perf_counter()
        for p, codes in prompts:
            ids = fp32.text_prompt_ids(p)
            prefix = fp32.prefix_codes(codes)
            out["tokens_fp32"].append(hf._generate_sync(fp32.row(ids, prefix), spec).token_ids)
            out["tokens_bf16"].append(hf._generate_sync(bf16.row(ids, prefix), spec).token_ids)
        out["generate_s"] = time.perf_counter() - t0
        res = score_multiple_choice(model, fp32.tokenizer, questions, batch_size=8, input_builder=model.input_builder(),
                                    progress=False)
        out["harness"] = {"pred": res.pred.tolist(), "correct": res.correct.tolist(),
                          "letter_logprobs": res.letter_logprobs.tolist()}
    if "load" in b.parts:
        out["throughput"] = hf_throughput(model, fp32, describe_prompts, b)
    del hf
    return out


def hf_throughput(model, builder, prompts, b) -> dict:
    """HF `generate` on left-padded batches (build_inputs), exactly `load_max_tokens` new tokens
    each (eos ignored, as the vLLM load does), per batch size on >= 2 batches (>= 8 prompts)."""
    per = {}
    for bs in b.hf_batch_sizes:
        n = max(2 * bs, 8)
        items = [prompts[i % len(prompts)] for i in range(n)]
        t0 = time.perf_counter()
        for s in range(0, n, bs):
            chunk = items[s:s + bs]
            batch = model.inputs([c for _, c in chunk], [builder.text_prompt_ids(p) for p, _ in chunk])
            with torch.inference_mode():
                model.lm.generate(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"],
                                  max_new_tokens=b.load_max_tokens, do_sample=False, eos_token_id=None,
                                  pad_token_id=model.pad_token_id)
        dt = time.perf_counter() - t0
        per[bs] = {"questions": n, "seconds": dt, "questions_per_s": n / dt,
                   "output_tokens_per_s": n * b.load_max_tokens / dt}
        print(f"  HF generate batch {bs}: {n / dt:.2f} questions/s ({n} x {b.load_max_tokens} tokens, {dt:.0f} s)",
              flush=True)
    best = max(per, key=lambda k: per[k]["questions_per_s"])
    return {"per_batch_size": per, "best_batch_size": best, "questions_per_s": per[best]["questions_per_s"],
            "torch_threads": torch.get_num_threads()}


# ---- the same through a running service (`serve.bench.ServedProcess`) -----------------------------
def served_parity(sp, bundle, vocab, questions, refs: dict, b) -> dict:
    import asyncio


    got32 = []
    for p, codes in refs["prompts"]:
        r = sp.client.post("/v1/completions", json={"prompt": p, "codes": codes, "max_tokens": b.parity_new_tokens,
                                                    "temperature": 0, "ignore_eos": True})
        r.raise_for_status()
        got32.append(r.json()["choices"][0]["token_ids"])
    bf16 = PromptBuilder(bundle, vocab, "bfloat16")
    spec = SamplingSpec(b.parity_new_tokens, ignore_eos=True)

    async def direct():
        be = VLLMServerBackend(sp.vllm_url, sp.card["id"], api_key=sp.vllm_key)
        try:
            return [(await be.generate(bf16.row(bf16.text_prompt_ids(p), bf16.prefix_codes(c)), spec, f"p{i}")).token_ids
                    for i, (p, c) in enumerate(refs["prompts"])]
        finally:
            await be.close()

    got16 = asyncio.run(direct())
    letters, lp_diff = [], 0.0
    for q, want, want_lp in zip(questions, refs["harness"]["pred"], refs["harness"]["letter_logprobs"]):
        a = sp.client.post("/v1/answer", json={"question": q.question, "options": q.options, "codes": q.codes}).json()
        letters.append(a["answer"]["index"])
        lp_diff = max(lp_diff, max(abs(x - y) for x, y in zip(a["answer"]["logprobs"].values(), want_lp)))
    stop = bundle["stop_token_ids"]
    n_tok = [len(t) for t in got32]
    return {"n": len(questions), "new_tokens": b.parity_new_tokens, "min_new_tokens": min(n_tok),
            "fp32_rows_vllm_vs_hf": compare(refs["tokens_fp32"], got32, stop),
            "bf16_rows_vllm_vs_hf_bf16_rows": compare(refs["tokens_bf16"], got16, stop),
            "bf16_rows_vllm_vs_hf_fp32_rows": compare(refs["tokens_fp32"], got16, stop),
            "letters_equal_harness": int(sum(int(x == y) for x, y in zip(letters, refs["harness"]["pred"]))),
            "letter_logprob_max_abs_diff": lp_diff,
            "harness_accuracy": float(np.mean(refs["harness"]["correct"])),
            "served_accuracy": float(np.mean([x == q.answer for x, q in zip(letters, questions)]))}



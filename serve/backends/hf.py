"""In-process backend: the served base model + LoRA with transformers/peft, one request at a time.

For development, for CPU users without the vLLM venv, and for what vLLM cannot do with prompt
embeddings: option-likelihood scoring (the log-probability of each option's text), which runs
the project's own `score_by_option_likelihood` on a `PrefixLM`, exactly as the fine-tuning job
scores. Generation takes the gateway's row (the same bytes vLLM would get) and runs
`generate(inputs_embeds=row)` like `llm_adapter.serving.reference_generations`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator

import torch

from llm_adapter.model import PrefixLM
from llm_adapter.option_scoring import score_by_option_likelihood
from qa.types import MCQuestion
from serve.backends.base import Backend, BackendError, Delta, Generation, SamplingSpec


class _QueueStreamer:
    """transformers streamer -> asyncio queue (generate runs in a worker thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self.loop, self.queue = loop, queue

    def put(self, value):
        ids = [int(t) for t in value.reshape(-1).tolist()]
        if ids:  # the first call carries the (empty) prompt ids when only embeddings are given
            self.loop.call_soon_threadsafe(self.queue.put_nowait, ids)

    def end(self):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


class HFBackend(Backend):
    name = "hf"
    supports_option_scoring = True

    def __init__(self, bundle, builder, device: str = "cpu"):
        from transformers import AutoModelForCausalLM


        self.bundle, self.builder, self.device = bundle, builder, torch.device(device)
        self.dtype = builder.model_dtype
        lm = AutoModelForCausalLM.from_pretrained(str(bundle.base_dir), dtype=self.dtype).to(self.device).eval()
        # the PrefixLM of the adapter: LoRA applied by peft, projector + vectors shared with the gateway
        self.model = PrefixLM.from_pretrained(bundle.adapter_dir, lm=lm, tokenizer=builder.tokenizer,
                                              vector_source=builder.model.vector_source)
        self.model.eval()
        self.stop_ids = set(bundle["stop_token_ids"])
        self._lock = threading.Lock()  # one generate at a time: torch already uses every thread

    def info(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "torch_threads": torch.get_num_threads()}

    async def health(self) -> bool:
        return True

    def _kwargs(self, row: torch.Tensor, spec: SamplingSpec) -> dict:
        emb = row.to(device=self.device, dtype=self.dtype)[None]
        kw = dict(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long, device=self.device),
                  max_new_tokens=spec.max_tokens, pad_token_id=self.model.pad_token_id,
                  eos_token_id=sorted(self.stop_ids), do_sample=spec.temperature > 0)
        if spec.temperature > 0:
            kw.update(temperature=spec.temperature, top_p=spec.top_p)
        if spec.ignore_eos:  # like vLLM's ignore_eos: greedy continues through an eos token
            kw["eos_token_id"] = None
        if spec.stop:
            kw.update(stop_strings=list(spec.stop), tokenizer=self.builder.tokenizer)
        return kw

    def _generate_sync(self, row: torch.Tensor, spec: SamplingSpec, streamer=None) -> Generation:
        kw = self._kwargs(row, spec)
        with self._lock, torch.inference_mode():
            if spec.seed is not None:
                torch.manual_seed(spec.seed)
            out = self.model.lm.generate(**kw, streamer=streamer, return_dict_in_generate=True,
                                         output_logits=spec.logprob_token_ids is not None)
        ids = [int(t) for t in out.sequences[0]]  # with inputs_embeds only, just the new tokens
        first = None
        if spec.logprob_token_ids is not None:
            lp = torch.log_softmax(out.logits[0][0].float(), dim=-1)
            first = {int(t): float(lp[int(t)]) for t in spec.logprob_token_ids}
        if ids and ids[-1] in self.stop_ids and not spec.ignore_eos:
            finish = "stop"
        else:
            finish = "length" if len(ids) >= spec.max_tokens else "stop"
        return Generation(ids, self.builder.decode(ids), finish, int(row.shape[0]), first)

    async def generate(self, row, spec, request_id) -> Generation:
        try:
            return await asyncio.to_thread(self._generate_sync, row, spec)
        except (RuntimeError, ValueError) as e:
            raise BackendError(f"HF generate failed: {e}", status=500) from e

    async def stream(self, row, spec, request_id) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        task = loop.run_in_executor(None, self._generate_sync, row, spec, _QueueStreamer(loop, queue))
        ids: list[int] = []
        text_so_far = ""
        while True:
            item = await queue.get()
            if item is None:
                break
            ids += item
            text = self.builder.decode(ids)  # decode the whole so multi-token characters come out whole
            yield Delta(text[len(text_so_far):], item)
            text_so_far = text
        gen = await task
        yield Delta("", [], gen.finish_reason)

    def _option_scores_sync(self, question: str, options: list[str], codes: list[str]) -> list[float]:

        q = MCQuestion("request", question, list(options), 0, codes=list(codes))
        with self._lock, torch.inference_mode():
            res = score_by_option_likelihood(self.model, self.builder.tokenizer, [q], progress=False)
        return [float(x) for x in res.letter_logprobs[0, : len(options)]]

    async def option_scores(self, question, options, codes) -> list[float]:
        return await asyncio.to_thread(self._option_scores_sync, question, options, codes)

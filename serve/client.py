"""Clients of the gateway: `GatewayClient` (ask a question), `ServerScorer` and
`evaluate_via_server` (the QA harness through a running server: same ScoreResult, same results
table and JSON as `qa.harness.evaluate`).

    python scripts/ask.py --server http://127.0.0.1:8000 "What does ICD10CM:E11.9 denote?" --options ...
    python scripts/eval_qa.py --backend server --server http://127.0.0.1:8000 --dataset ontology --split test
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from medbase.provenance import questions_fingerprint, save_results
from qa.datasets import load_dataset
from qa.harness import _default_output, format_table, results_from_scores
from qa.scoring import ScoreResult
from serve.config import API_KEY_ENV


class GatewayError(RuntimeError):
    def __init__(self, status: int, message: str, request_id: str | None = None):
        super().__init__(f"HTTP {status}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.status, self.request_id = status, request_id


class GatewayClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 300.0):
        key = api_key or os.environ.get(API_KEY_ENV)
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {key}"} if key else {})

    def _json(self, resp: httpx.Response) -> dict:
        if resp.status_code >= 400:
            try:
                body = resp.json()
                msg, rid = body["error"]["message"], body.get("request_id")
            except (ValueError, KeyError, TypeError):
                msg, rid = resp.text[:500], resp.headers.get("x-request-id")
            raise GatewayError(resp.status_code, msg, rid)
        return resp.json()

    def health(self) -> dict:
        return self._json(self.http.get("/health"))

    def models(self) -> dict:
        return self._json(self.http.get("/v1/models"))

    def answer(self, question: str, options: list[str] | None = None, codes: list[str] | None = None,
               scoring: str = "letter", max_tokens: int | None = None) -> dict:
        body = {"question": question, "scoring": scoring}
        if options is not None:
            body["options"] = list(options)
        if codes is not None:
            body["codes"] = list(codes)
        if max_tokens is not None:
            body["max_tokens"] = int(max_tokens)
        return self._json(self.http.post("/v1/answer", json=body))

    def complete(self, prompt: str, codes: list[str] | None = None, **params) -> dict:
        body = {"prompt": prompt, **params}
        if codes is not None:
            body["codes"] = list(codes)
        return self._json(self.http.post("/v1/completions", json=body))

    def close(self) -> None:
        self.http.close()


class ServerScorer:
    """Scores multiple-choice questions through /v1/answer: a question's own codes are sent
    explicitly (what the HF harness feeds the adapter), otherwise the gateway's linker runs."""

    def __init__(self, url: str, api_key: str | None = None, concurrency: int = 8, scoring: str = "letter"):
        self.client = GatewayClient(url, api_key)
        self.concurrency, self.scoring = concurrency, scoring

    def _one(self, q) -> dict:
        return self.client.answer(q.question, q.options, list(q.codes) if q.codes else None, self.scoring)

    def score(self, questions, progress: bool = True):
        from tqdm.auto import tqdm


        n = len(questions)
        max_opt = max((len(q.options) for q in questions), default=0)
        logprobs = np.full((n, max_opt), -np.inf, dtype=np.float32)
        key = "logprobs" if self.scoring == "letter" else "option_scores"
        with ThreadPoolExecutor(self.concurrency) as pool:
            for i, out in enumerate(tqdm(pool.map(self._one, questions), total=n, desc="server", unit="q",
                                         disable=not progress)):
                for j, v in enumerate(out["answer"][key].values()):
                    logprobs[i, j] = -np.inf if v is None else v
        pred = logprobs.argmax(axis=1).astype(np.int64) if n else np.zeros(0, dtype=np.int64)
        answer = np.array([q.answer for q in questions], dtype=np.int64)
        return ScoreResult(ids=[q.id for q in questions], pred=pred, correct=pred == answer,
                           letter_logprobs=logprobs, answer=answer)


def evaluate_via_server(config, url: str, *, api_key: str | None = None, concurrency: int = 8,
                        print_table: bool = True) -> dict:
    """`qa.harness.evaluate` with the scoring done by a running gateway (`config.model` is ignored:
    the server decides the model; its /v1/models card is recorded in the results)."""
    from pathlib import Path


    questions = load_dataset(config.dataset, config.data_path, split=config.split, **config.dataset_kwargs)
    if config.limit is not None:
        questions = questions[: config.limit]
    if not questions:
        raise ValueError(f"no questions in dataset {config.dataset!r} split {config.split!r}")
    import dataclasses

    scorer = ServerScorer(url, api_key, concurrency)
    card = scorer.client.models()["data"][0]
    if config.system is None:  # the table and the default output name say it was served
        config = dataclasses.replace(config, system=f"server-{card['id']}")
    t0 = time.perf_counter()
    score = scorer.score(questions)
    seconds = time.perf_counter() - t0
    results = results_from_scores(questions, score, system=config.system, n_boot=config.n_boot, seed=config.seed,
                                  extra={"mode": "loglik", "backend": "server", "server": url, "served_model": card,
                                         "seconds": round(seconds, 2), "dataset": config.dataset,
                                         "seconds_per_question": round(seconds / len(questions), 4),
                                         "questions_fingerprint": questions_fingerprint(questions),
                                         "config": config.to_dict()})
    out = Path(config.output) if config.output else _default_output(config)
    save_results(results, out)
    results["output"] = str(out)
    if print_table:
        print(format_table(results))
        print(f"results: {out}")
    return results

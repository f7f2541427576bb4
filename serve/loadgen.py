"""Closed-loop load generator: N concurrent streaming clients on loopback (async httpx).

Each client sends POST /v1/completions with `stream: true` and waits for the whole answer
before sending its next request, until at least `min_requests` have been sent and at least
`min_seconds` have passed. Per request: end-to-end latency, time to first token (first chunk
carrying a token) and time per output token after the first (`vllm bench serve` definitions).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import numpy as np


def percentiles(x, ps=(50, 90, 99)) -> dict:
    x = np.asarray([v for v in x if v is not None], dtype=np.float64)
    if not len(x):
        return {}
    return {"mean": float(x.mean()), **{f"p{p}": float(np.percentile(x, p)) for p in ps}}


async def _run(url: str, bodies: list[dict], clients: int, min_requests: int, min_seconds: float,
               headers: dict | None) -> tuple[list[dict], float]:
    counter, results = itertools.count(), []
    t0 = time.perf_counter()

    async def client():
        async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers or {}) as c:
            while True:
                i = next(counter)
                if i >= min_requests and time.perf_counter() - t0 >= min_seconds:
                    return
                body = {**bodies[i % len(bodies)], "stream": True}
                rec = {"i": i, "ok": False, "status": None, "tokens": 0}
                ts, first = time.perf_counter(), None
                try:
                    async with c.stream("POST", "/v1/completions", json=body) as r:
                        rec["status"] = r.status_code
                        if r.status_code != 200:
                            rec["error"] = (await r.aread()).decode(errors="replace")[:300]
                        else:
                            async for line in r.aiter_lines():
                                if not line.startswith("data: {"):
                                    continue
                                chunk = json.loads(line[6:])
                                if "error" in chunk:
                                    rec["error"] = str(chunk["error"])[:300]
                                    break
                                k = len(chunk["choices"][0].get("token_ids") or [])
                                if k and first is None:
                                    first = time.perf_counter()
                                rec["tokens"] += k
                            rec["ok"] = "error" not in rec and rec["tokens"] == body["max_tokens"]
                except httpx.HTTPError as e:
                    rec["error"] = f"{type(e).__name__}: {e}"[:300]
                te = time.perf_counter()
                rec.update(start=ts - t0, end=te - t0, latency=te - ts, ttft=(first - ts) if first else None,
                           tpot=((te - first) / (rec["tokens"] - 1)) if first and rec["tokens"] > 1 else None)
                results.append(rec)

    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - t0


def run_load(url: str, bodies: list[dict], *, clients: int = 16, min_requests: int = 200, min_seconds: float = 60.0,
             headers: dict | None = None) -> dict:
    """Summary (and per-request records) of a closed-loop streaming load on `url`."""
    results, wall = asyncio.run(_run(url, bodies, clients, min_requests, min_seconds, headers))
    ok = [r for r in results if r["ok"]]
    tokens = sum(r["tokens"] for r in ok)
    return {"clients": clients, "requests": len(results), "failed": len(results) - len(ok), "wall_s": wall,
            "questions_per_s": len(ok) / wall, "output_tokens_per_s": tokens / wall,
            "latency_s": percentiles([r["latency"] for r in ok]), "ttft_s": percentiles([r["ttft"] for r in ok]),
            "tpot_s": percentiles([r["tpot"] for r in ok]),
            "errors": sorted({r.get("error", "")[:120] for r in results if not r["ok"]})[:5], "records": results}

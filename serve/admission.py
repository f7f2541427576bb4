"""Admission control: at most `max_concurrency` requests at the backend, at most `max_queue`
waiting for a slot; beyond that a clear 429 (queue full) or 503 (waited too long) instead of
unbounded queueing. vLLM batches the admitted requests itself; the cap bounds its batch and
the gateway's memory."""

from __future__ import annotations

import asyncio
import contextlib
import time


class Overloaded(Exception):
    def __init__(self, message: str, status: int, retry_after_s: int = 1):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float, metrics=None):
        self.max_concurrency, self.max_queue, self.queue_timeout_s = max_concurrency, max_queue, queue_timeout_s
        self.metrics = metrics
        self._sem: asyncio.Semaphore | None = None  # created in the serving loop
        self.waiting = 0
        self.active = 0

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.in_flight.set(self.active)

    def _reject(self, reason: str, message: str, status: int):
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        raise Overloaded(message, status)

    @contextlib.asynccontextmanager
    async def slot(self):
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        if self._sem.locked() and self.waiting >= self.max_queue:
            self._reject("queue_full", f"server busy: {self.active} requests in flight (cap {self.max_concurrency}) "
                                       f"and {self.waiting} waiting (cap {self.max_queue}); retry later", 429)
        self.waiting += 1
        self._gauges()
        t0 = time.perf_counter()
        try:
            if self._sem.locked():
                await asyncio.wait_for(self._sem.acquire(), self.queue_timeout_s)
            else:  # a free slot: take it now (wait_for would cost extra loop turns)
                await self._sem.acquire()
        except asyncio.TimeoutError:
            self._reject("queue_timeout", f"server busy: no backend slot within {self.queue_timeout_s:g} s", 503)
        finally:
            self.waiting -= 1
            self._gauges()
        self.active += 1
        self._gauges()
        if self.metrics is not None:
            self.metrics.stage.labels("queue").observe(time.perf_counter() - t0)
        try:
            yield
        finally:
            self.active -= 1
            self._sem.release()
            self._gauges()

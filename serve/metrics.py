"""Prometheus metrics of the gateway (GET /metrics), one registry per app.

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). The stage
histogram splits the gateway's own work (linking, prefix + embedding) from the backend's, which
is how the "gateway work per question" figure is measured; TTFT is recorded for streams.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the gateway)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BYTES_BUCKETS = (1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 2.5e6, 5e6, 1e7)


class GatewayMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("medtok_gateway_requests_total", "Requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("medtok_gateway_errors_total", "Failed requests by endpoint and kind",
                              ["endpoint", "kind"], registry=r)
        self.latency = Histogram("medtok_gateway_request_seconds", "End-to-end request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("medtok_gateway_stage_seconds", "Time per stage of a request",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.ttft = Histogram("medtok_gateway_time_to_first_token_seconds", "Streamed requests: time to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.embed_bytes = Histogram("medtok_gateway_prompt_embeds_bytes", "Serialized prompt embeddings per request",
                                     buckets=BYTES_BUCKETS, registry=r)
        self.queue_depth = Gauge("medtok_gateway_queue_depth", "Requests waiting for a backend slot", registry=r)
        self.in_flight = Gauge("medtok_gateway_in_flight", "Requests holding a backend slot", registry=r)
        self.rejected = Counter("medtok_gateway_rejected_total", "Requests refused by admission control",
                                ["reason"], registry=r)
        self.tokens = Counter("medtok_gateway_generated_tokens_total", "Tokens generated", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""What the service is doing, in Prometheus' text format at ``GET /metrics`` (the ``prometheus-client`` library).

Each app has its own registry, so two apps in one process (tests, benchmarks) count apart. With several uvicorn
workers each worker counts its own requests; a scrape reaches one of them (run one worker per port, or a proxy per
worker, to scrape them all).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """The service's counters, histograms and gauges, in one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "medassist_requests",
            "HTTP requests answered, by route template, status and model",
            ["route", "status", "model"],
            registry=r,
        )
        self.latency = Histogram(
            "medassist_request_seconds",
            "time to answer a request, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "medassist_batch_size",
            "requests run together in one model call (micro-batching)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.answers = Counter("medassist_predictions", "predictions made, by model", ["model"], registry=r)
        self.abstained = Counter(
            "medassist_abstentions",
            "predictions referred to a clinician (wholly or some findings), by model",
            ["model"],
            registry=r,
        )
        self.referred = Counter(
            "medassist_findings_referred",
            "findings (or classes) left unanswered, by model and finding",
            ["model", "finding"],
            registry=r,
        )
        self.abstention_rate = Gauge(
            "medassist_abstention_rate",
            "share of this process's predictions referred, by model",
            ["model"],
            registry=r,
        )
        self.loaded = Gauge("medassist_models_loaded", "bundles loaded and serving", registry=r)
        self.verified = Gauge(
            "medassist_bundle_verified",
            "1: the bundle passed its manifest check when loaded",
            ["model", "version"],
            registry=r,
        )
        self.reloads = Counter(
            "medassist_reloads",
            "bundle reloads, by model and result (ok or refused)",
            ["model", "result"],
            registry=r,
        )
        self._counts: dict[str, list[int]] = {}

    def prediction(self, model: str, referred: list[str], abstained: bool, batch_size: int) -> None:
        """Count one answered prediction."""
        self.answers.labels(model).inc()
        self.batch.labels(model).observe(batch_size)
        n = self._counts.setdefault(model, [0, 0])
        n[0] += 1
        if abstained:
            n[1] += 1
            self.abstained.labels(model).inc()
        for finding in referred:
            self.referred.labels(model, finding).inc()
        self.abstention_rate.labels(model).set(n[1] / n[0])

    def request(self, route: str, status: int, model: str, seconds: float) -> None:
        self.requests.labels(route, str(status), model).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

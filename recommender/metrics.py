"""Prometheus metrics: request counts and latency per endpoint, index size and version, user-model version,
queue length, versions reloaded after a gap in the changes stream (``vistas_changes_gaps_total``).

Under gunicorn every worker process records into files of a shared
directory (``PROMETHEUS_MULTIPROC_DIR``, set by ``recommender.server``) so a
scrape that lands on any worker sees the whole server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recommender.gaps import GAPS
from recommender.state import app_state

REQUESTS = Counter("vistas_requests_total", "HTTP requests", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "vistas_request_seconds", "HTTP request latency", ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class IndexCollector(Collector):
    """Gauges read at scrape time from the scraping process's live index and Redis."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = app_state(self.app)
        live = state.live
        yield GaugeMetricFamily("vistas_index_items", "Items in the served index",
                                value=len(live.index) if live.index is not None else 0)
        yield GaugeMetricFamily("vistas_index_version", "Served index version", value=live.version)
        yield GaugeMetricFamily("vistas_user_model_version", "Served user-model version (0: none trained yet)",
                                value=state.users.version)
        try:
            queued = state.store.queue.length()
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            queued = float("nan")
        yield GaugeMetricFamily("vistas_ingest_queue_length", "Entries in the ingest stream", value=queued)


def init_metrics(app: Flask) -> None:
    """Time every request and serve ``/metrics``."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        if endpoint != "/metrics":
            REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
            LATENCY.labels(endpoint).observe(time.perf_counter() - g.get("metrics_started", time.perf_counter()))
        return response

    collector = IndexCollector(app)

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)
        else:
            registry.register(REQUESTS)
            registry.register(LATENCY)
            registry.register(GAPS)
        registry.register(collector)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

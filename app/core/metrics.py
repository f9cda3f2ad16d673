"""Process-level Prometheus instruments, aggregated across processes.

`unlearnd serve` and `run` point ``PROMETHEUS_MULTIPROC_DIR`` at a folder under the data dir
before anything imports prometheus_client (app/cli.py), so every API process writes its
samples there and one scrape of any of them sums them all. Without that variable
(tests in one process) the default in-process registry is used.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUEST_SECONDS = Histogram(
    "unlearnd_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def process_registry() -> CollectorRegistry | None:
    """A registry that sums every process's samples, or None for the in-process default."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return None
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    return registry


class HttpMetricsMiddleware:
    """Times every HTTP request under its route template (never the raw path: ids in paths
    would make one series per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(time.perf_counter() - started)

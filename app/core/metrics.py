"""Process-level Prometheus instruments, aggregated across processes.

`unlearnd serve` and `run` point ``PROMETHEUS_MULTIPROC_DIR`` at a folder under the data dir
before anything imports prometheus_client (app/cli.py), so every API process writes its
samples there and one scrape of any of them sums them all. Without that variable
(tests in one process) the default in-process registry is used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from starlette.types import Scope

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


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Record one HTTP request under its route template (never the raw path: ids in paths
    would make one series per request). Called by the request-id middleware, which times it."""
    template = getattr(scope.get("route"), "path", None) or "unmatched"
    HTTP_REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(seconds)

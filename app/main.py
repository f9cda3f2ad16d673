"""The FastAPI application: middleware, problem handlers and the routers of every room."""

from __future__ import annotations

import gc
import sys

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app import __version__
from app.api.direct import direct_answers
from app.api.edge import EdgeMiddleware
from app.audit.router import SealAfterResponse
from app.audit.router import router as audit_router
from app.audit.router import well_known_router as keys_router
from app.certificates.router import router as certificates_router
from app.clients.router import router as clients_router
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.core.metrics import observe_request
from app.core.problems import install_problem_handlers, install_problem_openapi
from app.dashboard.router import install as install_dashboard
from app.drp.router import admin_router as drp_admin_router
from app.drp.router import router as drp_router
from app.health.router import router as health_router
from app.jobs.router import router as jobs_router
from app.lineage.router import router as lineage_router
from app.metrics.router import router as metrics_router
from app.registry.router import ARTIFACT_UPLOAD_PATH
from app.registry.router import router as registry_router
from app.requests.router import BATCH_PATH
from app.requests.router import router as requests_router
from app.webhooks.router import router as webhooks_router

ROUTERS = [health_router, clients_router, requests_router, registry_router, lineage_router, audit_router, keys_router, certificates_router, jobs_router, metrics_router, webhooks_router, drp_router, drp_admin_router]


# Young-generation collections every 200,000 net allocations instead of 700. Bulk intake keeps
# tens of thousands of objects alive per batch, and the batches waiting their turn keep their
# parsed bodies: a lower threshold collects them over and over, each time holding the GIL. Over
# one 15 s bulk run (1,000 per call, 32 clients) the API spent 0.99 s in 26 collections at
# 50,000 (the longest 237 ms) and 0.14 s in 8 at 200,000 (79 ms); at 10,000, in-process, each
# 1,000-item batch set off five. Live objects are freed by reference counting whatever the
# threshold; only garbage in cycles waits longer, bounded by the threshold.
GC_THRESHOLDS = (200_000, 50, 10)


def _tune_gc() -> None:
    """Once per process: freeze what exists once the app is built (modules, routes, models:
    hundreds of thousands of objects that live as long as the process), so that full
    collections no longer walk them. Each full collection took ~0.1 s of the one CPU an API
    process has, and a bulk intake triggered one every couple of thousand requests; the
    collections together were a fifth of its CPU (measured in-process, 100-item batches)."""
    if gc.get_threshold() != GC_THRESHOLDS:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). The event
# loop thread waits behind the worker threads that plan and write intake groups; at 5 ms a read
# answered on the loop (the lineage record query) waited up to that long per hand-off under load.
SWITCH_INTERVAL_SECONDS = 0.001


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    # Swagger UI and ReDoc from assets in the package: the docs work without internet, and
    # no online validator is asked about the schema.
    app = FastAPIOffline(
        title="Unlearnd",
        version=__version__,
        description="Deletion requests in; unlearned models and signed proofs out.",
        swagger_ui_parameters={"validatorUrl": None},
        # The service exports Prometheus metrics and JSON logs of its own (app/core/metrics.py,
        # app/core/logging.py); FastAPI's native OpenTelemetry hooks would otherwise look for
        # providers on every request and wrap each in one more middleware.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_problem_handlers(app)
    install_problem_openapi(app)
    # Request id, body limit, input guard, transient-error retry, metrics, and sealing once every
    # commit of the request has happened and its response been sent: one layer (app/api/edge.py).
    app.add_middleware(EdgeMiddleware, max_bytes=settings.max_body_bytes,
                       streamed={ARTIFACT_UPLOAD_PATH: settings.max_artifact_bytes},
                       larger={BATCH_PATH: settings.max_batch_body_bytes},
                       on_response=observe_request, after_response=SealAfterResponse(),
                       direct=lambda: direct_answers(route for router in ROUTERS for route in router.routes))
    for router in ROUTERS:
        app.include_router(router)
    install_dashboard(app)
    _tune_gc()
    return app

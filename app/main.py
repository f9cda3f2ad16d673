"""The FastAPI application: middleware, problem handlers and the routers of every room."""

from __future__ import annotations

from fastapi import FastAPI

from app import __version__
from app.core.config import Settings, get_settings
from app.core.limits import BodySizeLimitMiddleware
from app.core.logging import RequestIdMiddleware, configure_logging
from app.core.problems import install_problem_handlers
from app.clients.router import router as clients_router
from app.health.router import router as health_router

ROUTERS = [health_router, clients_router]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    app = FastAPI(
        title="Unlearnd",
        version=__version__,
        description="Deletion requests in; unlearned models and signed proofs out.",
    )
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    return app

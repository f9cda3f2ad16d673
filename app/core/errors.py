"""The exception family services raise. ``app.core.problems`` maps it to RFC 9457 in one place."""

from __future__ import annotations

from typing import Any


class UnlearndError(Exception):
    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = dict(extensions)
        if field is not None:
            self.extensions["field"] = field


class InvalidInput(UnlearndError):
    status, slug, title = 422, "invalid-input", "Invalid input"


class Unauthenticated(UnlearndError):
    status, slug, title = 401, "unauthenticated", "Authentication required"


class Forbidden(UnlearndError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFound(UnlearndError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(UnlearndError):
    status, slug, title = 409, "conflict", "Conflict"


class IllegalTransition(Conflict):
    slug, title = "illegal-transition", "Illegal state transition"


class TooManyRequests(UnlearndError):
    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))}, retry_after=max(1, retry_after),
                         **extensions)


class PayloadTooLarge(UnlearndError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class ServiceUnavailable(UnlearndError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"

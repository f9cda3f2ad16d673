"""A typed Python client for the Unlearnd API (``httpx``; sync and async).

    from app.client import Client
    with Client("https://unlearnd.example.org", api_key="ulk_...") as unlearnd:
        created = unlearnd.submit_request({"subject": [{"type": "email", "value": "ann@example.org"}],
                                           "legal_basis": "gdpr_art17"})
        detail = unlearnd.get_request(created.id)          # DeletionRequestDetail
        signed = unlearnd.certificate(created.id, wait=60)  # bytes, exactly as they verify

Answers are the API's own pydantic schemas. A 503 (lost infrastructure) and a connection
error are retried with back-off (``Retry-After`` honoured); a submission keeps one
``Idempotency-Key`` across its retries, so a retried POST never makes a second request.
Any other 4xx/5xx raises ``ApiError`` carrying the RFC 9457 problem document.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.requests.schemas import DeletionRequestCreate, DeletionRequestDetail, DeletionRequestOut, DeletionRequestPage

__all__ = ["ApiError", "AsyncClient", "Client", "DeletionRequestCreate", "DeletionRequestDetail",
           "DeletionRequestOut", "DeletionRequestPage", "RetryPolicy", "Unavailable"]

JOSE = "application/jose"


class ApiError(Exception):
    """The server answered with a problem (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        super().__init__(f"{status}: {self.detail}")


class Unavailable(ApiError):
    """Still unavailable (503, a connection error or a certificate still being issued) after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # in all, the first included
    backoff_seconds: float = 0.5  # doubled after each attempt
    max_wait_seconds: float = 30.0  # cap on a single wait, Retry-After included

    def wait(self, attempt: int, retry_after: str | None) -> float:
        try:
            asked = float(retry_after) if retry_after else None
        except ValueError:
            asked = None
        return min(self.max_wait_seconds, asked if asked is not None else self.backoff_seconds * 2 ** attempt)


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": response.reason_phrase, "status": response.status_code}
    return body if isinstance(body, dict) else {"title": str(body), "status": response.status_code}


def _retryable(response: httpx.Response) -> bool:
    return response.status_code == 503


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        error = Unavailable if response.status_code == 503 else ApiError
        raise error(response.status_code, _problem(response))
    return response


def _submission(body: DeletionRequestCreate | dict[str, Any], idempotency_key: str | None) -> _Call:
    document = DeletionRequestCreate.model_validate(body).model_dump(mode="json", exclude_none=True)
    # One key for every retry of this submission: the server answers a repeat with the original.
    key = idempotency_key or str(uuid.uuid4())
    return _Call("POST", "/v1/deletion-requests", json=document, headers={"Idempotency-Key": key})


def _listing(status: str | None, legal_basis: str | None, external_ref: str | None, cursor: str | None,
             limit: int) -> _Call:
    params = {"status": status, "legal_basis": legal_basis, "external_ref": external_ref, "cursor": cursor,
              "limit": limit}
    return _Call("GET", "/v1/deletion-requests", params={k: v for k, v in params.items() if v is not None})


def _certificate_call(request_id: str, jws: bool) -> _Call:
    return _Call("GET", f"/v1/deletion-requests/{request_id}/certificate", headers={"Accept": JOSE} if jws else {})


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": "unlearnd-client"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class Client:
    """Synchronous client. ``transport`` is httpx's (tests may pass one)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self._http.request(call.method, call.path, params=call.params, json=call.json,
                                              headers=call.headers)
            except httpx.TransportError as exc:
                if last:
                    raise Unavailable(0, {"title": "Unavailable", "detail": f"cannot reach the server: {exc}"}) from exc
                time.sleep(self.retry.wait(attempt, None))
                continue
            if _retryable(response) and not last:
                time.sleep(self.retry.wait(attempt, response.headers.get("Retry-After")))
                continue
            return _checked(response)
        raise AssertionError("unreachable")

    def submit_request(self, body: DeletionRequestCreate | dict[str, Any], *,
                       idempotency_key: str | None = None) -> DeletionRequestOut:
        """Submit a deletion request (retried safely: one Idempotency-Key for every attempt)."""
        return DeletionRequestOut.model_validate(self._send(_submission(body, idempotency_key)).json())

    def list_requests(self, *, status: str | None = None, legal_basis: str | None = None,
                      external_ref: str | None = None, cursor: str | None = None,
                      limit: int = 50) -> DeletionRequestPage:
        return DeletionRequestPage.model_validate(
            self._send(_listing(status, legal_basis, external_ref, cursor, limit)).json())

    def iter_requests(self, **filters: Any) -> Iterator[DeletionRequestOut]:
        """Every request the key may see, following the cursor."""
        cursor = None
        while True:
            page = self.list_requests(cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_request(self, request_id: str) -> DeletionRequestDetail:
        return DeletionRequestDetail.model_validate(
            self._send(_Call("GET", f"/v1/deletion-requests/{request_id}")).json())

    def certificate(self, request_id: str, *, jws: bool = False, wait: float = 0.0) -> bytes:
        """The certificate file of a completed request, byte for byte (JSON, or a compact JWS).
        While it is being issued (202) ask again for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            response = self._send(_certificate_call(request_id, jws))
            if response.status_code == 200:
                return response.content
            if time.monotonic() >= deadline:
                raise Unavailable(response.status_code, _problem(response))
            time.sleep(min(self.retry.wait(0, response.headers.get("Retry-After")),
                           max(0.1, deadline - time.monotonic())))


class AsyncClient:
    """The same calls, awaitable."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = await self._http.request(call.method, call.path, params=call.params, json=call.json,
                                                    headers=call.headers)
            except httpx.TransportError as exc:
                if last:
                    raise Unavailable(0, {"title": "Unavailable", "detail": f"cannot reach the server: {exc}"}) from exc
                await asyncio.sleep(self.retry.wait(attempt, None))
                continue
            if _retryable(response) and not last:
                await asyncio.sleep(self.retry.wait(attempt, response.headers.get("Retry-After")))
                continue
            return _checked(response)
        raise AssertionError("unreachable")

    async def submit_request(self, body: DeletionRequestCreate | dict[str, Any], *,
                             idempotency_key: str | None = None) -> DeletionRequestOut:
        return DeletionRequestOut.model_validate((await self._send(_submission(body, idempotency_key))).json())

    async def list_requests(self, *, status: str | None = None, legal_basis: str | None = None,
                            external_ref: str | None = None, cursor: str | None = None,
                            limit: int = 50) -> DeletionRequestPage:
        response = await self._send(_listing(status, legal_basis, external_ref, cursor, limit))
        return DeletionRequestPage.model_validate(response.json())

    async def iter_requests(self, **filters: Any) -> AsyncIterator[DeletionRequestOut]:
        cursor = None
        while True:
            page = await self.list_requests(cursor=cursor, **filters)
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def get_request(self, request_id: str) -> DeletionRequestDetail:
        response = await self._send(_Call("GET", f"/v1/deletion-requests/{request_id}"))
        return DeletionRequestDetail.model_validate(response.json())

    async def certificate(self, request_id: str, *, jws: bool = False, wait: float = 0.0) -> bytes:
        deadline = time.monotonic() + wait
        while True:
            response = await self._send(_certificate_call(request_id, jws))
            if response.status_code == 200:
                return response.content
            if time.monotonic() >= deadline:
                raise Unavailable(response.status_code, _problem(response))
            await asyncio.sleep(min(self.retry.wait(0, response.headers.get("Retry-After")),
                                    max(0.1, deadline - time.monotonic())))

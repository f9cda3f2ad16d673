"""The typed client against the API in this process (httpx's ASGI transport): its schemas,
errors and certificate download, quickly. ``test_client.py`` runs it against a real API
process, with retries through a proxy, and the remote CLI."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import ValidationError

from app.client import ApiError, AsyncClient, DeletionRequestDetail, DeletionRequestOut
from tests.conftest import issue_certificate_now


def test_async_client_over_the_in_process_api(api, make_client):
    from app.certificates.verify import verify_certificate_file
    from app.core.signing import public_key_from_jwk

    portal = make_client("portal")
    keys = {jwk["kid"]: public_key_from_jwk(jwk) for jwk in api.get("/.well-known/unlearnd-keys").json()["keys"]}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=api.app)
        async with AsyncClient("http://testserver", portal.api_key, transport=transport) as unlearnd:
            created = await unlearnd.submit_request({"subject": [{"type": "email", "value": "ann@example.org"}],
                                                     "legal_basis": "gdpr_art17", "external_ref": "ip-1"})
            assert isinstance(created, DeletionRequestOut)
            assert (created.status, created.outcome) == ("completed", "no_data_found")
            detail = await unlearnd.get_request(created.id)
            assert isinstance(detail, DeletionRequestDetail) and detail.history[-1].to_status == "completed"
            assert [r.id for r in (await unlearnd.list_requests(external_ref="ip-1")).items] == [created.id]
            assert created.id in [r.id async for r in unlearnd.iter_requests()]

            with pytest.raises(ApiError) as missing:
                await unlearnd.get_request("00000000-0000-0000-0000-000000000000")
            assert missing.value.status == 404 and missing.value.problem["status"] == 404
            with pytest.raises(ValidationError, match="surprise"):  # refused before anything is sent
                await unlearnd.submit_request({"subject": [{"type": "email", "value": "x@example.org"}],
                                               "legal_basis": "gdpr_art17", "surprise": 1})

            issue_certificate_now(created.id)
            signed = await unlearnd.certificate(created.id)
            assert verify_certificate_file(signed, keys).request_id == created.id
            assert (await unlearnd.certificate(created.id, jws=True)).count(b".") == 2

    asyncio.run(scenario())

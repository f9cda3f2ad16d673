from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import CurrentClient, SessionDep
from app.certificates import service

router = APIRouter(prefix="/v1/deletion-requests", tags=["certificates"])


@router.get(
    "/{request_id}/certificate",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The signed certificate, canonical JSON."}},
)
def get_certificate(request_id: str, session: SessionDep, client: CurrentClient) -> Response:
    """The signed certificate of a completed request, byte for byte as it verifies:
    save the body unchanged and run `unlearnd certificate verify FILE --keys-url ...`."""
    certificate = service.certificate_for(session, request_id, client)
    return Response(
        content=service.certificate_file(certificate),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="certificate-{certificate.request_id}.json"'},
    )

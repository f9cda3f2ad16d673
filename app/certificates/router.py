from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse, Response

from app.api.deps import CurrentClient, SessionDep
from app.certificates import service

router = APIRouter(prefix="/v1/deletion-requests", tags=["certificates"])
# The outbox hands the issuing task to a worker right after the completing commit.
RETRY_AFTER_SECONDS = 2


@router.get(
    "/{request_id}/certificate",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "The signed certificate, canonical JSON."},
        202: {"description": "Completed; the certificate is still being issued. Retry after `Retry-After` seconds."},
    },
)
def get_certificate(request_id: str, session: SessionDep, client: CurrentClient) -> Response:
    """The signed certificate of a completed request, byte for byte as it verifies:
    save the body unchanged and run `unlearnd certificate verify FILE --keys-url ...`."""
    certificate = service.certificate_for(session, request_id, client)
    if certificate is None:
        return JSONResponse(
            {"request_id": request_id, "status": "issuing",
             "detail": "the request is completed; its certificate is being issued, ask again shortly"},
            status_code=status.HTTP_202_ACCEPTED, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return Response(
        content=service.certificate_file(certificate),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="certificate-{certificate.request_id}.json"'},
    )

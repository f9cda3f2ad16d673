from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response

from app.api.deps import CurrentClient, SessionDep
from app.certificates import service
from app.certificates.models import Certificate

router = APIRouter(prefix="/v1/deletion-requests", tags=["certificates"])
JOSE = "application/jose"
# The outbox hands the issuing task to a worker right after the completing commit.
RETRY_AFTER_SECONDS = 2


def _issuing(request_id: str) -> JSONResponse:
    return JSONResponse(
        {"request_id": request_id, "status": "issuing",
         "detail": "the request is completed; its certificate is being issued, ask again shortly"},
        status_code=status.HTTP_202_ACCEPTED, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _jws_response(session: SessionDep, request_id: str, certificate: Certificate) -> Response:
    return Response(
        content=service.certificate_jws(session, certificate), media_type=JOSE,
        headers={"Content-Disposition": f'attachment; filename="certificate-{request_id}.jws"', "Vary": "Accept"},
    )


@router.get(
    "/{request_id}/certificate",
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}, JOSE: {}},
              "description": "The signed certificate, canonical JSON; with `Accept: application/jose`, the same "
                             "file as the payload of a compact JWS (EdDSA), checkable with any JOSE library."},
        202: {"description": "Completed; the certificate is still being issued. Retry after `Retry-After` seconds."},
    },
)
def get_certificate(request_id: str, request: Request, session: SessionDep, client: CurrentClient) -> Response:
    """The signed certificate of a completed request, byte for byte as it verifies:
    save the body unchanged and run `unlearnd certificate verify FILE --keys-url ...`."""
    certificate = service.certificate_for(session, request_id, client)
    if certificate is None:
        return _issuing(request_id)
    if JOSE in request.headers.get("accept", ""):
        return _jws_response(session, certificate.request_id, certificate)
    return Response(
        content=service.certificate_file(certificate),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="certificate-{certificate.request_id}.json"',
                 "Vary": "Accept"},
    )


@router.get(
    "/{request_id}/certificate.jws",
    response_class=Response,
    responses={
        200: {"content": {JOSE: {}}, "description": "The certificate as a compact JWS (RFC 7515, EdDSA per RFC 8037); "
                                                    "its key is in `/.well-known/unlearnd-keys` (JWKS)."},
        202: {"description": "Completed; the certificate is still being issued. Retry after `Retry-After` seconds."},
    },
)
def get_certificate_jws(request_id: str, session: SessionDep, client: CurrentClient) -> Response:
    """The certificate in a standard signed envelope: verify it with any JOSE library and the
    published JWKS, or with `unlearnd certificate verify FILE.jws --keys-url ...`."""
    certificate = service.certificate_for(session, request_id, client)
    if certificate is None:
        return _issuing(request_id)
    return _jws_response(session, certificate.request_id, certificate)

"""uvicorn's HTTP protocols, answering a request it cannot parse with an RFC 9457 problem.

A malformed request line, an invalid header or a broken chunked body never reaches the
ASGI app: uvicorn answers ``400`` itself, with a ``text/plain`` body. These subclasses of
its two HTTP/1.1 implementations send the same 400 as ``application/problem+json``, shaped
like every other problem the API sends, and still close the connection (the stream cannot
be trusted after a parse error). ``unlearnd serve`` and ``unlearnd run`` pass
``ProblemHTTPProtocol`` to uvicorn; with plain uvicorn, ``--http app.core.http_protocol:ProblemHTTPProtocol``.

Only the API process imports this module (it imports uvicorn).
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.core.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE

MALFORMED_DETAIL = "the request is not valid HTTP/1.1 (request line, header or body framing); it was not processed"


def malformed_request_body() -> bytes:
    """The problem document for a request uvicorn could not parse (no path is known, so no instance)."""
    return json.dumps({
        "type": PROBLEM_BASE + "malformed-request", "title": "Malformed HTTP request", "status": 400,
        "detail": MALFORMED_DETAIL,
    }).encode()


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = malformed_request_body()
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


ProblemHTTPProtocol: type[asyncio.Protocol]
try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
    ProblemHTTPProtocol = ProblemH11Protocol
else:

    class ProblemHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = malformed_request_body()
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            head.extend([
                b"content-type: ", PROBLEM_MEDIA_TYPE.encode(), b"\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"connection: close\r\n\r\n",
            ])
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    ProblemHTTPProtocol = ProblemHttpToolsProtocol

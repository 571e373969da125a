"""The HTTP/1.1 protocol the embedded server runs: uvicorn's h11 protocol, answering a message it
refuses before the app sees it in this API's error envelope instead of uvicorn's text/plain.

Issue 16 found a malformed Range answered by a text/plain 400: the field held a NUL, which h11
refuses as RFC 9110 section 5.5 allows (a recipient of CR, LF or NUL in a field value MUST reject
the message or replace them), so uvicorn answered before any route ran. The status stays 400 (the
message is not HTTP); only its form changes, so every answer of the API parses as the one envelope.
Pass it as `uvicorn.run(app, http=JsonErrorH11Protocol)`.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from initium.schemas.errors import ErrorBody, ErrorInfo

_MESSAGE = (
    "the request is not valid HTTP/1.1 (a header field holds a NUL, CR or LF, the request line or a header "
    "does not parse, or the head is over INITIUM_MAX_HEADER_BYTES); the connection is closed: send a "
    "well-formed request"
)
BODY = ErrorBody(error=ErrorInfo(type="bad_request", message=_MESSAGE, loc=[])).model_dump_json().encode()


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol whose 400 for an unparseable request is the JSON error envelope."""

    def send_400_response(self, msg: str) -> None:
        # As uvicorn's own (uvicorn.protocols.http.h11_impl), with the envelope as the body.
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (
            h11.Response(status_code=400, headers=[*headers, (b"content-length", str(len(BODY)).encode())]),
            h11.Data(data=BODY),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()

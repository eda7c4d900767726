"""OTLP/HTTP receiver: POST /v1/traces, /v1/metrics, /v1/logs (REFERENCE.md section 1)."""

from __future__ import annotations

from aiohttp import web

from collector.errors import IngestError, Kind, rpc_status
from collector.otlp import CONTENT_TYPES, PROTOBUF_TYPE, Encoding, encode, media_encoding
from collector.service import IngestService

_MEDIA_TYPE = {encoding: media for media, encoding in CONTENT_TYPES.items()}


class HttpReceiver:
    def __init__(self, service: IngestService, max_request_bytes: int) -> None:
        self.service = service
        self.max_request_bytes = max_request_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", f"/v1/{signal}", self._handler(signal)) for signal in ("traces", "metrics", "logs")]

    def _handler(self, signal: str):
        async def handle(request: web.Request) -> web.Response:
            encoding: Encoding = "protobuf"
            try:
                if request.method != "POST":
                    raise IngestError(Kind.METHOD_NOT_ALLOWED, f"{request.method} is not allowed; OTLP uses POST")
                encoding = media_encoding(request.headers.get("Content-Type"))
                # Who is asking is known from the headers: refuse strangers before reading a byte.
                principal = await self.service.authenticate(request.headers.get("Authorization"))
                try:
                    with self.service.admitted(self._size_hint(request)):
                        body = await self._read_body(request)
                        response = await self.service.export(
                            signal, body, encoding, principal, request.headers.get("Content-Encoding"))
                except IngestError as error:
                    error.tenant_id = principal.tenant_id
                    raise
            except IngestError as error:
                self.service.record_refusal(signal, error)
                return error_response(error, encoding)
            return web.Response(body=encode(response, encoding), content_type=_MEDIA_TYPE[encoding])

        return handle

    def _size_hint(self, request: web.Request) -> int:
        """Bytes to reserve for reading this body: its declared length, or the limit when chunked."""
        limit = self.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise IngestError(Kind.TOO_LARGE, f"request body of {request.content_length} bytes exceeds the {limit}-byte limit")
        return request.content_length if request.content_length is not None else limit

    async def _read_body(self, request: web.Request) -> bytes:
        """Read at most the limit; a compressed body can't be larger than its decompressed limit."""
        limit = self.max_request_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise IngestError(Kind.TOO_LARGE, f"request body exceeds the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


def error_response(error: IngestError, encoding: Encoding) -> web.Response:
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.kind is Kind.METHOD_NOT_ALLOWED:
        headers["Allow"] = "POST"
    return web.Response(
        status=error.kind.http_status,
        body=encode(rpc_status(error), encoding),
        content_type=_MEDIA_TYPE.get(encoding, PROTOBUF_TYPE),
        headers=headers,
    )

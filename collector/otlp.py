"""OTLP wire formats: request bodies in (compressed, protobuf or JSON), responses and errors out.

Decompression is bounded: a body whose decompressed size passes the limit is refused (413)
before it is fully inflated, so a gzip bomb costs at most `limit` bytes of memory.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Literal, TypeVar

import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.errors import IngestError, Kind

Encoding = Literal["protobuf", "json"]
M = TypeVar("M", bound=Message)

PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
CONTENT_TYPES: dict[str, Encoding] = {PROTOBUF_TYPE: "protobuf", JSON_TYPE: "json"}

_ZSTD = zstandard.ZstdDecompressor()
_CHUNK = 1 << 16


def media_encoding(content_type: str | None) -> Encoding:
    """Map a Content-Type header (parameters ignored) to an OTLP encoding, or refuse with 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return CONTENT_TYPES[media]
    except KeyError:
        raise IngestError(
            Kind.UNSUPPORTED_MEDIA,
            f"unsupported Content-Type {media or '(none)'!r}: use {PROTOBUF_TYPE} or {JSON_TYPE}",
        ) from None


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo Content-Encoding (identity, gzip, deflate, zstd) without ever holding more than `limit` bytes."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        out = body
    elif coding in ("gzip", "x-gzip"):
        out = _inflate(zlib.decompressobj(wbits=31), body, limit)
    elif coding == "deflate":
        # RFC 9110 deflate is zlib-wrapped; some clients send raw deflate: accept both.
        wbits = 15 if body[:1] and (body[0] & 0x0F) == 8 and int.from_bytes(body[:2], "big") % 31 == 0 else -15
        out = _inflate(zlib.decompressobj(wbits=wbits), body, limit)
    elif coding == "zstd":
        out = _unzstd(body, limit)
    else:
        raise IngestError(
            Kind.UNSUPPORTED_MEDIA,
            f"unsupported Content-Encoding {coding!r}: use gzip, deflate, zstd or none",
        )
    if len(out) > limit:
        raise _too_large(limit)
    return out


def _too_large(limit: int) -> IngestError:
    return IngestError(Kind.TOO_LARGE, f"request body exceeds the {limit}-byte limit after decompression")


def _inflate(decompressor: "zlib._Decompress", body: bytes, limit: int) -> bytes:
    try:
        out = decompressor.decompress(body, limit + 1)
        if len(out) > limit or decompressor.unconsumed_tail:
            raise _too_large(limit)
        if not decompressor.eof:
            raise IngestError(Kind.INVALID, "compressed body is truncated")
    except zlib.error as exc:
        raise IngestError(Kind.INVALID, f"body is not valid for its Content-Encoding: {exc}") from None
    return out


def _unzstd(body: bytes, limit: int) -> bytes:
    try:
        reader = _ZSTD.stream_reader(body)
        parts: list[bytes] = []
        size = 0
        while chunk := reader.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
    except zstandard.ZstdError as exc:
        raise IngestError(Kind.INVALID, f"body is not valid zstd: {exc}") from None
    return b"".join(parts)


def parse(body: bytes, encoding: Encoding, message_type: type[M]) -> M:
    """Parse an OTLP request; malformed bodies are refused whole with 400."""
    message = message_type()
    if encoding == "protobuf":
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise IngestError(Kind.INVALID, f"body is not a valid {message_type.__name__}: {exc}") from None
        return message
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("top level must be an object")
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (ValueError, RecursionError, json_format.ParseError) as exc:
        raise IngestError(Kind.INVALID, f"body is not valid OTLP/JSON: {type(exc).__name__}: {exc}"[:500]) from None
    return message


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(node: object) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64 for bytes fields."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(value)
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def _hex_to_base64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise ValueError(f"id {value!r} is not hex") from None


def encode(message: Message, encoding: Encoding) -> bytes:
    if encoding == "protobuf":
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse),
}

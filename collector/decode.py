"""ExportTraceServiceRequest -> SpanRecords, with per-span validation.

A span with unusable ids or no start time is rejected on its own (it goes into the batch's
`rejected` counts and the client hears of it through `partial_success`); the rest are kept.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from enrich.batch import Principal, SpanBatch, SpanRecord

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_NANOS = 2**63 - 1  # the store keeps nanoseconds in BIGINT
FUTURE_TOLERANCE_NS = 3600 * 10**9  # agents' clocks drift; a span dated later than this is refused
SPAN_OVERHEAD_BYTES = 256  # what a queued span costs beyond its JSON text, roughly


def any_value(value: AnyValue) -> Any:
    """AnyValue -> a JSON-safe Python value (bytes as base64, non-finite floats as strings)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes_dict(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode_traces(request: ExportTraceServiceRequest, principal: Principal) -> SpanBatch:
    batch = SpanBatch(principal=principal, spans=[])
    spans = batch.spans
    bad_ids = missing_time = bad_time = 0
    latest_start = time.time_ns() + FUTURE_TOLERANCE_NS
    size = 0
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        resource_json = to_json(resource)
        service = resource.get("service.name")
        service_name = service if isinstance(service, str) else None
        for scope_spans in resource_spans.scope_spans:
            scope_name = scope_spans.scope.name or None
            scope_version = scope_spans.scope.version or None
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if (
                    len(trace_id) != 16 or trace_id == _ZERO_TRACE
                    or len(span_id) != 8 or span_id == _ZERO_SPAN
                    or len(parent) not in (0, 8)
                ):
                    bad_ids += 1
                    continue
                if not span.start_time_unix_nano:
                    missing_time += 1
                    continue
                if span.start_time_unix_nano > latest_start or span.end_time_unix_nano > _MAX_NANOS:
                    bad_time += 1
                    continue
                record = SpanRecord()
                record.trace_id = trace_id.hex()
                record.span_id = span_id.hex()
                record.parent_span_id = parent.hex() if parent and parent != _ZERO_SPAN else None
                record.trace_state = span.trace_state or None
                record.flags = span.flags
                record.name = span.name
                record.kind = SPAN_KINDS[span.kind] if span.kind < len(SPAN_KINDS) else "UNSPECIFIED"
                record.start_time_unix_nano = span.start_time_unix_nano
                record.end_time_unix_nano = span.end_time_unix_nano or span.start_time_unix_nano
                record.status_code = STATUS_CODES[span.status.code] if span.status.code < 3 else "UNSET"
                record.status_message = span.status.message or None
                record.service_name = service_name
                record.scope_name = scope_name
                record.scope_version = scope_version
                record.resource = resource
                record.resource_json = resource_json
                attributes = attributes_dict(span.attributes)
                record.attributes = attributes
                record.attributes_json = to_json(attributes)
                record.events_json = _events_json(span.events) if span.events else None
                record.links_json = _links_json(span.links) if span.links else None
                size += len(record.attributes_json) + len(record.events_json or "") + SPAN_OVERHEAD_BYTES
                spans.append(record)
    if bad_ids:
        batch.reject(
            "invalid_span_id", bad_ids,
            f"{bad_ids} span(s) rejected: trace_id must be 16 bytes and span_id 8 bytes, not all zero",
        )
    if missing_time:
        batch.reject(
            "missing_start_time", missing_time, f"{missing_time} span(s) rejected: start_time_unix_nano is 0"
        )
    if bad_time:
        batch.reject(
            "invalid_timestamp", bad_time,
            f"{bad_time} span(s) rejected: start time more than an hour in the future, or end time out of range",
        )
    batch.size_bytes = size
    return batch


def _events_json(events: Any) -> str:
    return to_json([
        {"name": event.name, "time_unix_nano": event.time_unix_nano, "attributes": attributes_dict(event.attributes)}
        for event in events
    ])


def _links_json(links: Any) -> str:
    return to_json([
        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(), "attributes": attributes_dict(link.attributes)}
        for link in links
    ])


def to_any_value(value: Any) -> AnyValue:
    """A Python/JSON value -> AnyValue: the inverse of `any_value` (re-encoding stored attributes)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    result = AnyValue()
    if isinstance(value, (list, tuple)):
        result.array_value.values.extend(to_any_value(item) for item in value)
    elif isinstance(value, dict):
        result.kvlist_value.values.extend(key_values(value))
    elif value is not None:
        result.string_value = str(value)
    return result


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=to_any_value(value)) for key, value in attributes.items()]

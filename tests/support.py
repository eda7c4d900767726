"""Test helpers: a real `meterline serve` process, tokens, and OTLP requests built from fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from collector.decode import key_values
from enrich.auth import issue_dev_token
from meterline.process import CollectorProcess

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data" / "agentcore"  # a copy of ../shared/fixtures/agentcore, with its licence
SECRET = "test-secret-for-meterline-0123456789"
METERLINE = str(Path(sys.executable).with_name("meterline"))


def token(tenant_id: str, ttl: int = 3600, secret: str = SECRET, **kwargs: Any) -> str:
    return issue_dev_token(secret, tenant_id, ttl, **kwargs)


def cli(*args: str, db: Path | None = None, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `meterline` console script."""
    command = [METERLINE, *args] + (["--db", str(db)] if db else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "METERLINE_JWT_SECRET": SECRET, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


class Server(CollectorProcess):
    """`meterline serve` for a test: the test secret, the log next to the test's store."""

    def __init__(self, db: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        super().__init__(db, *extra, env={"METERLINE_JWT_SECRET": SECRET, **(env or {})},
                         log=db.with_suffix(".log"))


KINDS = {"UNSPECIFIED": 0, "INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def load_capture(name: str) -> list[dict[str, Any]]:
    """The CloudWatch-shaped spans of one AgentCore capture (see fixtures README)."""
    return [entry["raw_otel_json"] for entry in json.loads((FIXTURES / name).read_text())]


CAPTURES = ("raw_otel_strands_bedrock_spans.json", "raw_otel_strands_openai_spans.json")


def capture_request(spans: Iterable[dict[str, Any]], extra_resource: dict[str, Any] | None = None,
                    extra_attributes: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    """Turn CloudWatch-shaped spans into a real OTLP request, one ResourceSpans per span."""
    request = ExportTraceServiceRequest()
    for raw in spans:
        resource_spans = ResourceSpans()
        resource_spans.resource.attributes.extend(
            key_values({**raw["resource"]["attributes"], **(extra_resource or {})}))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = raw["scope"]["name"]
        scope_spans.scope.version = raw["scope"].get("version", "")
        span = Span(
            trace_id=bytes.fromhex(raw["traceId"]), span_id=bytes.fromhex(raw["spanId"]),
            parent_span_id=bytes.fromhex(raw.get("parentSpanId") or ""), name=raw["name"],
            kind=KINDS[raw["kind"]], start_time_unix_nano=int(raw["startTimeUnixNano"]),
            end_time_unix_nano=int(raw["endTimeUnixNano"]),
            status=Status(code=STATUS[raw["status"]["code"]], message=raw["status"].get("message", "")),
        )
        span.attributes.extend(key_values({**raw["attributes"], **(extra_attributes or {})}))
        scope_spans.spans.append(span)
        request.resource_spans.append(resource_spans)
    return request


def simple_request(n: int = 3, trace_byte: int = 1, attributes: dict[str, Any] | None = None,
                   resource: dict[str, Any] | None = None, start_ns: int = 1_763_400_000_000_000_000,
                   span_offset: int = 0) -> ExportTraceServiceRequest:
    """n spans in one trace with predictable ids: trace bytes [trace_byte]*16, span ids 1..n."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values({"service.name": "test-agent", **(resource or {})}))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests"
    for i in range(1 + span_offset, n + 1 + span_offset):
        span = scope_spans.spans.add()
        span.trace_id = bytes([trace_byte]) * 16
        span.span_id = i.to_bytes(8, "big")
        span.name = f"span-{i}"
        span.kind = 1
        span.start_time_unix_nano = start_ns + i * 1000
        span.end_time_unix_nano = start_ns + i * 1000 + 500
        span.attributes.extend(key_values(attributes or {}))
    return request


def spans_request(spans: Iterable[dict[str, Any]], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    """A request from compact span dicts: trace (int), id (int), parent (int|None), name, start (datetime),
    optional duration_ms, status ("OK"/"ERROR"), kind, attributes."""
    from datetime import timezone

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values({"service.name": "crm-agents", **(resource or {})}))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tests.crm"
    for spec in spans:
        start = spec["start"].replace(tzinfo=timezone.utc)
        start_ns = int(start.timestamp()) * 1_000_000_000 + start.microsecond * 1000
        span = scope.spans.add()
        span.trace_id = spec["trace"].to_bytes(16, "big")
        span.span_id = spec["id"].to_bytes(8, "big")
        if spec.get("parent"):
            span.parent_span_id = spec["parent"].to_bytes(8, "big")
        span.name = spec["name"]
        span.kind = KINDS[spec.get("kind", "INTERNAL")]
        span.start_time_unix_nano = start_ns
        span.end_time_unix_nano = start_ns + spec.get("duration_ms", 100) * 1_000_000
        span.status.code = STATUS[spec.get("status", "UNSET")]
        span.attributes.extend(key_values(spec.get("attributes", {})))
    return request


def wait_for_trace_context(db: Path, timeout: float = 10) -> None:
    """Block until the collector has resolved trace context (billable, agent) for every stored span."""
    from enrich.context import wait_until_resolved
    from meterline.store import open_store

    store = open_store(db)
    try:
        assert wait_until_resolved(store, timeout), f"trace context not resolved in {timeout}s"
    finally:
        store.close()

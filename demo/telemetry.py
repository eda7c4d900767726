"""The demo runtime's telemetry: one tracer provider, spans routed to each tenant's exporter.

A multi-tenant agent runtime knows which tenant each session belongs to (AgentCore takes it from
the caller's JWT); it records that per trace and exports the trace with that tenant's token. The
routing never reads tenant attributes off the spans: those are what an agent or LLM could forge,
and the collector checks them against the token.

Backfill: a workflow can be stamped with a past time; every span of its trace is shifted by the
same offset on export, so a minute of real agent runs fills a month of history.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


@dataclass(frozen=True)
class TraceOwner:
    tenant_id: str
    offset_ns: int  # added to every timestamp of the trace (negative for backfill)


class TenantRoutingExporter(SpanExporter):
    def __init__(self, endpoints: dict[str, SpanExporter]) -> None:
        self.endpoints = endpoints
        self._owners: dict[int, TraceOwner] = {}
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    @staticmethod
    def for_tenants(tokens: dict[str, str], http_url: str, grpc_target: str) -> "TenantRoutingExporter":
        """Half the tenants export over OTLP/HTTP, half over OTLP/gRPC, each with its own JWT."""
        endpoints: dict[str, SpanExporter] = {}
        for index, (tenant, token) in enumerate(sorted(tokens.items())):
            if index % 2 == 0:
                endpoints[tenant] = HttpExporter(endpoint=f"{http_url}/v1/traces",
                                                 headers={"authorization": f"Bearer {token}"})
            else:
                endpoints[tenant] = GrpcExporter(endpoint=grpc_target, insecure=True,
                                                 headers=(("authorization", f"Bearer {token}"),))
        return TenantRoutingExporter(endpoints)

    def own(self, trace_id: int, tenant_id: str, offset_ns: int) -> None:
        with self._lock:
            self._owners[trace_id] = TraceOwner(tenant_id, offset_ns)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        by_tenant: dict[str, list[ReadableSpan]] = {}
        for span in spans:
            owner = self._owners.get(span.context.trace_id) if span.context else None
            if owner is None:
                self.failed += 1
                continue
            by_tenant.setdefault(owner.tenant_id, []).append(_shifted(span, owner.offset_ns))
        result = SpanExportResult.SUCCESS
        for tenant, batch in by_tenant.items():
            if self.endpoints[tenant].export(batch) is SpanExportResult.SUCCESS:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                result = SpanExportResult.FAILURE
        return result

    def shutdown(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _shifted(span: ReadableSpan, offset: int) -> ReadableSpan:
    if not offset:
        return span
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource,
        attributes=span.attributes, links=span.links, kind=span.kind, status=span.status,
        events=[Event(e.name, e.attributes, e.timestamp + offset) for e in span.events],
        start_time=(span.start_time or 0) + offset, end_time=(span.end_time or 0) + offset,
        instrumentation_scope=span.instrumentation_scope,
    )

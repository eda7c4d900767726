"""The unit every enrich processor consumes and returns: one request's spans plus who sent them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol


class SpanRecord:
    """One span on its way to the store: wire fields from the decoder, canonical fields from enrich/.

    Plain slots rather than a dataclass: hundreds of thousands are made per second.
    """

    __slots__ = (
        # decoded from the wire
        "trace_id", "span_id", "parent_span_id", "trace_state", "flags", "name", "kind",
        "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
        "service_name", "scope_name", "scope_version",
        "resource", "attributes", "resource_json", "attributes_json", "events_json", "links_json",
        # filled by enrich processors
        "tenant_id", "tier", "feature", "tenant_hint", "spoofed",
        "operation", "op_kind", "provider", "model",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
        "agent_name", "tool_name", "workflow_name", "session_id", "user_id", "outcome", "billable",
    )

    def __init__(self) -> None:
        self.tenant_id = self.tier = self.feature = self.tenant_hint = None
        self.spoofed = False
        self.operation = self.provider = self.model = None
        self.op_kind = "other"
        self.input_tokens = self.output_tokens = self.cache_read_tokens = None
        self.cache_write_tokens = self.reasoning_tokens = None
        self.agent_name = self.tool_name = self.workflow_name = self.session_id = self.user_id = None
        self.outcome = "unknown"
        self.billable = False


@dataclass(slots=True, frozen=True)
class Principal:
    """Who sent a request, as established by authentication (never by span content)."""

    tenant_id: str | None  # None only in auth mode `none`, where spans name their own tenant
    tier: str | None = None


@dataclass(slots=True)
class SpanBatch:
    principal: Principal
    spans: list[SpanRecord]
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> spans refused
    size_bytes: int = 0  # roughly what the batch holds in memory while queued (for the queue's bound)
    messages: list[str] = field(default_factory=list)  # human-readable, for partial_success

    def reject(self, reason: str, count: int, message: str) -> None:
        self.rejected[reason] += count
        self.messages.append(message)


class Processor(Protocol):
    """A stage of enrich/: takes a batch, returns it (possibly with spans removed into `rejected`)."""

    def process(self, batch: SpanBatch) -> SpanBatch: ...


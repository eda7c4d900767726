"""Stored spans -> an OTLP request for Langfuse, with the tenant and Meterline's usage on each span.

Each span is rebuilt from its stored columns and JSON (ids, times, kind, status, resource, scope,
attributes, events, links), then given the attributes Langfuse reads (packages/shared/src/server/
otel/OtelIngestionProcessor.ts in langfuse/langfuse):

- `langfuse.trace.tags` (string array): tenant:<id>, tier:<tier>, feature:<feature>, after any
  tags the client set itself (minus ones using those three prefixes, which only we may set);
- `langfuse.trace.metadata.tenant_id` / `.tier` / `.feature`, `langfuse.session.id`,
  `langfuse.user.id` where known, and `langfuse.environment`;
- usage and cost, so Langfuse's totals are Meterline's bill. Langfuse takes
  `langfuse.observation.usage_details` before any gen_ai.usage.* key, and when an observation with
  a known model has NO usage it counts tokens itself from the input/output text. So a billable span
  gets its canonical tokens split the way Langfuse prices them (input excludes cache reads and
  writes, output excludes reasoning) and its exact cost from Meterline's price table; every other
  span that reports usage or a model gets explicit zeros, which also overwrite what an earlier send
  of the same span said (Langfuse merges by span id and ignores empty objects).

Values Meterline stored as JSON come back as JSON types: a bytes attribute (stored base64) is sent
as a string, a non-finite double (stored as its name) likewise.
"""

from __future__ import annotations

import json
from decimal import Context, Decimal, Inexact, localcontext
from typing import Any, Iterable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.decode import SPAN_KINDS, STATUS_CODES, key_values
from metering.llm_cost import ModelPrice, PriceTable

# The columns a span is rebuilt from (alias s).
COLUMNS = """
    s.ingest_seq, s.tenant_id, s.trace_id, s.span_id, s.parent_span_id, s.trace_state, s.flags, s.name, s.kind,
    s.start_time_unix_nano, s.end_time_unix_nano, s.status_code, s.status_message, s.scope_name, s.scope_version,
    s.tier, s.feature, s.op_kind, s.model, s.billable, s.session_id, s.user_id,
    s.input_tokens, s.output_tokens, s.cache_read_tokens, s.cache_write_tokens, s.reasoning_tokens,
    s.resource_attributes::VARCHAR AS resource_attributes, s.attributes::VARCHAR AS attributes,
    s.events::VARCHAR AS events, s.links::VARCHAR AS links
"""

TAG_PREFIXES = ("tenant:", "tier:", "feature:")
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
# Span attributes that make Langfuse count usage or cost, or look up a model to tokenize with.
_METERED_KEYS = frozenset({
    "langfuse.observation.usage_details", "langfuse.observation.cost_details", "langfuse.observation.model.name",
    "gen_ai.usage.cost", "gen_ai.response.model", "gen_ai.request.model", "ai.model.id", "llm.response.model",
    "llm.model_name", "model",
})
_METERED_PREFIXES = ("gen_ai.usage.", "llm.token_count.")
ZERO_USAGE = '{"input":0,"output":0,"total":0}'
ZERO_COST = '{"total":0}'
_EXACT = Context(prec=100, traps=[Inexact])  # never round a cost silently


def export_request(rows: Iterable[dict[str, Any]], environment: str, prices: PriceTable) -> ExportTraceServiceRequest:
    """One request; spans that shared a resource and scope when received share them again."""
    request = ExportTraceServiceRequest()
    scopes: dict[tuple[str, str | None, str | None], Any] = {}
    resources: dict[str, Any] = {}
    for row in rows:
        resource_json = row["resource_attributes"] or "{}"
        key = (resource_json, row["scope_name"], row["scope_version"])
        scope_spans = scopes.get(key)
        if scope_spans is None:
            resource_spans = resources.get(resource_json)
            if resource_spans is None:
                resource_spans = resources[resource_json] = request.resource_spans.add()
                resource_spans.resource.attributes.extend(key_values(json.loads(resource_json)))
            scope_spans = scopes[key] = resource_spans.scope_spans.add()
            scope_spans.scope.name = row["scope_name"] or ""
            scope_spans.scope.version = row["scope_version"] or ""
        scope_spans.spans.append(rebuild_span(row, environment, prices))
    return request


def rebuild_span(row: dict[str, Any], environment: str, prices: PriceTable) -> Span:
    attributes = json.loads(row["attributes"] or "{}")
    attributes.update(langfuse_attributes(row, attributes, environment, prices))
    span = Span(
        trace_id=bytes.fromhex(row["trace_id"]), span_id=bytes.fromhex(row["span_id"]),
        parent_span_id=bytes.fromhex(row["parent_span_id"] or ""), trace_state=row["trace_state"] or "",
        flags=row["flags"] or 0, name=row["name"], kind=SPAN_KINDS.index(row["kind"]),
        start_time_unix_nano=row["start_time_unix_nano"], end_time_unix_nano=row["end_time_unix_nano"],
        status=Status(code=STATUS_CODES.index(row["status_code"]), message=row["status_message"] or ""),
    )
    span.attributes.extend(key_values(attributes))
    for event in json.loads(row["events"] or "[]"):
        added = span.events.add(name=event["name"], time_unix_nano=event["time_unix_nano"])
        added.attributes.extend(key_values(event["attributes"]))
    for link in json.loads(row["links"] or "[]"):
        added = span.links.add(trace_id=bytes.fromhex(link["trace_id"]), span_id=bytes.fromhex(link["span_id"]))
        added.attributes.extend(key_values(link["attributes"]))
    return span


def langfuse_attributes(row: dict[str, Any], attributes: dict[str, Any], environment: str,
                        prices: PriceTable) -> dict[str, Any]:
    """The langfuse.* attributes for one stored span (`attributes`: its own, as stored)."""
    tags = [f"tenant:{row['tenant_id']}"]
    metadata = {"tenant_id": row["tenant_id"], "tier": row["tier"], "feature": row["feature"]}
    if row["tier"]:
        tags.append(f"tier:{row['tier']}")
    if row["feature"]:
        tags.append(f"feature:{row['feature']}")
    extra: dict[str, Any] = {
        "langfuse.trace.tags": _client_tags(attributes) + tags,
        "langfuse.environment": environment,
        **{f"langfuse.trace.metadata.{key}": value for key, value in metadata.items() if value},
    }
    if row["session_id"]:
        extra["langfuse.session.id"] = row["session_id"]
    if row["user_id"]:
        extra["langfuse.user.id"] = row["user_id"]
    if row["billable"]:
        extra["langfuse.observation.usage_details"] = usage_details(row)
        price = prices.price_for(row["model"]) if row["model"] else None
        if price is not None:  # unpriced: Meterline reports no cost either, Langfuse may infer its own
            extra["langfuse.observation.cost_details"] = cost_details(row, price)
    elif _looks_metered(row, attributes):
        extra["langfuse.observation.usage_details"] = ZERO_USAGE
        extra["langfuse.observation.cost_details"] = ZERO_COST
    return extra


def usage_parts(row: dict[str, Any]) -> dict[str, int]:
    """Tokens by Langfuse usage key; input and output include cache and reasoning (OTel GenAI), the
    parts do not, as in metering.meters (which clamps the same way)."""
    count = {name: row[name] or 0 for name in _TOKENS}
    parts = {
        "input": max(count["input_tokens"] - count["cache_read_tokens"] - count["cache_write_tokens"], 0),
        "input_cache_read": count["cache_read_tokens"],
        "input_cache_creation": count["cache_write_tokens"],
        "output": max(count["output_tokens"] - count["reasoning_tokens"], 0),
        "output_reasoning": count["reasoning_tokens"],
    }
    return {key: value for key, value in parts.items() if value or key in ("input", "output")}


def usage_details(row: dict[str, Any]) -> str:
    parts = usage_parts(row)
    return json.dumps({**parts, "total": sum(parts.values())}, separators=(",", ":"))


# ModelPrice.cost_parts key -> Langfuse usage key.
_COST_KEYS = {"input": "input", "cache_read": "input_cache_read", "cache_write": "input_cache_creation",
              "output": "output", "reasoning": "output_reasoning"}


def cost_details(row: dict[str, Any], price: ModelPrice) -> str:
    """Exact USD per usage key and in total, as JSON numbers written from Decimals (no float).

    The cost is `ModelPrice.cost_parts`, the one definition of a call's cost (metering's SQL is
    tested against it), so the total is exactly what `meterline usage` bills for the span."""
    parts = price.cost_parts(*(row[name] for name in _TOKENS))
    reported = usage_parts(row)  # the same keys as usage_details: zero parts left out
    costs = {key: parts[part] for part, key in _COST_KEYS.items() if key in reported}
    with localcontext(_EXACT):
        costs["total"] = sum(parts.values(), Decimal(0))
    return "{" + ",".join(f'"{key}":{_number(value)}' for key, value in costs.items()) + "}"


def _number(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _looks_metered(row: dict[str, Any], attributes: dict[str, Any]) -> bool:
    if row["op_kind"] == "llm" or row["model"] is not None or any(row[name] is not None for name in _TOKENS):
        return True
    return any(key in _METERED_KEYS or key.startswith(_METERED_PREFIXES) for key in attributes)


def _client_tags(attributes: dict[str, Any]) -> list[str]:
    """Tags the client set, read as Langfuse reads them (array, JSON array text, or comma list)."""
    tags: list[str] = []
    for key in ("langfuse.trace.tags", "langfuse.tags"):
        value = attributes.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip().startswith("[") else value.split(",")
            except ValueError:
                value = [value]
        for tag in value if isinstance(value, list) else []:
            tag = str(tag).strip()
            if tag and not tag.startswith(TAG_PREFIXES) and tag not in tags:
                tags.append(tag)
    return tags



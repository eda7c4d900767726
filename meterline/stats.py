"""`meterline stats`: what the store holds, what was refused, and how far each export lags, from the store alone."""

from __future__ import annotations

from typing import Any

from collector.langfuse.routing import route_condition
from meterline.store import Store, rows

# Per export destination. Lag: spans routed there past its cursor (a NULL route: every span).
EXPORTS = f"""
    WITH pending AS (
        SELECT c.destination, count(s.span_id) AS lag_spans, min(s.received_at) AS oldest_unexported
        FROM export_cursors c
        LEFT JOIN spans s ON s.ingest_seq > c.acked_seq AND (c.route IS NULL OR {route_condition('c.route')})
        GROUP BY c.destination
    ), refused AS (
        SELECT destination, count(*) AS rejected_spans FROM export_rejections GROUP BY destination
    )
    SELECT c.destination, c.acked_seq, p.lag_spans,
           date_diff('second', p.oldest_unexported, now() AT TIME ZONE 'UTC') AS oldest_unexported_age_seconds,
           c.spans_sent, coalesce(r.rejected_spans, 0) AS rejected_spans, c.consecutive_failures, c.last_error,
           c.last_success_at, c.last_attempt_at
    FROM export_cursors c JOIN pending p USING (destination) LEFT JOIN refused r USING (destination)
    ORDER BY c.destination
"""


def collect_stats(store: Store) -> dict[str, Any]:
    totals = rows(store, """
        SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces,
               min(start_time) AS first_span, max(start_time) AS last_span, max(received_at) AS last_received
        FROM spans
    """)[0]
    by_tenant = rows(store, """
        SELECT tenant_id, any_value(tier) AS tier, count(*) AS spans, count(DISTINCT trace_id) AS traces,
               count(*) FILTER (WHERE spoofed) AS spoofed_spans, max(received_at) AS last_received
        FROM spans GROUP BY tenant_id ORDER BY spans DESC, tenant_id
    """)
    rejected = rows(store, """
        SELECT signal, reason, sum(requests)::BIGINT AS requests, sum(items)::BIGINT AS items
        FROM rejections GROUP BY signal, reason ORDER BY signal, reason
    """)
    spoofs = rows(store, """
        SELECT tenant_id, sum(n)::BIGINT AS attempts FROM (
            SELECT tenant_id, sum(items) AS n FROM rejections WHERE reason = 'tenant_spoof' GROUP BY tenant_id
            UNION ALL
            SELECT tenant_id, count(*) AS n FROM spans WHERE spoofed GROUP BY tenant_id
        ) GROUP BY tenant_id ORDER BY attempts DESC, tenant_id
    """)
    exports = rows(store, EXPORTS)
    return {
        "spans": totals["spans"],
        "traces": totals["traces"],
        "first_span": _iso(totals["first_span"]),
        "last_span": _iso(totals["last_span"]),
        "last_received": _iso(totals["last_received"]),
        "tenants": [{**row, "last_received": _iso(row["last_received"])} for row in by_tenant],
        "rejected": rejected,
        "spoof_attempts": spoofs,
        "exports": [{**row, "last_success_at": _iso(row["last_success_at"]),
                     "last_attempt_at": _iso(row["last_attempt_at"])} for row in exports],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None

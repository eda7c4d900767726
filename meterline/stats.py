"""`meterline stats`: what the store holds and what was refused, from the store alone."""

from __future__ import annotations

from typing import Any

from meterline.store import Store, rows


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
    return {
        "spans": totals["spans"],
        "traces": totals["traces"],
        "first_span": _iso(totals["first_span"]),
        "last_span": _iso(totals["last_span"]),
        "last_received": _iso(totals["last_received"]),
        "tenants": [{**row, "last_received": _iso(row["last_received"])} for row in by_tenant],
        "rejected": rejected,
        "spoof_attempts": spoofs,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() + "Z" if value is not None else None

"""What the dashboards read from the store, as plain rows, each batch cached for CACHE_SECONDS.

Numbers that `meterline usage` also shows come from the same code (`pricing.report.usage_report`,
`metering.meters.Meterer`); the SQL here covers only what those do not: agent outcomes, ingest,
refusals, export state and the billing job's tables.

Reading never holds the store: while `meterline serve` runs, `open_store()` finds the file locked
and returns a RemoteStore, so queries go through the collector's loopback admin API. Otherwise each
function below opens the file read-only for its one batch of queries and closes it before it
returns (tens of milliseconds), so a collector started later finds the file free. Results are
cached, so a page view touches the store at most once per batch and CACHE_SECONDS.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import streamlit as st

from collector.langfuse.config import DEFAULT_HOST
from metering.meters import Period
from meterline.config import Config, load_config
from meterline.stats import collect_stats
from meterline.store import RemoteStore, Store, StoreError, open_store, rows
from pricing.report import build_meterer, catalog_for, usage_report

CACHE_SECONDS = 30
BREAKDOWNS = ("agent", "feature", "model", "workflow")


class Source(NamedTuple):
    """The store file and config file the dashboards read (hashable: it keys every cache)."""

    db: str
    config_path: str | None


def source() -> Source:
    """What `meterline dashboard` passed on: METERLINE_CONFIG, and METERLINE_DB over the config's store."""
    config = load_config(os.environ.get("METERLINE_CONFIG") or None)
    return Source(str(Path(config.db).resolve()), config.source)


def _config(src: Source) -> Config:
    config = load_config(src.config_path)
    config.db = src.db
    return config


@contextmanager
def _reading(src: Source) -> Iterator[Store]:
    """The store for one batch of queries, closed at once (see the module docstring)."""
    if not Path(src.db).exists():
        raise StoreError(f"no store at {src.db}: start `meterline serve` or run `make demo` first")
    store = open_store(src.db, read_only=True)
    try:
        yield store
    finally:
        store.close()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def store_summary(src: Source) -> dict[str, Any]:
    """Months that hold spans (newest first) and how the store is reached."""
    with _reading(src) as store:
        months = [row["month"] for row in rows(store, """
            SELECT DISTINCT strftime(start_time, '%Y-%m') AS month FROM spans ORDER BY month DESC
        """)]
        via = "the running collector's admin API" if isinstance(store, RemoteStore) else "the file, read-only"
    return {"months": months, "via": via}


@st.cache_data(ttl=CACHE_SECONDS, show_spinner="Rating every tenant ...")
def report(src: Source, period: Period) -> dict[str, Any]:
    """`meterline usage --compare-models --format json` for the period, as a dict."""
    config = _config(src)
    with _reading(src) as store:
        return usage_report(build_meterer(store, config), catalog_for(config), period, compare_models=True)


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def daily_usage(src: Source, period: Period) -> list[dict[str, Any]]:
    """Meters per tenant, day and feature (for trend sparklines and the feature filter)."""
    with _reading(src) as store:
        return build_meterer(store, _config(src)).usage(period, by=("day", "feature"))


@st.cache_data(ttl=CACHE_SECONDS, show_spinner="Reading the tenant's usage ...")
def tenant_detail(src: Source, period: Period, tenant: str, trace_limit: int = 20) -> dict[str, Any]:
    """One tenant's meters by day, hour and each breakdown; agent outcomes; its costliest traces."""
    with _reading(src) as store:
        meterer = build_meterer(store, _config(src))
        detail: dict[str, Any] = {dim: meterer.usage(period, tenant, by=(dim,)) for dim in ("day", "hour", *BREAKDOWNS)}
        # Same period rule as the meters: a span belongs to the period holding its start time.
        detail["outcomes"] = rows(store, """
            SELECT coalesce(agent_name, '(unnamed)') AS agent, outcome, count(*) AS invocations
            FROM spans
            WHERE tenant_id = ? AND start_time >= ?::TIMESTAMP AND start_time < ?::TIMESTAMP AND op_kind = 'agent'
            GROUP BY ALL ORDER BY agent, outcome
        """, [tenant, period.start.isoformat(), period.end.isoformat()])
        detail["traces"] = meterer.top_traces(period, tenant, trace_limit)
    return detail


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def billing(src: Source, period_label: str | None) -> dict[str, Any]:
    """The billing job's runs, and its ledger for one period (YYYY-MM; None: the latest it billed)."""
    with _reading(src) as store:
        runs = rows(store, """
            SELECT run_id, period, through, dry_run, started_at, finished_at, status, events_sent, events_failed
            FROM billing_runs ORDER BY started_at DESC LIMIT 20
        """)
        periods = [row["period"] for row in rows(store, """
            SELECT period FROM billing_ledger UNION SELECT period FROM billing_runs ORDER BY period DESC
        """)]
        chosen = period_label if period_label in periods else (periods[0] if periods else None)
        ledger = rows(store, """
            SELECT tenant_id, stripe_customer_id, charge, event_name,
                count(*) AS events,
                count(*) FILTER (WHERE status = 'acknowledged') AS acknowledged_events,
                count(*) FILTER (WHERE status IN ('intended', 'sent')) AS pending_events,
                count(*) FILTER (WHERE status = 'failed') AS failed_events,
                coalesce(sum(value) FILTER (WHERE status = 'acknowledged'), 0)::BIGINT AS acknowledged_value,
                coalesce(sum(value) FILTER (WHERE status = 'sent'), 0)::BIGINT AS unconfirmed_value,
                coalesce(sum(value) FILTER (WHERE status = 'intended'), 0)::BIGINT AS intended_value,
                coalesce(sum(value) FILTER (WHERE status = 'failed'), 0)::BIGINT AS failed_value,
                max(event_timestamp) AS last_event
            FROM billing_ledger WHERE period = ?
            GROUP BY ALL ORDER BY tenant_id, charge
        """, [chosen])
        failures = rows(store, """
            SELECT updated_at, run_id, tenant_id, charge, event_name, value, error, identifier
            FROM billing_ledger WHERE period = ? AND status = 'failed'
            ORDER BY updated_at DESC LIMIT 200
        """, [chosen])
    return {"runs": runs, "periods": periods, "period": chosen, "ledger": ledger, "failures": failures}


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def health(src: Source, window_seconds: int, bucket_seconds: int) -> dict[str, Any]:
    """Ingest and refusals over the last `window_seconds`; spoof attempts and export state as `meterline stats`."""
    now = _now()
    since = (now - timedelta(seconds=window_seconds)).isoformat()
    with _reading(src) as store:
        ingest = rows(store, """
            SELECT time_bucket(to_seconds(?::BIGINT), received_at) AS bucket, count(*) AS spans
            FROM spans WHERE received_at >= ?::TIMESTAMP GROUP BY bucket ORDER BY bucket
        """, [bucket_seconds, since])
        totals = rows(store, """
            SELECT count(*) FILTER (WHERE received_at >= ?::TIMESTAMP) AS spans_in_window,
                   count(*) FILTER (WHERE received_at >= ?::TIMESTAMP) AS spans_last_5_minutes,
                   max(received_at) AS last_received
            FROM spans
        """, [since, (now - timedelta(minutes=5)).isoformat()])[0]
        rejected = rows(store, """
            SELECT signal, reason, sum(requests)::BIGINT AS requests, sum(items)::BIGINT AS items
            FROM rejections WHERE minute >= ?::TIMESTAMP GROUP BY ALL ORDER BY items DESC, signal, reason
        """, [since])
        export_rejected = rows(store, """
            SELECT destination, tenant_id, reason, status, count(*) AS spans, max("at") AS last_at
            FROM export_rejections GROUP BY ALL ORDER BY spans DESC, destination, tenant_id
        """)
        stats = collect_stats(store)
    exports = [{**row, "last_success_at": _parse(row["last_success_at"]), "last_attempt_at": _parse(row["last_attempt_at"])}
               for row in stats["exports"]]
    return {"now": now, "since": since, "ingest": ingest, **totals, "rejected": rejected,
            "spoof_attempts": stats["spoof_attempts"], "exports": exports, "export_rejections": export_rejected}


def _parse(iso: str | None) -> datetime | None:
    """`meterline stats` writes instants as ISO 8601 with Z; the store's are naive UTC."""
    return datetime.fromisoformat(iso.removesuffix("Z")) if iso else None


def langfuse_trace_url(src: Source, tenant: str, tier: str | None) -> str | None:
    """A URL template with `{trace_id}` for the Langfuse project the tenant's spans go to, or None.

    The project is chosen as the exporter routes (collector/langfuse/routing.py): a
    `[[langfuse.projects]]` entry naming the tenant, else one naming its tier, else the shared
    `[langfuse]` project. Its `project_id` (and `host`, default the shared host, then Langfuse
    Cloud) make the link; without a project_id there is no link.
    """
    section = _config(src).components.get("langfuse")
    if not isinstance(section, dict):
        return None
    projects = [p for p in section.get("projects", []) if isinstance(p, dict)]
    chosen = next((p for p in projects if tenant in p.get("tenants", [])), None) or next(
        (p for p in projects if tier is not None and tier in p.get("tiers", [])), None) or section
    project_id = chosen.get("project_id")
    host = chosen.get("host") or section.get("host") or DEFAULT_HOST
    if not (isinstance(project_id, str) and project_id and isinstance(host, str)):
        return None
    return f"{host.rstrip('/')}/project/{project_id}/traces/{{trace_id}}"


def clear_cache() -> None:
    st.cache_data.clear()

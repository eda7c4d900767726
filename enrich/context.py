"""Trace context that no single span carries, resolved after spans are committed.

Children end before their parents, so an exporter usually sends a `chat` span before the
`invoke_agent` span above it, often in another request. Three things depend on the trace:

- agent_name / workflow_name of chat and tool spans (Strands names the agent only on
  invoke_agent): filled from the nearest ancestor that has one;
- feature: feature rules matched again with those names; failing a rule, the nearest
  ancestor's feature;
- billable: one model call is often reported twice, by the framework's `chat` span and by the
  SDK client span under it (REFERENCE.md section 3). Only the LOWEST LLM span of such a chain
  carries billable usage: an LLM span with usage stops being billable as soon as an LLM
  descendant with usage is known. Agent spans, which repeat totals, are never billable.

This runs in a thread of its own (every `interval` seconds, so ingest never waits for it) over
the traces that gained spans since a watermark kept in `meta`, and only ever fills NULLs or clears
`billable`. It updates rows the writer never touches again (the writer only inserts), so the two
never conflict. A trace of more than `max_trace_spans` spans is left as ingested (its LLM spans
keep their provisional `billable`): re-reading it on every change would let one tenant's giant
trace starve everyone's resolution, and only that tenant's own numbers are affected. Both are safe to apply late: an ancestor found later is still the nearest one,
because the walk stops at the first missing link; and metering/billing read totals, not events,
so a correction shows up as an exact delta on the next billing run.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pyarrow as pa

from enrich.features import FeatureRules
from meterline.store import LocalStore, Store, rows

log = logging.getLogger(__name__)

WATERMARK_KEY = "context.resolved_seq"

TOUCHED_SPANS = """
WITH touched AS (
    SELECT DISTINCT tenant_id, trace_id FROM spans WHERE ingest_seq > ? AND ingest_seq <= ?
), bounded AS (
    SELECT s.tenant_id, s.trace_id FROM spans s SEMI JOIN touched t ON s.tenant_id = t.tenant_id AND s.trace_id = t.trace_id
    GROUP BY ALL HAVING count(*) <= ?
)
SELECT s.tenant_id, s.trace_id, s.span_id, s.parent_span_id, s.name, s.op_kind,
       s.agent_name, s.workflow_name, s.tool_name, s.feature, s.billable,
       (s.input_tokens IS NOT NULL OR s.output_tokens IS NOT NULL) AS has_usage
FROM spans s SEMI JOIN bounded t ON s.tenant_id = t.tenant_id AND s.trace_id = t.trace_id
"""

APPLY_UPDATES = """
UPDATE spans SET agent_name = u.agent_name, workflow_name = u.workflow_name,
                 feature = u.feature, billable = u.billable
FROM resolved u
WHERE spans.tenant_id = u.tenant_id AND spans.trace_id = u.trace_id AND spans.span_id = u.span_id
"""

_UPDATE_SCHEMA = pa.schema([
    ("tenant_id", pa.string()), ("trace_id", pa.string()), ("span_id", pa.string()),
    ("agent_name", pa.string()), ("workflow_name", pa.string()), ("feature", pa.string()),
    ("billable", pa.bool_()),
])


def resolve_trace(spans: list[dict[str, Any]], rules: FeatureRules) -> list[dict[str, Any]]:
    """Resolve one trace's spans in place; return those that changed."""
    by_id = {span["span_id"]: span for span in spans}
    before = {span["span_id"]: (span["agent_name"], span["workflow_name"], span["feature"], span["billable"])
              for span in spans}
    done: set[str] = set()
    for span in spans:
        # Walk up to the first resolved (or missing) ancestor, then resolve back down that path.
        path: list[dict[str, Any]] = []
        on_path: set[str] = set()
        node: dict[str, Any] | None = span
        while node is not None and node["span_id"] not in done and node["span_id"] not in on_path:
            path.append(node)
            on_path.add(node["span_id"])
            node = by_id.get(node["parent_span_id"] or "")
        for current in reversed(path):
            parent = by_id.get(current["parent_span_id"] or "")
            if parent is not None and parent["span_id"] not in done:
                parent = None  # a cycle in client-sent ids: treat as a root
            if parent is not None:
                current["agent_name"] = current["agent_name"] or parent["agent_name"]
                current["workflow_name"] = current["workflow_name"] or parent["workflow_name"]
            if current["feature"] is None:
                current["feature"] = rules.match(
                    current["agent_name"], current["tool_name"], current["workflow_name"], current["name"]
                ) or (parent["feature"] if parent is not None else None)
            done.add(current["span_id"])

    for span in spans:
        if span["op_kind"] == "llm" and span["has_usage"]:
            ancestor, seen = by_id.get(span["parent_span_id"] or ""), {span["span_id"]}
            while ancestor is not None and ancestor["span_id"] not in seen:
                if ancestor["op_kind"] == "llm":
                    ancestor["billable"] = False
                seen.add(ancestor["span_id"])
                ancestor = by_id.get(ancestor["parent_span_id"] or "")

    return [
        span for span in spans
        if before[span["span_id"]] != (span["agent_name"], span["workflow_name"], span["feature"], span["billable"])
    ]


class ContextResolver:
    def __init__(self, store: LocalStore, rules: FeatureRules, interval: float = 1.0,
                 max_trace_spans: int = 50_000) -> None:
        self.store = store
        self.rules = rules
        self.interval = interval
        self.max_trace_spans = max_trace_spans
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="meterline-trace-context", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop, then resolve whatever the writer committed last."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.run()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run()
            except Exception:  # derived data: the watermark did not move, the next pass retries
                log.exception("resolving trace context failed")

    def run(self) -> int:
        """Resolve every trace touched since the watermark; returns the number of spans updated."""
        cursor = self.store.cursor()
        row = cursor.execute("SELECT value FROM meta WHERE key = ?", [WATERMARK_KEY]).fetchone()
        low = int(row[0]) if row else 0
        high = cursor.execute("SELECT coalesce(max(ingest_seq), 0) FROM spans").fetchone()[0]
        if high <= low:
            return 0
        spans = cursor.execute(TOUCHED_SPANS, [low, high, self.max_trace_spans]).to_arrow_table().to_pylist()
        traces: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for span in spans:
            traces.setdefault((span["tenant_id"], span["trace_id"]), []).append(span)
        changed = [span for trace in traces.values() for span in resolve_trace(trace, self.rules)]
        cursor.execute("BEGIN TRANSACTION")
        try:
            if changed:
                resolved = pa.Table.from_pylist(
                    [{name: span[name] for name in _UPDATE_SCHEMA.names} for span in changed], schema=_UPDATE_SCHEMA
                )
                cursor.register("resolved", resolved)
                cursor.execute(APPLY_UPDATES)
                cursor.unregister("resolved")
            cursor.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
                [WATERMARK_KEY, str(high)],
            )
            cursor.execute("COMMIT")
        except Exception:
            cursor.execute("ROLLBACK")
            raise
        if changed:
            log.debug("trace context: %d span(s) updated in %d trace(s)", len(changed), len(traces))
        return len(changed)


def wait_until_resolved(store: Store, timeout: float = 30.0) -> bool:
    """Wait until trace context covers every stored span (the usage report is then final)."""
    deadline = time.monotonic() + timeout
    while True:
        state = rows(store, f"""
            SELECT (SELECT coalesce(max(ingest_seq), 0) FROM spans) AS high,
                   (SELECT coalesce(max(value::BIGINT), 0) FROM meta WHERE key = '{WATERMARK_KEY}') AS done
        """)[0]
        if state["done"] >= state["high"]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def settle(store: Store, rules: FeatureRules, timeout: float = 30.0) -> bool:
    """Make trace context final before reading totals (usage, billing).

    A process holding the file resolves it itself (the collector may have been killed before its
    last pass); through a running collector, wait for its resolver. False if that timed out.
    """
    if isinstance(store, LocalStore):
        if not store.read_only:
            ContextResolver(store, rules).run()
        return True
    return wait_until_resolved(store, timeout)

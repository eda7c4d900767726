"""Delivery of stored spans to one Langfuse project. The store is the queue; a cursor is the ack.

Each cycle reads up to `batch_spans` spans routed here with
`acked_seq < ingest_seq <= context.resolved_seq` (the trace-context watermark, so agent, feature
and billable are resolved: enrich/context.py), sends them, and moves `export_cursors.acked_seq`
in the same transaction that records any span refused for good. So:

- at-least-once: the cursor moves only past spans Langfuse answered 2xx for (or that were
  isolated as refused, see below); a failure, a crash or a restart resumes from the cursor.
- bounded resend: the cursor is committed after each batch, before the next is read, so a kill -9
  re-sends at most the one batch in flight (its reply may have been lost), and a clean stop,
  which gives the request in flight SHUTDOWN_GRACE_SECONDS to finish, re-sends nothing. Langfuse
  keeps one observation per span id, so a re-sent span replaces itself.
- 429 and 5xx, timeouts and connection errors back off exponentially (with jitter), honouring
  Retry-After. 401, 403 and other refusals of the whole request are not the data's fault: they
  hold the cursor too (until an operator fixes the key or the plan), visible in `meterline stats`.
- a 400 (Langfuse refuses the whole batch for one bad span) or 413 splits the batch in halves
  until the refused spans stand alone; the rest is delivered, and a lone span refused twice goes
  to `export_rejections` with the reason. A refusal counts only when another span of the same
  batch got through: if everything is refused, the request itself is the likelier problem and
  the cursor holds.
- corrections: a model call reported late by a child span makes an already-sent LLM ancestor
  non-billable; that ancestor is sent again with zero usage so Langfuse does not count it twice.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import email.utils
import gzip
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from collector.langfuse.config import Destination, LangfuseSection, LangfuseSettings
from collector.langfuse.encode import COLUMNS, export_request
from collector.langfuse.routing import route_condition
from enrich.context import WATERMARK_KEY
from metering.llm_cost import PriceTable
from meterline.store import LocalStore

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0  # how long a request in flight may finish once the server stops
REFUSED = (400, 413)  # the data's fault: split and isolate

READ_SPANS = f"""
WITH r AS (SELECT ?::JSON AS route)
SELECT {COLUMNS} FROM spans s, r
WHERE s.ingest_seq > ? AND s.ingest_seq <= ? AND {route_condition('r.route')}
ORDER BY s.ingest_seq
LIMIT ?
"""

TRACE_LINKS = """
SELECT tenant_id, trace_id, span_id, parent_span_id, ingest_seq,
       op_kind = 'llm' AND NOT billable AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL) AS cleared
FROM spans WHERE trace_id IN (SELECT unnest(?::VARCHAR[])) AND ingest_seq <= ?
"""

UPSERT_CURSOR = """
INSERT INTO export_cursors (destination, acked_seq, spans_sent, last_success_at, route) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (destination) DO UPDATE SET
    acked_seq = excluded.acked_seq,
    spans_sent = export_cursors.spans_sent + excluded.spans_sent,
    last_success_at = coalesce(excluded.last_success_at, export_cursors.last_success_at),
    last_attempt_at = coalesce(excluded.last_success_at, export_cursors.last_attempt_at),
    last_error = CASE WHEN excluded.last_success_at IS NULL THEN export_cursors.last_error END,
    consecutive_failures = CASE WHEN excluded.last_success_at IS NULL THEN export_cursors.consecutive_failures ELSE 0 END,
    route = excluded.route
"""

RECORD_FAILURE = """
INSERT INTO export_cursors (destination, last_attempt_at, last_error, consecutive_failures, route) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (destination) DO UPDATE SET
    last_attempt_at = excluded.last_attempt_at,
    last_error = excluded.last_error,
    consecutive_failures = export_cursors.consecutive_failures + 1,
    route = excluded.route
"""

INSERT_REJECTION = """
INSERT INTO export_rejections (destination, tenant_id, trace_id, span_id, ingest_seq, status, reason, "at")
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

Row = dict[str, Any]


class Failure(Exception):
    """A request that did not get through; the cursor stays where it is."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Stopped(Exception):
    """The server is stopping and the request in flight did not finish within the grace."""


@dataclass
class _Outcome:
    """What one cycle's sends achieved for each of its rows, in seq order."""

    size: int
    delivered: set[int] = field(default_factory=set)  # row indexes
    refused: dict[int, tuple[int, str]] = field(default_factory=dict)  # row index -> (status, reason)

    def settled(self) -> int:
        """How many rows, from the first, were delivered or refused for good."""
        for i in range(self.size):
            if i not in self.delivered and i not in self.refused:
                return i
        return self.size


def build_exporters(settings: LangfuseSettings, store: LocalStore) -> list[LangfuseExporter]:
    """One exporter per configured Langfuse project (none when Langfuse is not configured)."""
    if not settings.destinations:
        return []
    prices = PriceTable.load()
    return [LangfuseExporter(destination, store, settings.section, settings.environment, prices)
            for destination in settings.destinations]


class LangfuseExporter:
    """The background task draining the store into one Langfuse project."""

    def __init__(self, destination: Destination, store: LocalStore, section: LangfuseSection,
                 environment: str, prices: PriceTable) -> None:
        self.destination = destination
        self.store = store
        self.section = section
        self.environment = environment
        self.prices = prices
        self.acked_seq = 0
        self._route = destination.route.to_json()
        # (cursor after a cycle, the watermark that cycle read at), to tell which sent spans were
        # already non-billable when sent. Kept for this run only: after a restart, corrections
        # err on the side of re-sending.
        self._read_at: deque[tuple[int, int]] = deque(maxlen=4096)

    async def run(self, stop: asyncio.Event) -> None:
        name = self.destination.key
        token = base64.b64encode(f"{self.destination.public_key}:{self.destination.secret_key}".encode()).decode()
        headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "x-langfuse-ingestion-version": "4",
            "x-langfuse-public-key": self.destination.public_key,
            "User-Agent": "meterline-langfuse-exporter",
        }
        self.acked_seq = await asyncio.to_thread(self._load_cursor)
        log.info("%s: exporting to %s from ingest_seq %d", name, self.destination.host, self.acked_seq)
        failures = 0
        async with httpx.AsyncClient(headers=headers, timeout=self.section.timeout_seconds) as client:
            while not stop.is_set():
                try:
                    handled = await self._cycle(client, stop)
                except Failure as failure:
                    failures += 1
                    delay = failure.retry_after if failure.retry_after is not None else self._backoff(failures)
                    log.warning("%s: %s (failure %d; next try in %.1fs)", name, failure, failures, delay)
                    await asyncio.to_thread(self._record_failure, str(failure))
                    await _sleep(stop, delay)
                    continue
                except Exception as exc:  # a bug or the store: keep the task alive and visible in stats
                    failures += 1
                    log.exception("%s: export cycle failed", name)
                    await asyncio.to_thread(self._record_failure, f"internal error: {exc}")
                    await _sleep(stop, self._backoff(failures))
                    continue
                if failures:
                    log.info("%s: working again after %d failure(s)", name, failures)
                    failures = 0
                if not handled:
                    await _sleep(stop, self.section.poll_seconds)

    async def _cycle(self, client: httpx.AsyncClient, stop: asyncio.Event) -> int:
        """One batch: read, send, commit. Returns how many spans it settled (0: idle)."""
        watermark = await asyncio.to_thread(self._watermark)
        if watermark <= self.acked_seq:
            return 0
        rows = await asyncio.to_thread(self._read, watermark)
        if not rows:  # nothing routed here up to the watermark
            await asyncio.to_thread(self._commit, watermark, [], _Outcome(0), False)
            return 0
        end = watermark if len(rows) < self.section.batch_spans else rows[-1]["ingest_seq"]
        items = await asyncio.to_thread(self._corrections, rows, watermark) + rows
        outcome, failure = await self._deliver(client, items, stop)
        settled = outcome.settled()
        if settled:
            acked = end if settled == len(items) else max(self.acked_seq, items[settled - 1]["ingest_seq"])
            await asyncio.to_thread(self._commit, acked, items, outcome, True)
            self._read_at.append((acked, watermark))
        if failure is not None:
            raise failure
        return settled

    async def _deliver(self, client: httpx.AsyncClient, items: list[Row],
                       stop: asyncio.Event) -> tuple[_Outcome, Failure | None]:
        """Send `items` in order, halving a chunk Langfuse refuses (400/413) until the refused
        spans stand alone. A lone refused span is sent once more after the rest and only then
        counted as refused, provided some span of the batch got through: otherwise the request,
        not the data, is the likelier problem and the batch is held. Stops at the first other
        failure, or when the server stops."""
        outcome = _Outcome(len(items))
        suspects: list[tuple[int, int, str]] = []
        chunks: deque[tuple[int, int]] = deque([(0, len(items))])
        try:
            while chunks and not stop.is_set():
                low, high = chunks.popleft()
                status, reason = await self._send(client, items[low:high], stop)
                if status < 300:
                    outcome.delivered.update(range(low, high))
                elif high - low > 1:
                    middle = (low + high) // 2
                    chunks.extendleft([(middle, high), (low, middle)])
                else:
                    suspects.append((low, status, reason))
            if suspects and not outcome.delivered:
                _, status, reason = suspects[0]
                return outcome, Failure(f"HTTP {status}, every span of the batch refused: {reason}")
            for index, _, _ in suspects:
                if stop.is_set():
                    break
                status, reason = await self._send(client, items[index:index + 1], stop)
                if status < 300:
                    outcome.delivered.add(index)
                else:
                    outcome.refused[index] = (status, reason)
        except Failure as failure:
            return outcome, failure
        except _Stopped:
            pass
        return outcome, None

    async def _send(self, client: httpx.AsyncClient, chunk: list[Row], stop: asyncio.Event) -> tuple[int, str]:
        body = await asyncio.to_thread(self._body, chunk)
        if body is None:  # over max_request_bytes: split before sending
            return 413, "request over langfuse.max_request_bytes"
        return await self._post(client, body, stop)

    async def _post(self, client: httpx.AsyncClient, body: bytes, stop: asyncio.Event) -> tuple[int, str]:
        """(status, reason) for 2xx and the refusals in REFUSED; raises Failure for anything else."""
        request = asyncio.ensure_future(client.post(self.destination.endpoint, content=body))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not request.done():
                await asyncio.wait_for(request, SHUTDOWN_GRACE_SECONDS)
            response = request.result()
        except asyncio.TimeoutError:
            raise _Stopped() from None
        except httpx.HTTPError as exc:
            raise Failure(f"{type(exc).__name__} talking to {self.destination.host}: {exc}") from None
        finally:
            stopping.cancel()
        status = response.status_code
        if status < 300 or status in REFUSED:
            return status, _reason(response)
        raise Failure(f"HTTP {status}: {_reason(response)}", self._retry_after(response))

    def _body(self, chunk: list[Row]) -> bytes | None:
        data = export_request(chunk, self.environment, self.prices).SerializeToString()
        if len(data) > self.section.max_request_bytes and len(chunk) > 1:
            return None
        return gzip.compress(data, compresslevel=5)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.section.backoff_max_seconds, self.section.backoff_initial_seconds * 2 ** min(failures - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """Retry-After in seconds or as an HTTP date, capped at max_retry_after_seconds."""
        value = response.headers.get("Retry-After", "").strip()
        if not value:
            return None
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                return None
        return min(max(seconds, 0.0), self.section.max_retry_after_seconds)

    # --- the store (called in worker threads) ---

    def _load_cursor(self) -> int:
        found = self.store.query("SELECT acked_seq FROM export_cursors WHERE destination = ?",
                                 [self.destination.key]).to_pylist()
        acked = found[0]["acked_seq"] if found else 0
        self.store.transaction([(UPSERT_CURSOR, [self.destination.key, acked, 0, None, self._route])])
        return acked

    def _watermark(self) -> int:
        found = self.store.query("SELECT value FROM meta WHERE key = ?", [WATERMARK_KEY]).to_pylist()
        return int(found[0]["value"]) if found else 0

    def _read(self, watermark: int) -> list[Row]:
        return self.store.query(READ_SPANS, [self._route, self.acked_seq, watermark, self.section.batch_spans]).to_pylist()

    def _corrections(self, rows: list[Row], watermark: int) -> list[Row]:
        """Spans sent while billable that a model call in `rows` has since made non-billable."""
        calls = [row for row in rows if row["op_kind"] == "llm"
                 and (row["input_tokens"] is not None or row["output_tokens"] is not None)]
        if not calls:
            return []
        links = self.store.query(TRACE_LINKS, [sorted({row["trace_id"] for row in calls}), watermark]).to_pylist()
        spans = {(link["tenant_id"], link["trace_id"], link["span_id"]): link for link in links}
        wanted: set[tuple[str, str, str]] = set()
        for call in calls:
            key, seen = (call["tenant_id"], call["trace_id"], call["parent_span_id"]), set()
            while key in spans and key not in seen:  # ancestors; client-sent ids may form a cycle
                seen.add(key)
                link = spans[key]
                if link["cleared"] and link["ingest_seq"] <= self.acked_seq \
                        and not self._read_after(link["ingest_seq"], call["ingest_seq"]):
                    wanted.add(key)
                key = (key[0], key[1], link["parent_span_id"])
        if not wanted:
            return []
        seqs = sorted(spans[key]["ingest_seq"] for key in wanted)
        return self.store.query(f"SELECT {COLUMNS} FROM spans s WHERE s.ingest_seq IN (SELECT unnest(?::BIGINT[])) "
                                "ORDER BY s.ingest_seq", [seqs]).to_pylist()

    def _read_after(self, sent_seq: int, call_seq: int) -> bool:
        """Whether the span at `sent_seq` was read at a watermark past `call_seq`: the resolver
        had then already applied that call, so the span went out non-billable."""
        i = bisect.bisect_left(self._read_at, (sent_seq,))
        return i < len(self._read_at) and self._read_at[i][1] >= call_seq

    def _commit(self, acked: int, items: list[Row], outcome: _Outcome, attempted: bool) -> None:
        """Move the cursor to `acked` and record the refusals among the settled rows, atomically."""
        now = _utcnow()
        settled = outcome.settled()
        sent = sum(1 for i in outcome.delivered if i < settled and items[i]["ingest_seq"] > self.acked_seq)
        steps = [(UPSERT_CURSOR, [self.destination.key, acked, sent, now if attempted else None, self._route])]
        for index, (status, reason) in sorted(outcome.refused.items()):
            if index >= settled:
                continue
            row = items[index]
            steps.append((INSERT_REJECTION, [self.destination.key, row["tenant_id"], row["trace_id"], row["span_id"],
                                             row["ingest_seq"], status, reason, now]))
            log.warning("%s: span %s/%s (tenant %s) refused for good: HTTP %d %s", self.destination.key,
                        row["trace_id"], row["span_id"], row["tenant_id"], status, reason)
        self.store.transaction(steps)
        self.acked_seq = acked

    def _record_failure(self, error: str) -> None:
        self.store.transaction([(RECORD_FAILURE, [self.destination.key, _utcnow(), error[:1000], self._route])])


def _reason(response: httpx.Response) -> str:
    """The reply's message: Langfuse answers JSON with `error` or `message`."""
    try:
        document = response.json()
        text = str(document.get("error") or document.get("message") or "") if isinstance(document, dict) else ""
    except ValueError:
        text = response.text
    return (text or response.reason_phrase or "")[:500]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if the server stops meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass

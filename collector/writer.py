"""The one thread that writes spans: a bounded queue in front, group commits behind.

Receivers `submit()` an enriched batch and wait on the returned future; it completes only after
the batch's spans are committed to DuckDB (whose WAL is synced on commit), so an acknowledged
span survives a kill -9. Batches queued together are written in one transaction (group commit).
When more than `max_queued_spans` spans or `max_queued_bytes` bytes wait, `submit()` refuses with
a retryable OVERLOADED error instead of letting memory grow.
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from collections import Counter, deque
from concurrent.futures import Future, InvalidStateError
from datetime import datetime, timezone
from operator import attrgetter

import pyarrow as pa

from collector.errors import IngestError, Kind
from enrich.batch import SpanBatch, SpanRecord
from meterline.store import LocalStore, StoreError

log = logging.getLogger(__name__)

# Columns taken from SpanRecords, in order; the rest of the table is derived in SQL below.
RECORD_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("tenant_id", pa.string()), ("trace_id", pa.string()), ("span_id", pa.string()),
    ("parent_span_id", pa.string()), ("trace_state", pa.string()), ("flags", pa.uint32()),
    ("name", pa.string()), ("kind", pa.string()),
    ("start_time_unix_nano", pa.int64()), ("end_time_unix_nano", pa.int64()),
    ("status_code", pa.string()), ("status_message", pa.string()),
    ("service_name", pa.string()), ("scope_name", pa.string()), ("scope_version", pa.string()),
    ("tier", pa.string()), ("feature", pa.string()), ("tenant_hint", pa.string()), ("spoofed", pa.bool_()),
    ("operation", pa.string()), ("op_kind", pa.string()), ("provider", pa.string()), ("model", pa.string()),
    ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("cache_read_tokens", pa.int64()),
    ("cache_write_tokens", pa.int64()), ("reasoning_tokens", pa.int64()),
    ("agent_name", pa.string()), ("tool_name", pa.string()), ("workflow_name", pa.string()),
    ("session_id", pa.string()), ("user_id", pa.string()), ("outcome", pa.string()), ("billable", pa.bool_()),
    ("resource_json", pa.string()), ("attributes_json", pa.string()),
    ("events_json", pa.string()), ("links_json", pa.string()),
)
_SCHEMA = pa.schema(list(RECORD_FIELDS) + [("ingest_seq", pa.int64())])
_GET_FIELDS = attrgetter(*(name for name, _ in RECORD_FIELDS))
_COPIED = [name for name, _ in RECORD_FIELDS if not name.endswith("_json")]

INSERT_SPANS = f"""
INSERT OR IGNORE INTO spans ({", ".join(_COPIED)}, start_time, end_time, duration_ns,
    resource_attributes, attributes, events, links, ingest_seq, received_at)
SELECT {", ".join(_COPIED)},
    make_timestamp(start_time_unix_nano // 1000), make_timestamp(end_time_unix_nano // 1000),
    end_time_unix_nano - start_time_unix_nano,
    resource_json, attributes_json, events_json, links_json, ingest_seq, ?
FROM incoming
"""

UPSERT_REJECTIONS = """
INSERT INTO rejections VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, items = items + excluded.items
"""

RejectionKey = tuple[str, str, str]  # signal, reason, tenant_id ('' when unknown)


class SpanWriter:
    def __init__(
        self,
        store: LocalStore,
        max_queued_spans: int,
        max_queued_bytes: int = 256 * 1024 * 1024,
        retry_after: int = 1,
        max_group_spans: int = 100_000,
    ) -> None:
        self.store = store
        self.max_queued_spans = max_queued_spans
        self.max_queued_bytes = max_queued_bytes
        self.retry_after = retry_after
        self.max_group_spans = max_group_spans
        self._queue: deque[tuple[SpanBatch, Future[None]]] = deque()
        self._queued_spans = 0
        self._queued_bytes = 0
        self._rejections: Counter[RejectionKey] = Counter()
        self._rejected_items: Counter[RejectionKey] = Counter()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="meterline-writer", daemon=True)
        row = store.query("SELECT coalesce(max(ingest_seq), 0) AS seq FROM spans").column("seq")[0].as_py()
        self._next_seq = row + 1
        self.committed_spans = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: SpanBatch) -> Future[None]:
        """Queue a batch; the future completes once its spans are committed (duplicates ignored)."""
        future: Future[None] = Future()
        size = len(batch.spans)
        with self._cond:
            if self._stopping:
                raise IngestError(Kind.OVERLOADED, "collector is shutting down", self.retry_after)
            if self._queued_spans and (self._queued_spans + size > self.max_queued_spans
                                       or self._queued_bytes + batch.size_bytes > self.max_queued_bytes):
                raise IngestError(
                    Kind.OVERLOADED,
                    f"ingest queue is full ({self._queued_spans} spans waiting to be written); retry later",
                    self.retry_after,
                )
            self._queue.append((batch, future))
            self._queued_spans += size
            self._queued_bytes += batch.size_bytes
            self._cond.notify()
        return future

    def count_rejection(self, signal: str, reason: str, tenant_id: str | None, items: int, requests: int = 1) -> None:
        """Record refused requests/items; flushed to the `rejections` table with the next commit."""
        key = (signal, reason, tenant_id or "")
        with self._cond:
            self._rejections[key] += requests
            self._rejected_items[key] += items
            self._cond.notify()

    def stop(self) -> None:
        """Write everything already accepted, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._rejections and not self._stopping:
                    self._cond.wait()
                group: list[tuple[SpanBatch, Future[None]]] = []
                spans = size_bytes = 0
                while self._queue and (not group or spans + len(self._queue[0][0].spans) <= self.max_group_spans):
                    batch, future = self._queue.popleft()
                    group.append((batch, future))
                    spans += len(batch.spans)
                    size_bytes += batch.size_bytes
                rejections, rejected_items = self._rejections, self._rejected_items
                self._rejections, self._rejected_items = Counter(), Counter()
                stop_now = self._stopping and not self._queue
            if group or rejections:
                try:
                    self._write(group, rejections, rejected_items)
                except Exception:  # never let one write kill the only writer: fail its waiters, go on
                    log.exception("writing %d batch(es) failed", len(group))
                    for _, future in group:
                        _settle(future, IngestError(Kind.INTERNAL, "the store could not write this batch"))
                with self._cond:
                    self._queued_spans -= spans
                    self._queued_bytes -= size_bytes
            if stop_now:
                return

    def _write(
        self,
        group: list[tuple[SpanBatch, Future[None]]],
        rejections: Counter[RejectionKey],
        rejected_items: Counter[RejectionKey],
    ) -> None:
        try:
            self._commit([batch for batch, _ in group], rejections, rejected_items)
        except StoreError:
            if len(group) <= 1:
                raise
            # One bad batch must not sink the others: write them one by one (the counters go with the first).
            self._write(group[:1], rejections, rejected_items)
            for item in group[1:]:
                try:
                    self._write([item], Counter(), Counter())
                except StoreError:
                    log.exception("writing a batch of %d spans failed", len(item[0].spans))
                    _settle(item[1], IngestError(Kind.INTERNAL, "the store could not write this batch"))
            return
        for _, future in group:
            _settle(future)

    def _commit(
        self,
        batches: list[SpanBatch],
        rejections: Counter[RejectionKey],
        rejected_items: Counter[RejectionKey],
    ) -> None:
        """One transaction: every batch's spans in a single INSERT, plus the refusal counters."""
        minute = datetime.now(timezone.utc).replace(second=0, microsecond=0, tzinfo=None)
        rejections, rejected_items = rejections.copy(), rejected_items.copy()
        for batch in batches:
            for reason, count in batch.rejected.items():
                key = ("traces", reason, batch.principal.tenant_id or "")
                rejections[key] += 1
                rejected_items[key] += count
        steps: list[tuple[str, list[object]]] = [
            (UPSERT_REJECTIONS, [minute, signal, reason, tenant, count, rejected_items[(signal, reason, tenant)]])
            for (signal, reason, tenant), count in rejections.items()
        ]
        spans = [span for batch in batches for span in batch.spans]
        cursor = self.store.cursor()
        cursor.execute("BEGIN TRANSACTION")
        try:
            inserted = self._insert(cursor, spans) if spans else 0
            for sql, params in steps:
                cursor.execute(sql, params)
            cursor.execute("COMMIT")
        except Exception as exc:
            with suppress(Exception):  # a failed commit may have ended the transaction already
                cursor.execute("ROLLBACK")
            raise StoreError(str(exc)) from exc
        self.committed_spans += inserted

    def _insert(self, cursor: object, spans: list[SpanRecord]) -> int:
        """Insert spans (duplicates of stored ones are ignored); returns how many were new."""
        count = len(spans)
        columns = [list(column) for column in zip(*map(_GET_FIELDS, spans))]
        columns.append(list(range(self._next_seq, self._next_seq + count)))
        self._next_seq += count
        incoming = pa.Table.from_arrays(
            [pa.array(values, type=field.type) for values, field in zip(columns, _SCHEMA)], schema=_SCHEMA
        )
        cursor.register("incoming", incoming)  # type: ignore[attr-defined]
        try:
            received = datetime.now(timezone.utc).replace(tzinfo=None)
            result = cursor.execute(INSERT_SPANS, [received]).fetchone()  # type: ignore[attr-defined]
        finally:
            cursor.unregister("incoming")  # type: ignore[attr-defined]
        return int(result[0]) if result else 0


def _settle(future: Future[None], error: IngestError | None = None) -> None:
    """Complete a waiter unless its request was cancelled meanwhile (a gRPC deadline, a client gone):
    its spans are committed all the same, and a retry is deduplicated."""
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass

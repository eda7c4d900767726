"""The billing ledger (`billing_ledger`) and run log (`billing_runs`) in the store.

Every meter event the job means to send is a ledger row, written before anything reaches Stripe.
What each status promises:

- intended: committed before any request carried it, so Stripe has never seen it.
- sent: committed before the FIRST request carrying it; Stripe may or may not hold it.
  `updated_at` is that first send (later attempts leave it alone): Stripe dedupes identifiers
  for at least 24 hours from there, so that is how long a resend is safe.
- acknowledged: Stripe answered 200, or "already exists" to a resend; `stripe_response_id` is
  the Request-Id of that reply (meter events have no id of their own).
- failed: Stripe refused it synchronously (so it holds nothing), or the job would not send it
  (unknown customer, no meter, outside Stripe's window). The next run plans that usage again.

Rows only move forward (intended -> sent -> acknowledged | failed, or intended -> failed), so
two overlapping runs can never undo each other's progress. Writes are serialised in-process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.deltas import Key, KeyState, MeterEvent
from meterline.store import Step, Store, rows

_IN_FLIGHT = "status IN ('intended', 'sent')"  # rows Stripe may or may not hold yet
_INSERT_CHUNK = 200
_COLUMNS = ("identifier, run_id, period, tenant_id, stripe_customer_id, charge, event_name, value, cumulative, "
            "event_timestamp, status, error, created_at, updated_at")
_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?::TIMESTAMP, ?, ?, ?::TIMESTAMP, ?::TIMESTAMP)"
_SOME = "identifier IN (SELECT unnest(?::VARCHAR[]))"


@dataclass(frozen=True, slots=True)
class InFlight:
    """A row a run started and did not finish: it must be resent as it is, never re-planned."""

    event: MeterEvent
    status: str
    since: datetime  # when it was written (intended) or first sent (sent)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()

    def _write(self, steps: Sequence[Step]) -> None:
        with self._lock:
            self.store.transaction(steps)

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, run_id: str, period: str, through: datetime, dry_run: bool, now: datetime) -> None:
        self._write([("""
            INSERT INTO billing_runs (run_id, period, through, dry_run, started_at, status)
            VALUES (?, ?, ?::TIMESTAMP, ?, ?::TIMESTAMP, 'running')
        """, [run_id, period, through.isoformat(), dry_run, now.isoformat()])])

    def finish_run(self, run_id: str, status: str, sent: int, failed: int, summary: dict[str, Any],
                   now: datetime) -> None:
        self._write([("""
            UPDATE billing_runs SET finished_at = ?::TIMESTAMP, status = ?, events_sent = ?, events_failed = ?,
                   summary = ?::JSON
            WHERE run_id = ?
        """, [now.isoformat(), status, sent, failed, json.dumps(summary), run_id])])

    def last_through(self, period: str) -> datetime | None:
        """The furthest `through` any real (not dry) run of the period has billed to."""
        found = rows(self.store, "SELECT max(through) AS through FROM billing_runs WHERE period = ? AND NOT dry_run",
                     [period])
        return found[0]["through"] if found else None

    # -- events ------------------------------------------------------------------------------

    def state(self, period: str) -> dict[Key, KeyState]:
        found = rows(self.store, """
            SELECT tenant_id, stripe_customer_id, event_name, arg_max(charge, created_at) AS charge,
                   coalesce(sum(value) FILTER (WHERE status <> 'failed'), 0)::BIGINT AS committed,
                   coalesce(sum(value) FILTER (WHERE status = 'acknowledged'), 0)::BIGINT AS acknowledged,
                   count(*) AS n
            FROM billing_ledger WHERE period = ?
            GROUP BY tenant_id, stripe_customer_id, event_name
        """, [period])
        return {Key(r["tenant_id"], r["stripe_customer_id"], r["event_name"]):
                KeyState(r["charge"], int(r["committed"]), int(r["acknowledged"]), int(r["n"])) for r in found}

    def in_flight(self) -> list[InFlight]:
        """Rows of every period still intended or sent, oldest first."""
        found = rows(self.store, f"""
            SELECT * FROM billing_ledger WHERE {_IN_FLIGHT} ORDER BY created_at, identifier
        """)
        return [InFlight(_event(r), r["status"], r["updated_at"]) for r in found]

    def add(self, events: Sequence[MeterEvent], run_id: str, now: datetime, status: str = "intended",
            error: str | None = None) -> None:
        """Write new rows in one transaction."""
        steps: list[Step] = []
        for start in range(0, len(events), _INSERT_CHUNK):
            chunk = events[start:start + _INSERT_CHUNK]
            params: list[Any] = []
            for e in chunk:
                params += [e.identifier, run_id, e.period, e.key.tenant_id, e.key.customer, e.charge,
                           e.key.event_name, e.value, e.cumulative, e.timestamp.isoformat(), status, error,
                           now.isoformat(), now.isoformat()]
            steps.append((f"INSERT INTO billing_ledger ({_COLUMNS}) VALUES {', '.join([_VALUES] * len(chunk))}",
                          params))
        if steps:
            self._write(steps)

    def mark_sent(self, identifiers: Sequence[str], now: datetime) -> None:
        self._write([(f"UPDATE billing_ledger SET status = 'sent', updated_at = ?::TIMESTAMP "
                      f"WHERE status = 'intended' AND {_SOME}", [now.isoformat(), list(identifiers)])])

    def acknowledge(self, identifiers: Sequence[str], response_id: str | None, now: datetime) -> None:
        self._write([(f"UPDATE billing_ledger SET status = 'acknowledged', stripe_response_id = ?, error = NULL, "
                      f"updated_at = ?::TIMESTAMP WHERE {_IN_FLIGHT} AND {_SOME}",
                      [response_id, now.isoformat(), list(identifiers)])])

    def fail(self, identifiers: Sequence[str], error: str, response_id: str | None, now: datetime) -> None:
        self._write([(f"UPDATE billing_ledger SET status = 'failed', error = ?, stripe_response_id = ?, "
                      f"updated_at = ?::TIMESTAMP WHERE {_IN_FLIGHT} AND {_SOME}",
                      [error, response_id, now.isoformat(), list(identifiers)])])

    def note(self, identifiers: Sequence[str], error: str) -> None:
        """Keep the last error on rows that stay in flight (updated_at, the first send, is kept)."""
        self._write([(f"UPDATE billing_ledger SET error = ? WHERE {_IN_FLIGHT} AND {_SOME}",
                      [error, list(identifiers)])])


def _event(row: dict[str, Any]) -> MeterEvent:
    key = Key(row["tenant_id"], row["stripe_customer_id"], row["event_name"])
    return MeterEvent(row["identifier"], row["period"], key, row["charge"], int(row["value"]), int(row["cumulative"]),
                      row["event_timestamp"])

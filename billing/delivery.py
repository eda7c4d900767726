"""Sending ledger rows to Stripe, over v1 (one event a request) or v2 meter event streams.

Every batch takes the same three steps, the ledger write always first:
1. mark its rows `sent` (committed before the request leaves),
2. send with retries, every attempt under a new idempotency key,
3. record the outcome: acknowledged (a 200, or "already exists" to a resend), failed (refused),
   or left `sent` with the error noted (attempts ran out, or the run stopped): the next run
   resends those with the same identifiers.

v1: Stripe takes one meter-event call at a time per customer and meter, so each customer's
events go one after another and `concurrency` customers are served at once.
v2: events go 100 a request on one stream, authenticated by a 15-minute session token that is
renewed a minute before it expires, and at once when Stripe says it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

import stripe

from billing.deltas import MeterEvent
from billing.ledger import Ledger
from billing.stripe_api import Kind, RetryPolicy, classify, connect, describe, with_retries

STREAM_BATCH = 100  # Stripe's cap per meter_event_stream request
_RENEW_BEFORE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # acknowledged | failed | pending | fatal
    response_id: str | None = None
    error: str | None = None


class Transport(Protocol):
    batch_size: int

    def post(self, batch: Sequence[MeterEvent], attempt: int) -> str | None:
        """Send one batch; return the reply's Request-Id. Raises stripe.StripeError."""

    def expire_session(self) -> None: ...


class V1Transport:
    """POST /v1/billing/meter_events, one event a request."""

    batch_size = 1

    def __init__(self, client: stripe.StripeClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def post(self, batch: Sequence[MeterEvent], attempt: int) -> str | None:
        [event] = batch
        created = self.client.v1.billing.meter_events.create(
            params={
                "event_name": event.key.event_name,
                "identifier": event.identifier,
                "timestamp": int(event.timestamp.replace(tzinfo=timezone.utc).timestamp()),
                "payload": {"stripe_customer_id": event.key.customer, "value": str(event.value)},
            },
            options={"idempotency_key": _idempotency_key(batch, self.run_id, attempt)},
        )
        return created.last_response.request_id if created.last_response else None

    def expire_session(self) -> None:
        """v1 has no session."""


class StreamTransport:
    """POST /v2/billing/meter_event_stream, up to 100 events a request, on a session token.

    Sent with StripeClient.raw_request rather than meter_event_stream.create, which returns
    None: the raw response carries the Request-Id the ledger keeps.
    """

    batch_size = STREAM_BATCH

    def __init__(self, client: stripe.StripeClient, api_base: str, run_id: str,
                 clock: Callable[[], datetime]) -> None:
        self.client = client
        self.api_base = api_base
        self.run_id = run_id
        self.clock = clock
        self._stream: stripe.StripeClient | None = None
        self._expires_at = datetime.min
        self._lock = threading.Lock()

    def _session(self) -> stripe.StripeClient:
        with self._lock:
            if self._stream is None or self.clock() >= self._expires_at - _RENEW_BEFORE:
                session = self.client.v2.billing.meter_event_session.create()
                expires = datetime.fromisoformat(session.expires_at.replace("Z", "+00:00"))
                self._expires_at = expires.astimezone(timezone.utc).replace(tzinfo=None)
                self._stream = connect(session.authentication_token, self.api_base)
            return self._stream

    def expire_session(self) -> None:
        with self._lock:
            self._stream = None

    def post(self, batch: Sequence[MeterEvent], attempt: int) -> str | None:
        events = [{
            "event_name": event.key.event_name,
            "identifier": event.identifier,
            "timestamp": event.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payload": {"stripe_customer_id": event.key.customer, "value": str(event.value)},
        } for event in batch]
        response = self._session().raw_request("post", "/v2/billing/meter_event_stream", base="meter_events",
                                               events=events,
                                               idempotency_key=_idempotency_key(batch, self.run_id, attempt))
        return response.request_id


def deliver_all(ledger: Ledger, transport: Transport, policy: RetryPolicy, events: Sequence[MeterEvent],
                concurrency: int, clock: Callable[[], datetime]) -> dict[str, Outcome]:
    """Send every event (write-ahead, see the module docstring); the outcome per identifier.

    A FATAL answer (the key refused) stops the run: batches not yet sent stay in flight."""
    outcomes: dict[str, Outcome] = {}
    stop = threading.Event()
    if transport.batch_size == 1:
        groups: dict[str, list[MeterEvent]] = {}
        for event in events:
            groups.setdefault(event.key.customer, []).append(event)
        work = list(groups.values())
    else:
        work = [list(events)] if events else []

    def send_group(group: list[MeterEvent]) -> None:
        for start in range(0, len(group), transport.batch_size):
            batch = group[start:start + transport.batch_size]
            if stop.is_set():
                outcome = Outcome("pending", error="not sent: the run stopped after Stripe refused the key")
            else:
                outcome = _deliver(ledger, transport, policy, batch, clock)
                if outcome.status == "fatal":
                    stop.set()
            for event in batch:
                outcomes[event.identifier] = outcome

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(work)))) as pool:
        list(pool.map(send_group, work))
    return outcomes


def _deliver(ledger: Ledger, transport: Transport, policy: RetryPolicy, batch: Sequence[MeterEvent],
             clock: Callable[[], datetime]) -> Outcome:
    identifiers = [event.identifier for event in batch]
    ledger.mark_sent(identifiers, clock())
    try:
        response_id = with_retries(policy, lambda attempt: transport.post(batch, attempt), transport.expire_session)
        outcome = Outcome("acknowledged", response_id)
    except stripe.StripeError as error:
        kind = classify(error)
        if kind is Kind.DUPLICATE:
            outcome = Outcome("acknowledged", error.request_id)
        elif kind is Kind.REFUSED:
            outcome = Outcome("failed", error.request_id, describe(error))
        elif kind is Kind.FATAL:
            outcome = Outcome("fatal", error.request_id, describe(error))
        else:
            outcome = Outcome("pending", None, f"no answer after {policy.max_attempts} attempts: {describe(error)}")
    if outcome.status == "acknowledged":
        ledger.acknowledge(identifiers, outcome.response_id, clock())
    elif outcome.status == "failed":
        ledger.fail(identifiers, outcome.error or "", outcome.response_id, clock())
    else:
        ledger.note(identifiers, outcome.error or "")
    return outcome


def _idempotency_key(batch: Sequence[MeterEvent], run_id: str, attempt: int) -> str:
    """New for every attempt (Stripe replays a saved 500 for a reused key); the event identifiers,
    not this key, are what make a resend harmless."""
    return f"{batch[0].identifier}.{len(batch)}.{run_id}.{attempt}"

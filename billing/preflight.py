"""What the job asks Stripe before sending anything, and what it will not send.

Stripe accepts a meter event for a customer that does not exist (and, on v2 streams, for an
event_name no meter listens to) with a 200, and only reports the problem later, asynchronously.
The ledger would call such an event acknowledged while Stripe bills nobody for it. So each run
first lists the active meters and retrieves every customer it is about to bill.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import stripe

from billing.deltas import MeterEvent, within_window
from billing.stripe_api import Kind, RetryPolicy, classify, describe, with_retries


@dataclass(frozen=True, slots=True)
class Gate:
    """What this run may send to Stripe."""

    meters: set[str]  # event_names of active meters
    customers: dict[str, str]  # customer -> why it cannot be billed now
    now: datetime

    def unavailable(self, event: MeterEvent) -> str | None:
        """Why Stripe would take the event but bill no one for it (None: it would bill)."""
        if event.key.customer in self.customers:
            return self.customers[event.key.customer]
        if event.key.event_name not in self.meters:
            return f"no active Stripe meter for event_name {event.key.event_name!r}: run `meterline stripe sync`"
        return None

    def refusal(self, event: MeterEvent) -> str | None:
        """Why a NEW event must not be sent: unavailable, or stamped before Stripe's window."""
        if not within_window(event.timestamp, self.now):
            return (f"stamped {event.timestamp.isoformat()}Z, outside Stripe's 35-day window: "
                    "invoice this usage by hand")
        return self.unavailable(event)


def open_gate(client: stripe.StripeClient, events: Iterable[MeterEvent], policy: RetryPolicy, concurrency: int,
              now: datetime) -> Gate:
    """Ask Stripe about the meters and customers `events` need. Raises stripe.StripeError when
    the meters cannot be listed (the key refused, or no answer)."""
    customers = {event.key.customer for event in events}
    return Gate(active_meters(client, policy), unusable_customers(client, customers, policy, concurrency), now)


def active_meters(client: stripe.StripeClient, policy: RetryPolicy) -> set[str]:
    """The event_names of the account's active meters."""
    def fetch(attempt: int) -> set[str]:
        listing = client.v1.billing.meters.list(params={"status": "active", "limit": 100})
        return {meter.event_name for meter in listing.auto_paging_iter()}

    return with_retries(policy, fetch)


def unusable_customers(client: stripe.StripeClient, customers: Iterable[str], policy: RetryPolicy,
                       concurrency: int) -> dict[str, str]:
    """Why each customer that cannot be billed now cannot (missing, deleted, or no answer).

    Raises stripe.StripeError only when the key itself is refused."""
    def check(customer: str) -> str | None:
        try:
            found = with_retries(policy, lambda attempt: client.v1.customers.retrieve(customer))
        except stripe.StripeError as error:
            kind = classify(error)
            if kind is Kind.FATAL:
                raise
            if kind is Kind.REFUSED:
                return f"Stripe customer {customer} does not exist ({describe(error)})"
            return f"could not check Stripe customer {customer}: {describe(error)}"
        if getattr(found, "deleted", False):
            return f"Stripe customer {customer} is deleted"
        return None

    ordered = sorted(set(customers))
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(ordered)))) as pool:
        reasons = list(pool.map(check, ordered))
    return {customer: reason for customer, reason in zip(ordered, reasons, strict=True) if reason}

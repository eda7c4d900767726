"""`meterline bill`: one run of the billing job, from the store's usage to Stripe's meters.

A run:
1. bounds the usage it bills: [period start, through), through = min(--through, now, period end),
   never earlier than what a previous run of the period billed;
2. computes each Stripe total's target from `usage_report()` and the plan catalog (deltas.py);
3. plans one event per total whose target differs from what the ledger covers
   (acknowledged + in flight), and collects rows earlier runs left in flight, of any period;
4. checks with Stripe that meters and customers exist (preflight.py), records what cannot be
   sent as failed, writes the rest to the ledger as intended;
5. resends the in-flight rows and sends the new ones (delivery.py), and records the run.

Exactly once: see README "Billing" and ledger.py. A dry run stops after step 3 and contacts no one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import stripe

from billing.delivery import Outcome, StreamTransport, Transport, V1Transport, deliver_all
from billing.deltas import RESEND_WINDOW, MeterEvent, billing_targets, event_time, plan_events, utcnow, with_reversals
from billing.ledger import InFlight, Ledger
from billing.preflight import open_gate
from billing.settings import BillingSection, StripeSection
from billing.stripe_api import RetryPolicy, connect, describe
from billing.summary import RunSummary
from enrich.context import settle
from enrich.features import FeatureRules
from enrich.tenants import list_tenants
from metering.meters import Period
from meterline.config import Config
from meterline.store import Store
from pricing.report import build_meterer, catalog_for, usage_report


class BillingRefused(ValueError):
    """The run cannot start as asked (e.g. --through before what was already billed)."""


@dataclass(frozen=True, slots=True)
class BillRequest:
    period: Period
    through: datetime | None  # naive UTC; None: now
    dry_run: bool
    streams: bool


def run_bill(store: Store, config: Config, request: BillRequest, stripe_settings: StripeSection,
             billing: BillingSection, api_key: str | None, clock: Callable[[], datetime] = utcnow) -> RunSummary:
    """One run; its summary is also kept in billing_runs. `api_key` may be None for a dry run."""
    if api_key is None and not request.dry_run:
        raise BillingRefused("no Stripe key")
    ledger = Ledger(store)
    now = clock()
    period = request.period
    through = min(request.through or now, now, period.end)
    if through <= period.start:
        raise BillingRefused(f"nothing to bill: {through.isoformat()}Z is not after the start of {period.label}")
    billed_to = ledger.last_through(period.label)
    if not request.dry_run and billed_to is not None and through < billed_to:
        raise BillingRefused(f"usage of {period.label} through {billed_to.isoformat()}Z is already billed: "
                             f"--through cannot go back to {through.isoformat()}Z")
    run_id = f"{period.label}.{now:%Y%m%dT%H%M%S}.{secrets.token_hex(3)}"
    summary = RunSummary(run_id, period.label, through, request.dry_run, request.streams)
    ledger.start_run(run_id, period.label, through, request.dry_run, now)
    try:
        planned, in_flight = _plan(store, config, stripe_settings.namespace, request.period, ledger, summary)
        if not request.dry_run:
            resend = _resendable(in_flight, clock(), summary)
            if planned or resend:
                client = connect(api_key or "", stripe_settings.api_base)
                _send(client, planned, resend, request.streams, stripe_settings, billing, ledger, summary, clock)
    except Exception as exc:
        summary.error = f"crashed: {type(exc).__name__}: {exc}"
        raise
    finally:
        failures = summary.count("failed") + summary.count("pending")
        ledger.finish_run(run_id, "failed" if summary.failed else "succeeded", summary.count("acknowledged"),
                          failures, summary.to_json(), clock())
    return summary


def _plan(store: Store, config: Config, namespace: str, period: Period, ledger: Ledger,
          summary: RunSummary) -> tuple[list[MeterEvent], list[InFlight]]:
    """The new events this run means to send, and the rows earlier runs left in flight."""
    catalog = catalog_for(config)
    if not settle(store, FeatureRules(config.features)):
        raise BillingRefused("trace context is still settling on the running collector; try again shortly")
    report = usage_report(build_meterer(store, config), catalog, Period.between(period.start, summary.through))
    targets = billing_targets(report, {t.tenant_id: t for t in list_tenants(store)}, catalog)
    state = ledger.state(period.label)
    wanted = with_reversals(targets, state)
    planned = plan_events(namespace, period.label, wanted, state, event_time(summary.through))
    in_flight = ledger.in_flight()

    summary.skipped = targets.skipped
    for tenant_id, message in sorted(targets.problems.items()):
        summary.problem(tenant_id, message)
    for key, target in wanted.items():
        line = summary.line(period.label, key, target.charge)
        line.target, line.before = target.quantity, state[key].acknowledged if key in state else 0
    for event in planned:
        summary.line(event.period, event.key, event.charge).planned += event.value
    for row in in_flight:
        summary.line(row.event.period, row.event.key, row.event.charge).resent += row.event.value
    return planned, in_flight


def _resendable(in_flight: list[InFlight], now: datetime, summary: RunSummary) -> list[MeterEvent]:
    """In-flight rows it is safe to resend: all but those first sent before Stripe's dedupe window.

    Those may have been recorded and forgotten: a resend could bill twice, so they stay counted as
    sent and are reported until someone checks Stripe and settles the row by hand."""
    resend = []
    for row in in_flight:
        if row.status == "sent" and row.since < now - RESEND_WINDOW:
            summary.record(row.event, Outcome("pending", error=(
                f"unconfirmed: {row.event.identifier} was first sent {row.since.isoformat()}Z, past Stripe's dedupe "
                "window; look it up in Stripe, then set its ledger status to acknowledged or failed")))
        else:
            resend.append(row.event)
    return resend


def _send(client: stripe.StripeClient, planned: list[MeterEvent], resend: list[MeterEvent], streams: bool,
          stripe_settings: StripeSection, billing: BillingSection, ledger: Ledger, summary: RunSummary,
          clock: Callable[[], datetime]) -> None:
    """Preflight, ledger, delivery; every event's outcome lands in the summary."""
    policy = RetryPolicy(billing.max_attempts, billing.backoff_seconds, billing.max_wait_seconds)
    now = clock()
    try:
        gate = open_gate(client, planned + resend, policy, billing.concurrency, now)
    except stripe.StripeError as error:
        summary.error = describe(error)
        for event in resend:
            summary.record(event, Outcome("pending", error="not resent: the run stopped"))
        for event in planned:
            summary.record(event, Outcome("failed", error="not sent: the run stopped"))
        return

    refused: dict[str, list[MeterEvent]] = {}
    sendable = []
    for event in planned:
        reason = gate.refusal(event)
        if reason:
            refused.setdefault(reason, []).append(event)
            summary.record(event, Outcome("failed", error=reason))
        else:
            sendable.append(event)
    for reason, events in refused.items():
        ledger.add(events, summary.run_id, now, status="failed", error=f"not sent: {reason}")
    ledger.add(sendable, summary.run_id, now)

    to_send = []
    for event in resend:  # a row in flight waits, untouched, until its customer and meter are back
        reason = gate.unavailable(event)
        if reason:
            summary.record(event, Outcome("pending", error=reason))
        else:
            to_send.append(event)
    to_send += sendable

    transport: Transport = (StreamTransport(client, stripe_settings.api_base, summary.run_id, clock)
                            if streams else V1Transport(client, summary.run_id))
    outcomes = deliver_all(ledger, transport, policy, to_send, billing.concurrency, clock)
    for event in to_send:
        summary.record(event, outcomes[event.identifier])
    summary.error = next((o.error for o in outcomes.values() if o.status == "fatal"), None)

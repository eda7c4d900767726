"""What a billing run must send: each Stripe total's target, minus what the ledger already covers.

A key is one total Stripe holds: (tenant, Stripe customer, meter event_name). Its target is the
billable quantity of the tenant's plan charge reported to that meter, for the period up to the
run's `through`. Keys the ledger knows for a billed tenant that its plan no longer reports (a tier
or customer change) have target 0, so Stripe's totals always equal the current report exactly.

Pure functions: no store, no Stripe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from enrich.tenants import Tenant
from pricing.catalog import Catalog, UnknownTier

STRIPE_BACKFILL = timedelta(days=35)  # Stripe refuses meter events stamped earlier than this ...
WINDOW_MARGIN = timedelta(hours=1)  # ... and we keep clear of the edge (clock skew, long runs)
RESEND_WINDOW = timedelta(hours=23)  # identifiers are deduped for at least 24 h after acceptance


@dataclass(frozen=True, slots=True, order=True)
class Key:
    tenant_id: str
    customer: str
    event_name: str


@dataclass(frozen=True, slots=True)
class Target:
    key: Key
    charge: str
    quantity: int


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the ledger holds for a key in a period."""

    charge: str
    committed: int  # acknowledged + in flight: what Stripe holds once everything in flight lands
    acknowledged: int
    rows: int  # ledger rows of any status: the next event's sequence number is rows + 1


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """One meter event, as planned and as kept in the ledger."""

    identifier: str
    period: str
    key: Key
    charge: str
    value: int  # the delta; negative when a correction lowers the total
    cumulative: int  # the key's total once this event lands
    timestamp: datetime  # naive UTC, whole seconds


@dataclass(frozen=True, slots=True)
class Skipped:
    tenant_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Targets:
    targets: dict[Key, Target]
    billed: frozenset[str]  # tenants whose totals this run keeps equal to Meterline's
    problems: dict[str, str]  # tenant -> why it cannot be billed (a failure)
    skipped: tuple[Skipped, ...]  # tenants not billed by design (not a failure)


def billing_targets(report: Mapping[str, Any], tenants: Mapping[str, Tenant], catalog: Catalog) -> Targets:
    """Targets for every active tenant with a Stripe customer, from `usage_report()`'s output."""
    targets: dict[Key, Target] = {}
    billed: set[str] = set()
    problems: dict[str, str] = {}
    skipped: list[Skipped] = []
    for entry in report["tenants"]:
        tenant = tenants.get(entry["tenant_id"])
        if tenant is None:
            skipped.append(Skipped(entry["tenant_id"], "not registered"))
            continue
        if tenant.status != "active":
            skipped.append(Skipped(tenant.tenant_id, tenant.status))
            continue
        if not tenant.stripe_customer_id:
            skipped.append(Skipped(tenant.tenant_id, "no Stripe customer"))
            continue
        try:
            plan = catalog.plan_for(tenant.tier)
        except UnknownTier as exc:
            problems[tenant.tenant_id] = str(exc)
            continue
        meters = {charge.name: charge.stripe_meter for charge in plan.charges}
        billed.add(tenant.tenant_id)
        for line in entry["charges"]:
            key = Key(tenant.tenant_id, tenant.stripe_customer_id, meters[line["charge"]])
            targets[key] = Target(key, line["charge"], line["billable_quantity"])
    return Targets(targets, frozenset(billed), problems, tuple(skipped))


def with_reversals(targets: Targets, state: Mapping[Key, KeyState]) -> dict[Key, Target]:
    """The targets plus a zero target for every ledger key of a billed tenant no charge reports now."""
    wanted = dict(targets.targets)
    for key, known in state.items():
        if key.tenant_id in targets.billed and key not in wanted:
            wanted[key] = Target(key, known.charge, 0)
    return wanted


def plan_events(namespace: str, period: str, wanted: Mapping[Key, Target], state: Mapping[Key, KeyState],
                timestamp: datetime) -> list[MeterEvent]:
    """One event per key whose target differs from what the ledger covers, carrying the difference."""
    events = []
    for key in sorted(wanted):
        target = wanted[key]
        known = state.get(key, KeyState(target.charge, 0, 0, 0))
        delta = target.quantity - known.committed
        if delta:
            events.append(MeterEvent(identifier(namespace, period, key, known.rows + 1), period, key,
                                     target.charge, delta, target.quantity, timestamp))
    return events


def identifier(namespace: str, period: str, key: Key, sequence: int) -> str:
    """Deterministic and under Stripe's 100 characters whatever the tenant id (up to 128 long):
    the n-th event of a key in a period always has the same identifier."""
    digest = hashlib.sha256("\n".join((key.tenant_id, key.customer, key.event_name)).encode()).hexdigest()[:20]
    return f"{namespace}-{period}-{digest}-{sequence}"


def event_time(through: datetime) -> datetime:
    """The last whole second before `through`: an event is stamped inside the usage it covers."""
    whole = through.replace(microsecond=0)
    return whole - timedelta(seconds=1) if whole == through else whole


def within_window(timestamp: datetime, now: datetime) -> bool:
    """Whether Stripe still takes an event stamped `timestamp` (35 days back, with a margin)."""
    return timestamp >= now - STRIPE_BACKFILL + WINDOW_MARGIN


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the store keeps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)

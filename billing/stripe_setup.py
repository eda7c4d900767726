"""`meterline stripe sync`: the Stripe meters, products and prices the billed plans need.

Idempotent: every object is looked up before it is created, so a second sync creates nothing.
- Meters: one per distinct `stripe_meter` (event_name) of the catalog's billed plans (reference
  plans are never billed), formula `sum` (the job sends deltas, some negative), customer by
  `payload[stripe_customer_id]`, value by `payload[value]`. Found by event_name among active
  meters; meters are immutable, so one set up differently is reported, never changed.
- Products: one per plan charge, id `<namespace>_<tier>_<charge>`, so the invoice line names
  the charge. Found by id.
- Prices: one metered monthly price per plan charge on its meter, lookup_key = the product id.
  Found by lookup key; if the catalog's terms changed, a new price takes the lookup key over
  ("replaced"): subscriptions stay on the old price until they are moved.

Meter events carry a charge's BILLABLE quantity (after `included` and `included_per`), so a
price holds no allowance and applies the schedule to exactly what arrives, as pricing.rating does:
- flat: per unit, unit_amount_decimal = unit_price / per, in minor units (Stripe keeps 12
  decimals; no transform_quantity, which would round the quantity to whole `per` units);
- package: per unit at package_price, transform_quantity divide_by = package_size, round up;
- graduated / volume: tiered, tiers_mode graduated / volume, each tier's up_to (last: inf),
  unit_amount_decimal and flat_amount_decimal. A tier's flat fee must be a whole number of minor
  units: Stripe's flat_amount_decimal "accepts a decimal value representing an integer in the
  minor units of the currency" (only unit amounts take 12 decimals).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, localcontext
from typing import TYPE_CHECKING, Any, cast

import stripe

from billing.stripe_api import Kind, RetryPolicy, classify, describe, with_retries
from pricing.catalog import Catalog, Charge, Currency, Flat, Graduated, Package, Volume

if TYPE_CHECKING:
    from stripe.params import PriceCreateParams

MAX_DECIMALS = 12  # Stripe's limit on unit_amount_decimal (flat_amount_decimal takes whole minor units)
_EXACT = Context(prec=60, traps=[Inexact])


@dataclass(frozen=True, slots=True)
class SyncItem:
    kind: str  # meter | product | price
    name: str
    stripe_id: str | None
    action: str  # exists | created | replaced | failed
    detail: str = ""


class UnpriceableCharge(ValueError):
    """A charge whose price Stripe cannot hold exactly."""


def sync_catalog(client: stripe.StripeClient, catalog: Catalog, namespace: str,
                 policy: RetryPolicy) -> list[SyncItem]:
    """Find or create everything; one item per object. Raises stripe.StripeError only for a refused key."""
    items: list[SyncItem] = []
    meter_ids = _sync_meters(client, catalog, policy, items)
    for tier, plan in catalog.plans.items():
        for charge in plan.charges:
            name = object_name(namespace, tier, charge.name)
            product_id = _guard(items, "product", name, _sync_product, client, name, tier, charge, policy)
            meter_id = meter_ids.get(charge.stripe_meter)
            if product_id is None:
                continue
            if meter_id is None:
                items.append(SyncItem("price", name, None, "failed", f"no usable meter {charge.stripe_meter!r}"))
                continue
            _guard(items, "price", name, _sync_price, client, name, product_id, meter_id, tier, catalog.currency,
                   charge, policy)
    return items


def object_name(namespace: str, tier: str, charge: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{namespace}_{tier}_{charge}")


def price_terms(currency: Currency, charge: Charge) -> dict[str, Any]:
    """The price parameters that carry `charge`'s schedule (see the module docstring)."""
    minor = Decimal(10) ** currency.minor_units
    where = f"charge {charge.name!r}"
    match charge.schedule:
        case Flat(unit_price, per):
            return {"billing_scheme": "per_unit", "unit_amount_decimal": _decimal(unit_price * minor / per, where)}
        case Package(size, price):
            return {"billing_scheme": "per_unit", "unit_amount_decimal": _decimal(price * minor, where),
                    "transform_quantity": {"divide_by": size, "round": "up"}}
        case Graduated(tiers, per) | Volume(tiers, per):
            mode = "graduated" if isinstance(charge.schedule, Graduated) else "volume"
            return {"billing_scheme": "tiered", "tiers_mode": mode, "tiers": [
                {"up_to": "inf" if tier.up_to is None else tier.up_to,
                 "unit_amount_decimal": _decimal(tier.unit_price * minor / per, where),
                 "flat_amount_decimal": _whole(tier.flat_fee * minor, f"{where}, tier {i + 1} flat_fee")}
                for i, tier in enumerate(tiers)]}
    raise TypeError(f"unknown schedule {charge.schedule!r}")


def _decimal(amount: Decimal, where: str) -> str:
    with localcontext(_EXACT):
        exact = amount.normalize()
    if exact.as_tuple().exponent < -MAX_DECIMALS:  # type: ignore[operator]
        raise UnpriceableCharge(f"{where}: {exact} minor units needs more than {MAX_DECIMALS} decimals")
    return format(exact, "f")


def _whole(amount: Decimal, where: str) -> str:
    """A whole number of minor units, as flat_amount_decimal takes it."""
    if amount != amount.to_integral_value():
        raise UnpriceableCharge(f"{where}: {amount.normalize()} minor units is not a whole number; "
                                "Stripe's flat_amount_decimal takes whole minor units")
    return _decimal(amount, where)


def _guard(items: list[SyncItem], kind: str, name: str, step: Callable[..., SyncItem], *args: Any) -> str | None:
    """One find-or-create step; a refusal becomes a failed item (a refused key stops everything).
    Returns the object's id, None if it failed.

    Creates are retried like any call. A retry after a lost reply may try to create twice: the
    second meter (same event_name), product (same id) or price (same lookup key) is refused, and
    the next sync finds the first."""
    try:
        item = step(*args)
    except stripe.StripeError as error:
        if classify(error) is Kind.FATAL:
            raise
        item = SyncItem(kind, name, None, "failed", describe(error))
    except UnpriceableCharge as error:
        item = SyncItem(kind, name, None, "failed", str(error))
    items.append(item)
    return item.stripe_id if item.action != "failed" else None


def _sync_meters(client: stripe.StripeClient, catalog: Catalog, policy: RetryPolicy,
                 items: list[SyncItem]) -> dict[str, str]:
    """event_name -> meter id, for the meters prices may use."""
    wanted: dict[str, str] = {}
    for plan in catalog.plans.values():
        for charge in plan.charges:
            wanted.setdefault(charge.stripe_meter, charge.meter)
    listing = with_retries(policy, lambda attempt: client.v1.billing.meters.list(
        params={"status": "active", "limit": 100}))
    existing = {meter.event_name: meter for meter in listing.auto_paging_iter()}
    ids: dict[str, str] = {}
    for event_name, meter in wanted.items():
        found = existing.get(event_name)
        if found is None:
            meter_id = _guard(items, "meter", event_name, _create_meter, client, event_name, meter, policy)
        else:
            mismatch = _meter_mismatch(found)
            items.append(SyncItem("meter", event_name, found.id, "failed" if mismatch else "exists", mismatch))
            meter_id = None if mismatch else found.id
        if meter_id:
            ids[event_name] = meter_id
    return ids


def _create_meter(client: stripe.StripeClient, event_name: str, meter: str, policy: RetryPolicy) -> SyncItem:
    created = with_retries(policy, lambda attempt: client.v1.billing.meters.create(params={
        "display_name": f"Meterline {meter}",
        "event_name": event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }))
    return SyncItem("meter", event_name, created.id, "created")


def _meter_mismatch(meter: Any) -> str:
    """Why an existing meter cannot take Meterline's events ('' when it can)."""
    problems = []
    if meter.default_aggregation.formula != "sum":
        problems.append(f"aggregates by {meter.default_aggregation.formula}, Meterline sends deltas to sum")
    if meter.customer_mapping.event_payload_key != "stripe_customer_id":
        problems.append(f"reads the customer from payload[{meter.customer_mapping.event_payload_key}]")
    if meter.value_settings.event_payload_key != "value":
        problems.append(f"reads the value from payload[{meter.value_settings.event_payload_key}]")
    return "; ".join(problems)


def _sync_product(client: stripe.StripeClient, name: str, tier: str, charge: Charge, policy: RetryPolicy) -> SyncItem:
    try:
        found = with_retries(policy, lambda attempt: client.v1.products.retrieve(name))
        return SyncItem("product", name, found.id, "exists")
    except stripe.InvalidRequestError as error:
        if error.code != "resource_missing":
            raise
    created = with_retries(policy, lambda attempt: client.v1.products.create(params={
        "id": name, "name": f"{tier}: {charge.name}",
        "metadata": {"meterline_plan": tier, "meterline_charge": charge.name, "meterline_meter": charge.meter},
    }))
    return SyncItem("product", name, created.id, "created")


def _sync_price(client: stripe.StripeClient, name: str, product_id: str, meter_id: str, tier: str, currency: Currency,
                charge: Charge, policy: RetryPolicy) -> SyncItem:
    params: dict[str, Any] = {
        "product": product_id, "currency": currency.code, "nickname": charge.name, "lookup_key": name,
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
        "metadata": {"meterline_plan": tier, "meterline_charge": charge.name},
        **price_terms(currency, charge),
    }
    listing = with_retries(policy, lambda attempt: client.v1.prices.list(
        params={"lookup_keys": [name], "expand": ["data.tiers"], "limit": 1}))
    found = listing.data[0] if listing.data else None
    if found is not None and _terms(found.to_dict()) == _terms(params):
        return SyncItem("price", name, found.id, "exists")
    if found is not None:
        params["transfer_lookup_key"] = True
    created = with_retries(policy, lambda attempt: client.v1.prices.create(params=cast("PriceCreateParams", params)))
    if found is None:
        return SyncItem("price", name, created.id, "created")
    return SyncItem("price", name, created.id, "replaced",
                    f"terms changed: move subscriptions from {found.id} to {created.id}")


def _terms(price: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two prices bill the same, from a Price object or create params alike."""
    def number(value: Any) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    recurring = price.get("recurring") or {}
    transform = price.get("transform_quantity")
    tiers = tuple((None if t.get("up_to") in (None, "inf") else int(t["up_to"]), number(t.get("unit_amount_decimal")),
                   number(t.get("flat_amount_decimal")) or Decimal(0)) for t in price.get("tiers") or ())
    return (price.get("currency"), recurring.get("interval"), recurring.get("usage_type"), recurring.get("meter"),
            price.get("billing_scheme", "per_unit"),
            number(price.get("unit_amount_decimal")) if not tiers else None,
            (int(transform["divide_by"]), transform["round"]) if transform else None,
            price.get("tiers_mode"), tiers)

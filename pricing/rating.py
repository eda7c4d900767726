"""Rating: a plan and one period's usage in, invoice lines out. Pure arithmetic, no I/O.

Rounding rule (the only place money is rounded):
1. Each charge line is computed EXACTLY in Decimal (no binary floats, and a context that traps
   any inexact result, so nothing is rounded silently along the way).
2. Each line is then rounded once, half-up (half away from zero; amounts are never negative), to
   the currency's minor unit: 0.005 USD -> 0.01, 0.004999 USD -> 0.00, 0.5 JPY -> 1.
3. subtotal = sum of the rounded lines; minimum_adjustment = max(0, minimum - subtotal);
   total = subtotal + minimum_adjustment. So the lines of an invoice always add up to its total,
   at the cost of at most half a minor unit of difference per line against the unrounded sum.

Quantities are ints in the meter's raw units. A line's billable quantity is its quantity minus
what the charge includes (fixed allowance plus any per-agent entitlement), never below zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import (ROUND_HALF_UP, Context, Decimal, DivisionByZero, Inexact, InvalidOperation,
                     Overflow, localcontext)

from pricing.catalog import METERS, Charge, Currency, Flat, Graduated, Package, Plan, Schedule, Tier, Volume

# Wide enough for any realistic quantity x price; Inexact is trapped, so a result that would need
# rounding raises instead of being rounded. (Prices are finite decimals and `per` a power of ten.)
_EXACT = Context(prec=120, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])
_ROUND = Context(prec=120, rounding=ROUND_HALF_UP, traps=[InvalidOperation, Overflow])


@dataclass(frozen=True, slots=True)
class ChargeLine:
    charge: str
    model: str
    meter: str
    quantity: int
    billable_quantity: int
    amount: Decimal  # rounded to the currency's minor unit


@dataclass(frozen=True, slots=True)
class Rating:
    plan: str
    currency: str
    lines: tuple[ChargeLine, ...]
    subtotal: Decimal
    minimum_adjustment: Decimal
    total: Decimal


def rate(plan: Plan, usage: Mapping[str, int]) -> Rating:
    """Price one period's usage (meter name -> int; absent meters count as 0) under `plan`."""
    _check_usage(usage)
    lines = tuple(_line(charge, usage, plan.currency) for charge in plan.charges)
    with localcontext(_EXACT):
        subtotal = sum((line.amount for line in lines), Decimal(0))
        adjustment = max(Decimal(0), plan.minimum - subtotal)
        total = subtotal + adjustment
    return Rating(plan.name, plan.currency.code, lines, subtotal, adjustment, total)


def billable_quantity(charge: Charge, usage: Mapping[str, int]) -> int:
    return max(0, usage.get(charge.meter, 0) - charge.included_for(usage))


def exact_amount(schedule: Schedule, billable: int) -> Decimal:
    """The unrounded price of `billable` units under `schedule`."""
    if billable < 0:
        raise ValueError(f"billable quantity must not be negative, got {billable}")
    with localcontext(_EXACT):
        match schedule:
            case Flat(unit_price, per):
                return billable * unit_price / per
            case Graduated(tiers, per):
                return _graduated(tiers, per, billable)
            case Volume(tiers, per):
                if billable == 0:
                    return Decimal(0)
                tier = next(t for t in tiers if t.up_to is None or billable <= t.up_to)
                return billable * tier.unit_price / per + tier.flat_fee
            case Package(size, price):
                return -(-billable // size) * price
    raise TypeError(f"unknown schedule {schedule!r}")


def round_amount(amount: Decimal, currency: Currency) -> Decimal:
    """Half-up to the currency's minor unit (the rule in the module docstring)."""
    return amount.quantize(currency.quantum, context=_ROUND)


def _graduated(tiers: tuple[Tier, ...], per: int, billable: int) -> Decimal:
    total = Decimal(0)
    floor = 0  # units already priced by lower tiers
    for tier in tiers:
        ceiling = billable if tier.up_to is None else min(billable, tier.up_to)
        units = ceiling - floor
        if units <= 0:
            break
        total += units * tier.unit_price / per + tier.flat_fee
        floor = ceiling
    return total


def _line(charge: Charge, usage: Mapping[str, int], currency: Currency) -> ChargeLine:
    billable = billable_quantity(charge, usage)
    amount = round_amount(exact_amount(charge.schedule, billable), currency)
    return ChargeLine(charge.name, charge.model, charge.meter, usage.get(charge.meter, 0), billable, amount)


def _check_usage(usage: Mapping[str, int]) -> None:
    for meter, value in usage.items():
        if meter not in METERS:
            raise ValueError(f"unknown meter {meter!r}; meters: {', '.join(METERS)}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"meter {meter!r}: expected an int quantity, got {type(value).__name__} {value!r}")
        if value < 0:
            raise ValueError(f"meter {meter!r}: quantity must not be negative, got {value}")

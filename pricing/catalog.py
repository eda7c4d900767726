"""The plan catalog: what each tier pays for, read from TOML and validated before anything is rated.

Format (the shipped catalog is `pricing/plans.toml`; `load_catalog` refuses anything else)::

    currency = "usd"                      # ISO 4217 code; its minor unit drives rounding

    [plans.premium]                       # one plan per tier
    minimum = "500.00"                    # optional monthly floor, a decimal string
    [[plans.premium.charges]]
    name = "agents"
    model = "activity_fixed"              # activity_fixed | activity_variable | outcome_fixed | outcome_variable
    meter = "active_agents"               # one of METERS
    schedule = "flat"                     # flat | graduated | volume | package
    unit_price = "99.00"                  # price of `per` units (per = 1 by default)
    stripe_meter = "meterline_active_agents"
    [[plans.premium.charges]]
    name = "invocation_overage"
    model = "activity_fixed"
    meter = "agent_invocations"
    schedule = "flat"
    unit_price = "0.04"
    included_per = { meter = "active_agents", quantity = 2_000 }   # entitlement: 2,000 per active agent
    stripe_meter = "meterline_agent_invocations"

    [models.premium.outcome_fixed]        # finance's what-if: the same tier under each pricing model
    [[models.premium.outcome_fixed.charges]]
    ...

Charge fields by schedule (any other field is refused, so a typo cannot silently price at zero):
- flat: `unit_price`, `per`. Amount = billable x unit_price / per.
- graduated: `tiers`, `per`. Each unit is priced at the rate of the tier it falls in; a tier's
  optional `flat_fee` is charged once when at least one billable unit falls in it.
- volume: `tiers`, `per`. Every unit is priced at the rate of the tier the whole billable quantity
  falls in, plus that tier's `flat_fee`; nothing is charged for zero billable units.
- package: `package_size`, `package_price`. A started package is a whole package (rounds up).
Tiers are `[{ up_to = N, unit_price = "...", flat_fee = "..." }, ..., { unit_price = "..." }]`:
`up_to` is inclusive, strictly increasing, and absent on the last tier, which prices the rest.

All quantities (`included`, `included_per.quantity`, `up_to`, `package_size`) are in the meter's
raw units (tokens, calls, agents); `per` (1, 1000, 1000000: any power of ten) only divides prices,
so "$3 per 1M input tokens" is `unit_price = "3.00"`, `per = 1_000_000`. Tiers and schedules apply
to the billable quantity: quantity minus `included` minus `included_per.quantity` x the usage of
`included_per.meter`, never below zero.

Money is exact: prices and the minimum are decimal STRINGS parsed with `Decimal`. A TOML float such
as `0.002` is a binary float and is refused, as is an integer where a price is expected.

Stripe: `stripe_meter` is the Billing Meter `event_name` this charge's usage is reported to, unique
within a plan. Meter event values must be whole numbers, so Meterline reports raw meter units (a
token count, not "0.0013 million tokens") and the Stripe price carries the unit: for flat and
tiered per-1M charges use `unit_amount_decimal` = unit_price / per in minor units (e.g. $3 per 1M
tokens = "0.0003" cents per token), which prices pro rata exactly like `rating.rate`; do NOT use
`transform_quantity` there, because it rounds the quantity to whole millions. `transform_quantity`
(divide_by = package_size, round = up) is the exact Stripe twin of the `package` schedule.
Entitlements that depend on another meter (`included_per`) cannot be expressed in a Stripe price:
such a charge reports its `billable_quantity` from the period's rating, not raw events.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from metering.meters import METERS  # the meters a charge can rate

DEFAULT_PATH = Path(__file__).with_name("plans.toml")

MODELS: tuple[str, ...] = ("activity_fixed", "activity_variable", "outcome_fixed", "outcome_variable")
SCHEDULES: tuple[str, ...] = ("flat", "graduated", "volume", "package")

# Outcome models rate their outcome and nothing else; activity models rate any activity meter.
_OUTCOME_METER = {"outcome_fixed": "workflows_completed", "outcome_variable": "agent_outcomes_succeeded"}
_ACTIVITY_METERS = tuple(m for m in METERS if m not in _OUTCOME_METER.values())
METERS_BY_MODEL: Mapping[str, tuple[str, ...]] = {
    "activity_fixed": _ACTIVITY_METERS,
    "activity_variable": _ACTIVITY_METERS,
    **{model: (meter,) for model, meter in _OUTCOME_METER.items()},
}

# ISO 4217 minor units (digits after the decimal point) of the currencies a catalog may use.
MINOR_UNITS: Mapping[str, int] = {
    "usd": 2, "eur": 2, "gbp": 2, "chf": 2, "cad": 2, "aud": 2, "nzd": 2, "sek": 2, "nok": 2,
    "dkk": 2, "pln": 2, "inr": 2, "brl": 2, "mxn": 2, "sgd": 2, "hkd": 2,
    "jpy": 0, "krw": 0, "clp": 0, "vnd": 0, "isk": 0,
}

_DECIMAL = re.compile(r"[+-]?\d+(\.\d+)?")
_COMMON_FIELDS = {"name", "description", "model", "meter", "schedule", "stripe_meter", "included", "included_per"}
_SCHEDULE_FIELDS = {
    "flat": {"unit_price", "per"},
    "graduated": {"tiers", "per"},
    "volume": {"tiers", "per"},
    "package": {"package_size", "package_price"},
}


class CatalogError(ValueError):
    """The catalog is invalid; the message names the plan, the charge and the field."""


class UnknownTier(KeyError):
    """No plan (or no reference plans) for the asked tier."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    minor_units: int

    @property
    def quantum(self) -> Decimal:
        """The smallest invoiceable amount: Decimal("0.01") for usd, Decimal("1") for jpy."""
        return Decimal(1).scaleb(-self.minor_units)


@dataclass(frozen=True, slots=True)
class Tier:
    up_to: int | None  # inclusive upper bound in raw units; None on the last tier
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Flat:
    unit_price: Decimal
    per: int = 1


@dataclass(frozen=True, slots=True)
class Graduated:
    tiers: tuple[Tier, ...]
    per: int = 1


@dataclass(frozen=True, slots=True)
class Volume:
    tiers: tuple[Tier, ...]
    per: int = 1


@dataclass(frozen=True, slots=True)
class Package:
    size: int
    price: Decimal


Schedule = Flat | Graduated | Volume | Package


@dataclass(frozen=True, slots=True)
class Entitlement:
    """`quantity` units included for every unit of `meter` used, e.g. 2,000 invocations per active agent."""

    meter: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Charge:
    name: str
    model: str
    meter: str
    schedule: Schedule
    stripe_meter: str
    included: int = 0
    included_per: Entitlement | None = None

    def included_for(self, usage: Mapping[str, int]) -> int:
        """Units of `meter` included for this usage: the fixed allowance plus the entitlement."""
        per = self.included_per
        return self.included + (per.quantity * usage.get(per.meter, 0) if per else 0)


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    currency: Currency
    charges: tuple[Charge, ...]
    minimum: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Catalog:
    currency: Currency
    plans: Mapping[str, Plan]
    reference_plans: Mapping[str, Mapping[str, Plan]]  # tier -> pricing model -> plan

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(self.plans)

    def plan_for(self, tier: str) -> Plan:
        try:
            return self.plans[tier]
        except KeyError:
            raise UnknownTier(f"no plan for tier {tier!r}; tiers: {', '.join(self.plans)}") from None

    def model_plans(self, tier: str) -> dict[str, Plan]:
        """The tier's reference plan under each pricing model, keyed by model name (MODELS order)."""
        self.plan_for(tier)
        if tier not in self.reference_plans:
            raise UnknownTier(f"no reference plans ([models.{tier}]) for tier {tier!r}")
        return dict(self.reference_plans[tier])


def load_catalog(path: str | Path = DEFAULT_PATH) -> Catalog:
    """Read and validate a catalog file; raises CatalogError naming what is wrong and where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    return parse_catalog(data)


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Validate an already-parsed TOML document (what `tomllib.loads` returns)."""
    _refuse_unknown(data, {"currency", "plans", "models"}, "catalog")
    code = _required(data, "currency", "catalog")
    if not isinstance(code, str) or code.lower() not in MINOR_UNITS:
        raise CatalogError(
            f"catalog: field 'currency': expected one of {', '.join(MINOR_UNITS)}, got {code!r}"
        )
    currency = Currency(code.lower(), MINOR_UNITS[code.lower()])

    plans_table = _table(_required(data, "plans", "catalog"), "catalog: field 'plans'")
    if not plans_table:
        raise CatalogError("catalog: field 'plans': expected at least one plan")
    plans = {tier: _plan(tier, body, currency, None) for tier, body in plans_table.items()}

    reference: dict[str, dict[str, Plan]] = {}
    for tier, by_model in _table(data.get("models", {}), "catalog: field 'models'").items():
        where = f"catalog: table 'models.{tier}'"
        if tier not in plans:
            raise CatalogError(f"{where}: unknown tier {tier!r}; tiers: {', '.join(plans)}")
        by_model = _table(by_model, where)
        _refuse_unknown(by_model, set(MODELS), where)
        missing = [m for m in MODELS if m not in by_model]
        if missing:
            raise CatalogError(f"{where}: missing reference plan(s) for {', '.join(missing)}")
        reference[tier] = {
            model: _plan(f"models.{tier}.{model}", by_model[model], currency, model) for model in MODELS
        }
    return Catalog(
        currency,
        MappingProxyType(plans),
        MappingProxyType({tier: MappingProxyType(by_model) for tier, by_model in reference.items()}),
    )


def _plan(name: str, body: Any, currency: Currency, only_model: str | None) -> Plan:
    where = f"plan {name!r}"
    body = _table(body, where)
    _refuse_unknown(body, {"description", "minimum", "charges"}, where)
    minimum = _money(body, "minimum", where, default=Decimal(0))
    if minimum.quantize(currency.quantum) != minimum:
        raise CatalogError(
            f"{where}: field 'minimum': {currency.code} has {currency.minor_units} decimal places, got {minimum}"
        )
    raw = _required(body, "charges", where)
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{where}: field 'charges': expected at least one [[charges]] table")
    charges = tuple(_charge(where, i, c) for i, c in enumerate(raw, start=1))
    for attr in ("name", "stripe_meter"):
        seen: set[str] = set()
        for c in charges:
            value = getattr(c, attr)
            if value in seen:
                raise CatalogError(f"{where}, charge {c.name!r}: field {attr!r}: {value!r} is used twice in this plan")
            seen.add(value)
    if only_model is not None:
        for c in charges:
            if c.model != only_model:
                raise CatalogError(
                    f"{where}, charge {c.name!r}: field 'model': a {only_model} reference plan holds "
                    f"only {only_model} charges, got {c.model!r}"
                )
    return Plan(name, currency, charges, minimum)


def _charge(plan_where: str, index: int, body: Any) -> Charge:
    body = _table(body, f"{plan_where}, charge #{index}")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"{plan_where}, charge #{index}: field 'name': expected a non-empty string, got {name!r}")
    where = f"{plan_where}, charge {name!r}"

    model = _choice(body, "model", MODELS, where)
    meter = _choice(body, "meter", METERS, where)
    if meter not in METERS_BY_MODEL[model]:
        raise CatalogError(
            f"{where}: field 'meter': a {model} charge rates {', '.join(METERS_BY_MODEL[model])}, got {meter!r}"
        )
    kind = _choice(body, "schedule", SCHEDULES, where)
    _refuse_unknown(body, _COMMON_FIELDS | _SCHEDULE_FIELDS[kind], where)

    stripe_meter = _required(body, "stripe_meter", where)
    if not isinstance(stripe_meter, str) or not stripe_meter or any(ch.isspace() for ch in stripe_meter):
        raise CatalogError(
            f"{where}: field 'stripe_meter': expected a Stripe meter event_name without spaces, got {stripe_meter!r}"
        )

    included = _count(body, "included", where, default=0)
    included_per = None
    if "included_per" in body:
        entitlement = _table(body["included_per"], f"{where}: field 'included_per'")
        _refuse_unknown(entitlement, {"meter", "quantity"}, where, prefix="included_per.")
        per_meter = _choice(entitlement, "meter", METERS, where, prefix="included_per.")
        if per_meter == meter:
            raise CatalogError(
                f"{where}: field 'included_per.meter': must differ from the charge's own meter (use 'included')"
            )
        included_per = Entitlement(per_meter, _count(entitlement, "quantity", where, prefix="included_per."))

    schedule: Schedule
    if kind == "flat":
        schedule = Flat(_money(body, "unit_price", where), _per(body, where))
    elif kind == "package":
        size = _count(body, "package_size", where)
        if size == 0:
            raise CatalogError(f"{where}: field 'package_size': expected a positive integer, got 0")
        schedule = Package(size, _money(body, "package_price", where))
    elif kind == "graduated":
        schedule = Graduated(_tiers(body, where), _per(body, where))
    else:
        schedule = Volume(_tiers(body, where), _per(body, where))
    return Charge(name, model, meter, schedule, stripe_meter, included, included_per)


def _tiers(body: Mapping[str, Any], where: str) -> tuple[Tier, ...]:
    raw = _required(body, "tiers", where)
    if not isinstance(raw, list) or not raw:
        raise CatalogError(f"{where}: field 'tiers': expected a non-empty array of tier tables")
    tiers: list[Tier] = []
    previous = 0
    for i, tier in enumerate(raw):
        prefix = f"tiers[{i}]."
        tier = _table(tier, f"{where}: field 'tiers[{i}]'")
        _refuse_unknown(tier, {"up_to", "unit_price", "flat_fee"}, where, prefix=prefix)
        up_to: int | None = None
        if i == len(raw) - 1:
            if "up_to" in tier:
                raise CatalogError(
                    f"{where}: field '{prefix}up_to': the last tier must have no up_to "
                    "(it prices every unit above the previous tier)"
                )
        else:
            up_to = _count(tier, "up_to", where, prefix=prefix)
            if up_to <= previous:
                raise CatalogError(
                    f"{where}: field '{prefix}up_to': tiers must be strictly increasing, got {up_to} after {previous}"
                )
            previous = up_to
        tiers.append(Tier(
            up_to,
            _money(tier, "unit_price", where, prefix=prefix),
            _money(tier, "flat_fee", where, prefix=prefix, default=Decimal(0)),
        ))
    return tuple(tiers)


def _per(body: Mapping[str, Any], where: str) -> int:
    per = _count(body, "per", where, default=1)
    if per < 1 or 10 ** (len(str(per)) - 1) != per:
        raise CatalogError(f"{where}: field 'per': expected a power of ten such as 1, 1000 or 1000000, got {per}")
    return per


def _money(body: Mapping[str, Any], key: str, where: str, *, prefix: str = "",
           default: Decimal | None = None) -> Decimal:
    value = _required(body, key, where, prefix=prefix) if default is None else body.get(key)
    if value is None:
        return default  # type: ignore[return-value]
    field = f"{where}: field '{prefix}{key}'"
    if not isinstance(value, str):
        raise CatalogError(f'{field}: expected a decimal string like "0.002", got {type(value).__name__} {value!r}')
    if not _DECIMAL.fullmatch(value.strip()):
        raise CatalogError(f'{field}: expected a decimal string like "0.002", got {value!r}')
    amount = Decimal(value.strip())
    if amount < 0:
        raise CatalogError(f"{field}: must not be negative, got {value!r}")
    return amount.copy_abs()  # exact, and turns "-0" into 0


def _count(body: Mapping[str, Any], key: str, where: str, *, prefix: str = "", default: int | None = None) -> int:
    value = _required(body, key, where, prefix=prefix) if default is None else body.get(key, default)
    field = f"{where}: field '{prefix}{key}'"
    if isinstance(value, bool) or not isinstance(value, int):
        raise CatalogError(f"{field}: expected an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise CatalogError(f"{field}: must not be negative, got {value}")
    return value


def _choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str, *, prefix: str = "") -> str:
    value = _required(body, key, where, prefix=prefix)
    if value not in allowed:
        raise CatalogError(f"{where}: field '{prefix}{key}': expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _required(body: Mapping[str, Any], key: str, where: str, *, prefix: str = "") -> Any:
    if key not in body:
        raise CatalogError(f"{where}: field '{prefix}{key}': missing")
    return body[key]


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
    return value


def _refuse_unknown(body: Mapping[str, Any], allowed: set[str], where: str, *, prefix: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise CatalogError(
            f"{where}: field '{prefix}{unknown[0]}': unknown field; expected one of {', '.join(sorted(allowed))}"
        )

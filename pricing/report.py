"""The period report finance reads: each tenant's usage, LLM cost, charges under its plan, margin.

It joins metering (what was used) with the catalog (what it costs the tenant). The shape of
`usage_report()` is the public JSON of `meterline usage --format json` and `GET /v1/usage`:

    {"period", "currency", "tenants": [{"tenant_id", "tier", "usage": {meter: int},
      "llm_cost", "charges": [{"charge", "model", "quantity", "amount", ...}], "total", "margin", ...}]}

Amounts are decimal strings in the currency's major unit. LLM cost (USD, from the model price
table) is rounded half-up to the currency's minor unit once, per tenant; margin = total - llm_cost.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from enrich.tenants import list_tenants
from metering.llm_cost import PriceTable
from metering.meters import METERS, Meterer, Period
from meterline.config import Config
from meterline.store import Store
from pricing.catalog import DEFAULT_PATH, MODELS, Catalog, CatalogError, Plan, UnknownTier, load_catalog
from meterline.output import table, to_csv
from pricing.rating import Rating, rate, round_amount


def _money(amount: Decimal) -> str:
    return f"{amount:f}"


def _tenant_rows(meterer: Meterer, period: Period, tenant: str | None) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(tenant_id, tier, meters) for every registered tenant (zeros if idle) and any other with usage."""
    measured = {row["tenant_id"]: row for row in meterer.usage(period, tenant=tenant)}
    registered = {t.tenant_id: t.tier for t in list_tenants(meterer.store, tenant)}
    empty = {meter: 0 for meter in METERS} | {"llm_cost": Decimal(0), "unpriced_llm_calls": 0}
    return [(tenant_id, registered.get(tenant_id), measured.get(tenant_id, empty))
            for tenant_id in sorted(set(measured) | set(registered))]


def _rated(plan: Plan, usage: dict[str, int], llm_cost: Decimal) -> tuple[Rating, Decimal]:
    rating = rate(plan, usage)
    return rating, rating.total - llm_cost


def _charges(rating: Rating) -> list[dict[str, Any]]:
    return [
        {"charge": line.charge, "model": line.model, "quantity": line.quantity, "amount": _money(line.amount),
         "meter": line.meter, "billable_quantity": line.billable_quantity}
        for line in rating.lines
    ]


LLM_COST_CURRENCY = "usd"  # metering/model_prices.json is in USD
FINANCE_ONLY = ("llm_cost", "unpriced_llm_calls", "margin", "models")  # not for the tenant's own eyes


def usage_report(meterer: Meterer, catalog: Catalog, period: Period, tenant: str | None = None,
                 compare_models: bool = False) -> dict[str, Any]:
    currency = catalog.currency
    if currency.code != LLM_COST_CURRENCY:
        raise CatalogError(f"catalog: field 'currency': margins subtract LLM cost, which the model price table "
                           f"gives in USD; a {currency.code.upper()} catalog would mix currencies (use usd)")
    tenants = []
    for tenant_id, tier, measured in _tenant_rows(meterer, period, tenant):
        usage = {meter: measured[meter] for meter in METERS}
        llm_cost = round_amount(measured["llm_cost"], currency)
        entry: dict[str, Any] = {"tenant_id": tenant_id, "tier": tier, "usage": usage, "llm_cost": _money(llm_cost),
                                 "unpriced_llm_calls": measured["unpriced_llm_calls"]}
        try:
            plan = catalog.plan_for(tier) if tier else None
        except UnknownTier as exc:
            plan, entry["error"] = None, str(exc)
        if plan is None:
            entry.setdefault("error", "tenant is not registered: no tier, no plan")
            entry.update(charges=[], subtotal="0", minimum_adjustment="0", total="0", margin=_money(-llm_cost))
        else:
            rating, margin = _rated(plan, usage, llm_cost)
            entry.update(plan=rating.plan, charges=_charges(rating), subtotal=_money(rating.subtotal),
                         minimum_adjustment=_money(rating.minimum_adjustment), total=_money(rating.total),
                         margin=_money(margin))
            if compare_models:
                entry["models"] = _compare(catalog, tier, plan, usage, llm_cost)
        tenants.append(entry)
    return {"period": period.label, "start": period.start.isoformat() + "Z", "end": period.end.isoformat() + "Z",
            "currency": currency.code, "tenants": tenants}


def tenant_view(report: dict[str, Any]) -> dict[str, Any]:
    """The report as a tenant may see it: its usage, charges and total, not our costs or margins."""
    return {**report, "tenants": [{key: value for key, value in entry.items() if key not in FINANCE_ONLY}
                                  for entry in report["tenants"]]}


def _compare(catalog: Catalog, tier: str, plan: Plan, usage: dict[str, int], llm_cost: Decimal) -> dict[str, Any]:
    """What the same usage would pay under each pricing model's reference plan, and the actual plan."""
    plans = {"actual": plan} | {model: p for model, p in catalog.model_plans(tier).items() if model in MODELS}
    compared = {}
    for name, candidate in plans.items():
        rating, margin = _rated(candidate, usage, llm_cost)
        compared[name] = {"plan": rating.plan, "total": _money(rating.total), "margin": _money(margin),
                          "charges": _charges(rating)}
    return compared



def build_meterer(store: Store, config: Config) -> Meterer:
    """The Meterer a command uses: the store, the shipped price table, the config's workflow roots."""
    return Meterer(store, PriceTable.load(), tuple(config.metering.workflow_root_spans))


def catalog_for(config: Config) -> Catalog:
    return load_catalog(config.pricing.catalog or DEFAULT_PATH)


_TABLE_METERS = ("input_tokens", "output_tokens", "llm_calls", "agent_invocations", "tool_calls", "active_agents",
                 "workflows_completed", "agent_outcomes_succeeded")


def render_table(report: dict[str, Any]) -> str:
    """The human view: one line per tenant, and with --compare-models one column pair per model."""
    tenants = report["tenants"]
    models = next((list(t["models"]) for t in tenants if "models" in t), None)
    if models:
        columns = [(name, key) for name in models for key in ("total", "margin")]
        headers = ["tenant", "tier", "llm_cost"] + [f"{name} {key}" for name, key in columns]
        body = [[t["tenant_id"], t["tier"], t["llm_cost"]]
                + [t["models"][name][key] if "models" in t else "" for name, key in columns] for t in tenants]
        body.append(["TOTAL", "", _sum(t["llm_cost"] for t in tenants)]
                    + [_sum(t["models"][name][key] for t in tenants if "models" in t) for name, key in columns])
    else:
        headers = ["tenant", "tier", *_TABLE_METERS, "llm_cost", "total", "margin"]
        body = [[t["tenant_id"], t["tier"], *(t["usage"][m] for m in _TABLE_METERS), t["llm_cost"], t["total"],
                 t["margin"]] for t in tenants]
        body.append(["TOTAL", "", *([""] * len(_TABLE_METERS)),
                     *(_sum(t[key] for t in tenants) for key in ("llm_cost", "total", "margin"))])
    title = f"usage {report['period']} ({report['currency'].upper()})"
    return f"{title}\n" + table(body, headers, right_align=range(2, len(headers)))


def _sum(amounts: Iterable[str]) -> str:
    return _money(sum((Decimal(amount) for amount in amounts), Decimal(0)))


def render_csv(report: dict[str, Any]) -> str:
    """One row per tenant: meters, cost, each charge's amount, total, margin."""
    charge_names = sorted({c["charge"] for t in report["tenants"] for c in t["charges"]})
    headers = ["period", "currency", "tenant_id", "tier", *METERS, "llm_cost",
               *(f"charge:{name}" for name in charge_names), "minimum_adjustment", "total", "margin"]
    body = []
    for t in report["tenants"]:
        amounts = {c["charge"]: c["amount"] for c in t["charges"]}
        body.append([report["period"], report["currency"], t["tenant_id"], t["tier"] or "",
                     *(t["usage"][m] for m in METERS), t["llm_cost"], *(amounts.get(n, "") for n in charge_names),
                     t["minimum_adjustment"], t["total"], t["margin"]])
    return to_csv(body, headers)

"""The dashboards' tables: rows from dashboards.data shaped into display frames, nothing drawn.

Money stays Decimal (an exact decimal column in Arrow; the grid formats it); floats appear only
in ratios and in series meant for plotting.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from metering.meters import METERS, Period
from meterline.output import to_csv
from pricing.catalog import MODELS

NONE = "(none)"
PLANS = ("actual", *MODELS)
PLAN_LABELS = {
    "actual": "Actual plan",
    "activity_fixed": "Activity x fixed (per agent)",
    "activity_variable": "Activity x variable (consumption)",
    "outcome_fixed": "Outcome x fixed (per workflow)",
    "outcome_variable": "Outcome x variable (per outcome)",
}
# Meters that add up across days and features, so a daily trend of them is meaningful.
TREND_METERS = ("llm_cost", "llm_calls", "agent_invocations", "tool_calls", "input_tokens", "output_tokens",
                "workflows_completed", "agent_outcomes_succeeded")
TENANT_COLUMNS = ("tenant_id", "tier", "plan", "total", "llm_cost", "margin", "margin_rate", "success_rate", "trend",
                  *METERS, "unpriced_llm_calls", "note")
_CSV_SKIP = ("trend",)
_MICRO = Decimal("0.000001")


def success_rate(usage: dict[str, int]) -> float | None:
    """Agent outcomes succeeded / agent invocations; None without invocations."""
    invocations = usage["agent_invocations"]
    return usage["agent_outcomes_succeeded"] / invocations if invocations else None


def _micro(cost: Decimal) -> Decimal:
    """An exact (unrounded) LLM cost to the micro-unit, half up like the report's rounding."""
    return cost.quantize(_MICRO, rounding=ROUND_HALF_UP)


def _margin_rate(total: Decimal, margin: Decimal) -> float | None:
    return float(margin / total) if total else None


def tenant_features(daily: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """The features each tenant used in the period."""
    features: dict[str, set[str]] = defaultdict(set)
    for row in daily:
        features[row["tenant_id"]].add(row["feature"] or NONE)
    return features


def days(period: Period, today: date) -> list[date]:
    """The period's days; up to today when the period holds today (a trend has no future)."""
    first, last = period.start.date(), (period.end - timedelta(microseconds=1)).date()
    if first <= today <= last:
        last = today
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def trends(daily: Iterable[dict[str, Any]], meter: str, calendar: Sequence[date]) -> dict[str, list[float]]:
    """Per tenant, the meter's value on each day of `calendar` (for plotting)."""
    totals: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in daily:
        totals[row["tenant_id"]][row["day"].date()] += Decimal(row[meter])
    return {tenant: [float(by_day.get(day, 0)) for day in calendar] for tenant, by_day in totals.items()}


def tenant_frame(report: dict[str, Any], daily: Sequence[dict[str, Any]], trend_meter: str, calendar: Sequence[date],
                 tiers: Sequence[str] = (), features: Sequence[str] = ()) -> pd.DataFrame:
    """One row per tenant: plan, revenue (report total), LLM cost, margin, success rate, trend, meters.

    `tiers` and `features` filter (empty: no filter); a tenant passes the feature filter when it
    used any of them in the period. Sorted by margin, the tenant that loses most first.
    """
    used = tenant_features(daily)
    series = trends(daily, trend_meter, calendar)
    flat = [0.0] * len(calendar)
    records = []
    for t in report["tenants"]:
        tier = t["tier"] or NONE
        if (tiers and tier not in tiers) or (features and not used.get(t["tenant_id"], set()) & set(features)):
            continue
        total, margin = Decimal(t["total"]), Decimal(t["margin"])
        records.append({
            "tenant_id": t["tenant_id"], "tier": tier, "plan": t.get("plan"), "total": total,
            "llm_cost": Decimal(t["llm_cost"]), "margin": margin, "margin_rate": _margin_rate(total, margin),
            "success_rate": success_rate(t["usage"]), "trend": series.get(t["tenant_id"], flat),
            **t["usage"], "unpriced_llm_calls": t["unpriced_llm_calls"], "note": t.get("error"),
        })
    frame = pd.DataFrame.from_records(records, columns=list(TENANT_COLUMNS))
    return frame.sort_values(["margin", "tenant_id"], kind="stable", ignore_index=True)


def tenant_csv(frame: pd.DataFrame, report: dict[str, Any]) -> str:
    """The tenant table as CSV: exact decimal strings for money, ratios to four places."""
    columns = [c for c in frame.columns if c not in _CSV_SKIP]

    def cell(value: Any) -> Any:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "" if pd.isna(value) else value

    body = [[report["period"], report["currency"], *(cell(row[c]) for c in columns)] for _, row in frame.iterrows()]
    return to_csv(body, ["period", "currency", *columns])


def losing(frame: pd.DataFrame) -> pd.DataFrame:
    """Tenants whose LLM cost exceeds what they pay (negative margin), worst first."""
    return frame[frame["margin"] < 0]


def totals(frame: pd.DataFrame) -> dict[str, Decimal]:
    return {key: sum(frame[key], Decimal(0)) for key in ("total", "llm_cost", "margin")}


def margin_chart_frame(frame: pd.DataFrame, money: Callable[[Decimal], str]) -> pd.DataFrame:
    """Revenue, cost and margin per tenant as floats to plot, with money-formatted labels."""
    return pd.DataFrame({
        "tenant": frame["tenant_id"],
        "margin": [float(m) for m in frame["margin"]],
        "losing": frame["margin"] < 0,
        "Pays": [money(v) for v in frame["total"]],
        "LLM cost": [money(v) for v in frame["llm_cost"]],
        "Margin": [money(v) for v in frame["margin"]],
    })


def pricing_frame(report: dict[str, Any]) -> pd.DataFrame:
    """Per tenant: what it pays and the margin under its actual plan and each pricing model's plan.

    `best_model` is the reference model with the highest margin; `best_vs_actual` its margin minus
    the actual plan's (positive: that model would earn more than today's plan).
    """
    records = []
    for t in report["tenants"]:
        record: dict[str, Any] = {"tenant_id": t["tenant_id"], "tier": t["tier"] or NONE,
                                  "llm_cost": Decimal(t["llm_cost"])}
        compared = t.get("models", {})
        for name in PLANS:
            entry = compared.get(name)
            record[f"{name}_total"] = Decimal(entry["total"]) if entry else None
            record[f"{name}_margin"] = Decimal(entry["margin"]) if entry else None
        candidates = [name for name in MODELS if name in compared]
        if candidates:
            best = max(candidates, key=lambda name: (Decimal(compared[name]["margin"]), -MODELS.index(name)))
            record["best_model"] = PLAN_LABELS[best]
            record["best_vs_actual"] = Decimal(compared[best]["margin"]) - Decimal(compared["actual"]["margin"])
        else:
            record["best_model"], record["best_vs_actual"] = None, None
        records.append(record)
    return pd.DataFrame.from_records(records)


def pricing_grid(report: dict[str, Any], money: Callable[[Decimal], str]) -> pd.DataFrame:
    """Long form (tenant, plan, margin) for a heat map: float to colour, money label to read."""
    cells = [
        {"tenant": t["tenant_id"], "plan": PLAN_LABELS[name], "margin": float(Decimal(entry["margin"])),
         "label": money(Decimal(entry["margin"])), "pays": money(Decimal(entry["total"]))}
        for t in report["tenants"] for name, entry in t.get("models", {}).items()
    ]
    return pd.DataFrame(cells, columns=["tenant", "plan", "margin", "label", "pays"])


def charges_frame(entry: dict[str, Any]) -> pd.DataFrame:
    """One rated plan's charge lines."""
    return pd.DataFrame.from_records(
        [{"charge": c["charge"], "model": c["model"], "meter": c["meter"], "quantity": c["quantity"],
          "billable_quantity": c["billable_quantity"], "amount": Decimal(c["amount"])} for c in entry["charges"]],
        columns=["charge", "model", "meter", "quantity", "billable_quantity", "amount"])


def series_frame(rows: Sequence[dict[str, Any]], key: str, meter: str) -> pd.DataFrame:
    """(bucket, value) of one meter over time, value as float for plotting."""
    return pd.DataFrame({"bucket": [row[key] for row in rows], "value": [float(row[meter]) for row in rows]},
                        columns=["bucket", "value"])


def breakdown_frame(rows: Sequence[dict[str, Any]], dimension: str) -> pd.DataFrame:
    """One row per value of the dimension: its meters and LLM cost (to the micro-unit), costliest first."""
    records = [{dimension: row[dimension] or NONE, **{meter: row[meter] for meter in METERS},
                "llm_cost": _micro(row["llm_cost"]), "unpriced_llm_calls": row["unpriced_llm_calls"]}
               for row in rows]
    frame = pd.DataFrame.from_records(records, columns=[dimension, *METERS, "llm_cost", "unpriced_llm_calls"])
    return frame.sort_values(["llm_cost", "llm_calls", dimension], ascending=[False, False, True], ignore_index=True)


def outcomes_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=["agent", "outcome", "invocations"])


def traces_frame(rows: Sequence[dict[str, Any]], trace_url: str | None) -> pd.DataFrame:
    """The costliest traces, with a Langfuse link when one is configured."""
    frame = pd.DataFrame.from_records(
        [{**row, "llm_cost": _micro(row["llm_cost"])} for row in rows],
        columns=["trace_id", "started", "root_span", "spans", "llm_calls", "input_tokens", "output_tokens", "llm_cost",
                 "unpriced_llm_calls"])
    if trace_url:
        frame["langfuse"] = [trace_url.format(trace_id=trace_id) for trace_id in frame["trace_id"]]
    return frame

"""Pricing models: what each tenant pays under its actual plan and under each of the four pricing
models' reference plans (activity/outcome x fixed/variable), and the margin of each."""

from __future__ import annotations

from decimal import Decimal

import altair as alt
import streamlit as st

from dashboards import data, tables, ui

src = data.source()
period = ui.period()
report = data.report(src, period)
currency = report["currency"]
money = ui.money_formatter(currency)

st.title(f"Which pricing fits, {ui.period_title(period)}")
st.caption(
    "The same usage priced five ways: the tenant's actual plan (minimum included), and its tier's reference plan "
    "under each pricing model, which has no minimum so it shows what the model alone earns. Activity x fixed: a fee "
    "per active agent with an invocation entitlement. Activity x variable: per token and tool call. Outcome x fixed: "
    "per workflow completed. Outcome x variable: per successful agent outcome. Margin = what it pays - LLM cost.")

grid = tables.pricing_grid(report, money)
if grid.empty:
    st.info("No tenant with a plan in this period.")
    st.stop()
plans = [tables.PLAN_LABELS[name] for name in tables.PLANS]
base = alt.Chart(grid, title="Margin per tenant and pricing model").encode(
    x=alt.X("plan:N", sort=plans, title=None, axis=alt.Axis(labelAngle=0, labelLimit=220)),
    y=alt.Y("tenant:N", title=None),
)
heat = base.mark_rect().encode(
    color=alt.Color("margin:Q", title=f"Margin ({currency.upper()})",
                    scale=alt.Scale(scheme="redyellowgreen", domainMid=0)),
    tooltip=["tenant", "plan", alt.Tooltip("pays:N", title="Pays"), alt.Tooltip("label:N", title="Margin")],
)
strong = 0.6 * max(abs(grid["margin"]).max(), 0.01)  # cells dark enough to need white text
labels = base.mark_text(fontSize=12).encode(
    text="label:N", color=alt.condition(f"abs(datum.margin) > {strong}", alt.value("white"), alt.value("black")))
st.altair_chart((heat + labels).properties(height=alt.Step(34)), width="stretch")

frame = tables.pricing_frame(report)
columns = {"tenant_id": st.column_config.TextColumn("Tenant", pinned=True), "tier": "Tier",
           "llm_cost": ui.money_column("LLM cost", currency)}
for name in tables.PLANS:
    short = tables.PLAN_LABELS[name].split(" (")[0]
    columns[f"{name}_total"] = ui.money_column(f"{short}: pays", currency)
    columns[f"{name}_margin"] = ui.money_column(f"{short}: margin", currency)
columns["best_model"] = st.column_config.TextColumn("Best-margin model", help="Among the four reference models.")
columns["best_vs_actual"] = ui.money_column("Best vs actual margin", currency,
                                            "Positive: that model would earn more than the actual plan.")
margins = [f"{name}_margin" for name in tables.PLANS] + ["best_vs_actual"]
st.dataframe(ui.red_negatives(frame, margins), hide_index=True, column_config=columns,
             column_order=["tenant_id", "tier", "llm_cost", "best_model", "best_vs_actual",
                           *(f"{name}_{key}" for name in tables.PLANS for key in ("total", "margin"))])

st.subheader("Charges behind a figure")
with_models = [t for t in report["tenants"] if "models" in t]
left, right = st.columns(2)
tenant = left.selectbox("Tenant", [t["tenant_id"] for t in with_models], key="pricing_tenant")
plan = right.selectbox("Plan", tables.PLANS, format_func=tables.PLAN_LABELS.get, key="pricing_plan")
chosen = next(t for t in with_models if t["tenant_id"] == tenant)
entry = chosen["models"][plan]
topped_up = plan == "actual" and Decimal(chosen["minimum_adjustment"]) > 0
minimum = f", of which {money(chosen['minimum_adjustment'])} tops it up to the plan's minimum" if topped_up else ""
st.markdown(f"**{entry['plan']}**: pays {money(entry['total'])}{minimum}; margin {money(entry['margin'])}")
st.dataframe(tables.charges_frame(entry), hide_index=True, column_config={
    "charge": "Charge", "model": "Pricing model", "meter": "Meter",
    "amount": ui.money_column("Amount", currency),
    "quantity": ui.count_column("Quantity"),
    "billable_quantity": ui.count_column("Billable quantity", "Quantity minus what the plan includes."),
})

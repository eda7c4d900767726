"""Tenants: one row per tenant for the period; who pays what, what they cost us, and the margin."""

from __future__ import annotations

from datetime import datetime, timezone

import altair as alt
import streamlit as st

from dashboards import data, tables, ui
from metering.meters import METERS

src = data.source()
period = ui.period()
report = data.report(src, period)
daily = data.daily_usage(src, period)
currency = report["currency"]
money = ui.money_formatter(currency)

st.title(f"Tenants, {ui.period_title(period)}")

tiers = sorted({t["tier"] or tables.NONE for t in report["tenants"]})
features = sorted({feature for used in tables.tenant_features(daily).values() for feature in used})
left, middle, right = st.columns(3)
chosen_tiers = left.multiselect("Tier", tiers, placeholder="All tiers", key="tenants_tiers")
chosen_features = middle.multiselect("Used feature", features, placeholder="Any feature", key="tenants_features",
                                     help="Only tenants that used at least one of these features in the period.")
trend_meter = right.selectbox("Trend of", tables.TREND_METERS, key="tenants_trend", format_func=ui.meter_label)
calendar = tables.days(period, datetime.now(timezone.utc).date())
frame = tables.tenant_frame(report, daily, trend_meter, calendar, chosen_tiers, chosen_features)

sums = tables.totals(frame)
losers = tables.losing(frame)
cells = st.columns(4)
cells[0].metric("Revenue under plans", money(sums["total"]), border=True)
cells[1].metric("LLM cost", money(sums["llm_cost"]), border=True)
cells[2].metric("Margin", money(sums["margin"]), border=True)
cells[3].metric("Tenants costing more than they pay", f"{len(losers)} of {len(frame)}", border=True)

if len(losers):
    st.error("**Costing us more than they pay:** " + "; ".join(
        f"**{row.tenant_id}** pays {money(row.total)}, costs {money(row.llm_cost)} (margin {money(row.margin)})"
        for row in losers.itertuples()), icon=":material/trending_down:")
elif len(frame):
    st.success("Every tenant shown pays more than its LLM cost this period.", icon=":material/trending_up:")

if len(frame):
    bars = tables.margin_chart_frame(frame, money)
    chart = alt.Chart(bars, title="Margin per tenant (what it pays minus its LLM cost)").mark_bar().encode(
        x=alt.X("margin:Q", title=f"Margin ({currency.upper()})"),
        y=alt.Y("tenant:N", sort=alt.EncodingSortField("margin", order="ascending"), title=None),
        color=alt.condition(alt.datum.losing, alt.value("#d62728"), alt.value("#2ca02c")),
        tooltip=["tenant", "Pays", "LLM cost", "Margin"],
    ).properties(height=ui.ROW)
    st.altair_chart(chart, width="stretch")

columns = {
    "tenant_id": st.column_config.TextColumn("Tenant", pinned=True),
    "tier": "Tier",
    "plan": "Plan",
    "total": ui.money_column("Pays", currency, "Revenue under its plan: the report's total, minimum included."),
    "llm_cost": ui.money_column("LLM cost", currency, "Model calls priced at the model price table."),
    "margin": ui.money_column("Margin", currency, "Pays minus LLM cost. Red: the tenant costs more than it pays."),
    "margin_rate": st.column_config.NumberColumn("Margin %", format="percent"),
    "success_rate": st.column_config.NumberColumn(
        "Success rate", format="percent",
        help="Agent outcomes succeeded / agent invocations (invocations with an unknown outcome count as not "
             "succeeded); empty without invocations."),
    "trend": st.column_config.LineChartColumn(f"{ui.meter_label(trend_meter)} per day", y_min=0),
    **{meter: ui.count_column(ui.meter_label(meter)) for meter in METERS},
    "unpriced_llm_calls": ui.count_column("Unpriced calls", "Model calls whose model has no price: cost missing."),
    "note": "Note",
}
selection = st.dataframe(ui.red_negatives(frame, ["margin", "margin_rate"]), column_config=columns, hide_index=True,
                         on_select="rerun", selection_mode="single-row", key="tenant_table")
if selection.selection.rows:
    picked = frame.iloc[selection.selection.rows[0]]["tenant_id"]
    st.page_link("views/tenant.py", label=f"Drill down into {picked}", icon=":material/arrow_forward:",
                 query_params={"tenant": picked})
else:
    st.caption("Select a row to drill down into that tenant. Click a column header to sort.")

st.download_button("Download CSV", tables.tenant_csv(frame, report), mime="text/csv", icon=":material/download:",
                   file_name=f"meterline-tenants-{ui.period_slug(period)}.csv")

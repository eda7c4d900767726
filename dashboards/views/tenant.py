"""Tenant drill-down: one tenant's usage over time and by agent, feature, model and workflow;
its agent outcomes; its costliest traces, linked to Langfuse when Langfuse is configured."""

from __future__ import annotations

from decimal import Decimal

import altair as alt
import streamlit as st

from dashboards import data, tables, ui
from metering.meters import METERS

src = data.source()
period = ui.period()
report = data.report(src, period)
currency = report["currency"]
money = ui.money_formatter(currency)
entries = {t["tenant_id"]: t for t in report["tenants"]}

st.title(f"Tenant drill-down, {ui.period_title(period)}")
if not entries:
    st.info("No tenant is registered and no spans were stored in this period.")
    st.stop()
asked = st.query_params.get("tenant")
ids = list(entries)
tenant = st.selectbox("Tenant", ids, index=ids.index(asked) if asked in ids else 0, key="drill_tenant")
st.query_params["tenant"] = tenant
entry = entries[tenant]
detail = data.tenant_detail(src, period, tenant)

rate = tables.success_rate(entry["usage"])
st.caption(f"Tier {entry['tier'] or tables.NONE}, plan {entry.get('plan') or tables.NONE}.")
cells = st.columns(4)
cells[0].metric("Pays", money(entry["total"]), border=True, help="Revenue under its plan, minimum included.")
cells[1].metric("LLM cost", money(entry["llm_cost"]), border=True)
losing = Decimal(entry["margin"]) < 0
cells[2].metric("Margin", money(entry["margin"]), border=True, delta="costs more than it pays" if losing else None,
                delta_color="inverse", delta_arrow="down")
cells[3].metric("Outcome success rate", f"{rate:.1%}" if rate is not None else "-", border=True,
                help="Agent outcomes succeeded / agent invocations.")
if entry.get("error"):
    st.warning(entry["error"])
if entry["unpriced_llm_calls"]:
    st.warning(f"{entry['unpriced_llm_calls']} model call(s) use a model without a price: their cost is missing.")

st.subheader("Usage over time")
left, right = st.columns([1, 3])
granularity = left.radio("By", ["day", "hour"], horizontal=True, key="drill_granularity")
meter = right.selectbox("Meter", ["llm_cost", *METERS], key="drill_meter", format_func=ui.meter_label)
series = tables.series_frame(detail[granularity], granularity, meter)
unit = "yearmonthdatehours" if granularity == "hour" else "yearmonthdate"
st.altair_chart(alt.Chart(series).mark_bar(color="#4c78a8").encode(
    x=alt.X(f"{unit}(bucket):T", title=None, scale=alt.Scale(domain=ui.time_domain(period))),
    y=alt.Y("value:Q", title=ui.meter_label(meter) + (f" ({currency.upper()})" if meter == "llm_cost" else "")),
    tooltip=[alt.Tooltip(f"{unit}(bucket):T", title=granularity), alt.Tooltip("value:Q", title=ui.meter_label(meter),
                                                                                format=",.4~f")],
).properties(height=260), width="stretch")

st.subheader("Breakdowns")
breakdown_columns = {
    "llm_cost": ui.money_column("LLM cost", currency, precise=True),
    **{m: ui.count_column(ui.meter_label(m)) for m in METERS},
    "unpriced_llm_calls": ui.count_column("Unpriced calls"),
}
for tab, dimension in zip(st.tabs([d.capitalize() for d in data.BREAKDOWNS]), data.BREAKDOWNS):
    with tab:
        frame = tables.breakdown_frame(detail[dimension], dimension)
        if frame.empty:
            st.caption(f"No usage by {dimension} in this period.")
            continue
        plot = frame.assign(cost=[float(c) for c in frame["llm_cost"]], cost_label=[money(c) for c in frame["llm_cost"]])
        st.altair_chart(alt.Chart(plot[[dimension, "cost", "cost_label", "llm_calls"]]).mark_bar().encode(
            x=alt.X("cost:Q", title=f"LLM cost ({currency.upper()})"),
            y=alt.Y(f"{dimension}:N", sort="-x", title=None),
            tooltip=[dimension, alt.Tooltip("cost_label:N", title="LLM cost"), "llm_calls"],
        ).properties(height=ui.ROW), width="stretch")
        st.dataframe(frame, hide_index=True, column_config={dimension: dimension.capitalize(), **breakdown_columns})

st.subheader("Outcomes")
outcomes = tables.outcomes_frame(detail["outcomes"])
if outcomes.empty:
    st.caption("No agent invocations in this period.")
else:
    st.altair_chart(alt.Chart(outcomes).mark_bar().encode(
        x=alt.X("invocations:Q", title="Agent invocations", axis=ui.COUNT_AXIS),
        y=alt.Y("agent:N", title=None),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=["success", "failure", "unknown"],
                                                      range=["#2ca02c", "#d62728", "#bbbbbb"])),
        tooltip=["agent", "outcome", "invocations"],
    ).properties(height=ui.ROW), width="stretch")
    st.caption(f"Workflows completed: {entry['usage']['workflows_completed']:,}. An invocation's outcome is "
               "`meterline.outcome` when the agent reports it, otherwise read from its status and error "
               "attributes (an unset status is unknown).")

st.subheader("Top traces by LLM cost")
trace_url = data.langfuse_trace_url(src, tenant, entry["tier"])
traces = tables.traces_frame(detail["traces"], trace_url)
if traces.empty:
    st.caption("No traces in this period.")
else:
    st.dataframe(traces, hide_index=True, column_config={
        "trace_id": st.column_config.TextColumn("Trace"),
        "started": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "root_span": "Root span",
        "llm_cost": ui.money_column("LLM cost", currency, "Sum over the trace's billable spans in the period.",
                                    precise=True),
        "langfuse": st.column_config.LinkColumn("Langfuse", display_text="Open trace"),
        **{m: ui.count_column(ui.meter_label(m)) for m in ("spans", "llm_calls", "input_tokens", "output_tokens")},
        "unpriced_llm_calls": ui.count_column("Unpriced calls"),
    })
    if not trace_url:
        st.caption("To link traces to Langfuse, give the tenant's Langfuse project a `project_id` in the config's "
                   "[langfuse] section (or its [[langfuse.projects]] entry).")

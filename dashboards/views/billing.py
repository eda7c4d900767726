"""Billing: what the billing job sent to Stripe per tenant and meter, what failed, and its last run."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, ui

src = data.source()
period = ui.period()
st.title("Billing")

month = period.label if ui.is_month(period) else None
state = data.billing(src, month)
runs = state["runs"]
if not runs and not state["periods"]:
    st.info("The billing job has not run yet (`meterline bill --period YYYY-MM`).")
    st.stop()

st.subheader("Last run")
if runs:
    last = runs[0]
    cells = st.columns(4)
    cells[0].metric("Status", last["status"] + (" (dry run)" if last["dry_run"] else ""), border=True)
    cells[1].metric("Period", last["period"], border=True)
    cells[2].metric("Events sent", f"{last['events_sent']:,}", border=True)
    cells[3].metric("Events failed", f"{last['events_failed']:,}", border=True,
                    delta="needs attention" if last["events_failed"] else None, delta_color="inverse")
    finished = f", finished {last['finished_at']:%Y-%m-%d %H:%M:%S}" if last["finished_at"] else ", not finished"
    through = f"; usage through {last['through']:%Y-%m-%d %H:%M:%S}" if last["through"] else ""
    st.caption(f"Run `{last['run_id']}` started {last['started_at']:%Y-%m-%d %H:%M:%S}{finished} (UTC){through}.")
    if last["status"] == "failed":
        st.error(f"The last billing run ({last['run_id']}) failed.", icon=":material/error:")
    elif last["finished_at"] is None:
        st.info(f"Run {last['run_id']} is still running (or stopped without finishing).")
    with st.expander(f"Recent runs ({len(runs)})"):
        st.dataframe(pd.DataFrame(runs), hide_index=True, column_config={
            "run_id": "Run", "period": "Period", "dry_run": "Dry run", "status": "Status",
            "events_sent": ui.count_column("Events sent"), "events_failed": ui.count_column("Events failed"),
            "started_at": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "through": st.column_config.DatetimeColumn("Usage through (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        })

chosen = st.selectbox("Billing period", state["periods"], index=state["periods"].index(state["period"])
                      if state["period"] in state["periods"] else 0, key="billing_period")
if chosen != state["period"]:
    state = data.billing(src, chosen)

st.subheader(f"Sent to Stripe for {state['period']}, per tenant and meter")
ledger = pd.DataFrame.from_records(state["ledger"])
if ledger.empty:
    st.caption("Nothing in the ledger for this period.")
else:
    statuses = {"acknowledged_events": "acknowledged", "pending_events": "pending", "failed_events": "failed"}
    per_tenant = ledger.groupby("tenant_id", as_index=False)[list(statuses)].sum().rename(columns=statuses)
    st.altair_chart(alt.Chart(per_tenant.melt("tenant_id", var_name="status", value_name="events")).mark_bar().encode(
        x=alt.X("events:Q", title="Meter events", axis=ui.COUNT_AXIS), y=alt.Y("tenant_id:N", title=None),
        color=alt.Color("status:N", title=None, scale=alt.Scale(domain=list(statuses.values()),
                                                                 range=["#2ca02c", "#bbbbbb", "#d62728"])),
        tooltip=["tenant_id", "status", "events"],
    ).properties(height=ui.ROW), width="stretch")
    st.dataframe(ledger, hide_index=True, column_config={
        "tenant_id": st.column_config.TextColumn("Tenant", pinned=True),
        "stripe_customer_id": "Stripe customer",
        "charge": "Charge", "event_name": "Stripe meter",
        "events": ui.count_column("Events"),
        "acknowledged_events": ui.count_column("Acknowledged events"),
        "pending_events": ui.count_column("Pending events", "Intended or sent, no reply recorded yet."),
        "acknowledged_value": ui.count_column(
            "Period total in Stripe", "Sum of acknowledged events, corrections included (meter units, not money)."),
        "unconfirmed_value": ui.count_column("Sent, unconfirmed", "Sent; no reply recorded yet."),
        "intended_value": ui.count_column("Not sent yet"),
        "failed_events": ui.count_column("Failed events"),
        "failed_value": ui.count_column("Failed units"),
        "last_event": st.column_config.DatetimeColumn("Last event (UTC)", format="YYYY-MM-DD HH:mm"),
    })

st.subheader("Failures")
if state["failures"]:
    st.dataframe(pd.DataFrame(state["failures"]), hide_index=True, column_config={
        "updated_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "run_id": "Run", "tenant_id": "Tenant", "charge": "Charge", "event_name": "Stripe meter",
        "value": ui.count_column("Units"), "identifier": "Meter event identifier",
        "error": st.column_config.TextColumn("Error", width="large"),
    })
else:
    st.success(f"No failed meter events for {state['period']}.", icon=":material/check_circle:")

"""Health: ingest rate, refused requests by reason, spoof attempts per tenant, export lag to Langfuse."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, ui

# window label -> (window seconds, bucket seconds)
WINDOWS = {"Last hour": (3600, 60), "Last 24 hours": (86400, 900), "Last 7 days": (7 * 86400, 3600)}

src = data.source()
st.title("Health")
window = st.segmented_control("Window", list(WINDOWS), default="Last hour", key="health_window") or "Last hour"
seconds, bucket = WINDOWS[window]
state = data.health(src, seconds, bucket)

last = state["last_received"]
cells = st.columns(4)
cells[0].metric("Ingest rate, last 5 min", f"{state['spans_last_5_minutes'] / 300:,.1f} spans/s", border=True)
cells[1].metric(f"Spans received, {window.lower()}", f"{state['spans_in_window']:,}", border=True)
cells[2].metric("Last span received", ui.ago(last, state["now"]), border=True,
                help=f"{last:%Y-%m-%d %H:%M:%S} UTC" if last else None)
cells[3].metric(f"Refused items, {window.lower()}", f"{sum(r['items'] for r in state['rejected']):,}", border=True)

st.subheader("Ingest")
ingest = pd.DataFrame.from_records(state["ingest"], columns=["bucket", "spans"])
if ingest.empty:
    st.caption(f"No spans received in the {window.lower()}.")
else:
    ingest["per_second"] = ingest["spans"] / bucket
    ingest["end"] = ingest["bucket"] + pd.Timedelta(seconds=bucket)
    st.altair_chart(alt.Chart(ingest).mark_bar(color="#4c78a8").encode(
        x=alt.X("bucket:T", title=f"Received (UTC), per {bucket // 60} min",
                scale=alt.Scale(domain=[state["since"], state["now"].isoformat()])),
        x2="end:T",
        y=alt.Y("per_second:Q", title="Spans per second"),
        tooltip=[alt.Tooltip("bucket:T", title="from", format="%Y-%m-%d %H:%M"), "spans",
                 alt.Tooltip("per_second:Q", title="spans/s", format=",.2f")],
    ).properties(height=220), width="stretch")

left, right = st.columns(2)
with left:
    st.subheader("Refused, by reason")
    rejected = pd.DataFrame.from_records(state["rejected"], columns=["signal", "reason", "requests", "items"])
    if rejected.empty:
        st.caption(f"Nothing refused in the {window.lower()}.")
    else:
        st.altair_chart(alt.Chart(rejected).mark_bar().encode(
            x=alt.X("items:Q", title="Items refused (spans; whole requests count theirs)", axis=ui.COUNT_AXIS),
            y=alt.Y("reason:N", sort="-x", title=None), color=alt.Color("signal:N", title="Signal"),
            tooltip=["signal", "reason", "requests", "items"],
        ).properties(height=ui.ROW), width="stretch")
        st.dataframe(rejected, hide_index=True, column_config={
            "signal": "Signal", "reason": "Reason", "requests": ui.count_column("Requests"),
            "items": ui.count_column("Items")})
with right:
    st.subheader("Spoof attempts per tenant")
    spoofs = pd.DataFrame.from_records(state["spoof_attempts"], columns=["tenant_id", "attempts"])
    if spoofs.empty:
        st.caption("No span has claimed another tenant.")
    else:
        st.altair_chart(alt.Chart(spoofs).mark_bar(color="#d62728").encode(
            x=alt.X("attempts:Q", title="Spans claiming another tenant (all time)", axis=ui.COUNT_AXIS),
            y=alt.Y("tenant_id:N", sort="-x", title=None), tooltip=["tenant_id", "attempts"],
        ).properties(height=ui.ROW), width="stretch")
        st.caption("Refused (`tenant_spoof`) plus stored with `spoofed = true` (spoof policy flag), per token tenant.")

st.subheader("Export to Langfuse")
exports = pd.DataFrame.from_records(state["exports"])
if exports.empty:
    st.caption("No export destination has reported yet (no [langfuse] export configured, or it has not started).")
else:
    for row in state["exports"]:
        if row["consecutive_failures"]:
            st.warning(f"{row['destination']}: {row['consecutive_failures']} failed attempt(s) in a row. "
                       f"Last error: {row['last_error'] or 'none recorded'}", icon=":material/sync_problem:")
    st.dataframe(exports, hide_index=True, column_config={
        "destination": st.column_config.TextColumn("Destination", pinned=True),
        "oldest_unexported_age_seconds": st.column_config.NumberColumn(
            "Lag", format="duration", help="Age of the oldest span routed there and not yet exported (empty: caught up)."),
        "lag_spans": ui.count_column("Spans behind"),
        "spans_sent": ui.count_column("Spans sent"),
        "rejected_spans": ui.count_column("Refused for good"),
        "acked_seq": "Acked up to seq",
        "last_success_at": st.column_config.DatetimeColumn("Last success (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "last_attempt_at": st.column_config.DatetimeColumn("Last attempt (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "consecutive_failures": "Failures in a row",
        "last_error": st.column_config.TextColumn("Last error", width="large"),
    }, column_order=["destination", "oldest_unexported_age_seconds", "lag_spans", "spans_sent", "rejected_spans",
                     "last_success_at", "last_attempt_at", "consecutive_failures", "last_error", "acked_seq"])
refused = pd.DataFrame.from_records(state["export_rejections"])
if not refused.empty:
    st.markdown("**Spans a destination refused for good**")
    st.dataframe(refused, hide_index=True, column_config={
        "destination": "Destination", "tenant_id": "Tenant", "reason": "Reason", "status": "HTTP status",
        "spans": ui.count_column("Spans"),
        "last_at": st.column_config.DatetimeColumn("Last (UTC)", format="YYYY-MM-DD HH:mm:ss")})

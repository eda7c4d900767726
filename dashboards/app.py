"""The Meterline finance dashboards; `meterline dashboard` runs this file with Streamlit."""

from __future__ import annotations

import streamlit as st

from dashboards import data, ui
from meterline.store import StoreError

st.set_page_config(page_title="Meterline", page_icon=":material/monitoring:", layout="wide")
navigation = st.navigation([
    st.Page("views/tenants.py", title="Tenants", icon=":material/groups:", default=True),
    st.Page("views/tenant.py", title="Tenant drill-down", icon=":material/person_search:"),
    st.Page("views/pricing.py", title="Pricing models", icon=":material/price_change:"),
    st.Page("views/billing.py", title="Billing", icon=":material/receipt_long:"),
    st.Page("views/health.py", title="Health", icon=":material/monitor_heart:"),
])
try:
    ui.period_picker(data.source())
    navigation.run()
except StoreError as exc:
    st.error(f"Could not read the store: {exc}", icon=":material/database:")

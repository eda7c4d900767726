"""Pieces every page draws with: the period picker, money formatting and money columns."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import altair as alt
import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

from dashboards import data
from metering.meters import Period

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}
_GRID_FORMATS = {"usd": "dollar", "eur": "euro", "jpy": "yen"}
_CUSTOM = "custom"
_PERIOD_KEY = "meterline.period"
ROW = alt.Step(28)  # the height of one bar or cell in charts with a category per row
COUNT_AXIS = alt.Axis(format="d", tickMinStep=1)  # whole numbers of events, spans, invocations


def money(amount: Decimal | str, currency: str) -> str:
    """'$1,234.56', '-$4.99', '1,234.56 CHF': the exact amount with its own decimal places, never rounded."""
    value = Decimal(amount)
    sign, digits = ("-" if value < 0 else ""), f"{abs(value):,f}"
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency.upper()}"


def money_formatter(currency: str) -> Callable[[Decimal | str], str]:
    return lambda amount: money(amount, currency)


def money_column(label: str, currency: str, help: str | None = None, precise: bool = False) -> Any:
    """A grid column for a Decimal amount; `precise` shows sub-cent costs (four places)."""
    if precise:
        symbol = _SYMBOLS.get(currency.lower())
        fmt = f"{symbol}%.4f" if symbol else f"%.4f {currency.upper()}"
    else:
        fmt = _GRID_FORMATS.get(currency.lower(), f"%.2f {currency.upper()}")
    return st.column_config.NumberColumn(label, format=fmt, help=help)


def meter_label(meter: str) -> str:
    """'llm_cost' -> 'LLM cost', 'agent_invocations' -> 'Agent invocations'."""
    words = meter.replace("_", " ")
    return "LLM" + words[3:] if words.startswith("llm") else words.capitalize()


def count_column(label: str, help: str | None = None) -> Any:
    return st.column_config.NumberColumn(label, format="localized", help=help)


def red_negatives(frame: pd.DataFrame, columns: list[str]) -> Styler:
    """The frame with negative amounts in the given columns drawn red."""
    def colour(value: Any) -> str:
        return "color: #d62728; font-weight: 600" if pd.notna(value) and value < 0 else ""

    return frame.style.map(colour, subset=[c for c in columns if c in frame.columns])


def _month_label(month: str) -> str:
    return datetime.strptime(month, "%Y-%m").strftime("%B %Y") if month != _CUSTOM else "Custom range ..."


def period_picker(src: data.Source) -> Period:
    """The sidebar's period (a month with data, by default the latest, or a custom UTC date range)."""
    summary = data.store_summary(src)
    today = datetime.now(timezone.utc).date()
    months = summary["months"] or [today.strftime("%Y-%m")]
    choice = st.sidebar.selectbox("Period", [*months, _CUSTOM], format_func=_month_label, key="period_month")
    if choice != _CUSTOM:
        period = Period.month(choice)
    else:
        picked = st.sidebar.date_input("From, to (UTC, inclusive)", value=(today.replace(day=1), today),
                                       key="period_range")
        first, last = (picked[0], picked[-1]) if picked else (today, today)
        period = Period.between(_midnight(first), _midnight(last) + timedelta(days=1))
    st.sidebar.caption(f"Store: `{src.db}`, read through {summary['via']}. Figures are cached for "
                       f"{data.CACHE_SECONDS} s.")
    if st.sidebar.button("Refresh now", icon=":material/refresh:"):
        data.clear_cache()
    st.session_state[_PERIOD_KEY] = period
    return period


def period() -> Period:
    """The period chosen in the sidebar this run."""
    return st.session_state[_PERIOD_KEY]


def is_month(chosen: Period) -> bool:
    return chosen.label == chosen.start.strftime("%Y-%m")


def period_title(chosen: Period) -> str:
    if is_month(chosen):
        return chosen.start.strftime("%B %Y")
    return f"{chosen.start:%Y-%m-%d} to {chosen.end - timedelta(days=1):%Y-%m-%d}"


def time_domain(chosen: Period) -> list[str]:
    """A time axis spanning the period, up to now when it holds now (ISO strings, as Vega-Lite takes)."""
    end = min(chosen.end, max(datetime.now(timezone.utc).replace(tzinfo=None), chosen.start + timedelta(hours=1)))
    return [chosen.start.isoformat(), end.isoformat()]


def ago(moment: datetime | None, now: datetime) -> str:
    """'42 s ago', '3 min ago', '5 h ago', '2 d ago'; 'never' for None (naive UTC datetimes)."""
    if moment is None:
        return "never"
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def period_slug(chosen: Period) -> str:
    """The period in a file name: 2026-11, or 20261101-20261108 for a custom range."""
    if is_month(chosen):
        return chosen.label
    return f"{chosen.start:%Y%m%d}-{chosen.end:%Y%m%d}"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)

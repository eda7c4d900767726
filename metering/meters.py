"""Usage meters per tenant and period, computed in DuckDB SQL over the span store.

Every meter counts each model call once: token meters and `llm_calls` read only spans marked
`billable` (the lowest LLM span of a call, see enrich/context.py), never agent spans' totals.
A span belongs to the period holding its start time, whenever it arrived ("late spans land in
the period of their timestamp"); duplicates never reach the store (primary key).

| meter | what it counts |
| --- | --- |
| input_tokens, output_tokens, cache_read_tokens, cache_write_tokens | tokens of billable LLM spans |
| llm_calls | billable LLM spans (model calls) |
| agent_invocations | agent spans (invoke_agent, AGENT, traceloop agent) |
| tool_calls | tool spans |
| active_agents | distinct agent names among agent spans |
| workflows_completed | workflow spans (invoke_workflow, workflow kinds) and root spans named in `metering.workflow_root_spans`, that ended without error and whose outcome is not failure |
| agent_outcomes_succeeded | agent spans whose outcome is success |

LLM cost is priced per span (large-context rates apply per call) in exact DECIMAL arithmetic:
the model ids seen in the period are resolved against metering/model_prices.json in Python and
handed to SQL as a small rates table. Input tokens include cache reads and writes (OTel GenAI);
each part is priced at its own rate; reasoning tokens are inside output tokens likewise.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Sequence

from metering.llm_cost import ModelPrice, PriceTable, Rates
from meterline.store import Store, rows

METERS = (
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "llm_calls", "agent_invocations", "tool_calls", "active_agents",
    "workflows_completed", "agent_outcomes_succeeded",
)

DIMENSIONS = {
    "agent": "s.agent_name",
    "feature": "s.feature",
    "model": "s.model",
    "workflow": "s.workflow_name",
    "day": "date_trunc('day', s.start_time)",
    "hour": "date_trunc('hour', s.start_time)",
}

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_RATE = "DECIMAL(38, 18)"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime
    label: str

    @classmethod
    def month(cls, label: str) -> "Period":
        match = _MONTH.match(label)
        if not match:
            raise ValueError(f"period {label!r}: expected YYYY-MM, e.g. 2026-11")
        year, month = int(match[1]), int(match[2])
        start = datetime(year, month, 1)
        return cls(start, start + timedelta(days=calendar.monthrange(year, month)[1]), label)

    @classmethod
    def between(cls, start: datetime, end: datetime) -> "Period":
        if end <= start:
            raise ValueError(f"period end {end.isoformat()} is not after its start {start.isoformat()}")
        return cls(start, end, f"{start.isoformat()}/{end.isoformat()}")


def parse_instant(text: str) -> datetime:
    """ISO 8601 as naive UTC: UTC unless the text carries an offset (`Z` included)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _workflow_condition(workflow_roots: Sequence[str]) -> tuple[str, list[Any]]:
    if not workflow_roots:
        return "s.op_kind = 'workflow'", []
    marks = ", ".join("?" for _ in workflow_roots)
    return f"(s.op_kind = 'workflow' OR (s.parent_span_id IS NULL AND s.name IN ({marks})))", list(workflow_roots)


def _rates_rows(prices: dict[str, ModelPrice]) -> tuple[str, list[Any]]:
    """A VALUES list (model, input bracket, five rates) for the models seen, as SQL and params."""
    values: list[str] = []
    params: list[Any] = []

    def add(model: str, above: int, up_to: int | None, rates: Rates) -> None:
        values.append(f"(?, ?::BIGINT, ?::BIGINT, ?::{_RATE}, ?::{_RATE}, ?::{_RATE}, ?::{_RATE}, ?::{_RATE})")
        params.extend([model, above, up_to, str(rates.input), str(rates.output), str(rates.cache_read),
                       str(rates.cache_write), str(rates.reasoning)])

    for model, price in prices.items():
        large = price.large_context
        add(model, -1, large.above_input_tokens if large else None, price.rates)
        if large:
            add(model, large.above_input_tokens, None, large.rates)
    if not values:
        return (f"SELECT NULL::VARCHAR AS model, 0::BIGINT AS above, 0::BIGINT AS up_to, 0::{_RATE} AS r_input, "
                f"0::{_RATE} AS r_output, 0::{_RATE} AS r_cache_read, 0::{_RATE} AS r_cache_write, "
                f"0::{_RATE} AS r_reasoning WHERE false"), []
    return (f"SELECT * FROM (VALUES {', '.join(values)}) AS r(model, above, up_to, r_input, r_output, "
            "r_cache_read, r_cache_write, r_reasoning)"), params


# One billable span's cost: the SQL twin of `ModelPrice.cost` (metering/llm_cost.py), which defines
# the rule (NULL counts as 0; uncached input and plain output clamped at 0; rates of the span's
# input-size bracket from _RATE_JOIN). Kept in SQL for speed over millions of spans;
# tests/test_metering_cost.py checks it equals ModelPrice.cost exactly for every priced model.
_COST = """
    greatest(coalesce(s.input_tokens, 0) - coalesce(s.cache_read_tokens, 0) - coalesce(s.cache_write_tokens, 0), 0) * r.r_input
    + coalesce(s.cache_read_tokens, 0) * r.r_cache_read
    + coalesce(s.cache_write_tokens, 0) * r.r_cache_write
    + greatest(coalesce(s.output_tokens, 0) - coalesce(s.reasoning_tokens, 0), 0) * r.r_output
    + coalesce(s.reasoning_tokens, 0) * r.r_reasoning
"""

# A billable span meets the rate of its model and input-size bracket (large-context rates per call).
_RATE_JOIN = """s.billable AND s.model = r.model
    AND coalesce(s.input_tokens, 0) > r.above
    AND (r.up_to IS NULL OR coalesce(s.input_tokens, 0) <= r.up_to)"""


def _scope(period: Period, tenant: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and params) of spans in the period, of one tenant or all."""
    where = "s.start_time >= ?::TIMESTAMP AND s.start_time < ?::TIMESTAMP"
    params: list[Any] = [period.start.isoformat(), period.end.isoformat()]
    if tenant is not None:
        where += " AND s.tenant_id = ?"
        params.append(tenant)
    return where, params


@dataclass
class Meterer:
    """Computes meters over one store; `workflow_roots` from the config's [metering] section."""

    store: Store
    prices: PriceTable
    workflow_roots: Sequence[str] = ()

    def usage(self, period: Period, tenant: str | None = None, by: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One row per tenant (and per value of each `by` dimension): every meter, llm_cost, unpriced calls.

        `llm_cost` is an exact Decimal in USD (not rounded); `unpriced_llm_calls` counts billable
        calls whose model has no price in the table (their cost is missing, never guessed).
        """
        unknown = [dim for dim in by if dim not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown breakdown {unknown[0]!r}: choose from {', '.join(DIMENSIONS)}")
        where, where_params = _scope(period, tenant)
        rates_sql, rates_params = self._rates(where, where_params)
        workflow, workflow_params = _workflow_condition(self.workflow_roots)
        keys = "".join(f"{DIMENSIONS[dim]} AS {dim}, " for dim in by)
        order = ", ".join(str(i) for i in range(1, len(by) + 2))
        sql = f"""
            WITH rates AS ({rates_sql})
            SELECT s.tenant_id, {keys}
                coalesce(sum(s.input_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS input_tokens,
                coalesce(sum(s.output_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS output_tokens,
                coalesce(sum(s.cache_read_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS cache_read_tokens,
                coalesce(sum(s.cache_write_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS cache_write_tokens,
                count(*) FILTER (WHERE s.billable) AS llm_calls,
                count(*) FILTER (WHERE s.op_kind = 'agent') AS agent_invocations,
                count(*) FILTER (WHERE s.op_kind = 'tool') AS tool_calls,
                count(DISTINCT s.agent_name) FILTER (WHERE s.op_kind = 'agent') AS active_agents,
                count(*) FILTER (WHERE {workflow} AND s.status_code <> 'ERROR' AND s.outcome <> 'failure')
                    AS workflows_completed,
                count(*) FILTER (WHERE s.op_kind = 'agent' AND s.outcome = 'success') AS agent_outcomes_succeeded,
                coalesce(sum({_COST}) FILTER (WHERE s.billable), 0)::VARCHAR AS llm_cost,
                count(*) FILTER (WHERE s.billable AND r.model IS NULL) AS unpriced_llm_calls
            FROM spans s
            LEFT JOIN rates r ON {_RATE_JOIN}
            WHERE {where}
            GROUP BY ALL
            ORDER BY {order}
        """
        result = rows(self.store, sql, rates_params + workflow_params + where_params)
        for row in result:
            row["llm_cost"] = Decimal(row["llm_cost"])
            for meter in METERS:
                row[meter] = int(row[meter])
        return result

    def top_traces(self, period: Period, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        """The tenant's traces in the period, most expensive first: LLM cost summed over billable spans.

        Costs are priced exactly as in `usage()` (exact Decimal, unrounded); a trace's spans outside
        the period do not count, as they belong to another period's bill.
        """
        where, where_params = _scope(period, tenant)
        rates_sql, rates_params = self._rates(where, where_params)
        sql = f"""
            WITH rates AS ({rates_sql}),
            traces AS (
                SELECT s.trace_id, min(s.start_time) AS started,
                    any_value(s.name) FILTER (WHERE s.parent_span_id IS NULL) AS root_span,
                    count(*) AS spans,
                    count(*) FILTER (WHERE s.billable) AS llm_calls,
                    coalesce(sum(s.input_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS input_tokens,
                    coalesce(sum(s.output_tokens) FILTER (WHERE s.billable), 0)::BIGINT AS output_tokens,
                    coalesce(sum({_COST}) FILTER (WHERE s.billable), 0) AS cost,
                    count(*) FILTER (WHERE s.billable AND r.model IS NULL) AS unpriced_llm_calls
                FROM spans s
                LEFT JOIN rates r ON {_RATE_JOIN}
                WHERE {where}
                GROUP BY s.trace_id
            )
            SELECT * EXCLUDE (cost), cost::VARCHAR AS llm_cost FROM traces
            ORDER BY cost DESC, llm_calls DESC, trace_id
            LIMIT ?
        """
        result = rows(self.store, sql, rates_params + where_params + [limit])
        for row in result:
            row["llm_cost"] = Decimal(row["llm_cost"])
        return result

    def _rates(self, where: str, params: list[Any]) -> tuple[str, list[Any]]:
        """The rates table (SQL and params) for the priced models among the billable spans in scope."""
        models = [row["model"] for row in rows(self.store, f"""
            SELECT DISTINCT s.model FROM spans s WHERE {where} AND s.billable AND s.model IS NOT NULL
        """, params)]
        return _rates_rows({model: price for model in models if (price := self.prices.price_for(model)) is not None})

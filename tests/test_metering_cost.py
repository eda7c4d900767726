"""Metering's SQL cost equals `ModelPrice.cost`, the one definition of what a call costs.

`meterline usage` prices spans in DuckDB (`_COST` in metering/meters.py) for speed; the rule is
defined once, in Python (metering/llm_cost.py). These properties run the real `Meterer` over a
real LocalStore holding inserted spans, for every model of metering/model_prices.json (large-
context tiers included) and random token counts: zeros, unreported (NULL) counts, cache above
input, reasoning above output, the large-context thresholds and values up to 10^9 (the per-span
bound of enrich.genai). Equality is exact (Decimal), never approximate. The Langfuse exporter's
cost_details are checked against `ModelPrice.cost` likewise.
"""

from __future__ import annotations

import dataclasses
import json
import re
from decimal import Decimal
from typing import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.langfuse.encode import cost_details, usage_parts
from enrich.genai import normalise
from metering.llm_cost import LargeContext, ModelPrice, PriceTable, Rates
from metering.meters import Meterer, Period
from meterline.store import LocalStore, StoreError

PRICES = PriceTable.load()
# Every entry of the shipped table under an id only it matches ("model-<i>"), so each one is priced
# (the first matching pattern wins, and a few entries are shadowed by earlier ones for their own name).
# Plus one made-up model whose five rates all differ (no shipped model prices reasoning apart from
# output), so a rate applied to the wrong part cannot go unnoticed.
DISTINCT = ModelPrice("distinct", "", Rates(*(Decimal(r) for r in ("0.000003", "0.000015", "0.0000003",
                                                                   "0.00000375", "0.000021"))),
                      LargeContext(200_000, Rates(*(Decimal(r) for r in ("0.000006", "0.0000225", "0.0000006",
                                                                         "0.0000075", "0.000031")))))
EACH = PriceTable(tuple(dataclasses.replace(price, match_pattern=re.escape(f"model-{i}"))
                        for i, price in enumerate((*PRICES.models, DISTINCT))), PRICES.source)
MODELS = [f"model-{i}" for i in range(len(EACH.models))]
PERIOD = Period.month("2026-11")
MAX_TOKENS = 10**9  # enrich.genai's per-span bound
THRESHOLDS = sorted({p.large_context.above_input_tokens for p in PRICES.models if p.large_context})
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")

Counts = tuple[int | None, int | None, int | None, int | None, int | None]

count = st.one_of(st.none(), st.just(0), st.integers(0, 2_000), st.integers(0, 300_000),
                  st.integers(0, MAX_TOKENS), st.sampled_from([MAX_TOKENS - 1, MAX_TOKENS]))
input_count = st.one_of(count, st.sampled_from([t + d for t in THRESHOLDS for d in (-1, 0, 1)]))
counts = st.tuples(input_count, count, count, count, count)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    store = LocalStore(tmp_path_factory.mktemp("metering_cost") / "meterline.duckdb")
    yield store
    store.close()


def put(store: LocalStore, spans: Sequence[tuple[str, Counts]]) -> None:
    """Replace the store's spans with one billable LLM span per (model, counts), each its own trace."""
    values, params = [], []
    for seq, (model, tokens) in enumerate(spans):
        values.append("(?, ?, ?, ?::BIGINT, ?::BIGINT, ?::BIGINT, ?::BIGINT, ?::BIGINT)")
        params += [f"{seq:032x}", seq, model, *tokens]
    store.transaction([("DELETE FROM spans", []), (f"""
        INSERT INTO spans (tenant_id, trace_id, span_id, name, kind, start_time, end_time,
            start_time_unix_nano, end_time_unix_nano, duration_ns, status_code, spoofed, op_kind, outcome,
            billable, ingest_seq, received_at, model, {", ".join(TOKEN_COLUMNS)})
        SELECT 'acme', trace_id, '00000000000000aa', 'chat', 'CLIENT', TIMESTAMP '2026-11-03 10:00:00',
            TIMESTAMP '2026-11-03 10:00:01', 0, 1000000000, 1000000000, 'OK', false, 'llm', 'success',
            true, seq, TIMESTAMP '2026-11-03 10:00:02', model, {", ".join(TOKEN_COLUMNS)}
        FROM (VALUES {", ".join(values)}) AS v(trace_id, seq, model, {", ".join(TOKEN_COLUMNS)})
    """, params)])


def expected_cost(model: str, tokens: Counts) -> Decimal:
    return EACH.price_for(model).cost(*tokens)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(counts, min_size=1, max_size=3))
def test_sql_cost_equals_model_price_cost_for_every_model(store: LocalStore, calls: list[Counts]) -> None:
    spans = [(model, tokens) for model in MODELS for tokens in calls]
    put(store, spans)
    meterer = Meterer(store, EACH)

    by_model = {row["model"]: row for row in meterer.usage(PERIOD, "acme", by=("model",))}
    assert set(by_model) == set(MODELS)
    for model in MODELS:
        row = by_model[model]
        assert row["unpriced_llm_calls"] == 0
        assert row["llm_cost"] == sum((expected_cost(model, tokens) for tokens in calls), Decimal(0)), model

    (total,) = meterer.usage(PERIOD, "acme")
    assert total["llm_cost"] == sum((expected_cost(model, tokens) for model, tokens in spans), Decimal(0))
    assert total["input_tokens"] == sum(tokens[0] or 0 for _, tokens in spans)

    # top_traces prices through the same SQL; each span is its own trace, so this is per span.
    traces = meterer.top_traces(PERIOD, "acme", limit=len(spans))
    assert len(traces) == len(spans)
    for trace in traces:
        model, tokens = spans[int(trace["trace_id"], 16)]
        assert trace["llm_cost"] == expected_cost(model, tokens), (model, tokens)


@pytest.mark.parametrize("tokens", [
    (100, 10, 80, 30, 0),                # cache above input (input reported without its cache)
    (None, 5, 1_000, None, 9),           # cache with no input at all; reasoning above output
    (None, None, None, None, None),      # nothing reported
    (MAX_TOKENS, MAX_TOKENS, MAX_TOKENS, MAX_TOKENS, MAX_TOKENS),
])
def test_edge_counts_every_model(store: LocalStore, tokens: Counts) -> None:
    """The clamping cases, always run (not left to the property's draws)."""
    put(store, [(model, tokens) for model in MODELS])
    by_model = {row["model"]: row["llm_cost"] for row in Meterer(store, EACH).usage(PERIOD, "acme", by=("model",))}
    assert by_model == {model: expected_cost(model, tokens) for model in MODELS}
    assert all(cost >= 0 for cost in by_model.values())


def test_every_rate_fits_the_sql_rate_type_exactly() -> None:
    # Rates reach SQL as DECIMAL(38, 18): a price with more than 18 decimals would be rounded there.
    for price in PRICES.models:
        for rates in (price.rates, price.large_context.rates if price.large_context else price.rates):
            for rate in dataclasses.astuple(rates):
                assert rate.as_tuple().exponent >= -18 and rate < 10**20, (price.model, rate)


def stored_counts(attributes: dict) -> Counts:
    fields = normalise("chat", "OK", {"gen_ai.operation.name": "chat", **attributes}, {})
    return tuple(getattr(fields, column) for column in TOKEN_COLUMNS)  # type: ignore[return-value]


def test_counts_enrich_keeps_cannot_overflow_the_meters(store: LocalStore) -> None:
    # Two spans each claiming 2^62 input tokens would overflow sum(...)::BIGINT and fail
    # `meterline usage` (and billing) for every tenant ...
    huge = (2**62, 0, 0, 0, 0)
    put(store, [("model-0", huge), ("model-0", huge)])
    with pytest.raises(StoreError):
        Meterer(store, EACH).usage(PERIOD)
    # ... so enrich.genai keeps no count above 10^9: such a value is garbage, stored as NULL.
    tokens = stored_counts({"gen_ai.usage.input_tokens": 2**62, "gen_ai.usage.output_tokens": MAX_TOKENS,
                            "gen_ai.usage.cache_read.input_tokens": str(2**63 - 1)})
    assert tokens == (None, MAX_TOKENS, None, None, None)
    put(store, [("model-0", tokens), ("model-0", tokens), ("model-1", stored_counts({}))])
    (row,) = Meterer(store, EACH).usage(PERIOD)
    assert (row["input_tokens"], row["output_tokens"], row["llm_calls"]) == (0, 2 * MAX_TOKENS, 3)
    assert row["llm_cost"] == 2 * expected_cost("model-0", tokens)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(MODELS), counts)
def test_langfuse_cost_details_are_model_price_cost(model: str, tokens: Counts) -> None:
    """What Langfuse receives for a billable span is ModelPrice.cost: the total and each part."""
    price = EACH.price_for(model)
    row = dict(zip(TOKEN_COLUMNS, tokens))
    details = json.loads(cost_details(row, price), parse_float=Decimal, parse_int=Decimal)
    assert details.pop("total") == price.cost(*tokens)
    parts = price.cost_parts(*tokens)
    langfuse_key = {"input": "input", "cache_read": "input_cache_read", "cache_write": "input_cache_creation",
                    "output": "output", "reasoning": "output_reasoning"}
    assert details == {langfuse_key[part]: cost for part, cost in parts.items()
                       if langfuse_key[part] in details}
    assert set(details) == set(usage_parts(row))  # a cost for each usage key Langfuse is sent

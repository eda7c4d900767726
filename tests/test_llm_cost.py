"""LLM cost: the shipped Langfuse-derived price table, the token rule, model id matching."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from metering.convert_langfuse_prices import ConversionError, convert, dumps
from metering.llm_cost import DEFAULT_PATH, PriceTable, Rates, UnknownModel

D = Decimal
FIXTURES = Path(__file__).parent / "data" / "agentcore"
# The model ids in the AgentCore captures (gen_ai.request.model), also listed here so the test
# stands on its own.
FIXTURE_MODEL_IDS = ["us.anthropic.claude-3-7-sonnet-20250219-v1:0", "gpt-4o"]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_table_carries_source_and_licence(table):
    assert table.source["repository"] == "langfuse/langfuse"
    assert table.source["path"] == "worker/src/constants/default-model-prices.json"
    assert re.fullmatch(r"[0-9a-f]{40}", table.source["commit"])
    assert table.source["license"] == "MIT"
    assert "Permission is hereby granted, free of charge" in table.source["license_notice"]


def test_prices_are_decimal_strings_never_floats():
    raw = json.loads(DEFAULT_PATH.read_text())
    for model in raw["models"]:
        prices = [model[k] for k in ("input", "output", "cache_read", "cache_write", "reasoning")]
        if model["large_context"]:
            prices += [model["large_context"][k] for k in ("input", "output", "cache_read", "cache_write", "reasoning")]
        assert all(p is None or (isinstance(p, str) and re.fullmatch(r"\d+(\.\d+)?", p)) for p in prices), model


def test_known_prices(table):
    gpt4o = table.price_for("gpt-4o")
    assert gpt4o.model == "gpt-4o"
    # Listed by Langfuse: input, output, cache read. Not listed: cache write -> input, reasoning -> output.
    assert gpt4o.rates == Rates(D("0.0000025"), D("0.00001"), D("0.00000125"), D("0.0000025"), D("0.00001"))
    sonnet = table.price_for("claude-3-7-sonnet-20250219")
    assert sonnet.model == "claude-3.7-sonnet-20250219"
    assert sonnet.rates == Rates(D("0.000003"), D("0.000015"), D("0.0000003"), D("0.00000375"), D("0.000015"))


@pytest.mark.parametrize("model_id", FIXTURE_MODEL_IDS)
def test_fixture_model_ids_have_a_price(table, model_id):
    assert table.price_for(model_id) is not None


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="tests/data/agentcore not present")
def test_every_model_id_in_the_fixture_captures_has_a_price(table):
    ids = set()
    for path in FIXTURES.glob("*.json"):
        for entry in json.loads(path.read_text()):
            attributes = entry["raw_otel_json"].get("attributes", {})
            ids |= {attributes[k] for k in ("gen_ai.request.model", "gen_ai.response.model") if k in attributes}
    assert ids >= set(FIXTURE_MODEL_IDS)
    assert {i: table.price_for(i) is not None for i in ids} == {i: True for i in ids}


@pytest.mark.parametrize("model_id, expected", [
    ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3.7-sonnet-20250219"),  # Langfuse lists us./eu./apac.
    ("apac.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3.7-sonnet-20250219"),
    ("eu.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku-20240307"),         # prefix not in the pattern
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("jp.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-20250514-v1:0",
     "claude-sonnet-4-20250514"),
    ("GPT-4o", "gpt-4o"),                    # (?i)
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4o-mini", "gpt-4o-mini"),          # not swallowed by gpt-4o: patterns are anchored
    ("anthropic/claude-sonnet-4-6", "claude-sonnet-4-6"),   # Langfuse's \/ escape
    ("gemini-1.0-pro@001", "gemini-1.0-pro"),
    ("ft:gpt-3.5-turbo-0613:acme::abc123", "ft:gpt-3.5-turbo-0613"),
])
def test_model_id_matching(table, model_id, expected):
    assert table.price_for(model_id).model == expected


@pytest.mark.parametrize("model_id", ["", "gpt-4o-turbo-nonexistent", "gpt-4oo", "xx.anthropic.claude-3-haiku"])
def test_unknown_models(table, model_id):
    assert table.price_for(model_id) is None
    with pytest.raises(UnknownModel):
        table.cost(model_id, input_tokens=1)


def test_lookups_are_cached_per_model_id():
    table = PriceTable.load()
    for _ in range(3):
        table.price_for("us.anthropic.claude-3-7-sonnet-20250219-v1:0")
        table.price_for("no-such-model")
    info = table._lookup.cache_info()
    assert (info.misses, info.hits) == (2, 4)


def test_cost_by_hand(table):
    # The Bedrock fixture's first chat span: 21,245 in, 56 out at $3 / $15 per 1M.
    assert table.cost("us.anthropic.claude-3-7-sonnet-20250219-v1:0", 21_245, 56) == D("0.064575")
    # The OpenAI fixture's first chat span: 2,707 in, 240 out at $2.50 / $10 per 1M.
    assert table.cost("gpt-4o", input_tokens=2_707, output_tokens=240) == D("0.0091675")


def test_cached_tokens_are_inside_input_and_priced_once(table):
    # 10,000 input = 3,000 uncached + 6,000 cache reads + 1,000 cache writes; 500 output.
    cost = table.cost("claude-3-7-sonnet-20250219", input_tokens=10_000, output_tokens=500,
                      cache_read_tokens=6_000, cache_write_tokens=1_000)
    assert cost == D("0.009") + D("0.0018") + D("0.00375") + D("0.0075") == D("0.02205")


def test_reasoning_tokens_are_inside_output(table):
    # o3: 2,000 input (500 cached), 1,000 output of which 800 reasoning, reasoning at the output rate.
    cost = table.cost("o3", input_tokens=2_000, output_tokens=1_000, cache_read_tokens=500, reasoning_tokens=800)
    assert cost == 1_500 * D("0.000002") + 500 * D("0.0000005") + 1_000 * D("0.000008") == D("0.01125")


def test_large_context_tier_prices_the_whole_call(table):
    sonnet45 = "claude-sonnet-4-5-20250929"
    assert table.cost(sonnet45, input_tokens=200_000) == D("0.6")
    assert table.cost(sonnet45, input_tokens=200_001, output_tokens=1) == 200_001 * D("0.000006") + D("0.0000225")


def test_total_only_models_price_input_and_output_at_the_total_rate(table):
    assert table.cost("text-embedding-3-small", input_tokens=1_000_000) == D("0.02")


def test_cache_above_input_clamps_the_uncached_input_at_zero(table):
    # Input reported WITHOUT its cache (Anthropic's API style): 100 input, 80 read, 30 written.
    # Never raises, never negative: priced as the cache parts alone, as metering's SQL does.
    gpt4o = table.price_for("gpt-4o")
    cost = gpt4o.cost(input_tokens=100, cache_read_tokens=80, cache_write_tokens=30)
    assert cost == 80 * D("0.00000125") + 30 * D("0.0000025") == D("0.000175")
    assert gpt4o.cost_parts(input_tokens=100, cache_read_tokens=80, cache_write_tokens=30)["input"] == 0
    assert gpt4o.cost(cache_read_tokens=10) == 10 * D("0.00000125")  # no input reported at all


def test_reasoning_above_output_clamps_the_plain_output_at_zero(table):
    o3 = table.price_for("o3")
    assert o3.cost(output_tokens=10, reasoning_tokens=11) == 11 * o3.rates.reasoning
    assert o3.cost_parts(output_tokens=10, reasoning_tokens=11)["output"] == 0


def test_unreported_counts_are_zero(table):
    price = table.price_for("claude-sonnet-4-5-20250929")
    assert price.cost(None, None, None, None, None) == 0
    assert price.cost(1_000, None, 200) == price.cost(1_000, 0, 200)
    assert table.cost("gpt-4o", input_tokens=None, output_tokens=7) == 7 * D("0.00001")


def test_cost_parts_sum_to_cost_exactly(table):
    price = table.price_for("claude-sonnet-4-5-20250929")
    args = (250_000, 4_000, 30_000, 5_000, 1_000)  # large-context tier: the whole call at its rates
    parts = price.cost_parts(*args)
    rates = price.large_context.rates
    assert parts == {"input": 215_000 * rates.input, "cache_read": 30_000 * rates.cache_read,
                     "cache_write": 5_000 * rates.cache_write, "output": 3_000 * rates.output,
                     "reasoning": 1_000 * rates.reasoning}
    assert sum(parts.values()) == price.cost(*args)


@pytest.mark.parametrize("kwargs", [
    {"input_tokens": -1}, {"cache_read_tokens": -5}, {"output_tokens": 1.0}, {"input_tokens": True},
    {"reasoning_tokens": "3"},
])
def test_cost_refuses_values_that_are_not_token_counts(table, kwargs):
    # A caller's bug, never span data: enrich.genai stores non-negative ints or NULL.
    with pytest.raises(ValueError, match="non-negative int or None"):
        table.cost("gpt-4o", **kwargs)


def test_every_pattern_is_anchored_and_compiles():
    for model in PriceTable.load().models:
        assert model.match_pattern.startswith("(?i)^") and model.match_pattern.endswith("$"), model.model
        re.compile(model.match_pattern)


# --- the converter ----------------------------------------------------------------------------

def _langfuse(name, pattern, prices, *extra_tiers):
    return {"modelName": name, "matchPattern": pattern,
            "pricingTiers": [{"isDefault": True, "conditions": [], "prices": prices}, *extra_tiers]}


def test_converter_keeps_exact_prices_and_resolves_aliases():
    text = ('[{"modelName": "m", "matchPattern": "(?i)^(m)$", "pricingTiers": [{"isDefault": true, '
            '"conditions": [], "prices": {"input": 2.5e-7, "output": 0.000015, '
            '"input_cached_tokens": 1.25e-8, "input_cache_read": 1.25e-8}}]}]')
    (model,) = convert(json.loads(text, parse_float=Decimal), "abc")["models"]
    assert model == {"model": "m", "match_pattern": "(?i)^(m)$", "input": "0.00000025", "output": "0.000015",
                     "cache_read": "0.0000000125", "cache_write": None, "reasoning": None, "large_context": None}


def test_converter_large_context_and_total_only():
    large = {"isDefault": False, "name": "Large Context", "prices": {"input": D("6e-6"), "output": D("2.25e-5")},
             "conditions": [{"usageDetailPattern": "input", "operator": "gt", "value": 200000}]}
    table = convert([
        _langfuse("big", "(?i)^big$", {"input": D("3e-6"), "output": D("1.5e-5")}, large),
        _langfuse("emb", "(?i)^emb$", {"total": D("2e-8")}),
    ], None)
    big, emb = table["models"]
    assert big["large_context"] == {"above_input_tokens": 200000, "input": "0.000006", "output": "0.0000225",
                                    "cache_read": None, "cache_write": None, "reasoning": None}
    assert (emb["input"], emb["output"]) == ("0.00000002", "0.00000002")
    assert json.loads(dumps(table)) == table


@pytest.mark.parametrize("entry, message", [
    (_langfuse("x", "(?i)^x$", {"input": D("1"), "input_tokens": D("2"), "output": D("1")}), "keys for input disagree"),
    (_langfuse("x", "(?i)^(x$", {"input": D("1"), "output": D("1")}), "not a Python regex"),
    (_langfuse("x", "(?i)^x$", {"input_audio": D("1")}), "no input, output or total price"),
    (_langfuse("x", "(?i)^x$", {"input": D("1"), "output": D("1")},
               {"isDefault": False, "prices": {}, "conditions": [
                   {"usageDetailPattern": "output", "operator": "gt", "value": 1}]}), "unsupported condition"),
])
def test_converter_refuses_what_it_cannot_represent(entry, message):
    with pytest.raises(ConversionError, match=message):
        convert([entry], None)

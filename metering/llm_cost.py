"""What an LLM call cost us, in exact USD, from its model id and token counts.

Prices: `model_prices.json` next to this file, converted by `convert_langfuse_prices.py` from
Langfuse's MIT-licensed default model prices (github.com/langfuse/langfuse,
worker/src/constants/default-model-prices.json; the JSON's "source" header holds the commit and
the licence notice). Per-token USD prices are decimal strings, read straight into Decimal.

Token rule (OTel GenAI semantic conventions, gen_ai.usage.*):
- `input_tokens` INCLUDES cache reads and cache writes ("This value SHOULD include all types of
  input tokens, including cached tokens"; cache_read.input_tokens and cache_write.input_tokens
  "SHOULD be included in gen_ai.usage.input_tokens"). So the input priced at the full input rate
  is input - cache_read - cache_write, and cache reads are never priced twice.
- `output_tokens` INCLUDES reasoning tokens (reasoning.output_tokens "SHOULD be included in
  gen_ai.usage.output_tokens"). Reasoning is priced at the reasoning rate, the rest at output.
- The uncached input (input - cache_read - cache_write) and the plain output (output - reasoning)
  are clamped at 0, so a call whose cache parts exceed its input (reasoning exceeds its output) is
  priced for its cache (reasoning) tokens only. Why not refuse such counts: some instrumentations
  report input EXCLUDING cache tokens (Anthropic's own API; Bedrock Converse as Strands reports
  it), and span data is whatever a client sent. Pricing it must never raise (one odd span would
  break `meterline usage` and billing for every tenant) and never go negative. The clamp is a
  floor, not a correction: such a span's uncached input is unknown and is billed as 0; counts
  should be normalised to the rule above before they reach the store.
- A count that is None (the span did not report it, NULL in the store) counts as 0.

`ModelPrice.cost` is THE definition of this rule. Metering evaluates the same rule in SQL over the
store (`_COST` in metering/meters.py, for speed over millions of spans) and
tests/test_metering_cost.py checks, for every model in the table and random token counts, that
the two agree to the last decimal; the Langfuse exporter calls `ModelPrice.cost_parts`.

Prices Langfuse does not list fall back: cache read and cache write to the input rate, reasoning
to the output rate. A model with a large-context tier (e.g. prompts over 200K tokens) is priced
entirely at that tier's rates when input_tokens exceeds the threshold. The result is exact and
unrounded: rounding to cents belongs to invoicing (pricing.rating).

Model ids: the first entry (file order) whose pattern matches the whole id wins. Langfuse writes
its patterns for Postgres/JS with a leading `(?i)` and `\\/`; Python's `re` accepts both, and
`fullmatch` keeps a trailing newline from matching `$`. Ids that miss are retried without an ARN
prefix (`arn:aws:bedrock:...:inference-profile/`) and without a Bedrock cross-region prefix
(us., eu., apac., global., ...), which not every Langfuse pattern lists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

DEFAULT_PATH = Path(__file__).with_name("model_prices.json")

_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation, Overflow])  # never round silently
_BEDROCK_REGION = re.compile(r"(?:us|eu|apac|us-gov|jp|au|ca|global)\.(?=[a-z0-9-]+\.)", re.IGNORECASE)


class UnknownModel(LookupError):
    """No price for this model id."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token, fallbacks already applied."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal


@dataclass(frozen=True, slots=True)
class LargeContext:
    """Rates for the whole call once input_tokens exceeds `above_input_tokens`."""

    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    match_pattern: str
    rates: Rates
    large_context: LargeContext | None = None

    def cost(self, input_tokens: int | None = 0, output_tokens: int | None = 0, cache_read_tokens: int | None = 0,
             cache_write_tokens: int | None = 0, reasoning_tokens: int | None = 0) -> Decimal:
        """Exact USD for one call, unrounded; token counts follow the rule in the module docstring.

        Any stored span's counts are accepted: None counts as 0, and cache tokens above the input
        (reasoning above the output) clamp the uncached input (plain output) at 0 instead of
        raising, exactly as metering's SQL does. Only a value that cannot be a token count at all
        (negative, not an int, a bool) raises ValueError: that is a caller's bug, never span data
        (enrich.genai stores non-negative ints or NULL).
        """
        with localcontext(_EXACT):
            return sum(self.cost_parts(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                                       reasoning_tokens).values(), Decimal(0))

    def cost_parts(self, input_tokens: int | None = 0, output_tokens: int | None = 0,
                   cache_read_tokens: int | None = 0, cache_write_tokens: int | None = 0,
                   reasoning_tokens: int | None = 0) -> dict[str, Decimal]:
        """`cost` split by rate: exact USD for "input" (uncached), "cache_read", "cache_write",
        "output" (non-reasoning) and "reasoning"; the parts sum to `cost` exactly."""
        counts = {"input_tokens": input_tokens, "output_tokens": output_tokens,
                  "cache_read_tokens": cache_read_tokens, "cache_write_tokens": cache_write_tokens,
                  "reasoning_tokens": reasoning_tokens}
        for name, value in counts.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        inp, out, cache_read, cache_write, reasoning = (value or 0 for value in counts.values())
        r = self.rates
        if self.large_context and inp > self.large_context.above_input_tokens:
            r = self.large_context.rates  # the whole call, decided on the reported input
        with localcontext(_EXACT):
            return {
                "input": max(inp - cache_read - cache_write, 0) * r.input,
                "cache_read": cache_read * r.cache_read,
                "cache_write": cache_write * r.cache_write,
                "output": max(out - reasoning, 0) * r.output,
                "reasoning": reasoning * r.reasoning,
            }


@dataclass(frozen=True, slots=True)
class PriceTable:
    models: tuple[ModelPrice, ...]
    source: dict[str, Any]
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _lookup: Callable[[str], ModelPrice | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(re.compile(m.match_pattern) for m in self.models))
        # Per-instance cache; bounded because model ids come from spans a client controls.
        object.__setattr__(self, "_lookup", lru_cache(maxsize=4096)(self._find))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> PriceTable:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(_model_price(entry) for entry in data["models"]), data["source"])

    def price_for(self, model_id: str) -> ModelPrice | None:
        return self._lookup(model_id)

    def cost(self, model_id: str, input_tokens: int | None = 0, output_tokens: int | None = 0,
             cache_read_tokens: int | None = 0, cache_write_tokens: int | None = 0,
             reasoning_tokens: int | None = 0) -> Decimal:
        """`ModelPrice.cost` of the model id's price; UnknownModel when the table has none."""
        price = self.price_for(model_id)
        if price is None:
            raise UnknownModel(f"no price for model {model_id!r}")
        return price.cost(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens)

    def _find(self, model_id: str) -> ModelPrice | None:
        model_id = model_id.strip()
        candidates = [model_id]
        if model_id.startswith("arn:") and "/" in model_id:
            candidates.append(model_id.rsplit("/", 1)[1])
        candidates += [_BEDROCK_REGION.sub("", c, count=1) for c in candidates if _BEDROCK_REGION.match(c)]
        for candidate in candidates:
            for pattern, price in zip(self._patterns, self.models):
                if pattern.fullmatch(candidate):
                    return price
        return None


def _model_price(entry: dict[str, Any]) -> ModelPrice:
    large = entry.get("large_context")
    return ModelPrice(
        model=entry["model"],
        match_pattern=entry["match_pattern"],
        rates=_rates(entry),
        large_context=LargeContext(large["above_input_tokens"], _rates(large)) if large else None,
    )


def _rates(prices: dict[str, Any]) -> Rates:
    def price(key: str, fallback: str | None = None) -> Decimal:
        value = prices[key] if prices.get(key) is not None or fallback is None else prices[fallback]
        if not isinstance(value, str):
            raise ValueError(f"model_prices.json: {key}: expected a decimal string, got {value!r}")
        return Decimal(value)

    return Rates(
        input=price("input"),
        output=price("output"),
        cache_read=price("cache_read", "input"),
        cache_write=price("cache_write", "input"),
        reasoning=price("reasoning", "output"),
    )

"""Convert Langfuse's default model prices into the compact table Meterline ships (model_prices.json).

Source: worker/src/constants/default-model-prices.json in github.com/langfuse/langfuse (MIT for
everything outside the ee/ folders; see LICENSE_NOTICE below, which the output carries). Usage:

    python -m metering.convert_langfuse_prices default-model-prices.json --commit <sha> \
        > metering/model_prices.json

What is kept, per model: the name, the match pattern, and USD per-token prices as decimal strings
(read with `parse_float=Decimal`, so no value ever passes through a binary float) for input,
output, cache_read, cache_write and reasoning. Langfuse lists the same price under several usage
keys (e.g. `input_cache_read`, `input_cached_tokens`, `cache_read_input_tokens`); the aliases must
agree or the conversion stops. Absent prices stay null and llm_cost falls back to the input
(cache) or output (reasoning) rate. `total`-only models (embeddings, legacy completions) price
input and output at the total rate. Audio, image and search-query prices are dropped: Meterline
does not meter them. Cache writes use the 5-minute rate (`input_cache_creation_1h` is dropped).
A non-default "large context" pricing tier is kept only in the one shape seen so far, a single
condition "input-like usage > N tokens"; anything else stops the conversion.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

SOURCE_REPOSITORY = "langfuse/langfuse"
SOURCE_PATH = "worker/src/constants/default-model-prices.json"
LICENSE_NOTICE = (
    "Derived from Langfuse's default model prices. Copyright (c) 2023-2026 ClickHouse, Inc. "
    "Content outside the ee/ directories of langfuse/langfuse is licensed under the MIT Expat "
    "license: Permission is hereby granted, free of charge, to any person obtaining a copy of this "
    "software and associated documentation files (the \"Software\"), to deal in the Software "
    "without restriction, including without limitation the rights to use, copy, modify, merge, "
    "publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons to "
    "whom the Software is furnished to do so, subject to the following conditions: The above "
    "copyright notice and this permission notice shall be included in all copies or substantial "
    "portions of the Software. THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, "
    "EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS "
    "FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT "
    "HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, "
    "TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR "
    "OTHER DEALINGS IN THE SOFTWARE."
)

# Our field -> the Langfuse usage keys that carry its price, preferred first.
PRICE_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("input", "input_tokens", "input_text_tokens", "input_text", "input_modality_1",
              "prompt_token_count", "promptTokenCount"),
    "output": ("output", "output_tokens", "output_text_tokens", "output_text", "output_modality_1",
               "candidates_token_count", "candidatesTokenCount"),
    "cache_read": ("input_cache_read", "input_cached_tokens", "cache_read_input_tokens",
                   "input_cached_text_tokens", "cached_content_token_count"),
    "cache_write": ("input_cache_creation", "input_cache_creation_5m", "cache_creation_input_tokens"),
    "reasoning": ("output_reasoning", "output_reasoning_tokens", "thoughtsTokenCount", "thoughts_token_count"),
}


class ConversionError(ValueError):
    pass


def convert(langfuse_models: list[dict[str, Any]], commit: str | None) -> dict[str, Any]:
    """Langfuse's model list (parsed with parse_float=Decimal) -> our table as a JSON-ready dict."""
    models = [_model(entry) for entry in langfuse_models]
    url = f"https://github.com/{SOURCE_REPOSITORY}/blob/{commit or 'main'}/{SOURCE_PATH}"
    return {
        "source": {
            "repository": SOURCE_REPOSITORY, "path": SOURCE_PATH, "commit": commit, "url": url,
            "license": "MIT", "license_notice": LICENSE_NOTICE,
        },
        "converted_by": "metering/convert_langfuse_prices.py",
        "currency": "usd",
        "unit": "USD per token; null = not listed by Langfuse (see metering/llm_cost.py for the fallback)",
        "models": models,
    }


def _model(entry: dict[str, Any]) -> dict[str, Any]:
    name = entry["modelName"]
    pattern = entry["matchPattern"]
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConversionError(f"{name}: match pattern {pattern!r} is not a Python regex: {exc}") from None
    default = [t for t in entry["pricingTiers"] if t.get("isDefault")]
    others = [t for t in entry["pricingTiers"] if not t.get("isDefault")]
    if len(default) != 1:
        raise ConversionError(f"{name}: expected exactly one default pricing tier, got {len(default)}")
    if len(others) > 1:
        raise ConversionError(f"{name}: more than one non-default pricing tier is not supported")
    model: dict[str, Any] = {"model": name, "match_pattern": pattern, **_prices(name, default[0]["prices"])}
    model["large_context"] = _large_context(name, others[0]) if others else None
    return model


def _prices(name: str, prices: dict[str, Decimal]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for field, keys in PRICE_KEYS.items():
        values = {prices[k] for k in keys if k in prices}
        if len(values) > 1:
            raise ConversionError(f"{name}: the keys for {field} disagree: {sorted(map(str, values))}")
        out[field] = _plain(values.pop()) if values else None
    if out["input"] is None and out["output"] is None:
        if "total" not in prices:
            raise ConversionError(f"{name}: no input, output or total price among {sorted(prices)}")
        out["input"] = out["output"] = _plain(prices["total"])
    return out


def _large_context(name: str, tier: dict[str, Any]) -> dict[str, Any]:
    conditions = tier.get("conditions") or []
    if len(conditions) != 1:
        raise ConversionError(f"{name}: tier {tier.get('name')!r}: expected one condition, got {len(conditions)}")
    (cond,) = conditions
    if cond.get("operator") != "gt" or not re.search(cond["usageDetailPattern"], "input", re.IGNORECASE):
        raise ConversionError(f"{name}: tier {tier.get('name')!r}: unsupported condition {cond}")
    return {"above_input_tokens": int(cond["value"]), **_prices(name, tier["prices"])}


def _plain(value: Decimal | int) -> str:
    """2.5E-7 -> "0.00000025": plain notation, exact, no trailing zeros."""
    text = format(Decimal(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="Langfuse's default-model-prices.json")
    parser.add_argument("--commit", help="langfuse/langfuse commit the file was taken from")
    args = parser.parse_args(argv)
    data = json.loads(args.source.read_text(encoding="utf-8"), parse_float=Decimal)
    sys.stdout.write(dumps(convert(data, args.commit)))


def dumps(table: dict[str, Any]) -> str:
    """JSON with one model per line, so a price change is a one-line diff."""
    head = {k: v for k, v in table.items() if k != "models"}
    lines = json.dumps(head, indent=1).rstrip("}\n").rstrip()
    models = ",\n".join("  " + json.dumps(m) for m in table["models"])
    return f'{lines},\n "models": [\n{models}\n ]\n}}\n'


if __name__ == "__main__":
    main()

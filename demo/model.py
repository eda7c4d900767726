"""A deterministic stand-in for a hosted LLM, speaking Strands' model streaming protocol.

Everything else in the demo is real Strands: agents, event loop, tool execution, tracing. Only
the model is scripted, so the demo needs no network: each agent's script picks tools and token
counts from a seeded RNG, so the same run id always produces the same conversation.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, AsyncIterator

from strands.models.model import Model


class ModelRefusal(RuntimeError):
    """The scripted model's way of failing an agent run (as a guardrail or a timeout would)."""


@dataclass(frozen=True)
class Script:
    """How one agent behaves: the tools it may call, how many calls a run makes, its failure rate."""

    tools: tuple[str, ...]
    calls: tuple[int, int]  # min, max tool calls per run
    failure_rate: float
    cache_share: float  # share of input tokens served from the prompt cache after the first turn
    context_tokens: int = 12_000  # input tokens of the first turn


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


class ScriptedModel(Model):
    """A Strands Model whose replies come from a Script instead of a hosted LLM."""

    def __init__(self, model_id: str, script: Script, tool_inputs: dict[str, Any]) -> None:
        self.config = {"model_id": model_id}  # Strands reads model_id for gen_ai.request.model
        self.script = script
        self.tool_inputs = tool_inputs

    def update_config(self, **model_config: Any) -> None:
        self.config.update(model_config)

    def get_config(self) -> dict[str, Any]:
        return self.config

    async def structured_output(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the demo's agents do not use structured output")

    async def stream(self, messages: list[dict[str, Any]], tool_specs: Any = None, system_prompt: str | None = None,
                     **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        prompt, turn = _current_prompt(messages)
        rng = random.Random(_seed(self.config["model_id"], prompt, turn))
        plan = random.Random(_seed(prompt)).randint(*self.script.calls)
        if turn == 0 and rng.random() < self.script.failure_rate:
            raise ModelRefusal("model refused the request (guardrail intervened)")
        # Agent contexts are large: system prompt, tool specs, CRM records and memory (the AgentCore
        # captures show ~21k input tokens per call), growing with each turn of the conversation.
        input_tokens = self.script.context_tokens + 1500 * turn + rng.randint(0, self.script.context_tokens // 4)
        cached = int(input_tokens * self.script.cache_share) if turn else 0
        yield {"messageStart": {"role": "assistant"}}
        if turn < plan and self.script.tools:
            name = self.script.tools[rng.randrange(len(self.script.tools))]
            tool_use = {"toolUseId": f"call-{_seed(prompt, turn) % 10**12}", "name": name}
            yield {"contentBlockStart": {"start": {"toolUse": tool_use}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps(self.tool_inputs.get(name, {}))}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
            output_tokens = rng.randint(40, 160)
        else:
            yield {"contentBlockStart": {"start": {}}}
            yield {"contentBlockDelta": {"delta": {"text": f"Done: {prompt[:60]}"}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
            output_tokens = rng.randint(150, 900)
        yield {"metadata": {
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens,
                      "totalTokens": input_tokens + output_tokens, "cacheReadInputTokens": cached},
            "metrics": {"latencyMs": rng.randint(200, 1500)},
        }}


def _current_prompt(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The latest user text, and how many model turns have happened since it."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        texts = [block["text"] for block in message.get("content", []) if "text" in block]
        if message.get("role") == "user" and texts:
            turns = sum(1 for later in messages[index + 1:] if later.get("role") == "assistant")
            return texts[0], turns
    return "", 0

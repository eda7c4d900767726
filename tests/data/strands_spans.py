"""Print the spans a real strands-agents Agent emits, as a JSON list in the AgentCore fixture shape.

Run in its own process (it installs a global tracer provider). Only the model is scripted, so
no network is needed; the Agent, event loop, tool executor and tracer are Strands' own. The
Agent is invoked twice (Strands' invoke_agent totals are cumulative per Agent object) and each
invocation calls a tool that raises, then answers. Set OTEL_SEMCONV_STABILITY_OPT_IN to choose
Strands' convention (legacy by default, `gen_ai_latest_experimental` for the latest).
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MODEL_ID = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
TRACE_ATTRIBUTES = {"tenant.id": "acme", "session.id": "sess-42", "user.id": "user-7"}

exporter = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "billing-agent-service"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from strands import Agent, tool  # noqa: E402  (after the tracer provider, which Strands reads once)
from strands.models.model import Model  # noqa: E402


@tool
def lookup_invoice(invoice_id: str) -> str:
    """Look an invoice up (always fails)."""
    raise RuntimeError("invoice service unavailable")


class ScriptedModel(Model):
    """Odd turns ask for the tool, even turns answer; turn n reports 100*n input tokens."""

    def __init__(self) -> None:
        self.turn = 0
        self.config = {"model_id": MODEL_ID}  # Strands reads model.config for gen_ai.request.model

    def update_config(self, **model_config):
        pass

    def get_config(self):
        return self.config

    async def structured_output(self, *args, **kwargs):
        raise NotImplementedError

    async def stream(self, messages, tool_specs=None, system_prompt=None, **kwargs):
        self.turn += 1
        yield {"messageStart": {"role": "assistant"}}
        if self.turn % 2:
            tool_use = {"toolUseId": f"call-{self.turn}", "name": "lookup_invoice"}
            yield {"contentBlockStart": {"start": {"toolUse": tool_use}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"invoice_id": "in_1"}'}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        else:
            yield {"contentBlockStart": {"start": {}}}
            yield {"contentBlockDelta": {"delta": {"text": "The invoice service is down."}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
        input_tokens = 100 * self.turn
        usage = {
            "inputTokens": input_tokens,
            "outputTokens": 10,
            "totalTokens": input_tokens + 10,
            "cacheReadInputTokens": 5,
            "cacheWriteInputTokens": 7,
        }
        yield {"metadata": {"usage": usage, "metrics": {"latencyMs": 3}}}


agent = Agent(
    model=ScriptedModel(),
    tools=[lookup_invoice],
    name="billing-agent",
    trace_attributes=TRACE_ATTRIBUTES,
    callback_handler=None,
)
agent("Why was I charged twice?")
agent("And the other invoice?")

json.dump(
    [
        {
            "name": span.name,
            "status": {"code": span.status.status_code.name},
            "attributes": dict(span.attributes),
            "resource": {"attributes": dict(span.resource.attributes)},
        }
        for span in exporter.get_finished_spans()
    ],
    sys.stdout,
)

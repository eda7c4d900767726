"""One span's attributes -> canonical GenAI columns (kind, model, tokens, names, outcome).

Agents report the same facts under several dialects: OTel GenAI semconv (`gen_ai.*`, current and
deprecated spellings), OpenInference (`llm.*`, `openinference.span.kind`), OpenLLMetry
(`traceloop.*`, `llm.request.type`) and Strands, which writes several spellings at once.

Precedence, applied the same way everywhere:
- Keys are tried in the order of the tuples below: current semconv spelling, then deprecated
  semconv spelling, then OpenInference/OpenLLMetry. The first USABLE value wins: an empty string or
  a garbage token count does not stop the search. Span attributes come before resource attributes;
  only session, user and agent name fall back to the resource (they describe the whole service).
- model: `gen_ai.response.model` before `gen_ai.request.model`: the model that served the call is
  the one to price.
- agent name: `gen_ai.agent.name`, `agent.name`, `gen_ai.agent.id`, then the span name
  (`invoke_agent X`, `create_agent X`), then the resource. Tool and workflow names likewise fall
  back to `execute_tool X` / `invoke_workflow X`, never to the resource.
- op_kind: the first RECOGNISED value among gen_ai.operation.name, openinference.span.kind,
  llm.request.type, traceloop.span.kind decides; an unrecognised one (Strands'
  `execute_event_loop_cycle`, `memory.search`) defers to the next. With none recognised, a span
  reporting a model and token usage is "llm". Choices: `create_agent` is "other" (a control-plane
  call, not a run of the agent); OpenInference CHAIN is "other" (LangChain nests chains, so calling
  them workflows would inflate workflow counts); Strands' `invoke_swarm`/`invoke_graph` are
  "workflow"; embeddings are "llm" (a token-billed model call).
- provider: agent frameworks that put their own name in gen_ai.system / gen_ai.provider.name
  (Strands: "strands-agents") are skipped; values are lower-cased and "aws"/"bedrock" become
  "aws.bedrock". When no vendor is reported it is inferred from the model id where that is
  unambiguous: Bedrock ids (`us.anthropic.claude-...`, `amazon.nova-...`, Bedrock ARNs) ->
  "aws.bedrock", because AWS serves and bills those ids (the botocore span of the same call says
  "aws.bedrock"); `claude-*` -> "anthropic"; `gpt-*`, `o1*`, `o3*`, `o4-*`, `chatgpt-*`,
  `text-embedding-*` -> "openai"; anything else (gemini, llama, "vendor/model" routes) -> None.
- outcome: see `_outcome`.

Tokens are reported as the span reports them, including the invoke_agent span's running totals:
choosing which spans to bill (leaf LLM spans only) belongs to metering, not here.
A usable token count is a non-negative int, float (truncated) or numeric string of at most 10^9
(`_MAX_COUNT`) per span: no model has a billion-token context, so a larger value is garbage and
counts as absent (None), like a negative or non-numeric one. The bound also protects metering: it
sums counts into BIGINT per tenant and period, and two spans near 2^63 (which the BIGINT column
alone would accept) would overflow that sum and break `meterline usage` and billing for every
tenant; at 10^9 per span it takes over 9 billion spans to reach 2^63.
Hot path: dictionary lookups in constant tables only; a span without any GenAI key (HTTP, AWS SDK)
skips most of them, and the model-id inference is cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

_MAX_COUNT = 10**9  # per span and count; anything larger is garbage (see the module docstring)

_INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
_CACHE_READ_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_CACHE_WRITE_TOKENS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.cache_write_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
_REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
_MODEL = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
_AGENT = ("gen_ai.agent.name", "agent.name", "gen_ai.agent.id")
_TOOL = ("gen_ai.tool.name", "tool.name")
_WORKFLOW = ("gen_ai.workflow.name", "traceloop.workflow.name")
_SESSION = (
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.session.id",
    "traceloop.association.properties.session_id",
)
_USER = ("user.id", "langfuse.user.id", "enduser.id", "traceloop.association.properties.user_id")
_TENANT = (
    "tenant.id",
    "tenant_id",
    "tenantId",
    "tenant",
    "custom:tenant_id",
    "langfuse.trace.metadata.tenant_id",
    "traceloop.association.properties.tenant_id",
)

_AGENT_SPAN_PREFIXES = ("invoke_agent ", "create_agent ")
_TOOL_SPAN_PREFIX = "execute_tool "
_WORKFLOW_SPAN_PREFIX = "invoke_workflow "

# (attribute, value -> op_kind), in precedence order. Values absent from a table defer to the next.
_KIND_SOURCES: tuple[tuple[str, Mapping[str, str]], ...] = (
    (
        "gen_ai.operation.name",
        {
            "chat": "llm",
            "text_completion": "llm",
            "generate_content": "llm",
            "embeddings": "llm",
            "invoke_agent": "agent",
            "create_agent": "other",
            "execute_tool": "tool",
            "invoke_workflow": "workflow",
            "invoke_swarm": "workflow",
            "invoke_graph": "workflow",
            "retrieval": "other",
        },
    ),
    (
        "openinference.span.kind",
        {
            "LLM": "llm",
            "EMBEDDING": "llm",
            "AGENT": "agent",
            "TOOL": "tool",
            "CHAIN": "other",
            "RETRIEVER": "other",
            "RERANKER": "other",
            "GUARDRAIL": "other",
            "EVALUATOR": "other",
            "PROMPT": "other",
        },
    ),
    ("llm.request.type", {"chat": "llm", "completion": "llm", "embedding": "llm"}),
    ("traceloop.span.kind", {"workflow": "workflow", "agent": "agent", "tool": "tool", "task": "other"}),
)

# Every span attribute read below except session, user and outcome: a span with none of them
# (most spans of an agent trace: HTTP, AWS SDK, database) skips those lookups.
_GENAI_KEYS = frozenset(
    _INPUT_TOKENS + _OUTPUT_TOKENS + _CACHE_READ_TOKENS + _CACHE_WRITE_TOKENS + _REASONING_TOKENS
    + _PROVIDER + _MODEL + _AGENT + _TOOL + _WORKFLOW + tuple(key for key, _ in _KIND_SOURCES)
)

_FRAMEWORKS = frozenset({"strands-agents", "crewai", "langchain"})
_PROVIDER_ALIASES = {"aws": "aws.bedrock", "bedrock": "aws.bedrock"}
_BEDROCK_GEOS = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"})
_BEDROCK_VENDORS = frozenset(
    {"ai21", "amazon", "anthropic", "cohere", "deepseek", "meta", "mistral", "openai", "qwen", "writer"}
)
_ANTHROPIC_MODELS = ("claude-",)
_OPENAI_MODELS = ("gpt-", "chatgpt-", "o1", "o3", "o4-", "text-embedding-")

_SUCCESS_SPELLINGS = (
    "success", "succeeded", "successful", "ok", "true", "resolved", "completed", "complete", "passed",
)
_FAILURE_SPELLINGS = ("failure", "failed", "fail", "error", "errored", "false", "unresolved")
_EXPLICIT_OUTCOMES = {
    **dict.fromkeys(_SUCCESS_SPELLINGS, "success"),
    **dict.fromkeys(_FAILURE_SPELLINGS, "failure"),
}
_TOOL_FAILED = frozenset({"error", "failed", "failure"})
_TOOL_SUCCEEDED = frozenset({"success"})


@dataclass(slots=True)
class GenAIFields:
    operation: str | None  # as reported: gen_ai.operation.name, or e.g. "LLM" / "workflow"
    op_kind: str  # "agent" | "llm" | "tool" | "workflow" | "other"
    provider: str | None
    model: str | None
    input_tokens: int | None  # None: the span reports nothing; 0: it reports 0
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    agent_name: str | None
    tool_name: str | None
    workflow_name: str | None
    session_id: str | None
    user_id: str | None
    outcome: str  # "success" | "failure" | "unknown"


def normalise(
    name: str, status_code: str, attributes: Mapping[str, Any], resource: Mapping[str, Any]
) -> GenAIFields:
    """One span's canonical GenAI columns. status_code: "UNSET" | "OK" | "ERROR".

    Never raises on attribute values of an unexpected type or content: they count as absent.
    """
    get = attributes.get
    if attributes.keys().isdisjoint(_GENAI_KEYS):
        operation = op_kind = provider = model = agent_name = tool_name = workflow_name = None
        input_tokens = output_tokens = cache_read_tokens = cache_write_tokens = reasoning_tokens = None
    else:
        operation, op_kind = _kind(get)
        model = _text(get, _MODEL)
        provider = _provider(get, model)
        input_tokens = _count(get, _INPUT_TOKENS)
        output_tokens = _count(get, _OUTPUT_TOKENS)
        cache_read_tokens = _count(get, _CACHE_READ_TOKENS)
        cache_write_tokens = _count(get, _CACHE_WRITE_TOKENS)
        reasoning_tokens = _count(get, _REASONING_TOKENS)
        agent_name = _text(get, _AGENT)
        tool_name = _text(get, _TOOL)
        workflow_name = _text(get, _WORKFLOW)

    if op_kind is None:
        has_usage = input_tokens is not None or output_tokens is not None
        op_kind = "llm" if model is not None and has_usage else "other"
    if agent_name is None:
        agent_name = _name_suffix(name, _AGENT_SPAN_PREFIXES) or _text(resource.get, _AGENT)
    if tool_name is None:
        tool_name = _name_suffix(name, _TOOL_SPAN_PREFIX)
    if workflow_name is None:
        workflow_name = _name_suffix(name, _WORKFLOW_SPAN_PREFIX)

    session_id = _text(get, _SESSION) or _text(resource.get, _SESSION)
    user_id = _text(get, _USER) or _text(resource.get, _USER)
    outcome = _outcome(status_code, get)
    return GenAIFields(  # positional: keyword arguments would cost ~0.5 µs per span
        operation,
        op_kind,
        provider,
        model,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        agent_name,
        tool_name,
        workflow_name,
        session_id,
        user_id,
        outcome,
    )


def tenant_hints(attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> set[str]:
    """Every tenant a client claims on the span or its resource.

    These are hints a client can forge (baggage, Strands trace_attributes, Langfuse metadata): compare
    them with the authenticated tenant, never bill by them. Integers are returned as text; each
    string in an array counts as a claim.
    """
    hints: set[str] = set()
    for attrs in (attributes, resource):
        for key in _TENANT:
            value = attrs.get(key)
            if value is None:
                continue
            for item in value if value.__class__ is list else (value,):
                claim = _as_text(item)
                if claim is not None:
                    hints.add(claim)
    return hints


def _kind(get: Callable[[str], Any]) -> tuple[str | None, str | None]:
    """(operation as reported, op_kind or None when no source is recognised)."""
    first_reported = None
    for key, kinds in _KIND_SOURCES:
        value = get(key)
        if value.__class__ is str and value:
            kind = kinds.get(value)
            if kind is not None:
                return value, kind
            if first_reported is None:
                first_reported = value
    return first_reported, None


def _count(get: Callable[[str], Any], keys: tuple[str, ...]) -> int | None:
    """First usable token count: a non-negative int, float (truncated) or numeric string, at most
    _MAX_COUNT (10^9); a larger value is garbage and the search goes on."""
    for key in keys:
        value = get(key)
        if value is None:
            continue
        if value.__class__ is int:  # the common case; also rejects bool
            if 0 <= value <= _MAX_COUNT:
                return value
            continue
        if value.__class__ is str:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    continue
        if value.__class__ in (int, float) and 0 <= value <= _MAX_COUNT:  # NaN and inf fail here
            return int(value)
    return None


def _text(get: Callable[[str], Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = get(key)
        if value is not None:
            text = _as_text(value)
            if text is not None:
                return text
    return None


def _as_text(value: Any) -> str | None:
    """A non-blank string as is, an int as its digits, anything else None."""
    if value.__class__ is str:
        return value if value and not value.isspace() else None
    if value.__class__ is int:
        return str(value)
    return None


def _name_suffix(name: str, prefix: str | tuple[str, ...]) -> str | None:
    """`X` from a span named `<operation> X` (Strands and semconv span names)."""
    if name.startswith(prefix):
        suffix = name.partition(" ")[2]
        return suffix if suffix and not suffix.isspace() else None
    return None


def _provider(get: Callable[[str], Any], model: str | None) -> str | None:
    for key in _PROVIDER:
        value = get(key)
        if value.__class__ is str and value and not value.isspace():
            provider = value.lower()
            if provider not in _FRAMEWORKS:
                return _PROVIDER_ALIASES.get(provider, provider)
    return _provider_from_model(model) if model is not None else None


@lru_cache(maxsize=1024)
def _provider_from_model(model: str) -> str | None:
    """The vendor a model id unambiguously belongs to, else None (see the module docstring)."""
    if model.startswith("arn:aws:bedrock:"):
        return "aws.bedrock"
    vendor, dot, rest = model.partition(".")
    if vendor in _BEDROCK_GEOS:
        vendor, dot, rest = rest.partition(".")
    if dot and rest and vendor in _BEDROCK_VENDORS:
        return "aws.bedrock"
    if model.startswith(_ANTHROPIC_MODELS):
        return "anthropic"
    if model.startswith(_OPENAI_MODELS):
        return "openai"
    return None


def _outcome(status_code: str, get: Callable[[str], Any]) -> str:
    """success | failure | unknown.

    An explicit `meterline.outcome` decides alone (an unrecognised spelling is "unknown"). Otherwise
    failure signals beat success signals: Strands marks a tool that returned an error with
    gen_ai.tool.status=error on an OK span, so status OK alone must not win.
    """
    explicit = get("meterline.outcome")
    if explicit is not None:
        if explicit.__class__ is bool:
            return "success" if explicit else "failure"
        if explicit.__class__ is str:
            return _EXPLICIT_OUTCOMES.get(explicit.strip().lower(), "unknown")
        return "unknown"
    tool_status = get("gen_ai.tool.status")
    tool_status = tool_status.lower() if tool_status.__class__ is str else None
    if status_code == "ERROR" or get("error.type") or tool_status in _TOOL_FAILED:
        return "failure"
    if status_code == "OK" or tool_status in _TOOL_SUCCEEDED:
        return "success"
    return "unknown"

"""enrich.genai on real agent spans (AgentCore captures, a live Strands 1.62 agent) and the other dialects."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from enrich.genai import GenAIFields, normalise, tenant_hints

DATA = Path(__file__).parent / "data"
BEDROCK_MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"


def load_agentcore(file_name: str) -> list[dict]:
    entries = json.loads((DATA / "agentcore" / file_name).read_text())
    return [entry["raw_otel_json"] for entry in entries]


def run(span: dict) -> GenAIFields:
    return normalise(span["name"], span["status"]["code"], span["attributes"], span["resource"]["attributes"])


def one(name: str, attributes: dict, status: str = "UNSET", resource: dict | None = None) -> GenAIFields:
    return normalise(name, status, attributes, resource or {})


@pytest.fixture(scope="module")
def bedrock() -> list[dict]:
    return load_agentcore("raw_otel_strands_bedrock_spans.json")


@pytest.fixture(scope="module")
def openai() -> list[dict]:
    return load_agentcore("raw_otel_strands_openai_spans.json")


# --- AgentCore captures -------------------------------------------------------------------------


def test_agentcore_kinds_and_outcomes(bedrock, openai):
    assert Counter(run(s).op_kind for s in bedrock) == {"other": 41, "llm": 6, "agent": 3}
    assert Counter(run(s).op_kind for s in openai) == {"other": 42, "llm": 3, "agent": 2, "tool": 1}
    assert Counter(run(s).outcome for s in bedrock) == {"unknown": 41, "success": 9}
    assert Counter(run(s).outcome for s in openai) == {"unknown": 38, "success": 8, "failure": 2}


def test_agentcore_bedrock_chat_spans_and_their_sdk_twins(bedrock):
    by_id = {s["spanId"]: s for s in bedrock}
    strands_chats = [s for s in bedrock if s["name"] == "chat"]
    sdk_chats = [s for s in bedrock if s["name"] == f"chat {BEDROCK_MODEL}"]
    assert sorted((run(s).input_tokens, run(s).output_tokens) for s in strands_chats) == [
        (21114, 91),
        (21209, 32),
        (21245, 56),
    ]
    assert len(sdk_chats) == 3
    for sdk in sdk_chats:
        parent = by_id[sdk["parentSpanId"]]
        assert parent["attributes"]["gen_ai.system"] == "strands-agents"
        mine, theirs = run(parent), run(sdk)
        # The same model call, reported twice: the framework's provider is inferred from the model
        # id and lands on what the botocore span reports.
        assert mine.operation == theirs.operation == "chat"
        assert mine.op_kind == theirs.op_kind == "llm"
        assert mine.provider == theirs.provider == "aws.bedrock"
        assert mine.model == theirs.model == BEDROCK_MODEL
        assert (mine.input_tokens, mine.output_tokens) == (theirs.input_tokens, theirs.output_tokens)
        assert mine.cache_read_tokens is None and mine.reasoning_tokens is None
        assert mine.agent_name is None and mine.outcome == "success" and theirs.outcome == "unknown"


@pytest.mark.parametrize(
    ("file_name", "provider", "model", "traces"),
    [
        ("raw_otel_strands_bedrock_spans.json", "aws.bedrock", BEDROCK_MODEL, 3),
        ("raw_otel_strands_openai_spans.json", "openai", "gpt-4o", 2),
    ],
)
def test_agentcore_invoke_agent_repeats_its_chat_totals(file_name, provider, model, traces):
    spans = load_agentcore(file_name)
    agents = [s for s in spans if s["name"] == "invoke_agent Strands Agents"]
    assert len(agents) == traces
    for agent_span in agents:
        agent = run(agent_span)
        assert (agent.operation, agent.op_kind) == ("invoke_agent", "agent")
        assert agent.agent_name == "Strands Agents"
        assert (agent.provider, agent.model, agent.outcome) == (provider, model, "success")
        assert (agent.cache_read_tokens, agent.cache_write_tokens, agent.reasoning_tokens) == (0, 0, None)
        chats = [run(s) for s in spans if s["traceId"] == agent_span["traceId"] and s["name"] == "chat"]
        assert chats and all(c.provider == provider and c.model == model for c in chats)
        assert agent.input_tokens == sum(c.input_tokens for c in chats)
        assert agent.output_tokens == sum(c.output_tokens for c in chats)


def test_agentcore_openai_chats_and_failed_code_interpreter(openai):
    chats = [run(s) for s in openai if s["name"] == "chat"]
    assert sorted((c.input_tokens, c.output_tokens) for c in chats) == [(2325, 10), (2357, 168), (2707, 240)]

    [tool_span] = [s for s in openai if s["name"] == "execute_tool code_interpreter"]
    [session_start] = [s for s in openai if s["name"] == "Bedrock AgentCore.StartCodeInterpreterSession"]
    assert session_start["parentSpanId"] == tool_span["spanId"]
    # Strands leaves the tool span OK when the tool returns an error result; only
    # gen_ai.tool.status says so. The AWS call under it (HTTP 403) is ERROR.
    assert tool_span["status"]["code"] == "OK" and session_start["status"]["code"] == "ERROR"
    tool = run(tool_span)
    assert (tool.operation, tool.op_kind, tool.tool_name, tool.outcome) == (
        "execute_tool",
        "tool",
        "code_interpreter",
        "failure",
    )
    assert tool.provider is None and tool.model is None and tool.input_tokens is None
    child = run(session_start)
    assert (child.op_kind, child.outcome, child.tool_name) == ("other", "failure", None)


@pytest.mark.parametrize(
    ("file_name", "session"),
    [
        ("raw_otel_strands_bedrock_spans.json", "cc8a8e69-8bed-4e5f-9a06-9a58550fd713"),
        ("raw_otel_strands_openai_spans.json", "cfd84bec-fec8-47a5-8a28-73b9aa5ee6c6"),
    ],
)
def test_agentcore_every_span_has_its_session_and_no_tenant(file_name, session):
    for span in load_agentcore(file_name):
        fields = run(span)
        assert fields.session_id == session
        assert fields.user_id is None and fields.workflow_name is None
        assert fields.provider != "strands-agents"
        assert tenant_hints(span["attributes"], span["resource"]["attributes"]) == set()
        if span["name"] == "execute_event_loop_cycle":
            assert (fields.operation, fields.op_kind, fields.outcome) == (None, "other", "success")
        if span["name"] == "POST /invocations":
            assert (fields.op_kind, fields.outcome) == ("other", "unknown")


# --- A live Strands 1.62 agent ------------------------------------------------------------------


def strands_spans(convention: str) -> list[dict]:
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": convention}
    out = subprocess.run(
        [sys.executable, str(DATA / "strands_spans.py")], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module", params=["", "gen_ai_latest_experimental"], ids=["legacy", "latest"])
def live_strands(request) -> list[dict]:
    return strands_spans(request.param)


def test_live_strands_agent(live_strands):
    fields = [run(s) for s in live_strands]
    assert [f.op_kind for f in fields].count("llm") == 4
    for span, f in zip(live_strands, fields):
        assert tenant_hints(span["attributes"], span["resource"]["attributes"]) == {"acme"}
        assert (f.session_id, f.user_id) == ("sess-42", "user-7")
        assert f.provider in (None, "aws.bedrock")

    chats = [f for f in fields if f.op_kind == "llm"]
    assert [(c.input_tokens, c.output_tokens) for c in chats] == [(100, 10), (200, 10), (300, 10), (400, 10)]
    assert all((c.cache_read_tokens, c.cache_write_tokens) == (5, 7) for c in chats)
    assert all((c.operation, c.provider, c.model) == ("chat", "aws.bedrock", BEDROCK_MODEL) for c in chats)

    tools = [f for f in fields if f.op_kind == "tool"]
    assert [(t.tool_name, t.outcome) for t in tools] == [("lookup_invoice", "failure")] * 2

    loops = [f for f in fields if f.operation == "execute_event_loop_cycle"]
    assert len(loops) == 4 and all(f.op_kind == "other" for f in loops)

    agents = [f for f in fields if f.op_kind == "agent"]
    assert [(a.agent_name, a.outcome) for a in agents] == [("billing-agent", "success")] * 2
    # invoke_agent reports the Agent object's running total: the second repeats the first.
    assert [(a.input_tokens, a.cache_read_tokens, a.cache_write_tokens) for a in agents] == [
        (300, 10, 14),
        (1000, 20, 28),
    ]


# --- One model call in four dialects ------------------------------------------------------------

CALL = {"model": BEDROCK_MODEL, "input": 1200, "output": 300, "cache_read": 800, "cache_write": 100}

STRANDS_CHAT = {  # strands-agents 1.62, legacy conventions (what AgentCore captures show)
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "strands-agents",
    "gen_ai.request.model": BEDROCK_MODEL,
    "gen_ai.usage.prompt_tokens": 1200,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.completion_tokens": 300,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.total_tokens": 1500,
    "gen_ai.usage.cache_read.input_tokens": 800,
    "gen_ai.usage.cache_read_input_tokens": 800,
    "gen_ai.usage.cache_creation.input_tokens": 100,
    "gen_ai.usage.cache_write_input_tokens": 100,
    "session.id": "sess-9",
    "user.id": "user-3",
}
SEMCONV_CLIENT = {  # an SDK client span on current OTel GenAI semconv
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "aws.bedrock",
    "gen_ai.request.model": BEDROCK_MODEL,
    "gen_ai.response.model": BEDROCK_MODEL,
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.cache_read.input_tokens": 800,
    "gen_ai.usage.cache_creation.input_tokens": 100,
    "gen_ai.conversation.id": "sess-9",
    "user.id": "user-3",
}
OPENINFERENCE_LLM = {  # openinference-instrumentation-bedrock
    "openinference.span.kind": "LLM",
    "llm.provider": "aws",
    "llm.system": "anthropic",
    "llm.model_name": BEDROCK_MODEL,
    "llm.token_count.prompt": 1200,
    "llm.token_count.completion": 300,
    "llm.token_count.total": 1500,
    "llm.token_count.prompt_details.cache_read": 800,
    "llm.token_count.prompt_details.cache_write": 100,
    "session.id": "sess-9",
    "user.id": "user-3",
}
OPENLLMETRY_LLM = {  # opentelemetry-instrumentation-bedrock (OpenLLMetry) under a @workflow
    "llm.request.type": "chat",
    "gen_ai.system": "AWS",
    "gen_ai.request.model": BEDROCK_MODEL,
    "gen_ai.response.model": BEDROCK_MODEL,
    "gen_ai.usage.prompt_tokens": 1200,
    "gen_ai.usage.completion_tokens": 300,
    "llm.usage.total_tokens": 1500,
    "gen_ai.usage.cache_read_input_tokens": 800,
    "gen_ai.usage.cache_creation_input_tokens": 100,
    "traceloop.workflow.name": "invoice_dispute",
    "traceloop.association.properties.session_id": "sess-9",
    "traceloop.association.properties.user_id": "user-3",
}


@pytest.mark.parametrize(
    ("name", "attributes", "operation"),
    [
        ("chat", STRANDS_CHAT, "chat"),
        (f"chat {BEDROCK_MODEL}", SEMCONV_CLIENT, "chat"),
        ("ChatBedrockConverse", OPENINFERENCE_LLM, "LLM"),
        ("bedrock.converse", OPENLLMETRY_LLM, "chat"),
    ],
    ids=["strands", "semconv", "openinference", "openllmetry"],
)
def test_one_call_in_every_dialect_gives_the_same_columns(name, attributes, operation):
    f = one(name, attributes, status="OK")
    assert f.operation == operation
    assert (f.op_kind, f.provider, f.model) == ("llm", "aws.bedrock", CALL["model"])
    assert (f.input_tokens, f.output_tokens) == (CALL["input"], CALL["output"])
    assert (f.cache_read_tokens, f.cache_write_tokens, f.reasoning_tokens) == (
        CALL["cache_read"],
        CALL["cache_write"],
        None,
    )
    assert (f.session_id, f.user_id, f.agent_name, f.tool_name) == ("sess-9", "user-3", None, None)
    assert f.outcome == "success"
    assert f.workflow_name == ("invoice_dispute" if attributes is OPENLLMETRY_LLM else None)


# --- Every alias of REFERENCE.md section 3, and their precedence ---------------------------------

ALIASES = {
    "input_tokens": ["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"],
    "output_tokens": [
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ],
    "cache_read_tokens": [
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ],
    "cache_write_tokens": [
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "gen_ai.usage.cache_write_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ],
    "reasoning_tokens": [
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ],
    "provider": ["gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"],
    "model": ["gen_ai.response.model", "gen_ai.request.model", "llm.model_name"],
    "agent_name": ["gen_ai.agent.name", "agent.name", "gen_ai.agent.id"],
    "tool_name": ["gen_ai.tool.name", "tool.name"],
    "workflow_name": ["gen_ai.workflow.name", "traceloop.workflow.name"],
    "session_id": ["session.id", "gen_ai.conversation.id", "langfuse.session.id"],
    "user_id": ["user.id", "langfuse.user.id", "enduser.id"],
}
SAMPLE = {field: (17 if field.endswith("_tokens") else "anthropic") for field in ALIASES}


@pytest.mark.parametrize(
    ("field", "key"), [(field, key) for field, keys in ALIASES.items() for key in keys], ids=lambda v: v
)
def test_every_alias_is_read(field, key):
    assert getattr(one("span", {key: SAMPLE[field]}), field) == SAMPLE[field]


@pytest.mark.parametrize("field", list(ALIASES))
def test_earlier_alias_wins_and_garbage_does_not_stop_the_search(field):
    keys = ALIASES[field]
    is_count = field.endswith("_tokens")
    values = [(i + 1) * 10 if is_count else f"value-{i}" for i in range(len(keys))]
    assert getattr(one("span", dict(zip(keys, values))), field) == values[0]
    garbage = "n/a" if is_count else ""
    later = dict(zip(keys, values)) | {keys[0]: garbage}
    assert getattr(one("span", later), field) == values[1]


@pytest.mark.parametrize(
    ("field", "key", "expected"),
    [
        ("session_id", "session.id", "sess-res"),
        ("user_id", "user.id", "user-res"),
        ("agent_name", "gen_ai.agent.name", "support-bot"),
        ("tool_name", "gen_ai.tool.name", None),
        ("workflow_name", "gen_ai.workflow.name", None),
        ("model", "gen_ai.request.model", None),
    ],
)
def test_only_service_level_keys_fall_back_to_the_resource(field, key, expected):
    resource = {key: expected or "from-resource"}
    assert getattr(one("chat", {"gen_ai.operation.name": "chat"}, resource=resource), field) == expected
    assert getattr(one("chat", {key: "from-span"}, resource=resource), field) == "from-span"


@pytest.mark.parametrize(
    ("name", "attributes", "resource", "agent", "tool", "workflow"),
    [
        ("invoke_agent Researcher", {"gen_ai.operation.name": "invoke_agent"}, {}, "Researcher", None, None),
        ("create_agent Researcher", {"gen_ai.operation.name": "create_agent"}, {}, "Researcher", None, None),
        ("invoke_agent Researcher", {"gen_ai.agent.id": "asst_1"}, {}, "asst_1", None, None),
        ("invoke_agent Researcher", {}, {"gen_ai.agent.name": "svc-agent"}, "Researcher", None, None),
        ("invoke_agent", {"gen_ai.operation.name": "invoke_agent"}, {}, None, None, None),
        ("execute_tool calculator", {"gen_ai.operation.name": "execute_tool"}, {}, None, "calculator", None),
        ("execute_tool calculator", {"gen_ai.tool.name": "calc_v2"}, {}, None, "calc_v2", None),
        ("invoke_workflow refunds", {"gen_ai.operation.name": "invoke_workflow"}, {}, None, None, "refunds"),
        ("chat gpt-4o", {"gen_ai.operation.name": "chat"}, {}, None, None, None),
    ],
)
def test_names_fall_back_to_the_span_name(name, attributes, resource, agent, tool, workflow):
    f = normalise(name, "UNSET", attributes, resource)
    assert (f.agent_name, f.tool_name, f.workflow_name) == (agent, tool, workflow)


# --- op_kind --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "operation", "op_kind"),
    [
        ({"gen_ai.operation.name": "chat"}, "chat", "llm"),
        ({"gen_ai.operation.name": "text_completion"}, "text_completion", "llm"),
        ({"gen_ai.operation.name": "generate_content"}, "generate_content", "llm"),
        ({"gen_ai.operation.name": "embeddings"}, "embeddings", "llm"),
        ({"gen_ai.operation.name": "invoke_agent"}, "invoke_agent", "agent"),
        ({"gen_ai.operation.name": "create_agent"}, "create_agent", "other"),
        ({"gen_ai.operation.name": "execute_tool"}, "execute_tool", "tool"),
        ({"gen_ai.operation.name": "invoke_workflow"}, "invoke_workflow", "workflow"),
        ({"gen_ai.operation.name": "invoke_swarm"}, "invoke_swarm", "workflow"),
        ({"gen_ai.operation.name": "retrieval"}, "retrieval", "other"),
        ({"openinference.span.kind": "LLM"}, "LLM", "llm"),
        ({"openinference.span.kind": "EMBEDDING"}, "EMBEDDING", "llm"),
        ({"openinference.span.kind": "AGENT"}, "AGENT", "agent"),
        ({"openinference.span.kind": "TOOL"}, "TOOL", "tool"),
        ({"openinference.span.kind": "CHAIN"}, "CHAIN", "other"),
        ({"openinference.span.kind": "RETRIEVER"}, "RETRIEVER", "other"),
        ({"traceloop.span.kind": "workflow"}, "workflow", "workflow"),
        ({"traceloop.span.kind": "agent"}, "agent", "agent"),
        ({"traceloop.span.kind": "tool"}, "tool", "tool"),
        ({"traceloop.span.kind": "task"}, "task", "other"),
        ({"llm.request.type": "chat"}, "chat", "llm"),
        ({"llm.request.type": "embedding"}, "embedding", "llm"),
        # unrecognised values defer to the next source, and are reported if nothing decides
        ({"gen_ai.operation.name": "execute_event_loop_cycle"}, "execute_event_loop_cycle", "other"),
        ({"gen_ai.operation.name": "memory.search", "openinference.span.kind": "TOOL"}, "TOOL", "tool"),
        ({"openinference.span.kind": "UNKNOWN", "traceloop.span.kind": "agent"}, "agent", "agent"),
        # no kind at all: a model plus usage is an LLM call; usage alone is not
        ({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 5}, None, "llm"),
        ({"llm.model_name": "gpt-4o", "llm.token_count.completion": 0}, None, "llm"),
        ({"gen_ai.usage.input_tokens": 5}, None, "other"),
        ({"gen_ai.request.model": "gpt-4o"}, None, "other"),
        ({"gen_ai.operation.name": 7, "http.method": "POST"}, None, "other"),
        ({}, None, "other"),
    ],
)
def test_op_kind(attributes, operation, op_kind):
    f = one("span", attributes)
    assert (f.operation, f.op_kind) == (operation, op_kind)


# --- provider -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "provider"),
    [
        ({"gen_ai.system": "strands-agents", "gen_ai.request.model": "gpt-4o"}, "openai"),
        ({"gen_ai.provider.name": "strands-agents", "gen_ai.request.model": "claude-opus-4-1"}, "anthropic"),
        ({"gen_ai.system": "strands-agents", "llm.provider": "azure.ai.openai"}, "azure.ai.openai"),
        ({"gen_ai.system": "Langchain", "gen_ai.request.model": "mystery-7b"}, None),
        ({"gen_ai.system": "crewai"}, None),
        ({"gen_ai.system": "OpenAI"}, "openai"),
        ({"llm.provider": "aws"}, "aws.bedrock"),
        ({"gen_ai.system": "bedrock"}, "aws.bedrock"),
        ({"gen_ai.provider.name": "azure.ai.openai", "gen_ai.request.model": "gpt-4o"}, "azure.ai.openai"),
        ({"gen_ai.provider.name": "   ", "gen_ai.system": "anthropic"}, "anthropic"),
    ],
)
def test_provider(attributes, provider):
    assert one("span", attributes).provider == provider


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("us.anthropic.claude-3-7-sonnet-20250219-v1:0", "aws.bedrock"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws.bedrock"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "aws.bedrock"),
        ("amazon.nova-pro-v1:0", "aws.bedrock"),
        ("meta.llama3-1-70b-instruct-v1:0", "aws.bedrock"),
        ("openai.gpt-oss-120b-1:0", "aws.bedrock"),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc", "aws.bedrock"),
        ("claude-3-5-sonnet-20241022", "anthropic"),
        ("gpt-4o", "openai"),
        ("gpt-4.1-mini", "openai"),
        ("o3-mini", "openai"),
        ("text-embedding-3-small", "openai"),
        ("gemini-2.0-flash", None),
        ("llama3.1:8b", None),
        ("anthropic/claude-3-5-sonnet", None),
        ("us.", None),
    ],
)
def test_provider_inferred_from_model_when_only_the_framework_is_known(model, provider):
    attributes = {"gen_ai.system": "strands-agents", "gen_ai.request.model": model}
    assert one("chat", attributes).provider == provider


# --- token counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (21245, 21245),
        (21245.0, 21245),
        (12.9, 12),
        ("21245", 21245),
        (" 42 ", 42),
        ("42.0", 42),
        ("1e3", 1000),
        (10**9, 10**9),  # the per-span bound: no model has a billion-token context
        (10**9 + 1, None),
        (1e9, 10**9),
        (1e9 + 1, None),
        ("1000000000", 10**9),
        ("1000000001", None),
        ("1e10", None),
        (2**63 - 1, None),  # fits BIGINT, but two of them would overflow metering's sum
        (2**63, None),
        (-1, None),
        ("-5", None),
        (-0.5, None),
        ("abc", None),
        ("", None),
        ("nan", None),
        (float("nan"), None),
        (float("inf"), None),
        ("inf", None),
        (True, None),
        (False, None),
        ([1, 2], None),
        ({"n": 1}, None),
        (b"12", None),
        ("9" * 5000, None),
    ],
)
def test_token_counts_are_coerced_or_ignored(value, expected):
    assert one("chat", {"gen_ai.usage.input_tokens": value}).input_tokens == expected


def test_a_count_over_the_bound_defers_to_the_next_spelling():
    attributes = {"gen_ai.usage.input_tokens": 2**63 - 1, "gen_ai.usage.prompt_tokens": 1200,
                  "gen_ai.usage.output_tokens": "99999999999", "llm.token_count.completion": 80}
    f = one("chat", attributes)
    assert (f.input_tokens, f.output_tokens) == (1200, 80)


def test_every_count_is_bounded():
    keys = [key for field, keys in ALIASES.items() if field.endswith("_tokens") for key in keys]
    f = one("chat", dict.fromkeys(keys, 10**9 + 1))
    assert (f.input_tokens, f.output_tokens, f.cache_read_tokens, f.cache_write_tokens, f.reasoning_tokens) == (None,) * 5


def test_absent_usage_is_none_not_zero():
    f = one("chat", {"gen_ai.operation.name": "chat"})
    counts = (f.input_tokens, f.output_tokens, f.cache_read_tokens, f.cache_write_tokens, f.reasoning_tokens)
    assert counts == (None,) * 5


def test_values_of_the_wrong_shape_never_raise():
    keys = {key for keys in ALIASES.values() for key in keys}
    keys |= {"gen_ai.operation.name", "openinference.span.kind", "llm.request.type", "traceloop.span.kind"}
    keys |= {"meterline.outcome", "gen_ai.tool.status", "error.type", "tenant.id", "tenant"}
    for value in ([1, "a"], {"k": "v"}, b"\xff", 1.5, True, None, ""):
        attributes = dict.fromkeys(keys, value)
        f = normalise("invoke_agent ", "ERROR", attributes, attributes)
        assert f.op_kind == "other" and f.model is None and f.agent_name is None
        tenant_hints(attributes, attributes)


# --- outcome --------------------------------------------------------------------------------------


SUCCESS_SPELLINGS = ("success", "Succeeded", "ok", "true", " RESOLVED ", "completed")
FAILURE_SPELLINGS = ("failure", "FAILED", "error", "false", "unresolved")


@pytest.mark.parametrize(
    ("status", "attributes", "outcome"),
    [
        *[("UNSET", {"meterline.outcome": v}, "success") for v in SUCCESS_SPELLINGS],
        *[("UNSET", {"meterline.outcome": v}, "failure") for v in FAILURE_SPELLINGS],
        ("UNSET", {"meterline.outcome": True}, "success"),
        ("UNSET", {"meterline.outcome": False}, "failure"),
        ("OK", {"meterline.outcome": "escalated"}, "unknown"),
        ("OK", {"meterline.outcome": 1}, "unknown"),
        ("ERROR", {"meterline.outcome": "resolved"}, "success"),
        ("OK", {"meterline.outcome": "unresolved"}, "failure"),
        ("ERROR", {}, "failure"),
        ("OK", {"error.type": "TimeoutError"}, "failure"),
        ("UNSET", {"error.type": "_OTHER"}, "failure"),
        ("OK", {"error.type": ""}, "success"),
        ("OK", {"gen_ai.tool.status": "error"}, "failure"),
        ("UNSET", {"gen_ai.tool.status": "failed"}, "failure"),
        ("UNSET", {"gen_ai.tool.status": "success"}, "success"),
        ("ERROR", {"gen_ai.tool.status": "success"}, "failure"),
        ("OK", {}, "success"),
        ("UNSET", {}, "unknown"),
        ("UNSET", {"gen_ai.tool.status": ""}, "unknown"),
    ],
)
def test_outcome(status, attributes, outcome):
    assert one("span", attributes, status=status).outcome == outcome


# --- tenant hints ---------------------------------------------------------------------------------

TENANT_KEYS = [
    "tenant.id",
    "tenant_id",
    "tenantId",
    "tenant",
    "custom:tenant_id",
    "langfuse.trace.metadata.tenant_id",
    "traceloop.association.properties.tenant_id",
]


@pytest.mark.parametrize("key", TENANT_KEYS)
def test_tenant_hints_on_span_or_resource(key):
    assert tenant_hints({key: "acme"}, {}) == {"acme"}
    assert tenant_hints({}, {key: "acme"}) == {"acme"}


def test_tenant_hints_collects_every_distinct_claim():
    span = {"tenant.id": "acme", "tenant_id": "acme", "tenantId": "", "tenant": "   ", "custom:tenant_id": 42}
    resource = {"langfuse.trace.metadata.tenant_id": "globex", "tenant": ["initech", "", 7, None]}
    assert tenant_hints(span, resource) == {"acme", "42", "globex", "initech", "7"}
    assert tenant_hints({"tenant.name": "acme", "baggage.tenant.id": "acme", "tenant.id": True}, {}) == set()

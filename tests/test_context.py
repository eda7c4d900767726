"""Trace context: agent, workflow and feature from ancestors; one billable span per model call."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from enrich.context import resolve_trace
from enrich.features import FeatureRules
from meterline.config import FeatureRule
from meterline.store import open_store, rows
from tests.support import Server, cli, spans_request, token, wait_for_trace_context

RULES = FeatureRules([
    FeatureRule(feature="lead-conversion", agent="crm_agent", tool="convert_lead"),
    FeatureRule(feature="crm", agent="crm_*"),
    FeatureRule(feature="onboarding", workflow="onboarding"),
])


def span(span_id: str, parent: str | None, op_kind: str = "other", **fields: object) -> dict:
    base = {"span_id": span_id, "parent_span_id": parent, "name": f"span {span_id}", "op_kind": op_kind,
            "agent_name": None, "workflow_name": None, "tool_name": None, "feature": None, "billable": False,
            "has_usage": False}
    return base | fields


def test_children_inherit_agent_and_feature_and_only_the_lowest_llm_span_is_billable() -> None:
    trace = [
        span("chat-sdk", "chat", "llm", has_usage=True, billable=True),
        span("chat", "cycle", "llm", has_usage=True, billable=True),
        span("tool", "cycle", "tool", tool_name="convert_lead"),
        span("cycle", "agent"),
        span("agent", None, "agent", agent_name="crm_agent"),
    ]
    changed = {s["span_id"] for s in resolve_trace(trace, RULES)}
    by_id = {s["span_id"]: s for s in trace}
    assert by_id["tool"]["feature"] == "lead-conversion"
    assert by_id["chat"]["feature"] == by_id["agent"]["feature"] == "crm"
    assert all(by_id[i]["agent_name"] == "crm_agent" for i in ("chat-sdk", "chat", "tool", "cycle"))
    assert (by_id["chat"]["billable"], by_id["chat-sdk"]["billable"]) == (False, True)
    assert changed == {"chat-sdk", "chat", "tool", "cycle", "agent"}
    assert resolve_trace(trace, RULES) == []  # resolving again changes nothing


def test_a_missing_link_stops_inheritance_and_cycles_do_not_hang() -> None:
    orphan = [span("chat", "missing-parent", "llm", has_usage=True, billable=True),
              span("agent", None, "agent", agent_name="crm_agent")]
    resolve_trace(orphan, RULES)
    assert orphan[0]["agent_name"] is None and orphan[0]["billable"] is True
    loop = [span("a", "b", "llm", has_usage=True, billable=True), span("b", "a", "llm", has_usage=True, billable=True)]
    resolve_trace(loop, RULES)  # ids a client made circular: terminates, treats the loop as a root
    deep = [span(str(i), str(i - 1) if i else None) for i in range(5000)]
    deep[0]["agent_name"] = "crm_agent"
    resolve_trace(deep, RULES)  # no recursion limit
    assert deep[-1]["agent_name"] == "crm_agent"


def test_parents_arriving_later_complete_the_context_in_the_store(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "features.toml"
    config.write_text('[[features]]\nfeature = "lead-conversion"\nagent = "crm_agent"\ntool = "convert_lead"\n\n'
                      '[[features]]\nfeature = "crm"\nagent = "crm_*"\n')
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    at = datetime(2026, 11, 5, 9)
    model = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 900,
             "gen_ai.usage.output_tokens": 30}
    children = [
        {"trace": 1, "id": 4, "parent": 3, "name": "chat gpt-4o", "kind": "CLIENT", "start": at, "attributes": model},
        {"trace": 1, "id": 5, "parent": 2, "name": "execute_tool convert_lead", "start": at,
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "convert_lead"}},
    ]
    parents = [
        {"trace": 1, "id": 3, "parent": 2, "name": "chat", "start": at, "attributes": model},
        {"trace": 1, "id": 2, "name": "invoke_agent crm_agent", "start": at, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "crm_agent"}},
    ]
    with Server(db, "--config", str(config)) as server:
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token('acme')}"}
        for batch in (children, parents):  # children first, in another request, as exporters do
            response = httpx.post(server.http + "/v1/traces", headers=headers,
                                  content=spans_request(batch).SerializeToString())
            assert response.status_code == 200
            wait_for_trace_context(db)
        store = open_store(db)
        try:
            stored = {row["span_id"][-1]: row for row in rows(store, "SELECT * FROM spans")}
        finally:
            store.close()
    assert stored["5"]["feature"] == "lead-conversion" and stored["5"]["agent_name"] == "crm_agent"
    assert stored["4"]["feature"] == stored["3"]["feature"] == stored["2"]["feature"] == "crm"
    assert [stored[i]["billable"] for i in "2345"] == [False, False, True, False]

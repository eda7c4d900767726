"""Meters, rating and the usage interfaces over known traffic, checked against hand-worked bills.

Traffic (tenant acme, tier std of tests/data/test_catalog.toml, model gpt-4o at Langfuse's price:
input $2.50/M, cached input $1.25/M, output $10/M):

  trace 1, 2026-11-10: workflow "onboarding" OK > agent lead_agent OK > chat (Strands, 1000 in / 200 out)
                       > chat CLIENT (SDK, the same 1000/200: the billable one); tool convert_lead
  trace 2, 2026-11-20: workflow ERROR > agent opp_agent (outcome failure) > chat (500 in incl. 200 cached,
                       100 out); two tool calls
  trace 3, 2026-10-31 23:59:59.999: agent lead_agent OK (October)
  trace 4, 2026-11-01 00:00:00.000: agent lead_agent, status unset (November)
  trace 1 is sent twice.

November, by hand:
  input 1500, output 300, cache_read 200, llm_calls 2, agent_invocations 3, tool_calls 3,
  active_agents 2, workflows_completed 1, agent_outcomes_succeeded 1
  llm_cost = 1000*2.5e-6 + 200*1e-5 + 300*2.5e-6 + 200*1.25e-6 + 100*1e-5 = 0.0065 -> 0.01 (half-up)
  tokens 1500/1000*2.00 = 3.00; tools 2*0.50 + 1*0.25 = 1.25; workflows 1.99; outcomes 1*0.333 -> 0.33;
  agents 2*10.00 = 20.00; invocations (3 - 2 included) * 0.10 = 0.10; total 26.67; margin 26.66.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support import REPO, Server, cli, spans_request, token, wait_for_trace_context

CATALOG = str(REPO / "tests" / "data" / "test_catalog.toml")
PROTOBUF = {"Content-Type": "application/x-protobuf"}


def traffic() -> list[dict]:
    nov10, nov20 = datetime(2026, 11, 10, 10), datetime(2026, 11, 20, 15)
    gpt = {"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o"}
    return [
        {"trace": 1, "id": 1, "name": "invoke_workflow onboarding", "start": nov10, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "onboarding"}},
        {"trace": 1, "id": 2, "parent": 1, "name": "invoke_agent lead_agent", "start": nov10, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "lead_agent",
                        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200}},
        {"trace": 1, "id": 3, "parent": 2, "name": "chat", "start": nov10, "status": "OK",
         "attributes": {"gen_ai.operation.name": "chat", **gpt, "gen_ai.system": "strands-agents",
                        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200}},
        {"trace": 1, "id": 4, "parent": 3, "name": "chat gpt-4o", "kind": "CLIENT", "start": nov10,
         "attributes": {"gen_ai.operation.name": "chat", **gpt, "gen_ai.system": "openai",
                        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200}},
        {"trace": 1, "id": 5, "parent": 2, "name": "execute_tool convert_lead", "start": nov10, "status": "OK",
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "convert_lead"}},
        {"trace": 2, "id": 1, "name": "invoke_workflow onboarding", "start": nov20, "status": "ERROR",
         "attributes": {"gen_ai.operation.name": "invoke_workflow"}},
        {"trace": 2, "id": 2, "parent": 1, "name": "invoke_agent opp_agent", "start": nov20, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "opp_agent",
                        "meterline.outcome": "failure"}},
        {"trace": 2, "id": 3, "parent": 2, "name": "chat", "start": nov20, "status": "OK",
         "attributes": {"gen_ai.operation.name": "chat", **gpt, "gen_ai.usage.input_tokens": 500,
                        "gen_ai.usage.cache_read.input_tokens": 200, "gen_ai.usage.output_tokens": 100}},
        {"trace": 2, "id": 4, "parent": 2, "name": "execute_tool find_opportunity", "start": nov20,
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "find_opportunity"}},
        {"trace": 2, "id": 5, "parent": 2, "name": "execute_tool find_opportunity", "start": nov20,
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "find_opportunity"}},
        {"trace": 3, "id": 1, "name": "invoke_agent lead_agent", "status": "OK",
         "start": datetime(2026, 10, 31, 23, 59, 59, 999000),
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "lead_agent"}},
        {"trace": 4, "id": 1, "name": "invoke_agent lead_agent", "start": datetime(2026, 11, 1),
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "lead_agent"}},
    ]


def send(server: Server, spans: list[dict], tenant: str = "acme") -> None:
    response = httpx.post(server.http + "/v1/traces", content=spans_request(spans).SerializeToString(),
                          headers={**PROTOBUF, "Authorization": f"Bearer {token(tenant)}"})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("metering") / "meterline.duckdb"
    config = db.with_name("meterline.toml")
    config.write_text(f'[pricing]\ncatalog = "{CATALOG}"\n')
    cli("tenants", "add", "acme", "--tier", "std", db=db)
    cli("tenants", "add", "globex", "--tier", "std", db=db)
    with Server(db, "--config", str(config)) as server:
        spans = traffic()
        send(server, spans[:5])  # trace 1 ...
        send(server, spans)      # ... and everything, so trace 1 arrives twice
        wait_for_trace_context(db)
        yield server


def usage_json(server: Server, *args: str) -> dict:
    return json.loads(cli("--config", str(server.db.with_name("meterline.toml")), "usage", *args,
                          "--format", "json", db=server.db).stdout)


def test_november_bill_matches_the_hand_computed_one(billed: Server) -> None:
    report = usage_json(billed, "--period", "2026-11")
    assert (report["period"], report["currency"]) == ("2026-11", "usd")
    acme, globex = report["tenants"]
    assert acme["tenant_id"] == "acme" and acme["tier"] == "std"
    assert acme["usage"] == {
        "input_tokens": 1500, "output_tokens": 300, "cache_read_tokens": 200, "cache_write_tokens": 0,
        "llm_calls": 2, "agent_invocations": 3, "tool_calls": 3, "active_agents": 2,
        "workflows_completed": 1, "agent_outcomes_succeeded": 1,
    }
    assert acme["llm_cost"] == "0.01"
    assert [(c["charge"], c["model"], c["quantity"], c["amount"]) for c in acme["charges"]] == [
        ("tokens", "activity_variable", 1500, "3.00"),
        ("tools", "activity_variable", 3, "1.25"),
        ("workflows", "outcome_fixed", 1, "1.99"),
        ("outcomes", "outcome_variable", 1, "0.33"),
        ("agents", "activity_fixed", 2, "20.00"),
        ("invocations", "activity_fixed", 3, "0.10"),
    ]
    assert (acme["total"], acme["margin"]) == ("26.67", "26.66")
    # a tenant with no usage pays its plan's minimum
    assert globex["usage"] == {meter: 0 for meter in acme["usage"]}
    assert (globex["llm_cost"], globex["total"], globex["margin"], globex["minimum_adjustment"]) == (
        "0.00", "5.00", "5.00", "5.00")


def test_period_boundary_and_late_spans(billed: Server) -> None:
    october = usage_json(billed, "--period", "2026-10", "--tenant", "acme")["tenants"][0]
    assert october["usage"]["agent_invocations"] == 1  # the span at 23:59:59.999 on Oct 31
    assert october["usage"]["input_tokens"] == 0
    # a late span, timestamped in October, arrives now: it lands in October, November is untouched
    send(billed, [{"trace": 5, "id": 1, "name": "chat", "start": datetime(2026, 10, 15),
                   "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                  "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 10}}])
    wait_for_trace_context(billed.db)
    assert usage_json(billed, "--period", "2026-10", "--tenant", "acme")["tenants"][0]["usage"]["input_tokens"] == 10
    assert usage_json(billed, "--period", "2026-11", "--tenant", "acme")["tenants"][0]["usage"]["input_tokens"] == 1500
    # any [start, end) range: the first instant of November only
    first = usage_json(billed, "--start", "2026-11-01T00:00:00Z", "--end", "2026-11-01T00:00:00.001Z",
                       "--tenant", "acme")["tenants"][0]
    assert first["usage"]["agent_invocations"] == 1


def test_compare_models_prices_the_same_usage_four_ways(billed: Server) -> None:
    acme = usage_json(billed, "--period", "2026-11", "--tenant", "acme", "--compare-models")["tenants"][0]
    totals = {model: (entry["total"], entry["margin"]) for model, entry in acme["models"].items()}
    assert totals == {
        "actual": ("26.67", "26.66"),
        "activity_fixed": ("20.00", "19.99"),
        "activity_variable": ("3.00", "2.99"),
        "outcome_fixed": ("1.99", "1.98"),
        "outcome_variable": ("0.33", "0.32"),
    }
    table = cli("--config", str(billed.db.with_name("meterline.toml")), "usage", "--period", "2026-11",
                "--compare-models", db=billed.db).stdout
    assert "activity_fixed total" in table and "26.67" in table


def test_csv_and_table_formats(billed: Server) -> None:
    config = str(billed.db.with_name("meterline.toml"))
    csv_text = cli("--config", config, "usage", "--period", "2026-11", "--format", "csv", db=billed.db).stdout
    header, acme, globex = csv_text.strip().splitlines()
    columns = dict(zip(header.split(","), acme.split(",")))
    assert columns["tenant_id"] == "acme" and columns["total"] == "26.67" and columns["charge:agents"] == "20.00"
    assert columns["input_tokens"] == "1500"
    table = cli("--config", config, "usage", "--period", "2026-11", db=billed.db).stdout
    assert "TOTAL" in table and "31.67" in table  # 26.67 + 5.00


def test_usage_endpoint_shows_a_tenant_only_its_own_usage(billed: Server) -> None:
    def get(tenant: str, query: str) -> httpx.Response:
        return httpx.get(f"{billed.http}/v1/usage?{query}", headers={"Authorization": f"Bearer {token(tenant)}"})

    mine = get("acme", "period=2026-11")
    assert mine.status_code == 200
    finance = next(t for t in usage_json(billed, "--period", "2026-11")["tenants"] if t["tenant_id"] == "acme")
    assert mine.json()["tenants"] == [{k: v for k, v in finance.items()
                                       if k not in ("llm_cost", "unpriced_llm_calls", "margin")}]
    assert "margin" not in mine.text and "llm_cost" not in mine.text
    assert [t["tenant_id"] for t in get("globex", "period=2026-11").json()["tenants"]] == ["globex"]
    assert get("acme", "period=2026-11&tenant=globex").status_code == 403
    assert get("acme", "period=2026-13").status_code == 400
    assert httpx.get(f"{billed.http}/v1/usage?period=2026-11").status_code == 401
    assert get("umbrella", "period=2026-11").status_code == 403


def test_a_bad_catalog_is_refused_naming_plan_charge_and_field(billed: Server, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(CATALOG).read_text().replace('unit_price = "1.99"', "unit_price = 1.99", 1))
    result = cli("usage", "--period", "2026-11", "--catalog", str(bad), db=billed.db, check=False)
    assert result.returncode != 0
    assert "std" in result.stderr and "workflows" in result.stderr and "unit_price" in result.stderr

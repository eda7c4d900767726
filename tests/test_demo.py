"""`meterline demo` end to end, on short settings: real Strands agents, real OTLP, the printed bill."""

from __future__ import annotations

import json
from pathlib import Path

from meterline.store import open_store, rows
from tests.support import cli


def printed_tenants(output: str) -> dict[str, list[str]]:
    """The per-tenant rows of the usage table the demo prints (tenant -> cells)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("usage ")) + 3
    table = {}
    for line in lines[start:]:
        if line.startswith("TOTAL"):
            break
        cells = line.split()
        table[cells[0]] = cells
    return table


def test_demo_prints_the_bill_that_meterline_usage_computes(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    result = cli("demo", "--tenants", "3", "--minutes", "0.15", "--workers", "2", db=db, timeout=300,
                 env={"METERLINE_JWT_SECRET": ""})
    assert "workflows" in result.stdout and "spans exported, 0 failed" in result.stdout
    shown = printed_tenants(result.stdout)
    assert set(shown) == {"acme-corp", "globex", "initech"}

    report = json.loads(cli("usage", "--format", "json", "--period", _period(result.stdout), db=db).stdout)
    for tenant in report["tenants"]:
        cells = shown[tenant["tenant_id"]]
        assert cells[-3:] == [tenant["llm_cost"], tenant["total"], tenant["margin"]], tenant["tenant_id"]
        assert int(cells[2]) == tenant["usage"]["input_tokens"] > 0
        assert tenant["usage"]["llm_calls"] > 0 and tenant["usage"]["workflows_completed"] > 0

    store = open_store(db)
    try:
        spans = rows(store, "SELECT tenant_id, count(*) AS n, count(DISTINCT service_name) AS services, "
                            "count(*) FILTER (WHERE scope_name = 'strands.telemetry.tracer') AS strands "
                            "FROM spans GROUP BY tenant_id ORDER BY tenant_id")
        # the third tenant's agents sometimes claim to be the first: never stored under the first
        leaked = rows(store, "SELECT count(*) AS n FROM spans WHERE tenant_id = 'acme-corp' "
                             "AND session_id LIKE 'initech-%'")
        registered = rows(store, "SELECT tenant_id, stripe_customer_id FROM tenants ORDER BY tenant_id")
    finally:
        store.close()
    assert [s["tenant_id"] for s in spans] == ["acme-corp", "globex", "initech"]
    assert all(s["strands"] > 0 for s in spans), "spans must come from Strands' own tracer"
    assert leaked == [{"n": 0}]
    assert all(r["stripe_customer_id"].startswith("cus_demo_") for r in registered)


def _period(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("usage "))

"""The finance dashboards over known traffic: every page renders, the tenant table is `meterline
usage`, reading never holds the store, and a real browser shows the tenant table.

Traffic (tenants on tier std of tests/data/test_catalog.toml, model gpt-4o: input $2.50/M, output $10/M):
  acme:   tests/test_metering.traffic(): November pays 26.67, LLM cost 0.01, margin 26.66 (worked there).
  globex: 2026-11-15, workflow OK > agent OK > chat of 1,000 input and 2,000,000 output tokens.
          LLM cost 1000 * 2.5e-6 + 2e6 * 1e-5 = 20.0025 -> 20.00. Pays tokens 1000/1000 * 2.00 = 2.00,
          workflows 1.99, outcomes 0.333 -> 0.33, agents 10.00, invocations (1 - 1 included) 0:
          14.32. Margin -5.68: globex costs us more than it pays.
          It also sends one span claiming to be acme (refused: tenant_spoof).
Billing and Langfuse export rows are inserted as those jobs would write them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from dashboards import data, tables
from metering.meters import Period
from meterline.store import open_store, rows
from meterline.process import free_port
from tests.support import METERLINE, REPO, SECRET, Server, cli, wait_for_trace_context
from tests.test_metering import CATALOG, send, traffic

APP = REPO / "dashboards" / "app.py"
PAGES = ("views/tenant.py", "views/pricing.py", "views/billing.py", "views/health.py")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ACME_TRACE_1 = f"{1:032x}"
TRACE_URL = "https://langfuse.example.com/project/proj-shared/traces/"


def globex_traffic() -> list[dict[str, Any]]:
    day = datetime(2026, 11, 15, 9)
    return [
        {"trace": 21, "id": 1, "name": "invoke_workflow summarise", "start": day, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "summarise"}},
        {"trace": 21, "id": 2, "parent": 1, "name": "invoke_agent writer", "start": day, "status": "OK",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"}},
        {"trace": 21, "id": 3, "parent": 2, "name": "chat", "start": day, "status": "OK",
         "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 2_000_000}},
    ]


BILLING_ROWS = [
    ("INSERT INTO billing_runs VALUES (?, ?, ?::TIMESTAMP, ?, ?::TIMESTAMP, ?::TIMESTAMP, ?, ?, ?, NULL)",
     ["run-1", "2026-11", "2026-12-01T00:00:00", False, "2026-12-01T01:00:00", "2026-12-01T01:00:05", "succeeded", 3, 0]),
    ("INSERT INTO billing_runs VALUES (?, ?, ?::TIMESTAMP, ?, ?::TIMESTAMP, ?::TIMESTAMP, ?, ?, ?, NULL)",
     ["run-2", "2026-11", "2026-12-02T00:00:00", False, "2026-12-02T01:00:00", "2026-12-02T01:00:09", "failed", 1, 1]),
]
LEDGER = [  # identifier, run, tenant, customer, charge, event_name, value, cumulative, status, error
    ("ev-acme-agents", "run-1", "acme", "cus_acme", "agents", "t_agents", 2, 2, "acknowledged", None),
    ("ev-acme-tokens", "run-1", "acme", "cus_acme", "tokens", "t_input_tokens", 1500, 1500, "acknowledged", None),
    # a later correction lowers the total: Stripe holds the sum of the events, not the last cumulative
    ("ev-acme-tokens-2", "run-2", "acme", "cus_acme", "tokens", "t_input_tokens", -100, 1400, "acknowledged", None),
    ("ev-globex-tokens", "run-1", "globex", "cus_globex", "tokens", "t_input_tokens", 1000, 1000, "acknowledged", None),
    ("ev-acme-outcomes", "run-2", "acme", "cus_acme", "outcomes", "t_outcomes", 1, 1, "sent", None),
    ("ev-globex-agents", "run-2", "globex", "cus_globex", "agents", "t_agents", 1, 1, "failed",
     "Stripe answered 500: An unknown error occurred"),
]


def fill_job_tables(db: Path) -> None:
    """Rows as the billing job and the Langfuse exporter write them (through the running server)."""
    steps = list(BILLING_ROWS)
    for identifier, run, tenant, customer, charge, event, value, cumulative, status, error in LEDGER:
        steps.append(("""INSERT INTO billing_ledger VALUES (?, ?, '2026-11', ?, ?, ?, ?, ?, ?, '2026-11-30T23:59:59'::TIMESTAMP,
                         ?, ?, ?, '2026-12-01T01:00:00'::TIMESTAMP, '2026-12-01T01:00:01'::TIMESTAMP)""",
                      [identifier, run, tenant, customer, charge, event, value, cumulative, status,
                       None if error else f"mev_{identifier}", error]))
    steps.append(("""INSERT INTO export_cursors (destination, acked_seq, spans_sent, last_success_at, last_attempt_at,
                                                 last_error, consecutive_failures)
                     VALUES ('langfuse:default', 3, 3, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC',
                             '429 Too Many Requests', 2)""", []))
    steps.append(("""INSERT INTO export_rejections VALUES ('langfuse:default', 'acme', ?, ?, 2, 400, 'span without ids',
                                                           now() AT TIME ZONE 'UTC')""", [ACME_TRACE_1, f"{2:016x}"]))
    store = open_store(db)
    try:
        store.transaction(steps)
    finally:
        store.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A served store holding the traffic above; configs for `serve` and for the dashboards."""
    db = tmp_path_factory.mktemp("dashboards") / "meterline.duckdb"
    serve_config = db.with_name("serve.toml")
    serve_config.write_text(f'[pricing]\ncatalog = "{CATALOG}"\n')
    db.with_name("dashboard.toml").write_text(
        f'[pricing]\ncatalog = "{CATALOG}"\n\n[langfuse]\nhost = "https://langfuse.example.com"\n'
        'project_id = "proj-shared"\n')
    cli("tenants", "add", "acme", "--tier", "std", "--stripe-customer", "cus_acme", db=db)
    cli("tenants", "add", "globex", "--tier", "std", "--stripe-customer", "cus_globex", db=db)
    with Server(db, "--config", str(serve_config)) as server:
        send(server, traffic())
        send(server, globex_traffic(), tenant="globex")
        spoof = [{**globex_traffic()[0], "trace": 22, "attributes": {"tenant.id": "acme"}}]
        send(server, spoof, tenant="globex")  # 200 with partial_success: the span is refused
        wait_for_trace_context(db)
        fill_job_tables(db)
        yield server


def query(db: Path, sql: str) -> list[dict[str, Any]]:
    store = open_store(db)
    try:
        return rows(store, sql)
    finally:
        store.close()


def dashboard_config(server: Server) -> Path:
    return server.db.with_name("dashboard.toml")


def usage_json(server: Server, *args: str) -> dict[str, Any]:
    return json.loads(cli("--config", str(dashboard_config(server)), "usage", "--period", "2026-11", *args,
                          "--format", "json", db=server.db).stdout)


def app(server: Server, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app as `meterline dashboard` starts it, on the Tenants page, caches emptied."""
    monkeypatch.setenv("METERLINE_DB", str(server.db))
    monkeypatch.setenv("METERLINE_CONFIG", str(dashboard_config(server)))
    data.clear_cache()
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def assert_table_is_the_usage_report(table: Any, report: dict[str, Any]) -> None:
    shown = {row["tenant_id"]: row for row in table.to_dict("records")}
    assert set(shown) == {t["tenant_id"] for t in report["tenants"]}
    for tenant in report["tenants"]:
        row = shown[tenant["tenant_id"]]
        for money in ("total", "llm_cost", "margin"):
            assert isinstance(row[money], Decimal) and str(row[money]) == tenant[money], (tenant["tenant_id"], money)
        assert (row["tier"], row["plan"], row["unpriced_llm_calls"]) == (
            tenant["tier"], tenant["plan"], tenant["unpriced_llm_calls"])
        assert {meter: row[meter] for meter in tenant["usage"]} == tenant["usage"]


def test_tenant_table_is_meterline_usage(store: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch)
    report = usage_json(store)
    table = at.dataframe[0].value
    assert_table_is_the_usage_report(table, report)
    # the hand-worked bills, and who loses money
    assert [(r["tenant_id"], str(r["total"]), str(r["llm_cost"]), str(r["margin"])) for r in table.to_dict("records")] == [
        ("globex", "14.32", "20.00", "-5.68"), ("acme", "26.67", "0.01", "26.66")]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Revenue under plans": "$40.99", "LLM cost": "$20.01", "Margin": "$20.98",
                       "Tenants costing more than they pay": "1 of 2"}
    assert "**globex** pays $14.32, costs $20.00 (margin -$5.68)" in at.error[0].value
    assert "admin API" in at.sidebar.caption[0].value  # the collector holds the file: read through it
    # success rate = outcomes succeeded / invocations: acme 1 of 3, globex 1 of 1
    assert dict(zip(table["tenant_id"], table["success_rate"])) == {"globex": 1.0, "acme": pytest.approx(1 / 3)}
    # trend: acme's daily LLM cost, trace 1 on the 10th (0.0045), trace 2 on the 20th (0.002)
    calendar = tables.days(Period.month("2026-11"), datetime.now(timezone.utc).date())
    assert table["trend"][1] == pytest.approx([{10: 0.0045, 20: 0.002}.get(day.day, 0) for day in calendar])
    csv_rows = tables.tenant_csv(table, report).splitlines()
    assert csv_rows[0].startswith("period,currency,tenant_id,tier,plan,total,llm_cost,margin,")
    assert csv_rows[1].startswith("2026-11,usd,globex,std,std,14.32,20.00,-5.68,")

    at.multiselect(key="tenants_tiers").set_value(["std"]).run()
    at.multiselect(key="tenants_features").set_value(["(none)"]).run()
    assert not at.exception and len(at.dataframe[0].value) == 2
    at.session_state["tenant_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    assert not at.run().exception and "Select a row" not in " ".join(c.value for c in at.caption)


def test_a_custom_range_is_meterline_usage_for_that_range(store: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch)
    at.selectbox(key="period_month").set_value("custom").run()
    at.date_input(key="period_range").set_value((datetime(2026, 11, 10).date(), datetime(2026, 11, 10).date())).run()
    assert not at.exception
    assert at.title[0].value == "Tenants, 2026-11-10 to 2026-11-10"
    assert_table_is_the_usage_report(at.dataframe[0].value, json.loads(cli(
        "--config", str(dashboard_config(store)), "usage", "--start", "2026-11-10T00:00:00Z",
        "--end", "2026-11-11T00:00:00Z", "--format", "json", db=store.db).stdout))


def test_every_page_renders_with_the_stores_numbers(store: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app(store, monkeypatch)
    report = usage_json(store, "--compare-models")
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])

    at.switch_page("views/tenant.py")
    at.query_params["tenant"] = "acme"
    at.run()
    assert at.selectbox(key="drill_tenant").value == "acme"
    assert {m.label: m.value for m in at.metric}["Margin"] == "$26.66"
    traces = at.dataframe[-1].value
    assert list(traces["trace_id"][:2]) == [ACME_TRACE_1, f"{2:032x}"]  # 1000/200 tokens beats 500/100
    assert str(traces["llm_cost"][0]) == "0.004500" and list(traces["llm_calls"][:2]) == [1, 1]
    assert traces["langfuse"][0] == TRACE_URL + ACME_TRACE_1
    by_agent = at.dataframe[0].value
    assert dict(zip(by_agent["agent"], by_agent["agent_invocations"])) == {"lead_agent": 2, "opp_agent": 1, "(none)": 0}
    at.radio(key="drill_granularity").set_value("hour").run()
    assert not at.exception

    at.switch_page("views/pricing.py").run()
    compared = at.dataframe[0].value.set_index("tenant_id")
    for tenant in report["tenants"]:
        for model, entry in tenant["models"].items():
            assert str(compared.loc[tenant["tenant_id"], f"{model}_total"]) == entry["total"]
            assert str(compared.loc[tenant["tenant_id"], f"{model}_margin"]) == entry["margin"]
    assert compared.loc["acme", "best_model"] == "Activity x fixed (per agent)"  # 20.00 of the four

    at.switch_page("views/billing.py").run()
    assert {m.label: m.value for m in at.metric}["Status"] == "failed"
    ledger = at.dataframe[-2].value.set_index(["tenant_id", "charge"])
    assert ledger.loc[("acme", "tokens"), "acknowledged_value"] == 1400
    assert ledger.loc[("globex", "agents"), "failed_events"] == 1
    assert "Stripe answered 500" in at.dataframe[-1].value["error"][0]

    at.switch_page("views/health.py").run()
    health = {m.label: m.value for m in at.metric}
    assert health["Spans received, last hour"] == "15"  # 12 acme spans (test_metering) + 3 globex
    refused = at.dataframe[0].value
    assert refused.set_index("reason").loc["tenant_spoof", "items"] == 1
    exports = at.dataframe[1].value.set_index("destination")
    behind = query(store.db, "SELECT count(*) AS n FROM spans WHERE ingest_seq > 3")[0]["n"]
    assert exports.loc["langfuse:default", "lag_spans"] == behind > 0
    assert exports.loc["langfuse:default", "rejected_spans"] == 1
    assert any("429 Too Many Requests" in w.value for w in at.warning)


def test_reading_the_file_does_not_block_a_collector(store: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """No server: the dashboards read the file read-only and let go of it, so a collector can start."""
    store.stop()
    try:
        at = app(store, monkeypatch)
        assert "read-only" in at.sidebar.caption[0].value
        assert_table_is_the_usage_report(at.dataframe[0].value, usage_json(store))
        for page in PAGES:
            assert not at.switch_page(page).run().exception, page
        with Server(store.db, "--config", str(store.db.with_name("serve.toml"))):
            pass  # started: the dashboards did not hold the file
    finally:
        store.start()


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API (no client library needed)."""

    ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1600,1500"]

    def __init__(self, profile: Path) -> None:
        port = free_port()
        self.driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_until(lambda: self._ready(), 20, "chromedriver did not start")
        options = {"binary": str(CHROMIUM), "args": [*self.ARGS, f"--user-data-dir={profile}"]}
        session = self.http.post("/session", json={"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}}).json()["value"]
        self.session = f"/session/{session['sessionId']}"

    def _ready(self) -> bool:
        try:
            return self.http.get("/status").json()["value"]["ready"]
        except httpx.HTTPError:
            return False

    def open(self, url: str) -> None:
        self.http.post(f"{self.session}/url", json={"url": url})

    def source(self) -> str:
        return self.http.get(f"{self.session}/source").json()["value"]

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.http.get(f"{self.session}/screenshot").json()["value"]))

    def close(self) -> None:
        try:
            self.http.delete(self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(10)
            self.http.close()


def wait_until(check: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.2)


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (`make test` installs them)")
def test_meterline_dashboard_in_a_browser_shows_the_tenant_table(store: Server, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as output:
        dashboard = subprocess.Popen(
            [METERLINE, "--config", str(dashboard_config(store)), "dashboard", "--db", str(store.db), "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "METERLINE_JWT_SECRET": SECRET})
    browser = None
    try:
        wait_until(lambda: _healthy(port) or dashboard.poll() is not None, 30, "the dashboard did not come up")
        assert dashboard.poll() is None, log.read_text()
        browser = Browser(tmp_path / "chromium-profile")
        browser.open(f"http://127.0.0.1:{port}/")
        rendered = lambda: all(text in browser.source() for text in ('data-testid="stDataFrame"', ">globex<",
                                                                     ">-5.68<", ">26.67<", "Costing us more"))
        wait_until(lambda: rendered() or 'data-testid="stException"' in browser.source(), 45,
                   "the tenant table did not render")
        time.sleep(1)  # let the charts finish drawing before the picture
        browser.screenshot(tmp_path / "tenants.png")
        page = browser.source()
        assert 'data-testid="stException"' not in page and "Traceback" not in page
        assert rendered()
        assert (tmp_path / "tenants.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.close()
        dashboard.terminate()
        dashboard.wait(15)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text == "ok"
    except httpx.HTTPError:
        return False

"""The Langfuse exporter as Langfuse sees it: a real `meterline serve` process sending to a local
server that honours Langfuse's OTLP contract (tests/servers/langfuse_server.py)."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.langfuse.config import load_settings
from enrich.tenants import add_tenant
from metering.llm_cost import PriceTable
from metering.meters import Meterer, Period
from meterline.config import ConfigError, load_config
from meterline.stats import collect_stats
from meterline.store import LocalStore, open_store, rows
from tests.servers.langfuse_server import LangfuseServer, ReceivedSpan
from tests.support import Server, cli, spans_request, token

T0 = datetime(2026, 11, 3, 10, 0)
PERIOD = Period.month("2026-11")
SHARED_KEYS = ("pk-lf-shared", "sk-lf-shared-0123")
SILO_KEYS = ("pk-lf-silo", "sk-lf-silo-4567")
NO_AMBIENT_LANGFUSE = {name: "" for name in ("LANGFUSE_HOST", "LANGFUSE_BASE_URL", "LANGFUSE_PUBLIC_KEY",
                                               "LANGFUSE_SECRET_KEY", "LANGFUSE_TRACING_ENVIRONMENT")}
FAST = """
[langfuse]
poll_seconds = 0.05
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.3
"""
FEATURES = """
[[features]]
feature = "lead_conversion"
agent = "lead_agent"
"""
GPT_CALL = {"gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.cache_read_input_tokens": 200}


def shared_env(lf: LangfuseServer, keys: tuple[str, str] = SHARED_KEYS) -> dict[str, str]:
    """The shared project through the Langfuse SDK's own variables."""
    return {**NO_AMBIENT_LANGFUSE, "LANGFUSE_HOST": lf.url, "LANGFUSE_PUBLIC_KEY": keys[0], "LANGFUSE_SECRET_KEY": keys[1]}


def write_config(tmp_path: Path, settings: str = "", projects: str = "") -> Path:
    path = tmp_path / "meterline.toml"
    path.write_text(FAST + settings + projects + FEATURES)
    return path


def register(db: Path, **tiers: str) -> None:
    store = LocalStore(db)
    try:
        for tenant, tier in tiers.items():
            add_tenant(store, tenant, tier)
    finally:
        store.close()


def agent_trace(trace: int, model: str = "gpt-4o-mini", call: dict[str, int] | None = None,
                ids: Iterable[int] = (1, 2, 3, 4), extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A Strands-shaped trace: invoke_agent (running totals) > chat > the SDK's client span of the
    same model call (the billable one), and a tool. Span ids are 1..4 within the trace."""
    call = call or GPT_CALL
    start = T0 + timedelta(minutes=trace)
    model_call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **call}
    spans = [
        {"trace": trace, "id": 1, "name": "invoke_agent lead_agent", "start": start, "duration_ms": 900,
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "lead_agent", **call, **(extra or {})}},
        {"trace": trace, "id": 2, "parent": 1, "name": "chat", "start": start, "attributes": model_call},
        {"trace": trace, "id": 3, "parent": 2, "name": f"chat {model}", "kind": "CLIENT", "start": start,
         "attributes": model_call},
        {"trace": trace, "id": 4, "parent": 1, "name": "execute_tool convert_lead", "start": start,
         "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "convert_lead"}},
    ]
    return [span for span in spans if span["id"] in set(ids)]


def send(server: Server, tenant: str, spans: list[dict[str, Any]]) -> None:
    resource = {"session.id": f"session-{spans[0]['trace']}", "user.id": f"user-of-{tenant}"}
    response = httpx.post(server.http + "/v1/traces", content=spans_request(spans, resource).SerializeToString(),
                          headers={"Authorization": f"Bearer {token(tenant)}", "Content-Type": "application/x-protobuf"},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0


def exports(db: Path) -> dict[str, dict[str, Any]]:
    store = open_store(db)
    try:
        return {row["destination"]: row for row in collect_stats(store)["exports"]}
    finally:
        store.close()


def eventually(check: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout}s (last: {value!r})")
        time.sleep(0.05)


def metered(db: Path) -> dict[str, dict[str, Any]]:
    """Meterline's own numbers for the period, exact (the bill's source)."""
    store = open_store(db)
    try:
        return {row["tenant_id"]: row for row in Meterer(store, PriceTable.load()).usage(PERIOD)}
    finally:
        store.close()


def langfuse_totals(spans: Iterable[ReceivedSpan]) -> dict[str, dict[str, Any]]:
    """What Langfuse's dashboards would sum per tenant tag, from usage_details and cost_details."""
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0,
        "llm_calls": 0, "llm_cost": Decimal(0)})
    for span in spans:
        tenant = next(tag.removeprefix("tenant:") for tag in span.tags if tag.startswith("tenant:"))
        usage, cost = span.usage(), span.cost()
        parts = {key: value for key, value in usage.items() if key != "total"}
        assert usage.get("total", 0) == sum(parts.values())
        total = totals[tenant]
        total["input_tokens"] += sum(parts.get(key, 0) for key in ("input", "input_cache_read", "input_cache_creation"))
        total["output_tokens"] += parts.get("output", 0) + parts.get("output_reasoning", 0)
        total["cache_read_tokens"] += parts.get("input_cache_read", 0)
        total["cache_write_tokens"] += parts.get("input_cache_creation", 0)
        total["llm_calls"] += usage.get("total", 0) > 0
        total["llm_cost"] += cost.get("total", Decimal(0))
    return totals


def test_each_tenant_lands_in_its_project_tagged_with_the_bills_numbers(db: Path, tmp_path: Path) -> None:
    secret_file = tmp_path / "silo.secret"
    secret_file.write_text(SILO_KEYS[1] + "\n")
    register(db, acme="enterprise", umbrella="enterprise", globex="basic", initech="premium")
    with LangfuseServer({"shared": SHARED_KEYS, "silo": SILO_KEYS}) as lf, \
            LangfuseServer({"initech": ("pk-lf-initech", "sk-lf-initech-89")}) as lf_eu:
        config = write_config(tmp_path, 'environment = "production"\n', f"""
[[langfuse.projects]]
name = "silo"
tiers = ["enterprise"]
public_key = "{SILO_KEYS[0]}"
secret_key_file = "{secret_file}"

[[langfuse.projects]]
name = "initech"
tenants = ["initech"]
host = "{lf_eu.url}"
public_key_env = "INITECH_LF_PUBLIC"
secret_key_env = "INITECH_LF_SECRET"
""")
        env = {**shared_env(lf), "INITECH_LF_PUBLIC": "pk-lf-initech", "INITECH_LF_SECRET": "sk-lf-initech-89"}
        with Server(db, "--config", str(config), env=env) as server:
            send(server, "acme", agent_trace(1, "claude-sonnet-4-5-20250929", {
                "gen_ai.usage.input_tokens": 250_000, "gen_ai.usage.output_tokens": 900,  # the large-context tier
                "gen_ai.usage.cache_read_input_tokens": 1000, "gen_ai.usage.cache_creation_input_tokens": 4000},
                extra={"langfuse.trace.tags": ["vip", "tenant:globex"]}))
            send(server, "umbrella", agent_trace(2))
            send(server, "globex", agent_trace(3, "gemini-2.5-pro", {
                "gen_ai.usage.input_tokens": 3000, "gen_ai.usage.output_tokens": 700,
                "gen_ai.usage.reasoning_tokens": 500}))
            send(server, "globex", agent_trace(4))
            send(server, "initech", agent_trace(5))
            lf.wait_for(lambda: len(lf.received()) == 16, what="16 spans in the shared and silo projects")
            lf_eu.wait_for(lambda: len(lf_eu.received()) == 4, what="4 spans in initech's project")
            report = cli("stats", db=db).stdout
            state = exports(db)
        log = server.log.read_text()

    # Routing: tier enterprise -> silo, tenant initech -> its own host, the rest -> shared.
    by_project = {"shared": lf.received("shared"), "silo": lf.received("silo"), "initech": lf_eu.received("initech")}
    tenants_in = {name: {tag for span in spans for tag in span.tags if tag.startswith("tenant:")}
                  for name, spans in by_project.items()}
    assert tenants_in == {"shared": {"tenant:globex"}, "silo": {"tenant:acme", "tenant:umbrella"},
                          "initech": {"tenant:initech"}}
    assert all(count == 1 for server_ in (lf, lf_eu) for count in server_.counts().values())
    tiers = {"acme": "enterprise", "umbrella": "enterprise", "globex": "basic", "initech": "premium"}
    for span in (span for spans in by_project.values() for span in spans):
        tenant = span.tags[-3].removeprefix("tenant:")
        attributes = span.attributes
        assert span.tags[-3:] == [f"tenant:{tenant}", f"tier:{tiers[tenant]}", "feature:lead_conversion"], span
        assert (attributes["langfuse.trace.metadata.tenant_id"], attributes["langfuse.trace.metadata.tier"],
                attributes["langfuse.trace.metadata.feature"]) == (tenant, tiers[tenant], "lead_conversion")
        assert attributes["langfuse.environment"] == "production"
        assert attributes["langfuse.session.id"] == f"session-{int(span.trace_id, 16)}"
        assert attributes["langfuse.user.id"] == f"user-of-{tenant}"
        assert span.resource["service.name"] == "crm-agents" and span.scope == "tests.crm"
        # Only the SDK client span of each model call carries usage; the framework span above it
        # and the agent's running totals say zero, overriding the gen_ai.usage.* they still carry.
        assert (span.usage().get("total", 0) > 0) == (span.name.startswith("chat ")), span
        assert "gen_ai.usage.input_tokens" in attributes or span.name.startswith("execute_tool")
    # The client's own tag is kept; its attempt at a tenant tag is not.
    acme_agent = next(s for s in by_project["silo"] if s.name.startswith("invoke_agent") and "tenant:acme" in s.tags)
    assert acme_agent.tags == ["vip", "tenant:acme", "tier:enterprise", "feature:lead_conversion"]

    # Langfuse's usage and cost totals per tenant are Meterline's, to the last token and decimal.
    bill = metered(db)
    seen = {tenant: totals for spans in by_project.values() for tenant, totals in langfuse_totals(spans).items()}
    for tenant, totals in seen.items():
        assert totals == {key: bill[tenant][key] for key in totals}, tenant
    assert bill["acme"]["cache_write_tokens"] == 4000 and bill["globex"]["llm_calls"] == 2

    # The contract: every request authenticated and asked for ingestion v4, gzip-compressed protobuf.
    for request in lf.requests + lf_eu.requests:
        assert request.status == 200
        assert request.headers["x-langfuse-ingestion-version"] == "4"
        assert (request.headers["content-type"], request.headers["content-encoding"]) == ("application/x-protobuf", "gzip")
    assert {name: (row["lag_spans"], row["spans_sent"], row["consecutive_failures"]) for name, row in state.items()} == {
        "langfuse:default": (0, 8, 0), "langfuse:silo": (0, 8, 0), "langfuse:initech": (0, 4, 0)}
    assert "langfuse:silo" in report and "exports" in report
    for secret in (SHARED_KEYS[1], SILO_KEYS[1], "sk-lf-initech-89"):
        assert secret not in log


def test_an_outage_loses_nothing_and_sends_nothing_twice(db: Path, tmp_path: Path) -> None:
    register(db, acme="enterprise", globex="basic")
    with LangfuseServer({"shared": SHARED_KEYS, "silo": SILO_KEYS}) as lf:
        config = write_config(tmp_path, 'secret_key_env = "SHARED_SECRET"\n', f"""
[[langfuse.projects]]
name = "silo"
tiers = ["enterprise"]
public_key = "{SILO_KEYS[0]}"
secret_key_env = "SILO_SECRET"
""")
        env = {**NO_AMBIENT_LANGFUSE, "LANGFUSE_HOST": lf.url, "LANGFUSE_PUBLIC_KEY": SHARED_KEYS[0],
               "SHARED_SECRET": SHARED_KEYS[1], "SILO_SECRET": SILO_KEYS[1]}
        lf.set_outage(503)
        with Server(db, "--config", str(config), env=env) as server:
            send(server, "acme", agent_trace(1))
            send(server, "globex", agent_trace(2))
            send(server, "globex", agent_trace(3))
            down = eventually(lambda: (state := exports(db)) and all(
                row["consecutive_failures"] >= 2 for row in state.values()) and state, what="failures in stats")
            assert {name: row["lag_spans"] for name, row in down.items()} == {"langfuse:default": 8, "langfuse:silo": 4}
            assert all("HTTP 503" in row["last_error"] and row["oldest_unexported_age_seconds"] is not None
                       for row in down.values())
            assert lf.received() == [] and len(lf.requests) >= 4

            lf.set_outage(None)
            lf.wait_for(lambda: len(lf.received()) == 12, what="every span after the outage")
            lf.fail_next(1, 429, retry_after=1, project="shared")  # after recovery, a rate limit
            send(server, "globex", agent_trace(4))
            lf.wait_for(lambda: len(lf.received()) == 16, what="the span sent after the 429")
            healthy = eventually(lambda: (state := exports(db)) and all(
                row["lag_spans"] == 0 for row in state.values()) and state, what="no lag")

    assert all(count == 1 for count in lf.counts().values()), "a span was delivered twice"
    assert {span.span_id for span in lf.received("silo")} == {f"{i:016x}" for i in (1, 2, 3, 4)}
    assert {(int(s.trace_id, 16)) for s in lf.received("shared")} == {2, 3, 4}
    limited = next(r for r in lf.requests if r.status == 429)
    retried = next(r for r in lf.requests if r.index > limited.index and r.project == "shared")
    assert retried.at - limited.at >= 0.95, "Retry-After: 1 was not honoured (backoff alone is at most 0.3s)"
    assert {name: (row["spans_sent"], row["consecutive_failures"], row["last_error"])
            for name, row in healthy.items()} == {"langfuse:default": (12, 0, None), "langfuse:silo": (4, 0, None)}


def test_a_refused_span_is_isolated_and_the_rest_delivered(db: Path, tmp_path: Path) -> None:
    register(db, globex="basic")
    with LangfuseServer({"shared": SHARED_KEYS}) as lf:
        config = write_config(tmp_path)
        lf.set_outage(400)  # Langfuse refuses every request: nothing proves the data is at fault
        with Server(db, "--config", str(config), env=shared_env(lf)) as server:
            send(server, "globex", agent_trace(1) + agent_trace(2))
            held = eventually(lambda: exports(db)["langfuse:default"]["consecutive_failures"] >= 2 and exports(db),
                              what="a held batch")["langfuse:default"]
            assert "every span of the batch refused" in held["last_error"]
            assert (held["lag_spans"], held["rejected_spans"]) == (8, 0)

            lf.refuse_span("0000000000000003")  # both traces' billable spans poison any batch holding them
            lf.set_outage(None)
            lf.wait_for(lambda: len(lf.received()) == 6, what="the 6 acceptable spans")
            send(server, "globex", agent_trace(3, ids=(1, 4)))  # later spans are not blocked
            lf.wait_for(lambda: len(lf.received()) == 8, what="the spans sent after the refusal")
            state = eventually(lambda: exports(db)["langfuse:default"]["lag_spans"] == 0 and exports(db),
                               what="no lag")["langfuse:default"]
            store = open_store(db)
            try:
                refused = rows(store, 'SELECT destination, tenant_id, trace_id, span_id, status, reason '
                                      'FROM export_rejections ORDER BY ingest_seq')
            finally:
                store.close()

    assert [(r["destination"], r["tenant_id"], int(r["trace_id"], 16), r["span_id"], r["status"]) for r in refused] == [
        ("langfuse:default", "globex", 1, "0000000000000003", 400),
        ("langfuse:default", "globex", 2, "0000000000000003", 400)]
    assert all("Invalid OTLP trace export" in r["reason"] for r in refused)
    assert all(count == 1 for count in lf.counts().values())
    assert (state["rejected_spans"], state["spans_sent"], state["consecutive_failures"]) == (2, 8, 0)


def test_a_clean_restart_mid_export_sends_every_span_once(db: Path, tmp_path: Path) -> None:
    register(db, globex="basic")
    with LangfuseServer({"shared": SHARED_KEYS}) as lf:
        config = write_config(tmp_path, "batch_spans = 8\n")
        lf.set_delay(0.25)
        server = Server(db, "--config", str(config), env=shared_env(lf)).start()
        for trace in range(1, 16):
            send(server, "globex", agent_trace(trace))
        lf.wait_for(lambda: len(lf.requests) >= 2, what="export under way")
        assert server.stop() == 0
        before = len(lf.received())
        assert 0 < before < 60, f"the restart did not land mid-export ({before} of 60 delivered)"
        lf.set_delay(0)
        with Server(db, "--config", str(config), env=shared_env(lf)):
            lf.wait_for(lambda: len(lf.counts()) == 60, what="all 60 spans")
            eventually(lambda: exports(db)["langfuse:default"]["lag_spans"] == 0, what="no lag")
    assert max(lf.counts().values()) == 1, "a clean restart re-sent acknowledged spans"
    assert len(lf.received()) == 60


def test_kill_9_mid_export_resends_at_most_the_batch_in_flight(db: Path, tmp_path: Path) -> None:
    register(db, globex="basic")
    with LangfuseServer({"shared": SHARED_KEYS}) as lf:
        config = write_config(tmp_path, "batch_spans = 12\n")  # whole traces, so the resend is the batch alone
        lf.set_delay(1.0)  # Langfuse records a batch, then takes a second to answer
        server = Server(db, "--config", str(config), env=shared_env(lf)).start()
        for trace in range(1, 16):
            send(server, "globex", agent_trace(trace))
        lf.wait_for(lambda: len(lf.received()) >= 24, what="a second batch recorded, its reply pending")
        server.kill()
        lf.set_delay(0)
        with Server(db, "--config", str(config), env=shared_env(lf)):
            lf.wait_for(lambda: len(lf.counts()) == 60, what="all 60 spans")
    counts = lf.counts()
    resent = {key for key, count in counts.items() if count > 1}
    assert max(counts.values()) == 2
    # The resend is exactly one batch: the one whose reply the kill swallowed. Langfuse keeps one
    # observation per span id, so it shows every span once.
    assert 0 < len(resent) <= 12
    first_copies = {span.request for span in lf.received() if span.key in resent}
    assert len(first_copies) == 2, "the resent spans did not come from one batch and its retry"
    assert len(lf.latest("shared")) == 60


def test_a_model_call_reported_late_is_not_counted_twice(db: Path, tmp_path: Path) -> None:
    register(db, globex="basic")
    with LangfuseServer({"shared": SHARED_KEYS}) as lf:
        with Server(db, "--config", str(write_config(tmp_path)), env=shared_env(lf)) as server:
            send(server, "globex", agent_trace(1, ids=(1, 2)))  # agent and framework chat span first
            lf.wait_for(lambda: len(lf.received()) == 2, what="the first two spans")
            chat = (f"{1:032x}", f"{2:016x}")
            assert lf.latest("shared")[chat].usage()["input"] == 1000, "the chat span was billable when sent"
            send(server, "globex", agent_trace(1, ids=(3,)))  # the SDK's span of the same model call
            lf.wait_for(lambda: len(lf.latest("shared")) == 3 and lf.latest("shared")[chat].usage().get("total") == 0,
                        what="the chat span corrected")
    assert lf.counts()[chat] == 2  # the one deliberate resend, replacing the first by span id
    bill = metered(db)["globex"]
    assert langfuse_totals(lf.latest("shared").values())["globex"] == {
        key: bill[key] for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                                   "llm_calls", "llm_cost")}
    assert bill["llm_calls"] == 1


def test_a_wrong_key_holds_every_span_until_it_is_fixed(db: Path, tmp_path: Path) -> None:
    register(db, globex="basic")
    wrong = (SHARED_KEYS[0], "sk-lf-wrong-secret")
    config = write_config(tmp_path)
    with LangfuseServer({"shared": SHARED_KEYS}) as lf:
        with Server(db, "--config", str(config), env=shared_env(lf, wrong)) as server:
            send(server, "globex", agent_trace(1))
            held = eventually(lambda: exports(db)["langfuse:default"]["consecutive_failures"] >= 2 and exports(db),
                              what="401s in stats")["langfuse:default"]
        assert "HTTP 401" in held["last_error"] and held["lag_spans"] == 4
        assert lf.received() == [] and {r.status for r in lf.requests} == {401}
        with Server(db, "--config", str(config), env=shared_env(lf)) as server:
            lf.wait_for(lambda: len(lf.received()) == 4, what="the held spans")
        log = server.log.read_text()
    assert all(count == 1 for count in lf.counts().values())
    assert wrong[1] not in log and SHARED_KEYS[1] not in log


def test_langfuse_config_is_checked_before_the_server_starts(db: Path, tmp_path: Path) -> None:
    def refused(text: str, environ: dict[str, str] | None = None) -> str:
        path = tmp_path / "check.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as error:
            load_settings(load_config(path), environ or {})
        return str(error.value)

    project = '[[langfuse.projects]]\nname = "silo"\ntiers = ["enterprise"]\npublic_key = "pk"\n'
    assert "unknown key(s) secret_key" in refused('[langfuse]\npublic_key = "pk"\nsecret_key = "sk"\n')
    assert "SILO_SECRET, which is not set" in refused(project + 'secret_key_env = "SILO_SECRET"\n')
    assert "exactly one of secret_key_env or secret_key_file" in refused(project)
    assert "tier 'enterprise' is already routed to project 'silo'" in refused(
        project + 'secret_key_env = "S"\n' + project.replace('"silo"', '"silo2"') + 'secret_key_env = "S"\n', {"S": "x"})
    assert "no secret key" in refused("", {"LANGFUSE_PUBLIC_KEY": "pk"})
    assert "langfuse.environment" in refused('[langfuse]\nenvironment = "Langfuse-prod"\n')

    path = tmp_path / "ok.toml"
    path.write_text(project + 'secret_key_env = "SILO_SECRET"\n')
    settings = load_settings(load_config(path), {"SILO_SECRET": "sk-very-secret", "LANGFUSE_PUBLIC_KEY": "pk-shared",
                                                 "LANGFUSE_SECRET_KEY": "sk-shared-secret"})
    assert [(d.key, d.host) for d in settings.destinations] == [
        ("langfuse:default", "https://cloud.langfuse.com"), ("langfuse:silo", "https://cloud.langfuse.com")]
    assert "sk-very-secret" not in repr(settings) and "sk-shared-secret" not in repr(settings)

    # The real server refuses to start, naming the variable and not a secret.
    result = cli("serve", "--config", str(path), db=db, check=False, env=NO_AMBIENT_LANGFUSE)
    assert result.returncode != 0 and "SILO_SECRET, which is not set" in result.stderr
    assert not db.exists(), "the configuration is refused before the store is even opened"

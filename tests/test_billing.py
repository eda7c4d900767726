"""The billing job end to end: real `meterline` processes, the real stripe-python SDK, and
tests/servers/stripe_server.py honouring Stripe's meter-event contract.

Every test checks the one property that matters: for each (customer, meter), the total Stripe
holds equals the billable quantity `meterline usage` reports for the tenants billed as that
customer, whatever happened in between (re-runs, kills between send and ledger write, 429s,
500s, lost replies, late spans, corrections, a tier change).

Test plan `std` (written below): tokens per 1M, tool calls in packages of 10 after 2 included,
agents flat, invocations with 2 included per active agent (an entitlement Stripe cannot express:
the job reports the billable quantity), outcomes flat. Plan `lite` bills input tokens only.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import threading
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import stripe

from billing.stripe_setup import UnpriceableCharge, price_terms
from enrich.tenants import add_tenant, set_status
from metering.meters import Period
from meterline.store import LocalStore, open_store, rows
from pricing.catalog import (DEFAULT_PATH, Catalog, Charge, Currency, Flat, Graduated, Package, Tier, Volume,
                             load_catalog, parse_catalog)
from tests.servers.stripe_server import StripeServer
from tests.support import METERLINE, SECRET, Server, cli, spans_request, token, wait_for_trace_context

KEY = "sk_test_meterline_billing_0123"
CATALOG = """
currency = "usd"

[plans.std]
[[plans.std.charges]]
name = "input_tokens"
model = "activity_variable"
meter = "input_tokens"
schedule = "flat"
unit_price = "3.00"
per = 1_000_000
stripe_meter = "t_input_tokens"

[[plans.std.charges]]
name = "output_tokens"
model = "activity_variable"
meter = "output_tokens"
schedule = "flat"
unit_price = "15.00"
per = 1_000_000
stripe_meter = "t_output_tokens"

[[plans.std.charges]]
name = "tool_calls"
model = "activity_variable"
meter = "tool_calls"
schedule = "package"
package_size = 10
package_price = "1.00"
included = 2
stripe_meter = "t_tool_calls"

[[plans.std.charges]]
name = "agents"
model = "activity_fixed"
meter = "active_agents"
schedule = "flat"
unit_price = "20.00"
stripe_meter = "t_agents"

[[plans.std.charges]]
name = "invocations"
model = "activity_fixed"
meter = "agent_invocations"
schedule = "flat"
unit_price = "0.10"
included_per = { meter = "active_agents", quantity = 2 }
stripe_meter = "t_invocations"

[[plans.std.charges]]
name = "outcomes"
model = "outcome_variable"
meter = "agent_outcomes_succeeded"
schedule = "flat"
unit_price = "0.50"
stripe_meter = "t_outcomes"

[plans.lite]
[[plans.lite.charges]]
name = "input_tokens"
model = "activity_variable"
meter = "input_tokens"
schedule = "flat"
unit_price = "4.00"
per = 1_000_000
stripe_meter = "t_input_tokens"
"""
STRIPE_METER = {"input_tokens": "t_input_tokens", "output_tokens": "t_output_tokens", "tool_calls": "t_tool_calls",
                "agents": "t_agents", "invocations": "t_invocations", "outcomes": "t_outcomes",
                "workflows": "t_workflows"}
METER_EVENTS = "/v1/billing/meter_events"
STREAM = "/v2/billing/meter_event_stream"
_traces = itertools.count(1)


# -- traffic ----------------------------------------------------------------------------------


def agent_run(agent: str, start: datetime, input_tokens: int = 1200, output_tokens: int = 300, tools: int = 3,
              ok: bool = True) -> list[dict[str, Any]]:
    """One invocation: invoke_agent > chat (the billable model call) and `tools` tool calls."""
    trace = next(_traces)
    spans = [
        {"trace": trace, "id": 1, "name": f"invoke_agent {agent}", "start": start, "status": "OK" if ok else "ERROR",
         "attributes": {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}},
        {"trace": trace, "id": 2, "parent": 1, "name": "chat", "start": start + timedelta(milliseconds=5),
         "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens}},
    ]
    spans += [{"trace": trace, "id": 3 + i, "parent": 1, "name": "execute_tool lookup",
               "start": start + timedelta(milliseconds=10 + i),
               "attributes": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}}
              for i in range(tools)]
    return spans


def month_of_traffic(period: Period, seed: int) -> list[dict[str, Any]]:
    """A month of a tenant's agents: a few invocations every other day, sizes varying by seed."""
    spans = []
    for day in range(0, (period.end - period.start).days, 2):
        for n in range(1 + (day + seed) % 3):
            start = period.start + timedelta(days=day, hours=9 + n, minutes=seed)
            agent = ("lead_agent", "task_agent", "opportunity_agent")[(day + n + seed) % 3]
            spans += agent_run(agent, start, input_tokens=900 + 37 * seed + day, output_tokens=200 + n * 11,
                               tools=(day + seed) % 4, ok=(day + n) % 5 != 0)
    return spans


def previous_month() -> Period:
    """Last month: its last second is always within Stripe's 35-day window."""
    first = datetime.now(timezone.utc).replace(tzinfo=None, day=1, hour=0, minute=0, second=0, microsecond=0)
    return Period.month((first - timedelta(days=1)).strftime("%Y-%m"))


def recent_window() -> tuple[Period, datetime]:
    """A period and a start such that [start, start + 10 min) is in the past and inside the period."""
    start = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) - timedelta(minutes=30)
    period = Period.month(start.strftime("%Y-%m"))
    return period, min(start, period.end - timedelta(minutes=11))


# -- the installation under test ---------------------------------------------------------------


@dataclass
class Install:
    """A store, a config pointing at the Stripe stand-in, tenants and their customers."""

    tmp: Path
    stripe: StripeServer
    customers: dict[str, str] = field(default_factory=dict)  # tenant -> customer billed
    server: Server | None = None

    @property
    def db(self) -> Path:
        return self.tmp / "meterline.duckdb"

    def config(self, name: str = "meterline.toml", catalog: str = CATALOG, **billing: Any) -> Path:
        catalog_path = self.tmp / f"{name}.catalog.toml"
        catalog_path.write_text(catalog)
        settings = {"backoff_seconds": 0.01, "max_wait_seconds": 5.0, **billing}
        lines = [f'[pricing]\ncatalog = "{catalog_path}"',
                 f'[stripe]\napi_base = "{self.stripe.url}"\nnamespace = "mltest"',
                 "[billing]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items())]
        path = self.tmp / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def customer(self, name: str) -> str:
        client = stripe.StripeClient(KEY, base_addresses={"api": self.stripe.url})
        return client.v1.customers.create(params={"name": name}).id

    def tenants(self, *specs: tuple[str, str, str | None]) -> None:
        """Register (tenant, tier, customer) in the store (before serve starts)."""
        store = LocalStore(self.db)
        try:
            for tenant, tier, customer in specs:
                add_tenant(store, tenant, tier, stripe_customer_id=customer)
                if customer:
                    self.customers[tenant] = customer
        finally:
            store.close()

    def serve(self) -> Server:
        self.server = Server(self.db, "--config", str(self.config())).start()
        return self.server

    def send(self, tenant: str, spans: list[dict[str, Any]]) -> None:
        assert self.server is not None
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token(tenant)}"}
        response = httpx.post(self.server.http + "/v1/traces", content=spans_request(spans).SerializeToString(),
                              headers=headers)
        assert response.status_code == 200, response.text

    def settle(self) -> None:
        """Wait until trace context (billable marks, agents) covers every span sent."""
        wait_for_trace_context(self.db)

    def stop(self) -> None:
        if self.server is not None:
            self.settle()
            self.server.stop()
            self.server = None

    def meterline(self, *args: str, config: Path | None = None, db: bool = True,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
        return cli("--config", str(config or self.config()), *args, db=self.db if db else None,
                   env={"STRIPE_API_KEY": KEY}, check=check)

    def bill(self, period: Period, *extra: str, config: Path | None = None, code: int = 0) -> dict[str, Any]:
        result = self.meterline("bill", "--period", period.label, "--format", "json", *extra, config=config,
                                check=False)
        assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
        assert KEY not in result.stdout + result.stderr
        return json.loads(result.stdout)

    def bill_killed(self, period: Period, after_accepted: int, *extra: str) -> None:
        """Run `meterline bill` and SIGKILL it the moment Stripe has recorded its n-th meter-event
        request, before the reply reaches it: Stripe holds the event, the ledger does not know."""
        command = [METERLINE, "--config", str(self.config()), "bill", "--period", period.label, *extra,
                   "--db", str(self.db)]
        accepted = itertools.count(1)
        holder: list[subprocess.Popen[str]] = []

        def kill() -> None:
            if next(accepted) == after_accepted:
                holder[0].kill()
                holder[0].wait()

        self.stripe.before_meter_event_reply(kill)
        try:
            holder.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                           env={**os.environ, "STRIPE_API_KEY": KEY, "METERLINE_JWT_SECRET": SECRET}))
            holder[0].wait(60)
        finally:
            self.stripe.before_meter_event_reply(None)
        assert holder[0].returncode == -9, holder[0].communicate()

    def expected(self, *usage_args: str, config: Path | None = None) -> dict[tuple[str, str], int]:
        """What Stripe must hold: billable quantity per (customer, meter) from `meterline usage`."""
        report = json.loads(self.meterline("usage", *usage_args, "--format", "json", config=config).stdout)
        totals: Counter[tuple[str, str]] = Counter()
        for tenant in report["tenants"]:
            if tenant["tenant_id"] in self.customers:
                for charge in tenant["charges"]:
                    totals[(self.customers[tenant["tenant_id"]], STRIPE_METER[charge["charge"]])] += \
                        charge["billable_quantity"]
        return {key: value for key, value in totals.items() if value}

    def ledger(self) -> list[dict[str, Any]]:
        store = open_store(self.db)
        try:
            return rows(store, "SELECT * FROM billing_ledger ORDER BY created_at, identifier")
        finally:
            store.close()


def held(server: StripeServer) -> dict[tuple[str, str], int]:
    return {key: value for key, value in server.totals().items() if value}


def meter_event_requests(server: StripeServer) -> list[Any]:
    return [r for r in server.requests if r.path in (METER_EVENTS, STREAM)]


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    with StripeServer(api_keys=(KEY,)) as server:
        setup = Install(tmp_path, server)
        try:
            yield setup
        finally:
            if setup.server is not None:
                setup.server.kill()


def synced(install: Install) -> None:
    result = install.meterline("stripe", "sync", "--format", "json", db=False)
    assert all(item["action"] in ("created", "exists") for item in json.loads(result.stdout))


# -- stripe sync -------------------------------------------------------------------------------


def test_stripe_sync_creates_what_the_plans_need_then_finds_it(install: Install) -> None:
    config = install.config()
    config.write_text(config.read_text().replace(f'api_base = "{install.stripe.url}"\n', ""))
    sync = ("stripe", "sync", "--format", "json", "--stripe-api-base", install.stripe.url)
    first = json.loads(install.meterline(*sync, config=config, db=False).stdout)
    assert Counter((i["kind"], i["action"]) for i in first) == {
        ("meter", "created"): 6, ("product", "created"): 7, ("price", "created"): 7}

    client = stripe.StripeClient(KEY, base_addresses={"api": install.stripe.url})
    meters = {m.event_name: m for m in client.v1.billing.meters.list(params={"limit": 100}).data}
    assert set(meters) == set(STRIPE_METER.values()) - {"t_workflows"}
    assert {m.default_aggregation.formula for m in meters.values()} == {"sum"}
    tokens = client.v1.prices.list(params={"lookup_keys": ["mltest_std_input_tokens"]}).data[0]
    assert tokens.unit_amount_decimal == Decimal("0.0003")  # $3 per 1M tokens, in cents per token
    assert (tokens.recurring.usage_type, tokens.recurring.meter) == ("metered", meters["t_input_tokens"].id)
    assert tokens.transform_quantity is None and tokens.product == "mltest_std_input_tokens"
    tools = client.v1.prices.list(params={"lookup_keys": ["mltest_std_tool_calls"]}).data[0]
    assert tools.unit_amount == 100
    assert (tools.transform_quantity.divide_by, tools.transform_quantity.round) == (10, "up")

    again = json.loads(install.meterline(*sync, config=config, db=False).stdout)
    assert {i["action"] for i in again} == {"exists"}
    assert [(i["kind"], i["stripe_id"]) for i in again] == [(i["kind"], i["stripe_id"]) for i in first]

    catalog = config.with_name(f"{config.name}.catalog.toml")
    catalog.write_text(CATALOG.replace('unit_price = "4.00"', 'unit_price = "4.50"'))
    changed = json.loads(install.meterline(*sync, config=config, db=False).stdout)
    [replaced] = [i for i in changed if i["action"] != "exists"]
    assert (replaced["kind"], replaced["name"], replaced["action"]) == ("price", "mltest_lite_input_tokens", "replaced")
    lite = client.v1.prices.list(params={"lookup_keys": ["mltest_lite_input_tokens"]}).data
    assert [p.id for p in lite] == [replaced["stripe_id"]] and lite[0].unit_amount_decimal == Decimal("0.00045")


def test_stripe_sync_reports_a_meter_it_cannot_use(install: Install) -> None:
    client = stripe.StripeClient(KEY, base_addresses={"api": install.stripe.url})
    client.v1.billing.meters.create(params={"display_name": "x", "event_name": "t_outcomes",
                                            "default_aggregation": {"formula": "last"}})
    result = install.meterline("stripe", "sync", "--format", "json", db=False, check=False)
    assert result.returncode == 1
    items = json.loads(result.stdout)
    assert Counter(i["action"] for i in items) == {"created": 18, "failed": 2}  # 5 meters, 7 products, 6 prices
    failed = {(i["kind"], i["name"]): i["detail"] for i in items if i["action"] == "failed"}
    assert failed == {("meter", "t_outcomes"): "aggregates by last, Meterline sends deltas to sum",
                      ("price", "mltest_std_outcomes"): "no usable meter 't_outcomes'"}
    table = install.meterline("stripe", "sync", db=False, check=False).stdout
    assert "18 exists, 0 created, 0 replaced, 2 failed" in table


def test_tiered_schedules_become_tiered_prices() -> None:
    """The parameters alone; the sync tests below send them to the stand-in and read them back."""
    usd = Currency("usd", 2)
    graduated = Charge("tokens", "activity_variable", "input_tokens",
                       Graduated((Tier(100_000_000, Decimal("4.50")), Tier(None, Decimal("4.00"), Decimal("1.50"))),
                                 per=1_000_000), "t")
    assert price_terms(usd, graduated) == {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": [
        {"up_to": 100_000_000, "unit_amount_decimal": "0.00045", "flat_amount_decimal": "0"},
        {"up_to": "inf", "unit_amount_decimal": "0.0004", "flat_amount_decimal": "150"}]}
    volume = Charge("agents", "activity_fixed", "active_agents",
                    Volume((Tier(50, Decimal("299.00")), Tier(None, Decimal("199.00")))), "t")
    assert price_terms(usd, volume)["tiers_mode"] == "volume"
    assert price_terms(usd, volume)["tiers"][0] == {"up_to": 50, "unit_amount_decimal": "29900",
                                                    "flat_amount_decimal": "0"}


def test_a_flat_fee_in_fractions_of_a_cent_is_refused_before_stripe_is_asked() -> None:
    """flat_amount_decimal "accepts a decimal value representing an integer in the minor units of
    the currency" (unit amounts take 12 decimals, flat amounts do not)."""
    half_cent = Charge("calls", "activity_variable", "tool_calls",
                       Graduated((Tier(10, Decimal("0.001"), Decimal("0.005")), Tier(None, Decimal("0.001")))), "t")
    with pytest.raises(UnpriceableCharge, match=r"tier 1 flat_fee: 0\.5 minor units is not a whole number"):
        price_terms(Currency("usd", 2), half_cent)
    whole_yen = Charge("calls", "activity_variable", "tool_calls",
                       Volume((Tier(10, Decimal("0.5"), Decimal("30")), Tier(None, Decimal("0.25")))), "t")
    assert [t["flat_amount_decimal"] for t in price_terms(Currency("jpy", 0), whole_yen)["tiers"]] == ["30", "0"]
    assert [t["unit_amount_decimal"] for t in price_terms(Currency("jpy", 0), whole_yen)["tiers"]] == ["0.5", "0.25"]


SHIPPED = DEFAULT_PATH.read_text(encoding="utf-8")


def billed_reference_plans(text: str) -> str:
    """The shipped catalog with each reference plan `[models.T.M]` billed as plan `T_M`: the
    shipped billed plans tier graduated only, volume schedules are in the reference plans."""
    return re.sub(r"^\[\[models\.(\w+)\.(\w+)\.charges\]\]$", r"[[plans.\1_\2.charges]]", text, flags=re.M)


def sync_json(install: Install, config: Path, code: int = 0) -> list[dict[str, Any]]:
    result = install.meterline("stripe", "sync", "--format", "json", config=config, db=False, check=False)
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def price_of(client: stripe.StripeClient, lookup_key: str) -> stripe.Price:
    [price] = client.v1.prices.list(params={"lookup_keys": [lookup_key], "expand": ["data.tiers"]}).data
    return price


def tiers_of(price: stripe.Price) -> list[tuple[int | None, Decimal, Decimal]]:
    """(up_to, cents per raw unit, flat cents) of each tier, as Stripe reads them back."""
    rows_ = [(t.up_to, t.unit_amount_decimal, t.flat_amount_decimal) for t in price.tiers]
    assert all(isinstance(amount, Decimal) for _, unit, flat in rows_ for amount in (unit, flat))  # no floats
    return rows_


def check_prices(client: stripe.StripeClient, catalog: Catalog, namespace: str = "mltest") -> Counter[str]:
    """Every billed charge has one monthly metered price on its meter that bills exactly what the
    catalog says, in cents per raw meter unit; counts the schedules seen."""
    meters = {m.event_name: m.id for m in client.v1.billing.meters.list(params={"limit": 100}).auto_paging_iter()}
    minor = Decimal(10) ** catalog.currency.minor_units
    seen: Counter[str] = Counter()
    for tier, plan in catalog.plans.items():
        for charge in plan.charges:
            key = f"{namespace}_{tier}_{charge.name}"
            price = price_of(client, key)
            assert (price.product, price.currency, price.active) == (key, catalog.currency.code, True)
            assert (price.recurring.interval, price.recurring.usage_type, price.recurring.meter) == \
                ("month", "metered", meters[charge.stripe_meter]), key
            match charge.schedule:
                case Graduated(tiers, per) | Volume(tiers, per):
                    mode = "graduated" if isinstance(charge.schedule, Graduated) else "volume"
                    assert (price.billing_scheme, price.tiers_mode) == ("tiered", mode), key
                    assert (price.unit_amount_decimal, price.transform_quantity) == (None, None), key
                    assert tiers_of(price) == [(t.up_to, t.unit_price * minor / per, t.flat_fee * minor)
                                               for t in tiers], key
                    seen[mode] += 1
                case Flat(unit_price, per):
                    assert (price.billing_scheme, price.tiers_mode, price.tiers) == ("per_unit", None, None), key
                    assert price.unit_amount_decimal == unit_price * minor / per and price.transform_quantity is None
                    seen["flat"] += 1
                case Package(size, package_price):
                    assert (price.billing_scheme, price.unit_amount_decimal) == ("per_unit", package_price * minor)
                    assert (price.transform_quantity.divide_by, price.transform_quantity.round) == (size, "up")
                    seen["package"] += 1
    return seen


def test_stripe_sync_sets_up_the_shipped_catalog_then_finds_it(install: Install) -> None:
    config = install.config(catalog=SHIPPED)
    catalog = load_catalog(DEFAULT_PATH)
    charges = [charge for plan in catalog.plans.values() for charge in plan.charges]
    assert (len({c.stripe_meter for c in charges}), len(charges)) == (7, 9)

    first = sync_json(install, config)
    assert Counter((i["kind"], i["action"]) for i in first) == {
        ("meter", "created"): 7, ("product", "created"): 9, ("price", "created"): 9}
    client = stripe.StripeClient(KEY, base_addresses={"api": install.stripe.url})
    assert check_prices(client, catalog) == {"flat": 4, "package": 1, "graduated": 4}
    # the catalog's own numbers: $4.50 / $4.00 / $3.50 per 1M tokens = 0.00045 / 0.0004 / 0.00035 cents
    # a token; up_to 100M and 1B tokens, then inf; $0.50 / $0.40 per workflow = 50 / 40 cents
    assert tiers_of(price_of(client, "mltest_premium_input_tokens")) == [
        (100_000_000, Decimal("0.00045"), 0), (1_000_000_000, Decimal("0.0004"), 0), (None, Decimal("0.00035"), 0)]
    assert tiers_of(price_of(client, "mltest_enterprise_workflows")) == [(10_000, 50, 0), (None, 40, 0)]
    assert price_of(client, "mltest_premium_output_tokens").tiers[2].unit_amount_decimal == Decimal("0.00175")

    requests_before = len(install.stripe.requests)
    again = sync_json(install, config)
    assert {i["action"] for i in again} == {"exists"}
    assert [(i["kind"], i["name"], i["stripe_id"]) for i in again] == \
        [(i["kind"], i["name"], i["stripe_id"]) for i in first]
    assert [r.path for r in install.stripe.requests[requests_before:] if r.method == "POST"] == []
    assert len(client.v1.prices.list(params={"limit": 100}).data) == 9


def test_stripe_sync_prices_the_shipped_volume_schedules(install: Install) -> None:
    """The shipped billed plans tier graduated only; the reference plans (finance's what-ifs, never
    synced as such) hold the volume schedules, so bill them as plans to sync those too."""
    text = billed_reference_plans(SHIPPED)
    catalog = parse_catalog(tomllib.loads(text))
    assert len(catalog.plans) == 3 + 12 and not catalog.reference_plans
    config = install.config(catalog=text)

    first = sync_json(install, config)
    assert {i["action"] for i in first} == {"created"} and len(first) == 7 + 2 * 30
    client = stripe.StripeClient(KEY, base_addresses={"api": install.stripe.url})
    assert check_prices(client, catalog) == {"flat": 17, "package": 1, "graduated": 9, "volume": 3}
    agents = price_of(client, "mltest_enterprise_activity_fixed_agents")  # $299 / $249 / $199 an agent
    assert agents.tiers_mode == "volume"
    assert tiers_of(agents) == [(50, 29900, 0), (200, 24900, 0), (None, 19900, 0)]
    tokens = price_of(client, "mltest_enterprise_activity_variable_input_tokens")  # $4 then $3 per 1M
    assert (tokens.tiers_mode, tiers_of(tokens)) == ("volume", [(1_000_000_000, Decimal("0.0004"), 0),
                                                                (None, Decimal("0.0003"), 0)])
    assert {i["action"] for i in sync_json(install, config)} == {"exists"}


def test_stripe_sync_reports_a_flat_fee_stripe_cannot_hold(install: Install) -> None:
    odd = CATALOG + """
[plans.odd]
[[plans.odd.charges]]
name = "calls"
model = "activity_variable"
meter = "tool_calls"
schedule = "graduated"
tiers = [{ up_to = 10, unit_price = "0.01", flat_fee = "0.005" }, { unit_price = "0.01" }]
stripe_meter = "t_tool_calls"
"""
    items = sync_json(install, install.config(catalog=odd), code=1)
    [failed] = [i for i in items if i["action"] == "failed"]
    assert (failed["kind"], failed["name"]) == ("price", "mltest_odd_calls")
    assert "tier 1 flat_fee: 0.5 minor units is not a whole number" in failed["detail"]
    assert Counter(i["action"] for i in items) == {"created": 6 + 8 + 7, "failed": 1}  # the odd product is made
    client = stripe.StripeClient(KEY, base_addresses={"api": install.stripe.url})
    assert client.v1.prices.list(params={"lookup_keys": ["mltest_odd_calls"]}).data == []


# -- bill ----------------------------------------------------------------------------------------


def test_bill_sends_the_usage_once_and_a_second_run_sends_nothing(install: Install) -> None:
    """Store held by no server (the command opens the file itself); two tenants share a customer."""
    period = previous_month()
    shared, globex = install.customer("Acme"), install.customer("Globex")
    install.tenants(("acme", "std", shared), ("acme-eu", "std", shared), ("globex", "std", globex),
                    ("initech", "std", None), ("hooli", "std", install.customer("Hooli")))
    synced(install)
    install.serve()
    for seed, tenant in enumerate(("acme", "acme-eu", "globex", "initech", "hooli")):
        install.send(tenant, month_of_traffic(period, seed))
    store = open_store(install.db)
    set_status(store, "hooli", "suspended")
    store.close()
    install.customers.pop("hooli")  # suspended: not billed
    install.stop()
    expected = install.expected("--period", period.label)
    assert {customer for customer, _ in expected} == {shared, globex}

    dry = install.bill(period, "--dry-run")
    assert meter_event_requests(install.stripe) == [] and install.ledger() == []
    planned: Counter[tuple[str, str]] = Counter()
    for line in dry["lines"]:
        planned[(line["customer"], line["event_name"])] += line["planned"]
    assert {key: value for key, value in planned.items() if value} == expected

    install.stripe.set_meter_event_latency(0.05)  # a second call for the same customer and meter would get 429
    first = install.bill(period)
    assert held(install.stripe) == expected
    assert first["status"] == "succeeded" and first["events"]["acknowledged"] == len(install.stripe.events)
    assert all(r.status == 200 for r in meter_event_requests(install.stripe))
    assert {(s["tenant_id"], s["reason"]) for s in first["skipped"]} == {("initech", "no Stripe customer"),
                                                                        ("hooli", "suspended")}
    ledger = install.ledger()
    assert {row["status"] for row in ledger} == {"acknowledged"}
    assert all(row["stripe_response_id"].startswith("req_") for row in ledger)
    assert sorted(row["identifier"] for row in ledger) == sorted(e.identifier for e in install.stripe.events)

    requests_before = len(install.stripe.requests)
    second = install.meterline("bill", "--period", period.label)
    assert "every meter is up to date: nothing to send" in second.stdout
    assert len(install.stripe.requests) == requests_before  # not even a preflight call
    assert held(install.stripe) == expected

    store = open_store(install.db)
    runs = rows(store, "SELECT dry_run, status, events_sent, events_failed FROM billing_runs ORDER BY started_at")
    store.close()
    assert runs == [{"dry_run": True, "status": "succeeded", "events_sent": 0, "events_failed": 0},
                    {"dry_run": False, "status": "succeeded", "events_sent": len(ledger), "events_failed": 0},
                    {"dry_run": False, "status": "succeeded", "events_sent": 0, "events_failed": 0}]


def test_new_spans_corrections_and_a_tier_change_are_sent_as_deltas(install: Install) -> None:
    """The store held by a running `meterline serve`: the command goes through its admin API."""
    period, start = recent_window()
    install.tenants(("acme", "std", install.customer("Acme")))
    synced(install)
    install.serve()
    install.send("acme", [span for minute in range(3) for span in agent_run("alpha", start + timedelta(minutes=minute))]
                 + agent_run("beta", start + timedelta(minutes=8), tools=0))
    install.settle()
    through = start + timedelta(minutes=5)

    first = install.bill(period, "--through", through.isoformat() + "Z")
    assert held(install.stripe) == install.expected("--start", period.start.isoformat(), "--end", through.isoformat())
    assert {e.timestamp for e in install.stripe.events} == {int(through.replace(tzinfo=timezone.utc).timestamp()) - 1}
    assert first["events"]["acknowledged"] == 6

    # next run: beta (after the first run's --through) and a late model call (started before it,
    # arrived after it). Beta is a second active agent, and 2 invocations are included per agent,
    # so billable invocations fall from 1 (3 - 2) to 0 (4 - 4): a correction of -1.
    install.send("acme", [{"trace": next(_traces), "id": 1, "name": "chat", "start": start + timedelta(minutes=4),
                           "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                          "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 100}}])
    install.settle()
    before = len(install.stripe.events)
    install.bill(period)
    new = {e.event_name: e.value for e in install.stripe.events[before:]}
    assert new == {"t_input_tokens": 1700, "t_output_tokens": 400, "t_agents": 1, "t_invocations": -1,
                   "t_outcomes": 1}
    assert all(e.identifier.endswith("-2") for e in install.stripe.events[before:])
    assert held(install.stripe) == install.expected("--period", period.label)

    back = install.meterline("bill", "--period", period.label, "--through", through.isoformat() + "Z", check=False)
    assert back.returncode == 1 and "cannot go back" in back.stderr

    install.meterline("tenants", "add", "acme", "--tier", "lite")
    changed = install.bill(period)
    assert held(install.stripe) == install.expected("--period", period.label)
    assert set(held(install.stripe)) == {(install.customers["acme"], "t_input_tokens")}
    assert {line["event_name"]: line["status"] for line in changed["lines"]}["t_agents"] == "sent"

    assert install.bill(period)["events"] == {"acknowledged": 0, "failed": 0, "pending": 0}


@pytest.mark.parametrize("serving", [False, True], ids=["store-file", "through-serve"])
def test_killed_between_send_and_ledger_write_then_rerun_bills_exactly_once(install: Install, serving: bool) -> None:
    """A month of traffic for three tenants; two runs killed mid-flight, then a run hit by a 500
    and a lost reply: Stripe's totals equal `meterline usage` exactly, and nothing is sent twice."""
    period = previous_month()
    tenants = ("acme", "globex", "initech")
    install.tenants(*((tenant, "std", install.customer(tenant)) for tenant in tenants))
    synced(install)
    install.serve()
    for seed, tenant in enumerate(tenants):
        install.send(tenant, month_of_traffic(period, seed + 1))
    install.settle()
    if not serving:
        install.stop()
    expected = install.expected("--period", period.label)

    install.bill_killed(period, after_accepted=2)
    in_flight = {row["identifier"] for row in install.ledger() if row["status"] == "sent"}
    assert in_flight & {e.identifier for e in install.stripe.events}  # Stripe has it, the ledger does not know

    install.bill_killed(period, after_accepted=3)
    install.stripe.fail_next(1, 500)
    install.stripe.drop_next_replies(1)
    install.bill(period)

    assert held(install.stripe) == expected
    refused = [r for r in install.stripe.requests if r.path == METER_EVENTS and r.status == 400]
    assert len(refused) >= 2  # "already exists": resends of what the killed runs had delivered
    ledger = install.ledger()
    assert {row["status"] for row in ledger} == {"acknowledged"}
    assert len(ledger) == len(install.stripe.events) == len({e.identifier for e in install.stripe.events})
    assert install.bill(period)["events"]["acknowledged"] == 0
    assert held(install.stripe) == expected


def test_429_and_500_are_retried_until_stripe_holds_everything(install: Install) -> None:
    period = previous_month()
    install.tenants(("acme", "std", install.customer("Acme")), ("globex", "std", install.customer("Globex")))
    synced(install)
    install.serve()
    install.send("acme", month_of_traffic(period, 1))
    install.send("globex", month_of_traffic(period, 2))
    install.stop()
    expected = install.expected("--period", period.label)

    # attempts run out: the events stay in flight, the run fails, nothing is double-counted
    install.stripe.fail_next(6, 503)
    stubborn = install.bill(period, config=install.config("stubborn.toml", max_attempts=2, concurrency=1), code=1)
    assert stubborn["events"]["pending"] == 3 and "no answer after 2 attempts" in json.dumps(stubborn)
    in_flight = [row for row in install.ledger() if row["status"] == "sent"]
    assert len(in_flight) == 3

    # one of them was first sent more than 23 hours ago: Stripe may have forgotten its identifier,
    # so it is never resent automatically (that could bill twice) but reported until settled
    aged = in_flight[2]
    store = open_store(install.db)
    store.transaction([("UPDATE billing_ledger SET updated_at = updated_at - INTERVAL 25 HOUR WHERE identifier = ?",
                        [aged["identifier"]])])
    store.close()

    # then a 500 twice and a 429 with Retry-After: 2 on the next event of one customer
    accepted: list[float] = []

    def inject() -> None:
        accepted.append(time.monotonic())
        if len(accepted) == 1:
            install.stripe.fail_next(2, 500)
            install.stripe.fail_next(1, 429, retry_after=2)

    install.stripe.before_meter_event_reply(inject)
    unconfirmed = install.bill(period, config=install.config("single.toml", concurrency=1), code=1)
    install.stripe.before_meter_event_reply(None)
    [line] = [line for line in unconfirmed["lines"] if line["status"] == "pending"]
    assert line["event_name"] == aged["event_name"] and f"unconfirmed: {aged['identifier']}" in line["detail"]
    assert aged["identifier"] not in {e.identifier for e in install.stripe.events}

    # the operator finds it is not in Stripe and settles the row as failed: the next run re-plans it
    store = open_store(install.db)
    store.transaction([("UPDATE billing_ledger SET status = 'failed' WHERE identifier = ?", [aged["identifier"]])])
    store.close()
    install.bill(period)
    assert held(install.stripe) == expected
    assert accepted[1] - accepted[0] >= 2.0  # Retry-After honoured
    statuses = [r.status for r in install.stripe.requests if r.path == METER_EVENTS]
    assert statuses.count(500) == 2 and statuses.count(429) == 1 and statuses.count(503) == 6
    retried = [r.headers["idempotency-key"] for r in install.stripe.requests if r.path == METER_EVENTS]
    assert len(set(retried)) == len(retried)  # a new key for every attempt: Stripe replays a saved 500
    assert {row["status"] for row in install.ledger()} == {"acknowledged", "failed"}


def test_unknown_customer_missing_meter_and_old_usage_are_reported_others_billed(install: Install) -> None:
    period = previous_month()
    old = Period.month((period.start - timedelta(days=40)).strftime("%Y-%m"))
    install.tenants(("acme", "std", install.customer("Acme")), ("ghost", "std", "cus_ghost"),
                    ("wayne", "gold", install.customer("Wayne")))
    synced(install)
    install.serve()
    workflow = {"trace": next(_traces), "id": 1, "name": "invoke_workflow onboarding", "status": "OK",
                "start": period.start + timedelta(days=2), "attributes": {"gen_ai.operation.name": "invoke_workflow"}}
    install.send("acme", month_of_traffic(period, 1) + month_of_traffic(old, 1) + [workflow])
    install.send("ghost", month_of_traffic(period, 2))
    install.stop()
    with_workflows = install.config("workflows.toml", catalog=CATALOG.replace("[plans.lite]", """
[[plans.std.charges]]
name = "workflows"
model = "outcome_fixed"
meter = "workflows_completed"
schedule = "flat"
unit_price = "1.00"
stripe_meter = "t_workflows"

[plans.lite]"""))

    summary = install.bill(period, config=with_workflows, code=1)
    status = {(line["tenant_id"], line["event_name"]): line for line in summary["lines"]}
    ghost = [line for (tenant, _), line in status.items() if tenant == "ghost" and line["planned"]]
    assert len(ghost) == 6 and all(line["status"] == "failed" and "cus_ghost does not exist" in line["detail"]
                                   for line in ghost)
    assert status[("acme", "t_workflows")]["status"] == "failed"
    assert "no active Stripe meter for event_name 't_workflows'" in status[("acme", "t_workflows")]["detail"]
    assert {line["status"] for (tenant, meter), line in status.items()
            if tenant == "acme" and meter != "t_workflows"} == {"sent"}
    wayne = status[("wayne", None)]
    assert wayne["status"] == "failed" and "no plan for tier 'gold'" in wayne["detail"]
    install.customers.pop("ghost")
    install.customers.pop("wayne")
    assert held(install.stripe) == install.expected("--period", period.label)  # acme, without workflows
    assert not any(e.payload["stripe_customer_id"] == "cus_ghost" for e in install.stripe.events)
    assert install.stripe.error_reports() == []
    assert {row["status"] for row in install.ledger() if row["tenant_id"] == "ghost"} == {"failed"}

    too_old = install.bill(old, code=1)
    assert {line["status"] for line in too_old["lines"] if line["planned"]} == {"failed"}
    assert "35-day window" in json.dumps(too_old)
    assert not any(e.timestamp < int(period.start.replace(tzinfo=timezone.utc).timestamp())
                   for e in install.stripe.events)


def test_v2_streams_for_many_tenants_with_a_kill_and_an_expired_session(install: Install) -> None:
    """26 tenants, 5 billable meters each: 130 events, two stream requests of at most 100."""
    period = previous_month()
    tenants = [f"tenant-{i:02d}" for i in range(26)]
    install.tenants(*((tenant, "std", install.customer(tenant)) for tenant in tenants))
    synced(install)
    install.serve()
    day = period.start + timedelta(days=3)
    for i, tenant in enumerate(tenants):
        install.send(tenant, agent_run("alpha", day + timedelta(minutes=i), input_tokens=1000 + i))
    install.stop()
    expected = install.expected("--period", period.label)
    assert sum(1 for _ in expected) == 130

    install.bill_killed(period, 1, "--streams")  # Stripe holds the first 100, the ledger says sent
    assert len(install.stripe.events) == 100

    expired = threading.Event()

    def expire() -> None:  # after the first stream request of the next run, the session runs out
        if not expired.is_set():
            expired.set()
            install.stripe.advance(16 * 60)

    install.stripe.before_meter_event_reply(expire)
    summary = install.bill(period, "--streams")
    install.stripe.before_meter_event_reply(None)
    assert held(install.stripe) == expected
    assert summary["events"]["acknowledged"] == 130 and {e.via for e in install.stripe.events} == {"v2"}
    streams = [r.status for r in install.stripe.requests if r.path == STREAM]
    assert streams == [200, 200, 401, 200]
    sessions = [r for r in install.stripe.requests if r.path == "/v2/billing/meter_event_session"]
    assert len(sessions) == 3
    assert {row["status"] for row in install.ledger()} == {"acknowledged"}


def test_the_key_comes_from_the_environment_and_is_never_printed(install: Install) -> None:
    period = previous_month()
    install.tenants(("acme", "std", install.customer("Acme")))
    no_key = cli("--config", str(install.config()), "bill", "--period", period.label, db=install.db, check=False,
                 env={"STRIPE_API_KEY": ""})
    assert no_key.returncode == 1 and "STRIPE_API_KEY" in no_key.stderr

    synced(install)
    install.serve()
    install.send("acme", month_of_traffic(period, 1))
    install.stop()
    wrong = "sk_test_not_the_right_key_zq9x"
    refused = cli("-v", "--config", str(install.config()), "bill", "--period", period.label, db=install.db,
                  check=False, env={"STRIPE_API_KEY": wrong})
    assert refused.returncode == 1 and "Stripe refused the API key" in refused.stdout
    assert "zq9x" not in refused.stdout + refused.stderr
    assert install.ledger() == [] and install.stripe.events == []

    key_file = install.tmp / "stripe.key"
    key_file.write_text(KEY + "\n")
    config = install.config("keyfile.toml")
    with_file = config.read_text().replace("[billing]", f'api_key_file = "{key_file}"\n[billing]')
    config.write_text(with_file)  # the last line of [stripe]
    ok = cli("-v", "--config", str(config), "bill", "--period", period.label, db=install.db, check=False,
             env={"STRIPE_API_KEY": ""})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert KEY not in ok.stdout + ok.stderr
    assert held(install.stripe) == install.expected("--period", period.label)

"""The Stripe stand-in, driven through the real stripe-python SDK."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from stripe._api_version import _ApiVersion

from tests.servers.stripe_server import DAY, RecordedRequest, StripeServer

KEY = "sk_test_meterline"
EVENT = "agent_tokens"


@pytest.fixture
def stripe_server() -> Iterator[StripeServer]:
    with StripeServer(api_keys=(KEY,)) as running:
        yield running


def client_for(
    stripe_server: StripeServer, key: str = KEY, retries: int = 0
) -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": stripe_server.url, "meter_events": stripe_server.url},
        max_network_retries=retries,
    )


@pytest.fixture
def client(stripe_server: StripeServer) -> stripe.StripeClient:
    return client_for(stripe_server)


@pytest.fixture
def customer(client: stripe.StripeClient) -> str:
    """A customer and a sum meter on EVENT; returns the customer id."""
    client.v1.billing.meters.create(
        params={
            "display_name": "Agent tokens",
            "event_name": EVENT,
            "default_aggregation": {"formula": "sum"},
        }
    )
    return client.v1.customers.create(params={"name": "Acme"}).id


def send(
    client: stripe.StripeClient, customer: str, value: str = "1", **params: Any
) -> stripe.billing.MeterEvent:
    """One v1 meter event; extra params (identifier, timestamp, options) pass through."""
    options = params.pop("options", None)
    payload = {"stripe_customer_id": customer, "value": value}
    return client.v1.billing.meter_events.create(
        params={"event_name": EVENT, "payload": payload, **params}, options=options
    )


def meter_event_requests(stripe_server: StripeServer) -> list[RecordedRequest]:
    return [r for r in stripe_server.requests if r.path == "/v1/billing/meter_events"]


def in_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Runs the calls at the same moment; returns each result or raised exception."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except stripe.StripeError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


# -- auth, objects, catalog -------------------------------------------------------------------


def test_unknown_key_gets_401_with_stripes_error_shape(stripe_server: StripeServer) -> None:
    with pytest.raises(stripe.AuthenticationError) as caught:
        client_for(stripe_server, "sk_test_notourkey9876").v1.customers.create(params={"name": "x"})
    assert caught.value.http_status == 401
    error = caught.value.json_body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "Invalid API Key provided: sk_test_*********9876"
    assert stripe_server.requests[-1].status == 401


def test_unknown_customer_is_404_resource_missing(client: stripe.StripeClient) -> None:
    created = client.v1.customers.create(
        params={"email": "ops@acme.test", "metadata": {"tenant": "acme"}}
    )
    assert (
        created.id.startswith("cus_") and created.object == "customer" and created.livemode is False
    )
    assert client.v1.customers.retrieve(created.id).metadata["tenant"] == "acme"
    assert [c.id for c in client.v1.customers.list(params={"email": "ops@acme.test"}).data] == [
        created.id
    ]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_missing")
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert caught.value.user_message == "No such customer: 'cus_missing'"


def test_catalog_can_be_found_again_by_metadata_and_lookup_key(client: stripe.StripeClient) -> None:
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Tokens",
            "event_name": EVENT,
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = client.v1.products.create(
        params={"name": "Agent", "metadata": {"meterline_plan": "pro"}}
    )
    client.v1.products.create(params={"name": "Other", "metadata": {"meterline_plan": "basic"}})
    found = client.v1.products.search(params={"query": "metadata['meterline_plan']:'pro'"})
    assert [p.id for p in found.data] == [product.id]

    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.0025",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "transform_quantity": {"divide_by": 1000, "round": "up"},
            "lookup_key": "pro_tokens",
        }
    )
    assert (price.unit_amount, price.unit_amount_decimal) == (None, Decimal("0.0025"))
    assert price.recurring.meter == meter.id and price.type == "recurring"
    assert price.transform_quantity.divide_by == 1000
    listed = client.v1.prices.list(params={"lookup_keys": ["pro_tokens"]})
    assert [p.id for p in listed.data] == [price.id]

    again = {"product": product.id, "currency": "usd", "unit_amount": 3, "lookup_key": "pro_tokens"}
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        client.v1.prices.create(params=again)
    moved = client.v1.prices.create(params={**again, "transfer_lookup_key": True})
    assert [p.id for p in client.v1.prices.list(params={"lookup_keys": ["pro_tokens"]}).data] == [
        moved.id
    ]


def test_metered_price_needs_an_existing_meter(client: stripe.StripeClient) -> None:
    product = client.v1.products.create(params={"name": "Agent"})
    metered = {"interval": "month", "usage_type": "metered"}
    base = {"product": product.id, "currency": "usd", "unit_amount": 1}
    with pytest.raises(stripe.InvalidRequestError, match=r"recurring\[meter\]"):
        client.v1.prices.create(params={**base, "recurring": metered})
    with pytest.raises(stripe.InvalidRequestError, match=r"No such billing\.meter"):
        client.v1.prices.create(params={**base, "recurring": {**metered, "meter": "mtr_missing"}})


def test_second_active_meter_for_an_event_name_is_refused(client: stripe.StripeClient) -> None:
    params = {
        "display_name": "Tokens",
        "event_name": EVENT,
        "default_aggregation": {"formula": "sum"},
    }
    meter = client.v1.billing.meters.create(params=params)
    assert meter.id.startswith("mtr_test_") and meter.status == "active"
    assert meter.value_settings.event_payload_key == "value"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meters.create(params=params)
    assert caught.value.http_status == 400
    assert client.v1.billing.meters.retrieve(meter.id).event_name == EVENT
    assert [m.id for m in client.v1.billing.meters.list(params={"status": "active"}).data] == [
        meter.id
    ]


def test_unknown_parameters_are_refused(client: stripe.StripeClient, customer: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer, quantity="3")
    assert (caught.value.code, caught.value.param) == ("parameter_unknown", "quantity")


# -- v1 meter events --------------------------------------------------------------------------


def test_meter_event_is_recorded_and_sdk_sends_stripes_headers(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    event = send(client, customer, "7", identifier="run-1:span-1")
    assert event.object == "billing.meter_event"
    assert (event.identifier, event.payload["value"]) == ("run-1:span-1", "7")
    send(client, customer, "5")
    assert stripe_server.totals() == {(customer, EVENT): 12}
    generated = stripe_server.events[-1].identifier
    assert generated and generated != "run-1:span-1"

    first, second = (r.headers for r in meter_event_requests(stripe_server))
    assert first["authorization"] == f"Bearer {KEY}"
    assert first["stripe-version"] == _ApiVersion.CURRENT
    assert first["content-type"] == "application/x-www-form-urlencoded"
    assert first["idempotency-key"] and first["idempotency-key"] != second["idempotency-key"]


def test_repeated_identifier_is_refused_for_24_hours(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    send(client, customer, "2", identifier="evt-1")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer, "2", identifier="evt-1")
    assert caught.value.http_status == 400
    assert caught.value.user_message == "An event already exists with identifier evt-1."
    assert caught.value.code is None
    assert caught.value.headers["Stripe-Should-Retry"] == "false"
    assert stripe_server.totals() == {(customer, EVENT): 2}

    stripe_server.advance(DAY)
    send(client, customer, "2", identifier="evt-1")
    assert stripe_server.totals() == {(customer, EVENT): 4}


def test_identifier_is_at_most_100_characters(client: stripe.StripeClient, customer: str) -> None:
    send(client, customer, identifier="x" * 100)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        send(client, customer, identifier="y" * 101)
    assert caught.value.param == "identifier"


def test_timestamp_must_be_within_35_days_past_and_5_minutes_ahead(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.set_time(1_800_000_000)
    now = stripe_server.now()
    send(client, customer, timestamp=now - 35 * DAY + 60)
    send(client, customer, timestamp=now + 4 * 60)
    with pytest.raises(stripe.InvalidRequestError) as too_old:
        send(client, customer, timestamp=now - 36 * DAY)
    assert too_old.value.user_message.startswith(
        "The event timestamp cannot be more than 35 days in past."
    )
    with pytest.raises(stripe.InvalidRequestError, match="5 minutes in future"):
        send(client, customer, timestamp=now + 10 * 60)
    assert stripe_server.totals() == {(customer, EVENT): 2}


def test_value_must_be_a_whole_number(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    for bad in ("1.5", "2e3", "many", "1234567890123456"):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            send(client, customer, bad)
        assert caught.value.http_status == 400, bad
    send(client, customer, "-3")
    send(client, customer, "123456789012345")
    assert stripe_server.totals() == {(customer, EVENT): 123456789012342}


def test_event_name_without_a_meter_is_refused_synchronously(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.billing.meter_events.create(
            params={"event_name": "nope", "payload": {"stripe_customer_id": customer, "value": "1"}}
        )
    assert caught.value.user_message == 'No active meter found for event name "nope".'
    assert stripe_server.events == []


def test_unknown_customer_is_accepted_then_reported_asynchronously(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    event = send(client, "cus_ghost", "9", identifier="ghost-1")
    assert event.identifier == "ghost-1"
    assert stripe_server.totals() == {}
    [report] = stripe_server.error_reports()
    assert (report.identifier, report.error_code) == ("ghost-1", "meter_event_customer_not_found")


# -- idempotency ------------------------------------------------------------------------------


def test_a_500_is_replayed_for_the_same_idempotency_key(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.fail_next(1, 500)
    key = {"idempotency_key": "job-7:event-1"}
    for _ in range(2):
        with pytest.raises(stripe.APIError) as caught:
            send(client, customer, identifier="e1", options=key)
        assert caught.value.http_status == 500
    assert caught.value.headers["Idempotent-Replayed"] == "true"
    assert stripe_server.events == []

    with pytest.raises(stripe.IdempotencyError, match="same parameters"):
        send(client, customer, "2", identifier="e1", options=key)
    send(client, customer, identifier="e1", options={"idempotency_key": "job-7:event-1:retry"})
    assert stripe_server.totals() == {(customer, EVENT): 1}


def test_a_success_is_replayed_without_recording_twice(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    key = {"idempotency_key": "k-1"}
    first = send(client, customer, "4", identifier="e1", options=key)
    again = send(client, customer, "4", identifier="e1", options=key)
    assert again.created == first.created
    assert meter_event_requests(stripe_server)[-1].status == 200
    assert stripe_server.totals() == {(customer, EVENT): 4}


def test_a_429_is_not_saved_for_the_idempotency_key(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.fail_next(1, 429, retry_after=3)
    key = {"idempotency_key": "k-429"}
    with pytest.raises(stripe.RateLimitError) as caught:
        send(client, customer, options=key)
    assert caught.value.http_status == 429
    assert caught.value.headers["Retry-After"] == "3"
    assert caught.value.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert caught.value.json_body["error"]["code"] == "rate_limit"
    send(client, customer, options=key)
    assert stripe_server.totals() == {(customer, EVENT): 1}


# -- concurrency and rate limits --------------------------------------------------------------


def test_one_concurrent_call_per_customer_and_meter(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    other = client.v1.customers.create(params={"name": "Globex"}).id
    stripe_server.set_meter_event_latency(0.3)
    same = in_parallel(lambda: send(client, customer, "1"), lambda: send(client, customer, "1"))
    limited = [r for r in same if isinstance(r, stripe.RateLimitError)]
    assert len(limited) == 1 and len(same) - len(limited) == 1
    assert limited[0].headers["Stripe-Rate-Limited-Reason"] == "resource-specific"
    assert limited[0].json_body["error"]["code"] == "rate_limit"

    different = in_parallel(lambda: send(client, customer, "1"), lambda: send(client, other, "1"))
    assert not any(isinstance(r, Exception) for r in different)
    assert stripe_server.totals() == {(customer, EVENT): 2, (other, EVENT): 1}


def test_concurrent_reuse_of_an_idempotency_key_is_409(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.set_meter_event_latency(0.3)
    key = {"idempotency_key": "double-click"}
    results = in_parallel(
        lambda: send(client, customer, options=key), lambda: send(client, customer, options=key)
    )
    conflicts = [r for r in results if isinstance(r, stripe.APIError)]
    assert len(conflicts) == 1 and conflicts[0].http_status == 409
    assert conflicts[0].json_body["error"]["code"] == "idempotency_key_in_use"
    assert stripe_server.totals() == {(customer, EVENT): 1}


def test_global_rate_limit_answers_429_with_the_reason_header() -> None:
    with StripeServer(api_keys=(KEY,), rate_limit_per_second=3) as limited:
        client = client_for(limited)
        for _ in range(3):
            client.v1.customers.list()
        with pytest.raises(stripe.RateLimitError) as caught:
            client.v1.customers.list()
    assert caught.value.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    assert "Retry-After" not in caught.value.headers


# -- v2 meter event streams -------------------------------------------------------------------


def stream_client(stripe_server: StripeServer, client: stripe.StripeClient) -> stripe.StripeClient:
    session = client.v2.billing.meter_event_session.create()
    return client_for(stripe_server, session.authentication_token)


def stream_event(customer: str, identifier: str, event_name: str = EVENT) -> dict[str, Any]:
    return {
        "event_name": event_name,
        "identifier": identifier,
        "payload": {"stripe_customer_id": customer, "value": "2"},
    }


def test_stream_takes_up_to_100_events_per_request(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.set_time(1_767_225_600 + 60)  # 2026-01-01T00:01:00Z
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    created, expires = (datetime.fromisoformat(t) for t in (session.created, session.expires_at))
    assert created.date().isoformat() == "2026-01-01"
    assert expires - created == timedelta(minutes=15)
    streaming = client_for(stripe_server, session.authentication_token)

    events = [stream_event(customer, f"s-{i}") for i in range(100)]
    events[0]["timestamp"] = "2026-01-01T00:00:00.000Z"
    assert streaming.v2.billing.meter_event_stream.create(params={"events": events}) is None
    assert stripe_server.totals() == {(customer, EVENT): 200}
    assert stripe_server.events[0].timestamp == 1_767_225_600

    too_many = [stream_event(customer, f"t-{i}") for i in range(101)]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        streaming.v2.billing.meter_event_stream.create(params={"events": too_many})
    assert caught.value.http_status == 400
    assert stripe_server.totals() == {(customer, EVENT): 200}


def test_stream_validates_asynchronously_and_dedupes_identifiers(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    send(client, customer, "2", identifier="shared-1")
    streaming = stream_client(stripe_server, client)
    events = [
        stream_event(customer, "shared-1"),
        stream_event(customer, "new-1"),
        stream_event(customer, "new-1"),
        stream_event(customer, "bad-1", event_name="no_such_meter"),
        {
            "event_name": EVENT,
            "identifier": "bad-2",
            "payload": {"stripe_customer_id": customer, "value": "0.5"},
        },
    ]
    streaming.v2.billing.meter_event_stream.create(params={"events": events})
    assert stripe_server.totals() == {(customer, EVENT): 4}
    assert {(r.identifier, r.error_code) for r in stripe_server.error_reports()} == {
        ("bad-1", "no_meter"),
        ("bad-2", "meter_event_invalid_value"),
    }


def test_expired_session_gets_401_temporary_session_expired(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    streaming = stream_client(stripe_server, client)
    stripe_server.advance(15 * 60)
    with pytest.raises(stripe.TemporarySessionExpiredError) as caught:
        streaming.v2.billing.meter_event_stream.create(
            params={"events": [stream_event(customer, "late")]}
        )
    assert caught.value.http_status == 401
    assert caught.value.code == "billing_meter_event_session_expired"
    assert stripe_server.events == []


def test_stream_does_not_take_the_secret_key(client: stripe.StripeClient, customer: str) -> None:
    with pytest.raises(stripe.AuthenticationError):
        client.v2.billing.meter_event_stream.create(
            params={"events": [stream_event(customer, "x")]}
        )


# -- injected faults and what stripe-python 16 does with them ---------------------------------


def test_sdk_never_retries_a_429_on_its_own(stripe_server: StripeServer, customer: str) -> None:
    stripe_server.fail_next(1, 429, retry_after=1)
    with pytest.raises(stripe.RateLimitError):
        send(client_for(stripe_server, retries=2), customer)
    assert len(meter_event_requests(stripe_server)) == 1


def test_sdk_retries_a_429_that_says_stripe_should_retry(
    stripe_server: StripeServer, customer: str
) -> None:
    stripe_server.fail_next(1, 429, should_retry=True)
    send(client_for(stripe_server, retries=1), customer)
    assert [r.status for r in meter_event_requests(stripe_server)] == [429, 200]


def test_sdk_retries_a_500_under_the_same_key_and_gets_the_replay(
    stripe_server: StripeServer, customer: str
) -> None:
    stripe_server.fail_next(1, 500)
    with pytest.raises(stripe.APIError):
        send(client_for(stripe_server, retries=2), customer)
    requests = meter_event_requests(stripe_server)
    assert [r.status for r in requests] == [500, 500, 500]
    assert len({r.headers["idempotency-key"] for r in requests}) == 1
    assert stripe_server.events == []


def test_lost_reply_is_recovered_by_an_sdk_retry_of_the_same_key(
    stripe_server: StripeServer, customer: str
) -> None:
    stripe_server.drop_next_replies(1)
    event = send(client_for(stripe_server, retries=1), customer, "3", identifier="lost-1")
    assert event.identifier == "lost-1"
    assert [r.status for r in meter_event_requests(stripe_server)] == [None, 200]
    assert stripe_server.totals() == {(customer, EVENT): 3}


def test_lost_reply_then_resend_under_a_new_key_hits_the_identifier(
    stripe_server: StripeServer, client: stripe.StripeClient, customer: str
) -> None:
    stripe_server.drop_next_replies(1)
    with pytest.raises(stripe.APIConnectionError):
        send(client, customer, "3", identifier="lost-2")
    with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier lost-2"):
        send(client, customer, "3", identifier="lost-2")
    assert stripe_server.totals() == {(customer, EVENT): 3}


# -- tiered prices ----------------------------------------------------------------------------


@pytest.fixture
def metered(client: stripe.StripeClient) -> dict[str, Any]:
    """Create-price params for a product billed monthly on a sum meter (no amounts yet)."""
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "Tokens",
            "event_name": EVENT,
            "default_aggregation": {"formula": "sum"},
        }
    )
    product = client.v1.products.create(params={"name": "Tokens"})
    return {
        "product": product.id,
        "currency": "usd",
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
    }


GRADUATED: dict[str, Any] = {
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [
        {"up_to": 100_000_000, "unit_amount_decimal": "0.00045", "flat_amount_decimal": "0"},
        {"up_to": 1_000_000_000, "unit_amount_decimal": "0.0004", "flat_amount": 500},
        {"up_to": "inf", "unit_amount": 3},
    ],
}


def tier_rows(price: stripe.Price) -> list[tuple[Any, ...]]:
    return [
        (t.up_to, t.unit_amount, t.unit_amount_decimal, t.flat_amount, t.flat_amount_decimal)
        for t in price.tiers
    ]


def test_tiered_price_keeps_its_tiers_and_shows_them_only_when_expanded(
    client: stripe.StripeClient, metered: dict[str, Any]
) -> None:
    price = client.v1.prices.create(params={**metered, **GRADUATED, "lookup_key": "tokens"})
    assert (price.billing_scheme, price.tiers_mode, price.type) == (
        "tiered",
        "graduated",
        "recurring",
    )
    # "Only set if billing_scheme=per_unit"; tiers is includable: absent unless expanded
    assert (price.unit_amount, price.unit_amount_decimal, price.transform_quantity) == (
        None,
        None,
        None,
    )
    assert "tiers" not in price
    assert "tiers" not in client.v1.prices.retrieve(price.id)
    assert "tiers" not in client.v1.prices.list(params={"lookup_keys": ["tokens"]}).data[0]

    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["tiers"]})
    assert tier_rows(expanded) == [
        (100_000_000, None, Decimal("0.00045"), 0, Decimal("0")),
        (1_000_000_000, None, Decimal("0.0004"), 500, Decimal("500")),
        (None, 3, Decimal("3"), None, None),  # up_to "inf" reads back as null
    ]
    assert all(isinstance(row[2], Decimal) for row in tier_rows(expanded))  # never a float
    listed = client.v1.prices.list(params={"lookup_keys": ["tokens"], "expand": ["data.tiers"]})
    assert tier_rows(listed.data[0]) == tier_rows(expanded)
    created = client.v1.prices.create(
        params={**metered, **GRADUATED, "tiers_mode": "volume", "expand": ["tiers"]}
    )
    assert created.tiers_mode == "volume" and tier_rows(created) == tier_rows(expanded)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.list(params={"expand": ["tiers"]})
    assert caught.value.user_message == (
        "This property cannot be expanded (tiers). "
        "You may want to try expanding 'data.tiers' instead."
    )


def test_per_unit_price_still_takes_a_unit_amount(
    client: stripe.StripeClient, metered: dict[str, Any]
) -> None:
    price = client.v1.prices.create(params={**metered, "unit_amount_decimal": "0.0003"})
    assert (price.billing_scheme, price.tiers_mode) == ("per_unit", None)
    assert price.unit_amount_decimal == Decimal("0.0003") and "tiers" not in price
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(params=metered)
    assert (caught.value.code, caught.value.param) == ("parameter_missing", "unit_amount")


def _without(params: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key != name}


def _tier(index: int, **fields: Any) -> dict[str, Any]:
    """GRADUATED with tier `index` replaced by `fields`."""
    tiers = [dict(t) for t in GRADUATED["tiers"]]
    tiers[index] = fields
    return {**GRADUATED, "tiers": tiers}


def _up_tos(*up_tos: Any) -> dict[str, Any]:
    return {**GRADUATED, "tiers": [{"up_to": u, "unit_amount": 1} for u in up_tos]}


REFUSED_TIERED = {
    # required fields
    "no tiers_mode": (
        _without(GRADUATED, "tiers_mode"),
        "tiers_mode",
        "Missing required param: tiers_mode.",
    ),
    "no tiers": (_without(GRADUATED, "tiers"), "tiers", "Missing required param: tiers."),
    "bad tiers_mode": ({**GRADUATED, "tiers_mode": "stairs"}, "tiers_mode", "Invalid tiers_mode"),
    "no up_to": (
        _tier(1, unit_amount=2),
        "tiers[1][up_to]",
        "Missing required param: tiers[1][up_to].",
    ),
    "no amount": (
        _tier(0, up_to=10),
        "amount",
        "An entry in the tiers array is missing an amount.",
    ),
    "bad up_to": (
        _tier(0, up_to="lots", unit_amount=1),
        "tiers[0][up_to]",
        "Invalid integer: lots",
    ),
    "unknown tier field": (
        _tier(0, up_to=10, amount=5),
        "tiers[0][amount]",
        "Received unknown parameter: tiers[0][amount]",
    ),
    # mutual exclusions
    "unit_amount and its decimal": (
        _tier(0, up_to=10, unit_amount=1, unit_amount_decimal="1.5"),
        "tiers[0][unit_amount]",
        "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
    ),
    "flat_amount and its decimal": (
        _tier(0, up_to=10, flat_amount=1, flat_amount_decimal="1"),
        "tiers[0][flat_amount]",
        "You may only specify one of these parameters: flat_amount, flat_amount_decimal.",
    ),
    "tiers with transform_quantity": (
        {**GRADUATED, "transform_quantity": {"divide_by": 1000, "round": "up"}},
        "tiers",
        "You may only specify one of these parameters: tiers, transform_quantity.",
    ),
    "top-level unit_amount": (
        {**GRADUATED, "unit_amount": 5},
        "unit_amount",
        "billing_scheme=tiered",
    ),
    "top-level unit_amount_decimal": (
        {**GRADUATED, "unit_amount_decimal": "5"},
        "unit_amount_decimal",
        "billing_scheme=tiered",
    ),
    "tiers on a per_unit price": (
        {**_without(GRADUATED, "billing_scheme"), "unit_amount": 5},
        "tiers",
        "billing_scheme=tiered",
    ),
    # amounts
    "fractional flat amount": (
        _tier(0, up_to=10, unit_amount=1, flat_amount_decimal="0.5"),
        "tiers[0][flat_amount_decimal]",
        "whole number",
    ),
    "13 decimal places": (
        _tier(0, up_to=10, unit_amount_decimal="0.0000000000001"),
        "tiers[0][unit_amount_decimal]",
        "Invalid decimal",
    ),
    "negative unit amount": (
        _tier(0, up_to=10, unit_amount=-1),
        "tiers[0][unit_amount]",
        "at least 0",
    ),
    # up_to boundaries: strictly increasing, exactly the last one inf
    "last tier bounded": (
        _up_tos(10, 20),
        "tiers[1][up_to]",
        "the last tier must have `up_to=inf`",
    ),
    "inf before the last": (_up_tos("inf", 10, "inf"), "tiers[0][up_to]", "only the last tier"),
    "up_to not increasing": (_up_tos(10, 10, "inf"), "tiers[1][up_to]", "increasing order"),
    "up_to zero": (_up_tos(0, "inf"), "tiers[0][up_to]", "positive integer"),
}


@pytest.mark.parametrize(
    ("params", "param", "message"), REFUSED_TIERED.values(), ids=REFUSED_TIERED
)
def test_tiered_price_refusals(
    stripe_server: StripeServer,
    client: stripe.StripeClient,
    metered: dict[str, Any],
    params: dict[str, Any],
    param: str,
    message: str,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(params={**metered, **params})
    error = caught.value.json_body["error"]
    assert caught.value.http_status == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == param and message in error["message"]
    if message.startswith("Missing required param"):
        assert error["code"] == "parameter_missing"
    assert client.v1.prices.list().data == []


def test_a_lone_inf_tier_and_a_flat_only_tier_are_prices(
    client: stripe.StripeClient, metered: dict[str, Any]
) -> None:
    single = client.v1.prices.create(
        params={**metered, **_up_tos("inf"), "tiers_mode": "volume", "expand": ["tiers"]}
    )
    assert [t.up_to for t in single.tiers] == [None]
    flat_only = client.v1.prices.create(
        params={**metered, **_tier(0, up_to=10, flat_amount_decimal="1200"), "expand": ["tiers"]}
    )
    assert tier_rows(flat_only)[0] == (10, None, None, 1200, Decimal("1200"))

"""A local server that honours the slice of the Stripe API a usage-billing job needs.

Point the real stripe-python SDK at it::

    with StripeServer() as server:
        client = stripe.StripeClient(
            server.api_key, base_addresses={"api": server.url, "meter_events": server.url})

It speaks Stripe's wire contract: Bearer secret keys, form-encoded v1 bodies, JSON v2 bodies,
Stripe's object and error shapes, Idempotency-Key replay, meter-event validation, identifier
dedupe, the one-call-per-(customer, meter) concurrency limit and v2 meter event streams.
Customers, products, prices and meters are kept just well enough for a billing job to set
itself up; prices are per-unit or tiered (graduated / volume, validated as Stripe does), and a
price's `tiers` are in a reply only when expanded (`expand[]=tiers`, `data.tiers` on a list).
Where a reply is our assumption rather than documented or observed Stripe behaviour, a comment
says so.

Test controls (fail_next, drop_next_replies, set_time, ...) are plain methods on StripeServer,
never HTTP routes, so nothing here can be mistaken for Stripe's API.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import socket
import string
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DAY = 86_400
V1_IDEMPOTENCY_TTL = DAY  # v1 replays a key's first result for 24 h
V2_IDEMPOTENCY_TTL = 30 * DAY  # v2 keys live 30 days and replay successes only
IDENTIFIER_TTL = DAY  # meter-event identifiers are unique over a rolling 24 h
BACKFILL_LIMIT = 35 * DAY  # event timestamps may be up to 35 days old...
FUTURE_LIMIT = 5 * 60  # ...and up to 5 minutes ahead
SESSION_TTL = 15 * 60  # v2 meter event session tokens live 15 minutes
MAX_STREAM_EVENTS = 100
MAX_IDENTIFIER_LENGTH = 100
MAX_VALUE_DIGITS = 15  # API 2026-04-22.dahlia: longer values get a 400
DEFAULT_API_VERSION = "2026-10-28.endive"  # stripe-python 16's pinned version
# Price fields this stand-in expands (Stripe can expand more, e.g. currency_options).
PRICE_EXPANDABLE = {"tiers", "product"}
TIER_FIELDS = {"up_to", "unit_amount", "unit_amount_decimal", "flat_amount", "flat_amount_decimal"}

RATE_LIMIT_MESSAGE = (
    "Testmode request rate limit exceeded, the rate limits in testmode are lower than livemode. "
    "You can learn more about rate limits here https://stripe.com/docs/rate-limits."
)
# Assumption: Stripe documents the limit (one concurrent meter-event call per customer per meter,
# under its concurrency limiter) but not the reply's wording or reason header value.
CONCURRENCY_MESSAGE = (
    "Too many concurrent requests for this customer and meter: make one meter-event call at a "
    "time per customer and meter. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
SERVER_ERROR_MESSAGE = (
    "Sorry, something went wrong. We've already been notified of the problem, but if you need "
    "any help, you can reach us at support.stripe.com/contact."
)
NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


@dataclass
class Reply:
    """An HTTP reply; `drop` closes the socket instead of sending it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class StripeError(Exception):
    """An error reply. `saved` says whether Stripe's idempotency layer keeps it for replay."""

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        *,
        saved: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error
        self.saved = saved
        self.headers = headers or {}

    def reply(self) -> Reply:
        return Reply(self.status, {"error": self.error}, dict(self.headers))


class _EventProblem(Exception):
    """A meter event Stripe's validation rejects, with its error-report code."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True)
class MeterEventRecord:
    """A meter event Stripe accepted: a 200 on v1, or part of a 200 stream request on v2."""

    identifier: str
    event_name: str
    payload: dict[str, Any]
    timestamp: int
    created: int
    via: str  # "v1" or "v2"
    customer: str | None
    value: int | None
    error_code: str | None = None  # code of Stripe's async error report; None when billable
    error_message: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    status: int | None  # None when the connection was dropped


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    should_retry: bool | None


@dataclass
class _Idempotent:
    fingerprint: tuple[str, str, str]
    created: int
    reply: Reply | None = None  # None while the first request is still running


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: dict[str, Any]
    account: str  # the secret key the request acts for
    v2: bool

    @property
    def livemode(self) -> bool:
        return self.account.startswith("sk_live_")


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., dict[str, Any]]
    session_auth: bool = False  # authenticated by a meter event session token
    meter_events: bool = False  # subject to fail_next and drop_next_replies


class StripeServer:
    """Threaded HTTP server emulating Stripe; a context manager, or start() then stop()."""

    def __init__(
        self,
        api_keys: tuple[str, ...] = ("sk_test_meterline",),
        *,
        rate_limit_per_second: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_keys = api_keys
        self.rate_limit_per_second = rate_limit_per_second
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._clock_offset = 0.0
        self._latency = 0.0
        self._customers: dict[str, dict[str, Any]] = {}
        self._products: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, dict[str, Any]] = {}
        self._meters: dict[str, dict[str, Any]] = {}
        self._events: list[MeterEventRecord] = []
        self._identifiers: dict[str, int] = {}  # identifier -> when it was accepted
        self._sessions: dict[str, tuple[str, int]] = {}  # token -> (secret key, expires_at)
        self._idempotency: dict[tuple[str, str], _Idempotent] = {}
        self._busy: set[tuple[str, str]] = set()  # (customer, meter id) with a call in flight
        self._recent: deque[float] = deque()  # monotonic times of recent requests
        self._faults: deque[_Fault] = deque()
        self._drops = 0
        self._before_reply: Callable[[], None] | None = None
        self._requests: list[RecordedRequest] = []
        self._routes = [
            _route("GET", r"/v1/customers", self._list_customers),
            _route("POST", r"/v1/customers", self._create_customer),
            _route("GET", r"/v1/customers/([^/]+)", self._retrieve_customer),
            _route("GET", r"/v1/products", self._list_products),
            _route("POST", r"/v1/products", self._create_product),
            _route("GET", r"/v1/products/search", self._search_products),
            _route("GET", r"/v1/products/([^/]+)", self._retrieve_product),
            _route("GET", r"/v1/prices", self._list_prices),
            _route("POST", r"/v1/prices", self._create_price),
            _route("GET", r"/v1/prices/([^/]+)", self._retrieve_price),
            _route("GET", r"/v1/billing/meters", self._list_meters),
            _route("POST", r"/v1/billing/meters", self._create_meter),
            _route("GET", r"/v1/billing/meters/([^/]+)", self._retrieve_meter),
            _route(
                "POST", r"/v1/billing/meter_events", self._create_meter_event, meter_events=True
            ),
            _route("POST", r"/v2/billing/meter_event_session", self._create_session),
            _route(
                "POST",
                r"/v2/billing/meter_event_stream",
                self._stream_meter_events,
                session_auth=True,
                meter_events=True,
            ),
        ]

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The first configured secret key."""
        return self.api_keys[0]

    @property
    def url(self) -> str:
        """Base URL for both the "api" and "meter_events" base addresses."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Starts serving in a background thread and returns the base URL."""
        self._httpd = _HTTPServer(self._address, _Handler)
        self._httpd.stripe = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stops serving and frees the port."""
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> StripeServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- test controls (not Stripe API) --------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        retry_after: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Answers the next `count` meter-event requests (v1 or v2 stream) with 429 or 5xx.

        A 429 is a rate-limiter reply, which Stripe's idempotency layer does not save; a 5xx
        happens inside the endpoint, so it is saved and replayed for the same Idempotency-Key.
        `retry_after` adds a Retry-After header (Stripe documents none); `should_retry` adds
        Stripe-Should-Retry, the header stripe-python obeys.
        """
        if status != 429 and status < 500:
            raise ValueError("fail_next injects 429 or 5xx replies")
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, should_retry) for _ in range(count))

    def drop_next_replies(self, count: int = 1) -> None:
        """Records the next `count` successful meter-event requests, then closes the socket
        without replying (a lost reply). The idempotent result is saved before the drop."""
        with self._lock:
            self._drops += count

    def before_meter_event_reply(self, callback: Callable[[], None] | None) -> None:
        """Calls `callback()` after each meter-event request (v1 or v2 stream) Stripe accepted
        and recorded, before its reply is written: e.g. to kill the client between the send and
        its own record of the answer. None removes it."""
        self._before_reply = callback

    def set_meter_event_latency(self, seconds: float) -> None:
        """Makes each v1 meter-event call hold its (customer, meter) slot this long."""
        self._latency = seconds

    def now(self) -> int:
        """The server's clock, in Unix seconds."""
        return int(time.time() + self._clock_offset)

    def set_time(self, epoch: float) -> None:
        """Sets the server's clock; it keeps ticking from there."""
        self._clock_offset = epoch - time.time()

    def advance(self, seconds: float) -> None:
        """Moves the server's clock forward."""
        self._clock_offset += seconds

    # -- inspection ----------------------------------------------------------------------------

    @property
    def events(self) -> list[MeterEventRecord]:
        """Every meter event Stripe accepted, including those its async validation rejects."""
        with self._lock:
            return list(self._events)

    def totals(self) -> dict[tuple[str, str], int]:
        """Summed values of billable events per (customer, event_name)."""
        totals: dict[tuple[str, str], int] = {}
        for event in self.events:
            if event.error_code is None and event.customer is not None and event.value is not None:
                key = (event.customer, event.event_name)
                totals[key] = totals.get(key, 0) + event.value
        return totals

    def error_reports(self) -> list[MeterEventRecord]:
        """Accepted events that Stripe's async validation rejects (error_report_triggered)."""
        return [event for event in self.events if event.error_code is not None]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    # -- request pipeline ----------------------------------------------------------------------

    def _dispatch(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Answers one HTTP request: auth, rate limit, idempotency, then the endpoint."""
        url = urlsplit(target)
        v2 = url.path.startswith("/v2/")
        route, args = self._route(method, url.path)
        key = headers.get("idempotency-key") if method == "POST" else None
        try:
            account = self._authenticate(headers, session=route is not None and route.session_auth)
            if route is None:
                raise _invalid(
                    f"Unrecognized request URL ({method}: {url.path}). Please see "
                    "https://stripe.com/docs or we can help at https://support.stripe.com/.",
                    status=404,
                )
            self._limit_rate(v2)
            body = raw if method == "POST" else url.query.encode()
            call = _Call(
                method, url.path, _parse(body, json_body=v2 and method == "POST"), account, v2
            )
            reply = self._run_idempotently(call, route, args, key)
        except StripeError as error:
            reply = error.reply()
        with self._lock:
            if route is not None and route.meter_events and reply.status == 200 and self._drops:
                self._drops -= 1
                reply = replace(reply, drop=True)
            common = {"Request-Id": "req_" + _random(14)}
            common["Stripe-Version"] = headers.get("stripe-version", DEFAULT_API_VERSION)
            if key:
                common["Idempotency-Key"] = key
            reply = replace(reply, headers={**common, **reply.headers})
            status = None if reply.drop else reply.status
            self._requests.append(RecordedRequest(method, url.path, headers, status))
        hook = self._before_reply
        if hook is not None and route is not None and route.meter_events and reply.status == 200:
            hook()
        return reply

    def _route(self, method: str, path: str) -> tuple[_Route | None, tuple[str, ...]]:
        for route in self._routes:
            match = route.pattern.fullmatch(path)
            if route.method == method and match:
                return route, match.groups()
        return None, ()

    def _authenticate(self, headers: dict[str, str], *, session: bool) -> str:
        """Returns the secret key the request acts for."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _invalid(NO_KEY_MESSAGE, status=401)
        if not session:
            if token not in self.api_keys:
                masked = token[:8] + "*" * max(len(token) - 12, 0) + token[-4:]
                raise _invalid(f"Invalid API Key provided: {masked}", status=401)
            return token
        with self._lock:
            found = self._sessions.get(token)
        if found is None:  # Assumption: Stripe's wording for an unknown session token.
            raise _invalid("Invalid meter event session token provided.", status=401)
        account, expires_at = found
        if self.now() >= expires_at:
            raise StripeError(
                401,
                {
                    "type": "temporary_session_expired",
                    "code": "billing_meter_event_session_expired",
                    "message": "The temporary session token has expired.",
                },
                saved=False,
            )
        return account

    def _limit_rate(self, v2: bool) -> None:
        """Stripe's basic rate limiter: at most rate_limit_per_second requests a second."""
        if self.rate_limit_per_second is None:
            return
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.rate_limit_per_second:
                raise _rate_limited(RATE_LIMIT_MESSAGE, "global-rate", v2)
            self._recent.append(now)

    def _run_idempotently(
        self, call: _Call, route: _Route, args: tuple[str, ...], key: str | None
    ) -> Reply:
        """Replays a key's saved result; v1 saves errors raised inside the endpoint too."""
        if key is None:
            return self._execute(call, route, args)
        scope = (call.account, key)
        fingerprint = (call.method, call.path, json.dumps(call.params, sort_keys=True))
        ttl = V2_IDEMPOTENCY_TTL if call.v2 else V1_IDEMPOTENCY_TTL
        with self._lock:
            entry = self._idempotency.get(scope)
            if entry is not None and self.now() - entry.created >= ttl:
                entry = None
            if entry is not None:
                if entry.fingerprint != fingerprint:
                    raise StripeError(
                        400,
                        {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with the "
                            "same parameters they were first used with. Try using a key other "
                            f"than '{key}' if you meant to execute a different request.",
                        },
                        saved=False,
                    )
                if entry.reply is None:
                    raise _invalid(
                        "There is currently another in-progress request using this Idempotent "
                        "Key (that probably means you submitted twice, and the other request is "
                        f"still going through): {key}. Please try again later.",
                        code="idempotency_key_in_use",
                        status=409,
                    )
                return replace(
                    entry.reply, headers={**entry.reply.headers, "Idempotent-Replayed": "true"}
                )
            entry = self._idempotency[scope] = _Idempotent(fingerprint, self.now())
        try:
            reply, saved = self._execute(call, route, args), True
        except StripeError as error:
            reply, saved = error.reply(), error.saved and not call.v2
        with self._lock:
            if saved:
                entry.reply = replace(
                    reply, body=copy.deepcopy(reply.body), headers=dict(reply.headers)
                )
            else:
                del self._idempotency[scope]
        return reply

    def _execute(self, call: _Call, route: _Route, args: tuple[str, ...]) -> Reply:
        if route.meter_events:
            self._raise_fault(call.v2)
        return Reply(200, route.handler(call, *args))

    def _raise_fault(self, v2: bool) -> None:
        with self._lock:
            if not self._faults:
                return
            fault = self._faults.popleft()
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        if fault.should_retry is not None:
            headers["Stripe-Should-Retry"] = str(fault.should_retry).lower()
        if fault.status == 429:
            raise _rate_limited(RATE_LIMIT_MESSAGE, "global-rate", v2, headers)
        raise StripeError(
            fault.status, {"type": "api_error", "message": SERVER_ERROR_MESSAGE}, headers=headers
        )

    # -- customers, products, prices -----------------------------------------------------------

    def _create_customer(self, call: _Call) -> dict[str, Any]:
        params = _allow(call.params, "name", "email", "description", "phone", "metadata", "expand")
        customer = {
            "id": _new_id("cus"),
            "object": "customer",
            "balance": 0,
            "created": self.now(),
            "currency": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "livemode": call.livemode,
            "metadata": _metadata(params),
            "name": params.get("name"),
            "phone": params.get("phone"),
            "tax_exempt": "none",
            "test_clock": None,
        }
        with self._lock:
            self._customers[customer["id"]] = customer
        return customer

    def _retrieve_customer(self, call: _Call, customer_id: str) -> dict[str, Any]:
        return _find(self._customers, customer_id, "customer")

    def _list_customers(self, call: _Call) -> dict[str, Any]:
        params = _allow(call.params, "email", "limit", "starting_after", "expand")
        with self._lock:
            items = [
                c for c in self._customers.values() if params.get("email") in (None, c["email"])
            ]
        return _page(params, items, "/v1/customers", "customer")

    def _create_product(self, call: _Call) -> dict[str, Any]:
        params = _allow(call.params, "id", "name", "active", "description", "metadata", "expand")
        now = self.now()
        product = {
            "id": params.get("id") or _new_id("prod"),
            "object": "product",
            "active": _boolean(params, "active", default=True),
            "created": now,
            "default_price": None,
            "description": params.get("description"),
            "images": [],
            "livemode": call.livemode,
            "metadata": _metadata(params),
            "name": _required(params, "name"),
            "type": "service",
            "unit_label": None,
            "updated": now,
        }
        with self._lock:
            if product["id"] in self._products:
                raise _invalid(
                    "Product already exists.", param="id", code="resource_already_exists"
                )
            self._products[product["id"]] = product
        return product

    def _retrieve_product(self, call: _Call, product_id: str) -> dict[str, Any]:
        return _find(self._products, product_id, "product")

    def _list_products(self, call: _Call) -> dict[str, Any]:
        params = _allow(call.params, "active", "limit", "starting_after", "expand")
        active = _boolean(params, "active")
        with self._lock:
            items = [p for p in self._products.values() if active in (None, p["active"])]
        return _page(params, items, "/v1/products", "product")

    def _search_products(self, call: _Call) -> dict[str, Any]:
        """Stripe search over `field:'value'` clauses joined by AND (metadata, name, active, id)."""
        params = _allow(call.params, "query", "limit", "page", "expand")
        matches = _search_filter(_required(params, "query"))
        limit = _limit(params)
        offset = _integer(params.get("page"), "page") or 0
        with self._lock:
            found = [p for p in reversed(self._products.values()) if matches(p)]
        more = len(found) > offset + limit
        return {
            "object": "search_result",
            "data": found[offset : offset + limit],
            "has_more": more,
            "next_page": str(offset + limit) if more else None,
            "url": "/v1/products/search",
        }

    def _create_price(self, call: _Call) -> dict[str, Any]:
        """POST /v1/prices: per-unit or tiered (graduated / volume) prices."""
        params = _allow(
            call.params,
            "product", "currency", "unit_amount", "unit_amount_decimal", "lookup_key",
            "transfer_lookup_key", "nickname", "metadata", "active", "billing_scheme",
            "tax_behavior", "tiers", "tiers_mode", "expand",
            recurring={"interval", "interval_count", "usage_type", "meter"},
            transform_quantity={"divide_by", "round"},
        )  # fmt: skip
        expand = _expand(params, PRICE_EXPANDABLE)
        currency = _required(params, "currency").lower()
        product = _required(params, "product")
        scheme = _enum(
            params.get("billing_scheme", "per_unit"), "billing_scheme", ("per_unit", "tiered")
        )
        tiers: list[dict[str, Any]] | None = None
        tiers_mode: str | None = None
        unit_amount: int | None = None
        decimal: str | None = None
        if scheme == "tiered":
            tiers_mode, tiers = _tiered(params)
        else:
            for name in ("tiers", "tiers_mode"):
                if name in params:
                    # Documented: tiers "requires billing_scheme to be set to tiered" (and
                    # tiers_mode only means something with them). Assumption: the wording.
                    raise _bad_param(
                        f"`{name}` can only be used with `billing_scheme=tiered`.", name
                    )
            unit_amount, decimal = _amount(params, "unit_amount", "", whole=False)
            if unit_amount is None and decimal is None:
                raise _missing_param("unit_amount")
        recurring = _recurring(params)
        transform = _transform_quantity(params)
        lookup_key = params.get("lookup_key")
        with self._lock:
            if product not in self._products:
                raise _no_such("product", product, param="product", status=400)
            if recurring and recurring["meter"] and recurring["meter"] not in self._meters:
                raise _no_such(
                    "billing.meter", recurring["meter"], param="recurring[meter]", status=400
                )
            holder = next(
                (p for p in self._prices.values() if lookup_key and p["lookup_key"] == lookup_key),
                None,
            )
            if holder is not None:
                if not _boolean(params, "transfer_lookup_key", default=False):
                    raise _bad_param(
                        f"A price (`{holder['id']}`) already uses that lookup key.", "lookup_key"
                    )
                holder["lookup_key"] = None
            price = {
                "id": _new_id("price"),
                "object": "price",
                "active": _boolean(params, "active", default=True),
                "billing_scheme": scheme,
                "created": self.now(),
                "currency": currency,
                "custom_unit_amount": None,
                "livemode": call.livemode,
                "lookup_key": lookup_key,
                "metadata": _metadata(params),
                "nickname": params.get("nickname"),
                "product": product,
                "recurring": recurring,
                "tax_behavior": params.get("tax_behavior", "unspecified"),
                "tiers": tiers,
                "tiers_mode": tiers_mode,
                "transform_quantity": transform,
                "type": "recurring" if recurring else "one_time",
                # "Only set if billing_scheme=per_unit" (Price object reference).
                "unit_amount": unit_amount,
                "unit_amount_decimal": decimal,
            }
            self._prices[price["id"]] = price
            return self._render_price(price, expand)

    def _retrieve_price(self, call: _Call, price_id: str) -> dict[str, Any]:
        params = _allow(call.params, "expand")
        expand = _expand(params, PRICE_EXPANDABLE)
        with self._lock:
            return self._render_price(_find(self._prices, price_id, "price"), expand)

    def _list_prices(self, call: _Call) -> dict[str, Any]:
        params = _allow(
            call.params,
            "lookup_keys",
            "product",
            "active",
            "type",
            "limit",
            "starting_after",
            "expand",
        )
        # A list's objects are expanded through `data.`: Stripe answers `expand[]=tiers` on a
        # list with "This property cannot be expanded (tiers). You may want to try expanding
        # 'data.tiers' instead" (observed, stripe/stripe-node#1007).
        expand = {
            path.removeprefix("data.")
            for path in _expand(params, {"data." + name for name in PRICE_EXPANDABLE})
        }
        lookup_keys = params.get("lookup_keys")
        if lookup_keys is not None and not isinstance(lookup_keys, list):
            raise _bad_param("Invalid array", "lookup_keys")
        active = _boolean(params, "active")

        def wanted(price: dict[str, Any]) -> bool:
            return (
                (lookup_keys is None or price["lookup_key"] in lookup_keys)
                and params.get("product") in (None, price["product"])
                and params.get("type") in (None, price["type"])
                and active in (None, price["active"])
            )

        with self._lock:
            items = [self._render_price(p, expand) for p in self._prices.values() if wanted(p)]
        return _page(params, items, "/v1/prices", "price")

    def _render_price(self, price: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        """A Price as Stripe answers it; lock held. `tiers` is an includable field: "not
        included by default. To include it in the response, expand the `tiers` field" (Price
        object reference); it is absent, not null, otherwise."""
        rendered = copy.deepcopy(price)
        if "tiers" not in expand:
            del rendered["tiers"]
        if "product" in expand:
            rendered["product"] = copy.deepcopy(self._products[price["product"]])
        return rendered

    # -- billing meters ------------------------------------------------------------------------

    def _create_meter(self, call: _Call) -> dict[str, Any]:
        params = _allow(
            call.params,
            "display_name", "event_name", "event_time_window", "expand",
            default_aggregation={"formula"},
            customer_mapping={"event_payload_key", "type"},
            value_settings={"event_payload_key"},
        )  # fmt: skip
        display_name = _required(params, "display_name")
        event_name = _required(params, "event_name")
        formula = _required(params, "default_aggregation", "formula")
        _enum(formula, "default_aggregation[formula]", ("count", "last", "sum"))
        customer_key = "stripe_customer_id"
        if "customer_mapping" in params:
            customer_key = _required(params, "customer_mapping", "event_payload_key")
            _enum(
                _required(params, "customer_mapping", "type"), "customer_mapping[type]", ("by_id",)
            )
        value_key = "value"
        if "value_settings" in params:
            value_key = _required(params, "value_settings", "event_payload_key")
        window = params.get("event_time_window")
        if window is not None:
            _enum(window, "event_time_window", ("day", "hour"))
        now = self.now()
        meter = {
            "id": _new_id("mtr" if call.livemode else "mtr_test"),
            "object": "billing.meter",
            "created": now,
            "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
            "default_aggregation": {"formula": formula},
            "display_name": display_name,
            "event_name": event_name,
            "event_time_window": window,
            "livemode": call.livemode,
            "status": "active",
            "status_transitions": {"deactivated_at": None},
            "updated": now,
            "value_settings": {"event_payload_key": value_key},
        }
        with self._lock:
            if self._active_meter(event_name) is not None:
                # Stripe refuses a second active meter for an event_name with an
                # invalid_request_error (stripe-cli fixtures expect it); the wording is ours.
                raise _bad_param(
                    f"An active meter with event_name `{event_name}` already exists.", "event_name"
                )
            self._meters[meter["id"]] = meter
        return meter

    def _retrieve_meter(self, call: _Call, meter_id: str) -> dict[str, Any]:
        return _find(self._meters, meter_id, "billing.meter")

    def _list_meters(self, call: _Call) -> dict[str, Any]:
        params = _allow(call.params, "status", "limit", "starting_after", "expand")
        with self._lock:
            items = [
                m for m in self._meters.values() if params.get("status") in (None, m["status"])
            ]
        return _page(params, items, "/v1/billing/meters", "billing.meter")

    def _active_meter(self, event_name: str) -> dict[str, Any] | None:
        return next(
            (
                m
                for m in self._meters.values()
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )

    # -- meter events --------------------------------------------------------------------------

    def _create_meter_event(self, call: _Call) -> dict[str, Any]:
        """POST /v1/billing/meter_events: validated synchronously, customer checked later."""
        params = _allow(call.params, "event_name", "payload", "identifier", "timestamp", "expand")
        event_name = _required(params, "event_name")
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise _missing_param("payload")
        identifier = params.get("identifier") or str(uuid.uuid4())
        if len(identifier) > MAX_IDENTIFIER_LENGTH:
            raise _bad_param(
                f"Invalid string: {identifier}; must be at most {MAX_IDENTIFIER_LENGTH} characters",
                "identifier",
            )
        timestamp = _integer(params.get("timestamp"), "timestamp")
        now = self.now()
        timestamp = now if timestamp is None else timestamp
        with self._lock:
            try:
                meter, customer, value = self._check_event(
                    event_name, payload, timestamp, now, sync=True
                )
            except _EventProblem as problem:
                raise _invalid(problem.message, param=problem.param, saved=False) from None
            slot = (customer, meter["id"])
            if slot in self._busy:
                raise _rate_limited(CONCURRENCY_MESSAGE, "resource-specific", v2=False)
            self._busy.add(slot)
        try:
            time.sleep(self._latency)
            with self._lock:
                if self._identifier_taken(identifier):
                    # Observed: no error code, and Stripe-Should-Retry: false.
                    raise _invalid(
                        f"An event already exists with identifier {identifier}.",
                        saved=True,
                        headers={"Stripe-Should-Retry": "false"},
                    )
                record = self._accept(
                    identifier, event_name, payload, timestamp, "v1", customer, value
                )
        finally:
            with self._lock:
                self._busy.discard(slot)
        return {
            "object": "billing.meter_event",
            "created": record.created,
            "event_name": event_name,
            "identifier": identifier,
            "livemode": call.livemode,
            "payload": dict(payload),
            "timestamp": timestamp,
        }

    def _create_session(self, call: _Call) -> dict[str, Any]:
        """POST /v2/billing/meter_event_session: a 15-minute token for the event stream."""
        if call.params:
            raise _v2_invalid(f"Received unknown parameter: {next(iter(call.params))}")
        now = self.now()
        token = "mes_auth_" + _random(32)  # Assumption: the token's format is opaque.
        with self._lock:
            self._sessions[token] = (call.account, now + SESSION_TTL)
        return {
            "id": _new_id("mes"),
            "object": "v2.billing.meter_event_session",
            "authentication_token": token,
            "created": _iso(now),
            "expires_at": _iso(now + SESSION_TTL),
            "livemode": call.livemode,
        }

    def _stream_meter_events(self, call: _Call) -> dict[str, Any]:
        """POST /v2/billing/meter_event_stream: shape checked now, everything else async.

        Invalid events are accepted and show up in error_reports(); a repeated identifier is
        dropped without a report (Stripe's error-report codes have none for duplicates).
        """
        events = call.params.get("events")
        if set(call.params) - {"events"}:
            raise _v2_invalid(
                f"Received unknown parameter: {sorted(set(call.params) - {'events'})[0]}"
            )
        if not isinstance(events, list) or not events:
            raise _v2_invalid("events: must be a non-empty array.")
        if len(events) > MAX_STREAM_EVENTS:
            # Assumption: the wording; the 100-event cap itself is documented.
            raise _v2_invalid(f"events: must contain at most {MAX_STREAM_EVENTS} items.")
        now = self.now()
        parsed = [_stream_event(index, event, now) for index, event in enumerate(events)]
        with self._lock:
            for event_name, payload, identifier, timestamp in parsed:
                if self._identifier_taken(identifier):
                    continue
                try:
                    _, customer, value = self._check_event(
                        event_name, payload, timestamp, now, sync=False
                    )
                except _EventProblem as problem:
                    self._accept(
                        identifier, event_name, payload, timestamp, "v2", None, None, problem
                    )
                else:
                    self._accept(identifier, event_name, payload, timestamp, "v2", customer, value)
        return {}

    def _check_event(
        self, event_name: str, payload: dict[str, Any], timestamp: int, now: int, *, sync: bool
    ) -> tuple[dict[str, Any], str, int]:
        """Stripe's meter-event validation; returns (meter, customer, value). Lock held."""
        meter = self._active_meter(event_name)
        if meter is None:
            message = (
                f'No active meter found for event name "{event_name}".'  # observed v1 reply
                if sync
                else f"No meter was found matching event_name {event_name}."  # docs' error report
            )
            raise _EventProblem("no_meter", message)
        customer_key = meter["customer_mapping"]["event_payload_key"]
        customer = payload.get(customer_key)
        if not isinstance(customer, str) or not customer:
            raise _EventProblem(
                "meter_event_no_customer_defined",
                f"Customer mapping key {customer_key} not found in payload.",
                "payload",
            )
        value_key = meter["value_settings"]["event_payload_key"]
        raw = payload.get(value_key)
        if raw is None:  # Assumption: wording modelled on the customer-key report.
            raise _EventProblem(
                "meter_event_value_not_found",
                f"Value key {value_key} not found in payload.",
                "payload",
            )
        if not isinstance(raw, str) or not re.fullmatch(r"-?\d+", raw.strip()):
            # Documented: whole numbers only. Assumption: the wording.
            raise _EventProblem(
                "meter_event_invalid_value",
                f"The value in the event payload must be a whole number. Received {raw}.",
                "payload",
            )
        value = int(raw)
        if len(str(abs(value)).lstrip("0")) > MAX_VALUE_DIGITS:
            raise _EventProblem(
                "meter_event_value_too_many_digits",
                f"The value in the event payload can have at most {MAX_VALUE_DIGITS} digits. "
                f"Received {raw}.",
                "payload",
            )
        if timestamp < now - BACKFILL_LIMIT:
            raise _EventProblem(
                "timestamp_too_far_in_past",
                "The event timestamp cannot be more than 35 days in past. Expected a timestamp "
                f"greater than or equal to {now - BACKFILL_LIMIT}.",
                "timestamp",
            )
        if timestamp > now + FUTURE_LIMIT:  # Assumption: wording mirrors the past-limit reply.
            raise _EventProblem(
                "timestamp_in_future",
                "The event timestamp cannot be more than 5 minutes in future. Expected a "
                f"timestamp less than or equal to {now + FUTURE_LIMIT}.",
                "timestamp",
            )
        return meter, customer, value

    def _identifier_taken(self, identifier: str) -> bool:
        accepted = self._identifiers.get(identifier)
        return accepted is not None and self.now() - accepted < IDENTIFIER_TTL

    def _accept(
        self,
        identifier: str,
        event_name: str,
        payload: dict[str, Any],
        timestamp: int,
        via: str,
        customer: str | None,
        value: int | None,
        problem: _EventProblem | None = None,
    ) -> MeterEventRecord:
        """Stores an accepted event. Its identifier is taken even if async validation fails
        (our assumption). An unknown customer is only reported asynchronously, as by Stripe."""
        if problem is None and customer not in self._customers:
            problem = _EventProblem(
                "meter_event_customer_not_found", f"No customer found with id {customer}."
            )
        now = self.now()
        self._identifiers[identifier] = now
        record = MeterEventRecord(
            identifier,
            event_name,
            dict(payload),
            timestamp,
            now,
            via,
            customer if problem is None else None,
            value if problem is None else None,
            problem.code if problem else None,
            problem.message if problem else None,
        )
        self._events.append(record)
        return record


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    stripe: StripeServer


class _Handler(BaseHTTPRequestHandler):
    """Hands each request to StripeServer._dispatch and writes (or drops) the reply."""

    server: _HTTPServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.stripe._dispatch(self.command, self.path, headers, raw)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silences the per-request log line."""


# -- helpers ---------------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits
_KEY_PART = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")
_CLAUSE = re.compile(
    r"""(?:metadata\[['"](?P<key>[^'"]+)['"]\]|(?P<field>name|active|id))\s*:\s*['"](?P<value>[^'"]*)['"]"""
)


def _route(
    method: str, pattern: str, handler: Callable[..., dict[str, Any]], **flags: bool
) -> _Route:
    return _Route(method, re.compile(pattern), handler, **flags)


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _new_id(prefix: str) -> str:
    return f"{prefix}_{_random(24)}"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _invalid(
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    status: int = 400,
    saved: bool = False,
    headers: dict[str, str] | None = None,
) -> StripeError:
    """An invalid_request_error. Only replies from a running endpoint are saved (saved=True)."""
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return StripeError(status, error, saved=saved, headers=headers)


def _bad_param(message: str, param: str, code: str | None = None) -> StripeError:
    return _invalid(message, param=param, code=code)


def _missing_param(name: str) -> StripeError:
    return _bad_param(f"Missing required param: {name}.", name, "parameter_missing")


def _no_such(kind: str, object_id: str, *, param: str = "id", status: int = 404) -> StripeError:
    return _invalid(
        f"No such {kind}: '{object_id}'", param=param, code="resource_missing", status=status
    )


def _v2_invalid(message: str) -> StripeError:
    """A v2 request that fails schema validation. Assumption: Stripe's exact v2 wording."""
    return StripeError(400, {"type": "invalid_request_error", "message": message}, saved=False)


def _rate_limited(
    message: str, reason: str, v2: bool, headers: dict[str, str] | None = None
) -> StripeError:
    """A 429 from a limiter: v1 type invalid_request_error, v2 type rate_limit; never saved."""
    error = {
        "type": "rate_limit" if v2 else "invalid_request_error",
        "code": "rate_limit",
        "message": message,
    }
    return StripeError(
        429, error, saved=False, headers={"Stripe-Rate-Limited-Reason": reason, **(headers or {})}
    )


def _parse(body: bytes, *, json_body: bool) -> dict[str, Any]:
    """Decodes a JSON (v2) or form-encoded (v1 body or query) request into nested params."""
    if json_body:
        if not body.strip():
            return {}
        try:
            params = json.loads(body)
        except ValueError:
            raise _v2_invalid("The request body is not valid JSON.") from None
        if not isinstance(params, dict):
            raise _v2_invalid("The request body must be a JSON object.")
        return params
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = [m.group(1) or m.group(2) for m in _KEY_PART.finditer(key)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part or str(len(node)), {})
        node[parts[-1] or str(len(node))] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    """Turns {"0": a, "1": b} (from `key[0]=a&key[1]=b`) into [a, b], recursively."""
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _allow(params: dict[str, Any], *names: str, **nested: set[str]) -> dict[str, Any]:
    """Rejects parameters the endpoint does not take, as Stripe does."""
    for name, value in params.items():
        if name not in names and name not in nested:
            raise _bad_param(f"Received unknown parameter: {name}", name, "parameter_unknown")
        if name in nested and isinstance(value, dict):
            for inner in value:
                if inner not in nested[name]:
                    full = f"{name}[{inner}]"
                    raise _bad_param(
                        f"Received unknown parameter: {full}", full, "parameter_unknown"
                    )
    return params


def _required(params: dict[str, Any], *path: str) -> str:
    """A required string param; nested ones by path, e.g. ("recurring", "interval")."""
    name = path[0] + "".join(f"[{part}]" for part in path[1:])
    value: Any = params
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        raise _missing_param(name)
    return value


def _integer(raw: Any, name: str) -> int | None:
    """An optional integer param (form values arrive as strings)."""
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"-?\d+", str(raw)):
        raise _bad_param(f"Invalid integer: {raw}", name, "parameter_invalid_integer")
    return int(raw)


def _decimal(raw: Any, name: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise _bad_param(f"Invalid decimal: {raw}", name) from None
    exponent = value.as_tuple().exponent
    if not value.is_finite() or (isinstance(exponent, int) and exponent < -12):
        raise _bad_param(f"Invalid decimal: {raw}", name)
    return value


def _boolean(params: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise _bad_param(f"Invalid boolean: {raw}", name)
    return raw == "true"


def _enum(value: str, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        *head, last = options
        listed = f"{', '.join(head)}{',' if len(head) > 1 else ''} or {last}" if head else last
        raise _bad_param(f"Invalid {name}: must be one of {listed}", name)
    return value


def _metadata(params: dict[str, Any]) -> dict[str, str]:
    metadata = params.get("metadata")
    return dict(metadata) if isinstance(metadata, dict) else {}


def _limit(params: dict[str, Any]) -> int:
    limit = _integer(params.get("limit"), "limit")
    if limit is None:
        return 10
    if not 1 <= limit <= 100:
        raise _bad_param("Invalid limit: must be between 1 and 100", "limit")
    return limit


def _page(
    params: dict[str, Any], items: list[dict[str, Any]], url: str, kind: str
) -> dict[str, Any]:
    """A Stripe list object, newest first, paged by limit and starting_after."""
    limit = _limit(params)
    items = items[::-1]
    after = params.get("starting_after")
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise _no_such(kind, after, param="starting_after", status=400)
        items = items[ids.index(after) + 1 :]
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit, "url": url}


def _find(store: dict[str, dict[str, Any]], object_id: str, kind: str) -> dict[str, Any]:
    found = store.get(object_id)
    if found is None:
        raise _no_such(kind, object_id)
    return found


def _search_filter(query: str) -> Callable[[dict[str, Any]], bool]:
    """Exact-match subset of Stripe's search language: clauses joined by AND."""
    texts = re.split(r"\s+AND\s+", query.strip())
    clauses = [match for text in texts if (match := _CLAUSE.fullmatch(text.strip()))]
    if len(clauses) != len(texts):
        raise _bad_param(f"Invalid search query: {query}", "query")

    def matches(item: dict[str, Any]) -> bool:
        for clause in clauses:
            if clause["key"] is not None:
                actual = item["metadata"].get(clause["key"])
            else:
                actual = item[clause["field"]]
                actual = str(actual).lower() if isinstance(actual, bool) else actual
            if actual != clause["value"]:
                return False
        return True

    return matches


def _recurring(params: dict[str, Any]) -> dict[str, Any] | None:
    if "recurring" not in params:
        return None
    interval = _enum(
        _required(params, "recurring", "interval"),
        "recurring[interval]",
        ("day", "month", "week", "year"),
    )
    recurring = params["recurring"]
    usage_type = _enum(
        recurring.get("usage_type", "licensed"), "recurring[usage_type]", ("licensed", "metered")
    )
    meter = recurring.get("meter")
    if usage_type == "metered" and not meter:
        # Since API 2025-03-31.basil metered prices are backed by a meter. Assumption: wording.
        raise _missing_param("recurring[meter]")
    return {
        "interval": interval,
        "interval_count": _integer(recurring.get("interval_count"), "recurring[interval_count]")
        or 1,
        "meter": meter,
        "trial_period_days": None,
        "usage_type": usage_type,
    }


def _transform_quantity(params: dict[str, Any]) -> dict[str, Any] | None:
    if "transform_quantity" not in params:
        return None
    name = "transform_quantity[divide_by]"
    divide_by = _integer(_required(params, "transform_quantity", "divide_by"), name)
    if divide_by is None or divide_by < 1:
        raise _bad_param(f"Invalid {name}: must be at least 1", name)
    rounding = _enum(
        _required(params, "transform_quantity", "round"),
        "transform_quantity[round]",
        ("down", "up"),
    )
    return {"divide_by": divide_by, "round": rounding}


def _expand(params: dict[str, Any], expandable: set[str]) -> set[str]:
    """The `expand[]` paths asked for; Stripe refuses a path it cannot expand."""
    raw = params.get("expand")
    if raw is None:
        return set()
    if not isinstance(raw, list):
        raise _bad_param("Invalid array", "expand")
    for path in raw:
        if path not in expandable:
            hint = (
                f" You may want to try expanding 'data.{path}' instead."
                if f"data.{path}" in expandable
                else ""
            )
            # Observed wording (stripe/stripe-node#1007); the stand-in expands only the paths
            # in `expandable`, a subset of what Stripe can expand.
            raise _invalid(f"This property cannot be expanded ({path}).{hint}")
    return set(raw)


def _amount(
    params: dict[str, Any], name: str, where: str, *, whole: bool
) -> tuple[int | None, str | None]:
    """`name` / `name_decimal` (at most one), as (integer if whole, decimal string).

    Both None when neither is given. `whole` refuses a decimal with a fraction:
    flat_amount_decimal "accepts a decimal value representing an integer in the minor units
    of the currency" (PriceCreateParams.Tier), unlike unit_amount_decimal, which takes up to
    12 decimal places.
    """
    integer_name = f"{where}[{name}]" if where else name
    decimal_name = f"{where}[{name}_decimal]" if where else f"{name}_decimal"
    integer = _integer(params.get(name), integer_name)
    raw = params.get(f"{name}_decimal")
    if raw == "":
        raw = None
    if integer is not None and raw is not None:
        # Observed: "You may only specify one of these parameters: unit_amount,
        # unit_amount_decimal." with param tiers[0][unit_amount] for a tier (terraform-provider-
        # stripe#10). Top level: the param this server always named (unit_amount_decimal).
        raise _bad_param(
            f"You may only specify one of these parameters: {name}, {name}_decimal.",
            integer_name if where else decimal_name,
        )
    if integer is not None:
        if integer < 0:  # Assumption: the wording.
            raise _bad_param(f"Invalid {integer_name}: must be at least 0", integer_name)
        return integer, str(integer)
    if raw is None:
        return None, None
    amount = _decimal(raw, decimal_name)
    if amount < 0:  # Assumption: the wording.
        raise _bad_param(f"Invalid {decimal_name}: must be at least 0", decimal_name)
    integral = amount == amount.to_integral_value()
    if whole and not integral:  # Assumption: the wording.
        raise _bad_param(
            f"Invalid {decimal_name}: must be a whole number of the currency's minor unit, "
            f"got {raw}",
            decimal_name,
        )
    return (int(amount) if integral else None), format(amount, "f")


def _tiered(params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """tiers_mode and the stored tiers of a `billing_scheme=tiered` price."""
    for name in ("unit_amount", "unit_amount_decimal"):
        if name in params:
            # Documented: unit_amount is required "unless billing_scheme=tiered", and a Price's
            # unit_amount is "Only set if billing_scheme=per_unit". Assumption: the wording.
            raise _bad_param(
                f"`{name}` cannot be used with `billing_scheme=tiered`: price each tier.", name
            )
    if "transform_quantity" in params and "tiers" in params:
        # Observed: param tiers (tierrun/node-sdk#15); documented: transform_quantity
        # "Cannot be combined with `tiers`".
        raise _bad_param(
            "You may only specify one of these parameters: tiers, transform_quantity.", "tiers"
        )
    mode = params.get("tiers_mode")
    if not mode:
        raise _missing_param("tiers_mode")
    mode = _enum(mode, "tiers_mode", ("graduated", "volume"))
    raw = params.get("tiers")
    if raw is None or raw == "":
        raise _missing_param("tiers")
    if not isinstance(raw, list):
        raise _bad_param("Invalid array", "tiers")
    tiers: list[dict[str, Any]] = []
    for index, tier in enumerate(raw):
        where = f"tiers[{index}]"
        if not isinstance(tier, dict):
            raise _bad_param("Invalid hash", where)  # observed: stripe/stripe-python#496
        for inner in tier:
            if inner not in TIER_FIELDS:
                full = f"{where}[{inner}]"
                raise _bad_param(f"Received unknown parameter: {full}", full, "parameter_unknown")
        up_to_raw = tier.get("up_to")
        if up_to_raw is None or up_to_raw == "":
            # Observed: "Missing required param: tiers[2][up_to]." (stripe/stripe-python#428).
            raise _missing_param(f"{where}[up_to]")
        up_to = None if up_to_raw == "inf" else _integer(up_to_raw, f"{where}[up_to]")
        if up_to is not None and up_to < 1:  # Assumption: the wording.
            raise _bad_param(
                f"Invalid {where}[up_to]: must be a positive integer or `inf`", f"{where}[up_to]"
            )
        unit_amount, unit_decimal = _amount(tier, "unit_amount", where, whole=False)
        flat_amount, flat_decimal = _amount(tier, "flat_amount", where, whole=True)
        if unit_decimal is None and flat_decimal is None:
            # Observed wording and param (georgegebbett/pulumi-stripe#1,
            # lukasaron/terraform-provider-stripe#45).
            raise _bad_param("An entry in the tiers array is missing an amount.", "amount")
        tiers.append(
            {
                "flat_amount": flat_amount,
                "flat_amount_decimal": flat_decimal,
                "unit_amount": unit_amount,
                "unit_amount_decimal": unit_decimal,
                "up_to": up_to,
            }
        )
    # "Use `inf` to define a fallback tier"; each tier's lower bound is the previous up_to + 1.
    # Stripe insists on the fallback (tierrun/tier#267 adds one "to satisfy Stripe").
    # Assumption: the wording of these three refusals.
    previous = 0
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        where = f"tiers[{index}][up_to]"
        if tier["up_to"] is None and not last:
            raise _bad_param(f"Invalid {where}: only the last tier can have `up_to=inf`", where)
        if tier["up_to"] is not None and last:
            raise _bad_param(f"Invalid {where}: the last tier must have `up_to=inf`", where)
        if tier["up_to"] is not None:
            if tier["up_to"] <= previous:
                raise _bad_param(
                    f"Invalid {where}: tiers must be in increasing order of `up_to`, got "
                    f"{tier['up_to']} after {previous}",
                    where,
                )
            previous = tier["up_to"]
    return mode, tiers


def _stream_event(index: int, event: Any, now: int) -> tuple[str, dict[str, Any], str, int]:
    """Schema checks on one v2 stream event: (event_name, payload, identifier, timestamp)."""
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise _v2_invalid(f"{where}: must be an object.")
    unknown = set(event) - {"event_name", "payload", "identifier", "timestamp"}
    if unknown:
        raise _v2_invalid(f"Received unknown parameter: {where}.{sorted(unknown)[0]}")
    event_name, payload = event.get("event_name"), event.get("payload")
    if not isinstance(event_name, str) or not event_name:
        raise _v2_invalid(f"{where}.event_name: required string.")
    if not isinstance(payload, dict):
        raise _v2_invalid(f"{where}.payload: required object.")
    identifier = event.get("identifier") or str(uuid.uuid4())
    if not isinstance(identifier, str):
        raise _v2_invalid(f"{where}.identifier: must be a string.")
    raw = event.get("timestamp")
    if raw is None:
        return event_name, payload, identifier, now
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _v2_invalid(f"{where}.timestamp: must be an RFC 3339 date-time with a time zone.")
    return event_name, payload, identifier, int(moment.timestamp())

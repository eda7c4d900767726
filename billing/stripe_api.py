"""Talking to Stripe: the SDK client, what each error means for the job, and retries.

stripe-python 16 retries nothing unless asked, and even then never a 429 without
Stripe-Should-Retry and never after reading Retry-After; a 5xx retried under the same
Idempotency-Key only gets Stripe's saved 500 back. So the client is built with
`max_network_retries=0` and `with_retries` owns retrying: every attempt gets a new idempotency
key from the caller, waits grow exponentially with jitter and a Retry-After is honoured.
"""

from __future__ import annotations

import enum
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import stripe

T = TypeVar("T")

_DUPLICATE = re.compile(r"^An event already exists with identifier ")


class Kind(enum.Enum):
    """What a Stripe error means for the request that got it."""

    RETRY = "retry"  # 429, 5xx, 409 in-progress, or no reply: try again (the identifier dedupes)
    DUPLICATE = "duplicate"  # a meter event with this identifier is already recorded: delivered
    REFUSED = "refused"  # a 4xx about this request: it will never succeed as it is
    FATAL = "fatal"  # the key is wrong or lacks permission: nothing else will succeed either
    SESSION_EXPIRED = "session_expired"  # a v2 meter event session ran out: renew, then retry


def connect(key: str, api_base: str = "") -> stripe.StripeClient:
    """A StripeClient for a secret key or a meter event session token; `api_base` serves both
    the API and meter events (Stripe's own hosts when empty)."""
    logging.getLogger("stripe").setLevel(logging.WARNING)  # its INFO line per request is noise
    bases = {"api": api_base, "meter_events": api_base} if api_base else None
    return stripe.StripeClient(key, base_addresses=bases, max_network_retries=0)  # type: ignore[arg-type]


def classify(error: stripe.StripeError) -> Kind:
    if isinstance(error, stripe.TemporarySessionExpiredError):
        return Kind.SESSION_EXPIRED
    if isinstance(error, (stripe.AuthenticationError, stripe.PermissionError)):
        return Kind.FATAL
    status = error.http_status
    if status is None or status == 429 or status == 409 or status >= 500:
        return Kind.RETRY
    if _DUPLICATE.match(error.user_message or ""):
        return Kind.DUPLICATE
    return Kind.REFUSED


def describe(error: stripe.StripeError) -> str:
    """One line for the ledger and the summary; never contains the key."""
    if classify(error) is Kind.FATAL:
        return f"Stripe refused the API key ({error.http_status}): check STRIPE_API_KEY and its permissions"
    status = error.http_status or "no reply"
    message = error.user_message or type(error).__name__
    return f"{status}: {message}"


def retry_after(error: stripe.StripeError) -> float | None:
    """Seconds asked for by a Retry-After header (delta-seconds or an HTTP date), if any."""
    value = (error.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    max_wait_seconds: float
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def wait(self, attempt: int, error: stripe.StripeError) -> float:
        """Exponential backoff with jitter, or longer if Stripe asked; capped by max_wait_seconds."""
        backoff = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
        return min(self.max_wait_seconds, max(backoff, retry_after(error) or 0.0))


def with_retries(policy: RetryPolicy, call: Callable[[int], T],
                 expire_session: Callable[[], None] | None = None) -> T:
    """`call(attempt)` until it returns. RETRY errors are retried up to policy.max_attempts; an
    expired v2 session is dropped (`expire_session`) and the call retried at once, for `call` to
    open a new one. Anything else, or the last error, is raised.

    `call` must use a new idempotency key per attempt: Stripe replays a saved 500 for a reused one.
    """
    attempt = 1
    while True:
        try:
            return call(attempt)
        except stripe.StripeError as error:
            kind = classify(error)
            renewable = kind is Kind.SESSION_EXPIRED and expire_session is not None
            if attempt >= policy.max_attempts or not (kind is Kind.RETRY or renewable):
                raise
            if renewable:
                expire_session()  # type: ignore[misc]
            else:
                policy.sleep(policy.wait(attempt, error))
            attempt += 1

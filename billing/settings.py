"""The `[stripe]` and `[billing]` config sections, and where the Stripe secret key comes from.

    [stripe]
    api_base = ""               # another server for both the API and meter events; "" = Stripe
    api_key_file = ""           # a file holding the secret key; the STRIPE_API_KEY variable wins
    namespace = "meterline"     # prefixes meter-event identifiers, product ids and price lookup keys

    [billing]
    streams = false             # send through v2 meter event streams (100 events a request)
    concurrency = 4             # customers sent to at once over v1 (one call per customer at a time)
    max_attempts = 6            # per request, for 429, 5xx and lost replies
    backoff_seconds = 0.5       # first retry wait, doubled per attempt, with jitter
    max_wait_seconds = 60.0     # cap on any one wait, a Retry-After included

The key is read from the environment or a file only, never from the config file itself, and is
handed straight to the Stripe SDK: nothing in Meterline prints or logs it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from meterline.config import Config, ConfigError, component_section

_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_]{0,19}$")


@dataclass(slots=True)
class StripeSection:
    api_base: str = ""
    api_key_file: str = ""
    namespace: str = "meterline"


@dataclass(slots=True)
class BillingSection:
    streams: bool = False
    concurrency: int = 4
    max_attempts: int = 6
    backoff_seconds: float = 0.5
    max_wait_seconds: float = 60.0


def stripe_section(config: Config, api_base: str | None = None) -> StripeSection:
    """`[stripe]`, validated; `api_base` (a command-line flag) overrides the file."""
    section = component_section(config, "stripe", StripeSection)
    if api_base:
        section.api_base = api_base
    if not _NAMESPACE.match(section.namespace):
        raise ConfigError(f"stripe.namespace {section.namespace!r}: use 1-20 of a-z 0-9 _ (not starting with _)")
    if section.api_base and not re.match(r"^https?://", section.api_base):
        raise ConfigError(f"stripe.api_base {section.api_base!r}: expected an http(s) URL")
    return section


def billing_section(config: Config) -> BillingSection:
    """`[billing]`, validated."""
    section = component_section(config, "billing", BillingSection)
    for name in ("concurrency", "max_attempts", "backoff_seconds", "max_wait_seconds"):
        value = getattr(section, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"billing.{name}: must be a positive number, got {value!r}")
    if not isinstance(section.streams, bool):
        raise ConfigError(f"billing.streams: expected true or false, got {section.streams!r}")
    return section


def api_key(section: StripeSection, environ: dict[str, str] | None = None) -> str:
    """The secret key: STRIPE_API_KEY, else the file named by stripe.api_key_file."""
    env = os.environ if environ is None else environ
    if env.get("STRIPE_API_KEY"):
        return env["STRIPE_API_KEY"].strip()
    if section.api_key_file:
        try:
            key = Path(section.api_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"stripe.api_key_file {section.api_key_file}: cannot read it ({exc.strerror})") from None
        if key:
            return key
        raise ConfigError(f"stripe.api_key_file {section.api_key_file}: the file is empty")
    raise ConfigError("no Stripe key: set STRIPE_API_KEY (or stripe.api_key_file in the config)")

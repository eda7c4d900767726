"""The tenant registry: tier, Stripe customer and status per tenant, kept in the store.

Tier and billing identity come from here, never from a client. The collector reads the registry
through `TenantRegistry`, a snapshot refreshed every few seconds and at once after a change made
through the admin API, so `meterline tenants suspend` takes effect without a restart.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from collector.errors import IngestError, Kind
from meterline.store import Store, StoreError, execute, rows

TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TIER = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(slots=True, frozen=True)
class Tenant:
    tenant_id: str
    tier: str
    status: str
    name: str | None = None
    stripe_customer_id: str | None = None


def add_tenant(store: Store, tenant_id: str, tier: str, name: str | None = None,
               stripe_customer_id: str | None = None) -> Tenant:
    """Register a tenant, or update tier/name/customer of an existing one (it stays in its status)."""
    if not TENANT_ID.match(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r}: use letters, digits and . _ : - (at most 128)")
    if not TIER.match(tier):
        raise ValueError(f"tier {tier!r}: use lower-case letters, digits, _ and - (e.g. basic, premium)")
    execute(store, """
        INSERT INTO tenants (tenant_id, name, tier, stripe_customer_id) VALUES (?, ?, ?, ?)
        ON CONFLICT (tenant_id) DO UPDATE SET
            tier = excluded.tier,
            name = coalesce(excluded.name, tenants.name),
            stripe_customer_id = coalesce(excluded.stripe_customer_id, tenants.stripe_customer_id),
            updated_at = now() AT TIME ZONE 'UTC'
    """, [tenant_id, name, tier, stripe_customer_id])
    tenant = get_tenant(store, tenant_id)
    assert tenant is not None
    return tenant


def set_status(store: Store, tenant_id: str, status: str) -> Tenant:
    if get_tenant(store, tenant_id) is None:
        raise ValueError(f"no tenant {tenant_id!r} is registered")
    execute(store, "UPDATE tenants SET status = ?, updated_at = now() AT TIME ZONE 'UTC' WHERE tenant_id = ?",
            [status, tenant_id])
    tenant = get_tenant(store, tenant_id)
    assert tenant is not None
    return tenant


def get_tenant(store: Store, tenant_id: str) -> Tenant | None:
    found = list_tenants(store, tenant_id)
    return found[0] if found else None


def list_tenants(store: Store, tenant_id: str | None = None) -> list[Tenant]:
    where, params = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
    return [
        Tenant(**row) for row in rows(store, f"""
            SELECT tenant_id, tier, status, name, stripe_customer_id FROM tenants {where} ORDER BY tenant_id
        """, params)
    ]


def tenant_dict(tenant: Tenant) -> dict[str, Any]:
    return {field: getattr(tenant, field) for field in Tenant.__slots__}


class TenantRegistry:
    """The collector's cached view of the registry, checked on every authenticated request."""

    def __init__(self, store: Store, max_age_seconds: float = 2.0) -> None:
        self.store = store
        self.max_age = max_age_seconds
        self._tenants: dict[str, Tenant] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def _snapshot(self, force: bool = False) -> dict[str, Tenant]:
        now = time.monotonic()
        # A miss forces a reload, but at most a few times a second so unknown-tenant spam stays cheap.
        stale = now - self._loaded_at > (0.25 if force else self.max_age)
        if stale:
            with self._lock:
                if time.monotonic() - self._loaded_at > (0.25 if force else self.max_age):
                    try:
                        self._tenants = {t.tenant_id: t for t in list_tenants(self.store)}
                        self._loaded_at = time.monotonic()
                    except StoreError:
                        if not self._tenants:
                            raise
        return self._tenants

    def require_active(self, tenant_id: str) -> Tenant:
        """The registered, active tenant, or a 403 (PERMISSION_DENIED) refusal."""
        tenant = self._snapshot().get(tenant_id) or self._snapshot(force=True).get(tenant_id)
        if tenant is None:
            raise IngestError(Kind.FORBIDDEN, f"tenant {tenant_id!r} is not registered")
        if tenant.status != "active":
            raise IngestError(Kind.FORBIDDEN, f"tenant {tenant_id!r} is {tenant.status}")
        return tenant

    def tier_of(self, tenant_id: str) -> str | None:
        tenant = self._snapshot().get(tenant_id)
        return tenant.tier if tenant else None

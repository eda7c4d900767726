"""Which Langfuse project a span goes to, as one SQL condition over the span's tenant and tier.

A tenant named by a project goes there; otherwise a tier named by a project goes there; every
other span goes to the shared (pooled) project, if one is configured. Tenant and tier are the
stored columns, set at ingest from the authenticated tenant and the tenant registry, never from
span content, and never rewritten: so a span's destination cannot change under a cursor while the
config stays the same (a tier change applies to spans ingested after it).

The route is kept as JSON in `export_cursors.route`, so `meterline stats` counts a destination's
lag with the very condition the exporter reads with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    tenants: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    rest: bool = False  # the shared project: spans no project claims
    claimed_tenants: tuple[str, ...] = ()  # tenants any project names (they beat tier routes)
    claimed_tiers: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({
            "tenants": list(self.tenants), "tiers": list(self.tiers), "rest": self.rest,
            "claimed_tenants": list(self.claimed_tenants), "claimed_tiers": list(self.claimed_tiers),
        }, separators=(",", ":"))


def route_condition(route: str, span: str = "s") -> str:
    """SQL that is true when span alias `span` belongs to the route JSON expression `route`."""

    def listed(key: str, column: str) -> str:
        return f"coalesce(list_contains(CAST(json_extract({route}, '$.{key}') AS VARCHAR[]), {span}.{column}), false)"

    return (
        f"({listed('tenants', 'tenant_id')} OR (NOT {listed('claimed_tenants', 'tenant_id')} AND ("
        f"{listed('tiers', 'tier')} OR (coalesce(CAST(json_extract({route}, '$.rest') AS BOOLEAN), false)"
        f" AND NOT {listed('claimed_tiers', 'tier')}))))"
    )

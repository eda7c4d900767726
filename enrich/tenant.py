"""Stamp each span with its tenant and tier, and catch spans that claim another tenant.

With a verified token the tenant is the token's. Tenant hints in the span (tenant.id on the
resource or span, baggage copies, Strands trace_attributes) that name someone else are a spoof
attempt: by default the span is rejected (counted as `tenant_spoof`, reported in partial_success);
with `auth.spoof_policy = "flag"` it is stored under the token's tenant with `spoofed = true` and
the claimed value in `tenant_hint`. Either way it is never stored under the claimed tenant.

In auth mode `none` (development) the hint IS the tenant; a span with none, or with several
different ones, is rejected.
"""

from __future__ import annotations

from enrich.batch import SpanBatch
from enrich.genai import tenant_hints
from enrich.tenants import TenantRegistry


class TenantProcessor:
    def __init__(self, registry: TenantRegistry, spoof_policy: str) -> None:
        self.registry = registry
        self.flag_spoofs = spoof_policy == "flag"

    def process(self, batch: SpanBatch) -> SpanBatch:
        tenant = batch.principal.tenant_id
        if tenant is None:
            return self._from_hints(batch)
        tier = batch.principal.tier
        kept = []
        spoofs = 0
        for span in batch.spans:
            hints = tenant_hints(span.attributes, span.resource)
            foreign = sorted(hint for hint in hints if hint != tenant)
            if foreign:
                if not self.flag_spoofs:
                    spoofs += 1
                    continue
                span.spoofed = True
                span.tenant_hint = foreign[0]
            elif hints:
                span.tenant_hint = tenant
            span.tenant_id = tenant
            span.tier = tier
            kept.append(span)
        if spoofs:
            batch.reject(
                "tenant_spoof", spoofs,
                f"{spoofs} span(s) rejected: their tenant attributes name a tenant other than the token's",
            )
        batch.spans = kept
        return batch

    def _from_hints(self, batch: SpanBatch) -> SpanBatch:
        kept = []
        missing = ambiguous = 0
        for span in batch.spans:
            hints = tenant_hints(span.attributes, span.resource)
            if len(hints) != 1:
                if hints:
                    ambiguous += 1
                else:
                    missing += 1
                continue
            (tenant,) = hints
            span.tenant_id = span.tenant_hint = tenant
            span.tier = self.registry.tier_of(tenant)
            kept.append(span)
        if missing:
            batch.reject("tenant_missing", missing,
                         f"{missing} span(s) rejected: auth mode 'none' needs a tenant.id attribute")
        if ambiguous:
            batch.reject("tenant_ambiguous", ambiguous,
                         f"{ambiguous} span(s) rejected: they name more than one tenant")
        batch.spans = kept
        return batch

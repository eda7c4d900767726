"""GET /v1/usage?period=YYYY-MM: a tenant's own usage report, authenticated by its own JWT.

The tenant is the token's, as for ingest; asking for another tenant (`?tenant=`) is 403, and in
auth mode `none` nobody has a verified identity, so the endpoint refuses everyone (403). The
answer is the usage report without what is ours alone: LLM cost, margin, model comparison.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from aiohttp import web

from collector.errors import IngestError, Kind
from collector.service import IngestService
from metering.meters import Meterer, Period
from meterline.output import to_json
from pricing.catalog import Catalog
from pricing.report import tenant_view, usage_report


class UsageApi:
    def __init__(self, service: IngestService, meterer: Meterer, catalog: Catalog) -> None:
        self.service = service
        self.meterer = meterer
        self.catalog = catalog

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/v1/usage", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        try:
            if request.method != "GET":
                raise IngestError(Kind.METHOD_NOT_ALLOWED, f"{request.method} is not allowed; use GET")
            tenant = (await self.service.authenticate(request.headers.get("Authorization"))).tenant_id
            if tenant is None:
                raise IngestError(Kind.FORBIDDEN, "usage needs a verified tenant token (auth mode is 'none')")
            asked = request.query.get("tenant")
            if asked is not None and asked != tenant:
                raise IngestError(Kind.FORBIDDEN, "a token can only read its own tenant's usage")
            try:
                period = Period.month(request.query.get("period") or datetime.now(timezone.utc).strftime("%Y-%m"))
            except ValueError as exc:
                raise IngestError(Kind.INVALID, str(exc)) from None
            report = tenant_view(await asyncio.to_thread(usage_report, self.meterer, self.catalog, period, tenant))
        except IngestError as error:
            headers = {"Allow": "GET"} if error.kind is Kind.METHOD_NOT_ALLOWED else {}
            return web.json_response({"code": error.kind.grpc_code.value[0], "message": error.message},
                                     status=error.kind.http_status, headers=headers)
        return web.Response(text=to_json(report), content_type="application/json")

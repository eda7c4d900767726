"""`meterline serve`: the store, the enrich chain, the writer and three listeners, wired from config.

Shutdown (SIGINT/SIGTERM) stops accepting, lets in-flight requests finish, drains the writer
(so everything acknowledged is committed), resolves trace context and closes the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from collector.grpc_receiver import start_grpc_server
from collector.http_receiver import HttpReceiver
from collector.langfuse.config import load_settings
from collector.langfuse.exporter import build_exporters
from collector.service import IngestService
from collector.usage_api import UsageApi
from collector.writer import SpanWriter
from enrich.auth import Authenticator, warn_if_unauthenticated
from enrich.context import ContextResolver
from enrich.pipeline import EnrichPipeline
from enrich.tenants import TenantRegistry
from meterline.admin import AdminApi
from meterline.config import Config, ConfigError
from meterline.store import LocalStore
from pricing.catalog import CatalogError
from pricing.report import build_meterer, catalog_for

log = logging.getLogger(__name__)


class BackgroundTask(Protocol):
    """Work that lives as long as the server (an exporter draining the store to a destination)."""

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class Collector:
    """A running collector. `extra_routes` join the HTTP port (usage API); `background` tasks run
    beside the listeners and are awaited, after `stop` is set, before the store closes."""

    config: Config
    store: LocalStore
    writer: SpanWriter
    service: IngestService
    registry: TenantRegistry
    resolver: ContextResolver
    authenticator: Authenticator
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)


def build_collector(config: Config) -> Collector:
    authenticator = Authenticator(config)  # refuses to start without keys in jwt mode
    langfuse = load_settings(config)  # likewise refuses a missing Langfuse secret
    store = LocalStore.wait_for_writer_lock(config.db, seconds=5)
    registry = TenantRegistry(store)
    pipeline = EnrichPipeline(config, registry)
    resolver = ContextResolver(store, pipeline.feature_rules)
    writer = SpanWriter(
        store,
        max_queued_spans=config.server.queue_max_spans,
        max_queued_bytes=config.server.queue_max_bytes,
        retry_after=config.server.retry_after_seconds,
    )
    service = IngestService(
        authenticator, registry, pipeline, writer,
        max_request_bytes=config.server.max_request_bytes,
        max_inflight_bytes=4 * config.server.max_request_bytes,
        retry_after=config.server.retry_after_seconds,
    )
    try:
        catalog = catalog_for(config)
    except CatalogError as exc:
        store.close()
        raise ConfigError(f"plan catalog refused: {exc}") from None
    usage_api = UsageApi(service, build_meterer(store, config), catalog)
    return Collector(config, store, writer, service, registry, resolver, authenticator, usage_api.routes(),
                     background=build_exporters(langfuse, store))


async def serve(collector: Collector) -> None:
    config = collector.config
    server = config.server
    warn_if_unauthenticated(config.auth.mode)
    collector.writer.start()
    collector.resolver.start()

    http_app = web.Application(client_max_size=server.max_request_bytes)
    http_app.add_routes(HttpReceiver(collector.service, server.max_request_bytes).routes())
    http_app.add_routes(collector.extra_routes)
    # Decompression is ours (collector/otlp.py): bounded, so a gzip bomb cannot inflate in memory.
    http_runner = web.AppRunner(http_app, access_log=None, auto_decompress=False)
    await http_runner.setup()
    await web.TCPSite(http_runner, server.host, server.http_port).start()

    grpc_server, grpc_port = await start_grpc_server(collector.service, server.host, server.grpc_port, server.max_request_bytes)

    admin = AdminApi(collector.store, on_write=collector.registry.invalidate)
    admin_runner = web.AppRunner(admin.app(), access_log=None)
    await admin_runner.setup()
    admin_site = web.TCPSite(admin_runner, "127.0.0.1", server.admin_port)
    await admin_site.start()
    admin_port = admin_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sidecar = admin.write_sidecar(config.db, f"http://127.0.0.1:{admin_port}")

    log.info(
        "meterline collector: OTLP/HTTP %s:%d, OTLP/gRPC %s:%d, store %s (auth %s)",
        server.host, server.http_port, server.host, grpc_port, config.db, config.auth.mode,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(task.run(stop)) for task in collector.background]
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining accepted spans")
        stop.set()
        await grpc_server.stop(grace=5)
        await http_runner.cleanup()
        for task, outcome in zip(collector.background, await asyncio.gather(*tasks, return_exceptions=True)):
            if isinstance(outcome, BaseException):
                log.error("background task %s failed", type(task).__name__, exc_info=outcome)
        collector.writer.stop()
        collector.service.shutdown()
        try:
            collector.resolver.stop()
        except Exception:  # recomputed from the watermark at the next start
            log.exception("final trace-context pass failed")
        await admin_runner.cleanup()
        with suppress(FileNotFoundError):
            sidecar.unlink()
        collector.store.close()
        log.info("stopped; %d spans committed this run", collector.writer.committed_spans)

"""`meterline demo`: the whole product on real agent telemetry, in about a minute."""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from enrich.auth import issue_dev_token
from enrich.context import wait_until_resolved
from enrich.tenants import add_tenant
from metering.meters import Period
from meterline.process import CollectorProcess
from meterline.store import open_store
from pricing.report import build_meterer, catalog_for, render_table, usage_report


@click.command()
@click.option("--tenants", "tenant_count", type=click.IntRange(1, 12), default=8, show_default=True,
              help="How many tenants (a few big ones, then a long tail).")
@click.option("--minutes", type=click.FloatRange(0.01, 120), default=1.0, show_default=True,
              help="Wall-clock minutes of agent traffic.")
@click.option("--backfill-days", type=click.IntRange(0, 35),
              help="Spread the traffic over the last N days (default: the current month so far).")
@click.option("--workers", type=click.IntRange(1, 16), default=4, show_default=True, help="Concurrent agent runtimes.")
@click.option("--db", help="DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)")
@click.option("--dashboard", is_flag=True, help="Keep the collector running and open the dashboards afterwards.")
@click.pass_context
def demo(ctx: click.Context, tenant_count: int, minutes: float, backfill_days: int | None, workers: int,
         db: str | None, dashboard: bool) -> None:
    """Run a multi-tenant fleet of Strands CRM agents into Meterline and print the month's bill."""
    from demo.fleet import TENANTS, run_fleet  # imports Strands: only when the demo runs

    logging.getLogger("strands").setLevel(logging.WARNING)  # its INFO lines would break the progress bar

    config = ctx.obj["config"]
    db_path = Path(db or config.db).resolve()
    secret = config.jwt_secret or secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    window_start = now - timedelta(days=backfill_days) if backfill_days is not None else now.replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    window = (window_start, now - timedelta(minutes=5) if now - window_start > timedelta(minutes=10) else now)
    tenants = list(TENANTS[:tenant_count])

    click.echo(f"Meterline demo: {len(tenants)} tenants, {minutes:g} min of Strands agents, store {db_path}")
    collector = CollectorProcess(db_path, *(["--config", config.source] if config.source else []),
                                 env={"METERLINE_JWT_SECRET": secret})
    collector.start()
    click.echo(f"  collector: OTLP/HTTP {collector.http}  OTLP/gRPC {collector.grpc}  (log {collector.log})")
    try:
        store = open_store(db_path)
        for tenant in tenants:
            add_tenant(store, tenant.tenant_id, tenant.tier, name=tenant.name,
                       stripe_customer_id=f"cus_demo_{tenant.tenant_id.replace('-', '_')}")
        tokens = {t.tenant_id: issue_dev_token(secret, t.tenant_id, 6 * 3600) for t in tenants}
        result = run_fleet(tenants, tokens, collector.http, collector.grpc, db_path.with_name("demo_crm.sqlite"),
                           minutes, window, workers)
        click.echo(f"  {result.workflows} workflows ({result.failed} did not achieve their outcome), "
                   f"{result.spans_exported} spans exported, {result.spans_failed} failed")
        if not wait_until_resolved(store):
            click.echo("  warning: trace context still settling; numbers may move slightly", err=True)
        report = usage_report(build_meterer(store, config), catalog_for(config), Period.month(now.strftime("%Y-%m")))
        click.echo()
        click.echo(render_table(report))
        click.echo(f"\nNext: meterline stats --db {db_path}   |   meterline dashboard --db {db_path}")
        store.close()
        if dashboard:
            click.echo("dashboards running; Ctrl-C stops them and the collector")
            subprocess.call([sys.executable, "-m", "meterline.cli", "dashboard", "--db", str(db_path)])
    finally:
        collector.stop()

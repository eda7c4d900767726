"""The `meterline` command. Subcommands parse options and hand them to the package that does the work."""

from __future__ import annotations

import asyncio
import logging
import sys
import click

from meterline.config import Config, ConfigError, load_config
from meterline.output import table, to_json
from meterline.store import Store, StoreError, open_store

DB_HELP = "DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)"


def _config(ctx: click.Context) -> Config:
    return ctx.obj["config"]


def _store(ctx: click.Context, db: str | None, create: bool = False) -> Store:
    try:
        return open_store(db or _config(ctx).db, create=create)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="METERLINE_CONFIG",
              help="TOML config file (env METERLINE_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Meterline: OTLP in, tenant-exact usage and bills out."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        ctx.obj = {"config": load_config(config_path)}
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--db", help=DB_HELP)
@click.option("--host", help="Address the OTLP listeners bind (default 127.0.0.1).")
@click.option("--http-port", type=int, help="OTLP/HTTP port (default 4318).")
@click.option("--grpc-port", type=int, help="OTLP/gRPC port (default 4317).")
@click.option("--admin-port", type=int, help="Loopback admin API port for other commands (default: any free port).")
@click.option("--auth", type=click.Choice(["jwt", "none"]), help="How tenants are identified (default jwt).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.pass_context
def serve(ctx: click.Context, db: str | None, host: str | None, http_port: int | None, grpc_port: int | None,
          admin_port: int | None, auth: str | None, config_path: str | None) -> None:
    """Run the collector: receive OTLP, authenticate, enrich, store."""
    from collector.server import build_collector, serve as run

    try:
        config = load_config(config_path) if config_path else _config(ctx)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for name, value in (("host", host), ("http_port", http_port), ("grpc_port", grpc_port), ("admin_port", admin_port)):
        if value is not None:
            setattr(config.server, name, value)
    if db:
        config.db = db
    if auth:
        config.auth.mode = auth
    try:
        collector = build_collector(config)
    except (ConfigError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(run(collector))


@main.command()
@click.option("--db", help=DB_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def stats(ctx: click.Context, db: str | None, fmt: str) -> None:
    """Spans stored, by tenant; refused requests and spans by reason."""
    from meterline.stats import collect_stats

    report = collect_stats(_store(ctx, db))
    if fmt == "json":
        click.echo(to_json(report))
        return
    click.echo(f"spans stored: {report['spans']}  traces: {report['traces']}  "
               f"last received: {report['last_received'] or '-'}")
    click.echo("\nby tenant")
    click.echo(table([(t["tenant_id"], t["tier"], t["spans"], t["traces"], t["spoofed_spans"]) for t in report["tenants"]],
                     ["tenant", "tier", "spans", "traces", "spoofed"], right_align=(2, 3, 4)))
    click.echo("\nrejected")
    click.echo(table([(r["signal"], r["reason"], r["requests"], r["items"]) for r in report["rejected"]],
                     ["signal", "reason", "requests", "items"], right_align=(2, 3)))
    if report["exports"]:
        click.echo("\nexports")
        click.echo(table([(e["destination"], e["acked_seq"], e["lag_spans"], e["oldest_unexported_age_seconds"],
                           e["spans_sent"], e["rejected_spans"], e["consecutive_failures"], e["last_success_at"] or "-",
                           e["last_error"] or "") for e in report["exports"]],
                         ["destination", "acked seq", "lag spans", "oldest (s)", "sent", "rejected", "failures",
                          "last success", "last error"], right_align=(1, 2, 3, 4, 5, 6)))


@main.group()
def tenants() -> None:
    """The tenant registry: tier, Stripe customer, status."""


@tenants.command("add")
@click.argument("tenant_id")
@click.option("--tier", required=True, help="Plan tier, e.g. basic, premium, enterprise.")
@click.option("--stripe-customer", help="Stripe customer id (cus_...) the tenant is billed as.")
@click.option("--name", help="Display name.")
@click.option("--db", help=DB_HELP)
@click.pass_context
def tenants_add(ctx: click.Context, tenant_id: str, tier: str, stripe_customer: str | None, name: str | None,
                db: str | None) -> None:
    """Register a tenant (or update its tier, name, customer)."""
    from enrich.tenants import add_tenant

    try:
        tenant = add_tenant(_store(ctx, db, create=True), tenant_id, tier, name=name, stripe_customer_id=stripe_customer)
    except (ValueError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"tenant {tenant.tenant_id}: tier {tenant.tier}, {tenant.status}"
               + (f", Stripe customer {tenant.stripe_customer_id}" if tenant.stripe_customer_id else ""))


@tenants.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--db", help=DB_HELP)
@click.pass_context
def tenants_list(ctx: click.Context, fmt: str, db: str | None) -> None:
    """List registered tenants."""
    from enrich.tenants import list_tenants, tenant_dict

    found = list_tenants(_store(ctx, db))
    if fmt == "json":
        click.echo(to_json([tenant_dict(t) for t in found]))
        return
    click.echo(table([(t.tenant_id, t.tier, t.status, t.stripe_customer_id, t.name) for t in found],
                     ["tenant", "tier", "status", "stripe customer", "name"]))


def _set_status(ctx: click.Context, tenant_id: str, status: str, db: str | None) -> None:
    from enrich.tenants import set_status

    try:
        tenant = set_status(_store(ctx, db), tenant_id, status)
    except (ValueError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"tenant {tenant.tenant_id}: {tenant.status}")


@tenants.command("suspend")
@click.argument("tenant_id")
@click.option("--db", help=DB_HELP)
@click.pass_context
def tenants_suspend(ctx: click.Context, tenant_id: str, db: str | None) -> None:
    """Refuse the tenant's telemetry (403) from now on."""
    _set_status(ctx, tenant_id, "suspended", db)


@tenants.command("activate")
@click.argument("tenant_id")
@click.option("--db", help=DB_HELP)
@click.pass_context
def tenants_activate(ctx: click.Context, tenant_id: str, db: str | None) -> None:
    """Accept a suspended tenant's telemetry again."""
    _set_status(ctx, tenant_id, "active", db)


@main.command()
@click.argument("tenant_id")
@click.option("--ttl", type=int, default=86400, show_default=True, help="Seconds until the token expires.")
@click.option("--db", help=DB_HELP)
@click.pass_context
def token(ctx: click.Context, tenant_id: str, ttl: int, db: str | None) -> None:
    """Print an HS256 development token for a registered tenant."""
    from enrich.auth import issue_dev_token
    from enrich.tenants import get_tenant

    config = _config(ctx)
    if not config.jwt_secret:
        raise click.ClickException("no HS256 secret: set METERLINE_JWT_SECRET (or auth.jwt_secret in the config)")
    tenant = get_tenant(_store(ctx, db), tenant_id)
    if tenant is None:
        raise click.ClickException(f"no tenant {tenant_id!r} is registered: `meterline tenants add {tenant_id} --tier ...`")
    if tenant.status != "active":
        click.echo(f"warning: tenant {tenant_id} is {tenant.status}; its requests will be refused (403)", err=True)
    click.echo(issue_dev_token(config.jwt_secret, tenant_id, ttl, config.auth.tenant_claim,
                               issuer=config.auth.issuer or None, audience=config.auth.audience or None))



def _period(period: str | None, start: str | None, end: str | None):
    from datetime import datetime, timezone

    from metering.meters import Period, parse_instant

    try:
        if start or end:
            if not (start and end) or period:
                raise ValueError("give either --period, or both --start and --end")
            return Period.between(parse_instant(start), parse_instant(end))
        return Period.month(period or datetime.now(timezone.utc).strftime("%Y-%m"))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--period", help="Calendar month in UTC, YYYY-MM (default: the current month).")
@click.option("--start", help="Start of a custom [start, end) range, ISO 8601 (UTC unless an offset is given).")
@click.option("--end", help="End of the custom range (exclusive).")
@click.option("--tenant", help="Only this tenant.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--compare-models", is_flag=True, help="Also price the usage under each pricing model's reference plan.")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), help="Plan catalog TOML (default: config or shipped).")
@click.option("--db", help=DB_HELP)
@click.pass_context
def usage(ctx: click.Context, period: str | None, start: str | None, end: str | None, tenant: str | None, fmt: str,
          compare_models: bool, catalog: str | None, db: str | None) -> None:
    """Usage, LLM cost, charges, total and margin per tenant for a period."""
    from enrich.context import settle
    from enrich.features import FeatureRules
    from pricing.catalog import CatalogError
    from pricing.report import build_meterer, catalog_for, render_csv, render_table, usage_report

    config = _config(ctx)
    if catalog:
        config.pricing.catalog = catalog
    window = _period(period, start, end)
    try:
        plans = catalog_for(config)
    except CatalogError as exc:
        raise click.ClickException(f"plan catalog refused: {exc}") from None
    store = _store(ctx, db)
    if not settle(store, FeatureRules(config.features)):
        click.echo("warning: the running collector is still resolving trace context; totals may still move",
                   err=True)
    report = usage_report(build_meterer(store, config), plans, window, tenant, compare_models)
    if fmt == "json":
        click.echo(to_json(report))
    elif fmt == "csv":
        click.echo(render_csv(report), nl=False)
    else:
        click.echo(render_table(report))



def _register_component_commands() -> None:
    """Commands that live with their component (billing/, dashboards/, demo/)."""
    from billing.commands import bill, stripe
    from dashboards.commands import dashboard
    from demo.commands import demo

    for command in (bill, stripe, dashboard, demo):
        main.add_command(command)


_register_component_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

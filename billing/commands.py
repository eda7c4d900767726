"""`meterline bill` and `meterline stripe`: the scheduled billing job's commands."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import click

from metering.meters import parse_instant
from meterline.config import Config, ConfigError
from meterline.output import table, to_json
from meterline.store import StoreError, open_store

DB_HELP = "DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)"
API_BASE_HELP = "Send Stripe API and meter-event calls to this URL instead of Stripe (or stripe.api_base)."


def _instant(text: str | None) -> datetime | None:
    """ISO 8601 (UTC unless it carries an offset) as a naive UTC datetime."""
    if text is None:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an ISO 8601 instant, e.g. 2026-11-21T10:00:00Z",
                                 param_hint="--through") from None


@click.command()
@click.option("--period", required=True, help="Calendar month in UTC, YYYY-MM.")
@click.option("--through", help="Bill usage that started before this instant (ISO 8601; default: now).")
@click.option("--dry-run", is_flag=True,
              help="Show what would be sent; contact no one, leave the ledger alone (the run is logged as dry).")
@click.option("--streams/--no-streams", default=None,
              help="Send through v2 meter event streams, 100 events a request (default: billing.streams).")
@click.option("--stripe-api-base", help=API_BASE_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--db", help=DB_HELP)
@click.pass_context
def bill(ctx: click.Context, period: str, through: str | None, dry_run: bool, streams: bool | None,
         stripe_api_base: str | None, fmt: str, db: str | None) -> None:
    """Push the period's usage to Stripe Billing Meters, exactly once. Exits 1 if anything failed."""
    from billing.job import BillingRefused, BillRequest, run_bill
    from billing.settings import api_key, billing_section, stripe_section
    from billing.summary import render_table
    from metering.meters import Period
    from pricing.catalog import CatalogError

    config: Config = ctx.obj["config"]
    try:
        window = Period.month(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    until = _instant(through)
    try:
        stripe_settings = stripe_section(config, stripe_api_base)
        billing = billing_section(config)
        key = None if dry_run else api_key(stripe_settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    request = BillRequest(window, until, dry_run, billing.streams if streams is None else streams)
    try:
        store = open_store(db or config.db)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        summary = run_bill(store, config, request, stripe_settings, billing, key)
    except (BillingRefused, CatalogError, StoreError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(to_json(summary.to_json()) if fmt == "json" else render_table(summary))
    if summary.failed:
        ctx.exit(1)


@click.group()
def stripe() -> None:
    """Stripe objects the plan catalog needs."""


@stripe.command("sync")
@click.option("--stripe-api-base", help=API_BASE_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def stripe_sync(ctx: click.Context, stripe_api_base: str | None, fmt: str) -> None:
    """Find or create the meters, products and prices of the billed plans. Exits 1 if any failed."""
    import stripe as stripe_sdk

    from billing.settings import api_key, billing_section, stripe_section
    from billing.stripe_api import RetryPolicy, connect, describe
    from billing.stripe_setup import sync_catalog
    from pricing.catalog import CatalogError
    from pricing.report import catalog_for

    config: Config = ctx.obj["config"]
    try:
        settings = stripe_section(config, stripe_api_base)
        billing = billing_section(config)
        client = connect(api_key(settings), settings.api_base)
        catalog = catalog_for(config)
    except (ConfigError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
    policy = RetryPolicy(billing.max_attempts, billing.backoff_seconds, billing.max_wait_seconds)
    try:
        items = sync_catalog(client, catalog, settings.namespace, policy)
    except stripe_sdk.StripeError as exc:
        raise click.ClickException(describe(exc)) from None
    if fmt == "json":
        click.echo(to_json([{"kind": i.kind, "name": i.name, "stripe_id": i.stripe_id, "action": i.action,
                             "detail": i.detail} for i in items]))
    else:
        click.echo(table([(i.kind, i.name, i.stripe_id, i.action, i.detail) for i in items],
                         ["kind", "name", "stripe id", "action", "detail"]))
        actions = Counter(i.action for i in items)
        click.echo(", ".join(f"{actions[a]} {a}" for a in ("exists", "created", "replaced", "failed")))
    if any(i.action == "failed" for i in items):
        ctx.exit(1)

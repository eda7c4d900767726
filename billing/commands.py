"""`meterline bill` and `meterline stripe`: the scheduled billing job's commands."""

from __future__ import annotations

import click


@click.command()
@click.option("--period", required=True, help="Calendar month in UTC, YYYY-MM.")
@click.option("--through", help="Bill usage that started before this instant (ISO 8601; default: now).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing, write nothing.")
@click.option("--db", help="DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)")
@click.pass_context
def bill(ctx: click.Context, period: str, through: str | None, dry_run: bool, db: str | None) -> None:
    """Push the period's usage to Stripe Billing Meters, exactly once."""
    raise click.ClickException("billing job: in progress")


@click.group()
def stripe() -> None:
    """Stripe objects the plan catalog needs."""

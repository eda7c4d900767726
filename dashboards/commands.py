"""`meterline dashboard`: the finance dashboards (Streamlit)."""

from __future__ import annotations

import click


@click.command()
@click.option("--db", help="DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)")
@click.option("--port", type=int, default=8501, show_default=True, help="Port the dashboard listens on.")
@click.pass_context
def dashboard(ctx: click.Context, db: str | None, port: int) -> None:
    """Open the finance dashboards in Streamlit."""
    raise click.ClickException("dashboards: in progress")

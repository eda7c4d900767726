"""`meterline dashboard`: the finance dashboards (Streamlit), read-only over the store.

Config: the optional [dashboard] section takes `address` (default 127.0.0.1, loopback only:
the dashboards show every tenant's revenue and have no login of their own).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from meterline.config import ConfigError, component_section
from meterline.store import StoreError, open_store

APP = Path(__file__).with_name("app.py")


@dataclass(slots=True)
class DashboardConfig:
    address: str = "127.0.0.1"


@click.command()
@click.option("--db", help="DuckDB store file (env METERLINE_DB; default ./meterline.duckdb)")
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True,
              help="Port the dashboard listens on.")
@click.pass_context
def dashboard(ctx: click.Context, db: str | None, port: int) -> None:
    """Open the finance dashboards in Streamlit."""
    config = ctx.obj["config"]
    try:
        settings = component_section(config, "dashboard", DashboardConfig)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    store = Path(db or config.db).resolve()
    if not store.exists():
        raise click.ClickException(f"no store at {store}: run `meterline serve` (or `make demo`) first")
    try:
        # Dashboards open the file read-only, which cannot add tables or columns a newer Meterline
        # expects: bring an older store's schema up to date once (a running server has done so).
        open_store(store).close()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    env = {**os.environ, "METERLINE_DB": str(store)}
    if config.source:
        env["METERLINE_CONFIG"] = str(Path(config.source).resolve())
    click.echo(f"Meterline dashboards on http://{settings.address}:{port} (store {store})")
    sys.stdout.flush()
    # exec: the dashboard process IS Streamlit, so a signal to it reaches the server directly.
    os.execve(sys.executable, [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", settings.address,
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ], env)

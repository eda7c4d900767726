from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support import Server, cli


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "meterline.duckdb"


@pytest.fixture
def server(db: Path) -> Iterator[Server]:
    """A running collector (auth jwt) with tenants acme (premium) and globex (basic) registered."""
    cli("tenants", "add", "acme", "--tier", "premium", "--stripe-customer", "cus_acme", db=db)
    cli("tenants", "add", "globex", "--tier", "basic", db=db)
    with Server(db) as running:
        yield running

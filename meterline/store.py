"""Access to the DuckDB store, whether this process can open the file or a running server holds it.

DuckDB lets one process at a time open a database file for writing. `meterline serve` holds it
for as long as it runs, so every other command reaches the store through `open_store()`:

- if the file can be opened, a `LocalStore` works on it directly;
- if a server holds it, the server has written `<db>.admin.json` (mode 0600: URL and token of
  its loopback-only admin API) and a `RemoteStore` sends the same SQL there.

Both speak the same two verbs, `query` (returns an Arrow table) and `transaction` (writes), so
metering, billing, dashboards and the CLI never care which one they hold.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import duckdb
import httpx
import polars as pl
import pyarrow as pa

from meterline.schema import DDL

Params = Sequence[Any]
Step = tuple[str, Params]


class StoreError(RuntimeError):
    pass


class Store(Protocol):
    def query(self, sql: str, params: Params = ()) -> pa.Table: ...

    def transaction(self, steps: Sequence[Step]) -> None: ...

    def close(self) -> None: ...


def execute(store: Store, sql: str, params: Params = ()) -> None:
    """One write statement in its own transaction."""
    store.transaction([(sql, params)])


def rows(store: Store, sql: str, params: Params = ()) -> list[dict[str, Any]]:
    return store.query(sql, params).to_pylist()


def frame(store: Store, sql: str, params: Params = ()) -> pl.DataFrame:
    return pl.from_arrow(store.query(sql, params))  # type: ignore[return-value]


def sidecar_path(db_path: str | os.PathLike[str]) -> Path:
    return Path(f"{db_path}.admin.json")


class LocalStore:
    """The store file opened in this process. Thread-safe: each thread gets its own cursor."""

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        try:
            self.connection = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(self.path, str(exc)) from None
            raise
        if not read_only:
            self.connection.execute(DDL)
        self._local = threading.local()

    @classmethod
    def wait_for_writer_lock(cls, path: str | os.PathLike[str], seconds: float) -> "LocalStore":
        """Open for writing, waiting out a reader (a dashboard query, a CLI command) briefly holding the file."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return cls(path)
            except StoreLocked:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.connection.cursor()
        return cursor

    def query(self, sql: str, params: Params = ()) -> pa.Table:
        try:
            return self.cursor().execute(sql, list(params)).to_arrow_table()
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from exc

    def transaction(self, steps: Sequence[Step]) -> None:
        cursor = self.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            for sql, params in steps:
                cursor.execute(sql, list(params))
            cursor.execute("COMMIT")
        except duckdb.Error as exc:
            cursor.execute("ROLLBACK")
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        self.connection.close()


class StoreLocked(StoreError):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path} is held by another process: {detail}")
        self.path = path


class RemoteStore:
    """The store of a running `meterline serve`, reached through its admin API."""

    def __init__(self, url: str, token: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def query(self, sql: str, params: Params = ()) -> pa.Table:
        response = self._post("/admin/query", {"sql": sql, "params": list(params)})
        with pa.ipc.open_stream(response.content) as reader:
            return reader.read_all()

    def transaction(self, steps: Sequence[Step]) -> None:
        self._post("/admin/transaction", {"steps": [[sql, list(params)] for sql, params in steps]})

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """Params travel as JSON: pass timestamps and decimals as strings and cast them in SQL."""
        try:
            response = self._client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise StoreError(f"the server holding the store at {self.url} did not answer: {exc}") from exc
        if response.status_code != 200:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError):
                message = response.text
            raise StoreError(message)
        return response

    def close(self) -> None:
        self._client.close()


def open_store(path: str | os.PathLike[str], read_only: bool = False, create: bool = False) -> Store:
    """Open the store for a CLI command: directly if free, else through the server holding it.

    `read_only` opens the file without taking the write lock from other readers (DuckDB still
    refuses a writer while it is open, so readers should close it promptly). Without `create`, a
    missing file is an error: a mistyped --db must not quietly report an empty store.
    """
    if not create and not Path(path).exists():
        raise StoreError(f"no Meterline store at {path}: check --db / METERLINE_DB, or create one with "
                         "`meterline tenants add` or `meterline serve`")
    try:
        return LocalStore(path, read_only=read_only and Path(path).exists())
    except StoreLocked as locked:
        try:
            info = json.loads(sidecar_path(path).read_text())
        except (OSError, ValueError):
            raise StoreError(
                f"{locked}; no Meterline server admin file ({sidecar_path(path)}) was found, "
                "so the holder is not a running `meterline serve`"
            ) from None
        return RemoteStore(info["url"], info["token"])

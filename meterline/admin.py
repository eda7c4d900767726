"""The loopback-only admin API through which CLI commands use a store that `serve` holds.

It speaks the two verbs of meterline.store.Store: POST /admin/query (SQL in, Arrow IPC stream
out) and POST /admin/transaction (SQL statements run in one transaction). Anyone who can read
the 0600 sidecar file `<db>.admin.json` (URL and a random token) can use it, which is exactly
who could open the database file itself: it grants nothing the filesystem does not.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from aiohttp import web

from meterline.store import LocalStore, StoreError, sidecar_path


class AdminApi:
    def __init__(self, store: LocalStore, on_write: Callable[[], None]) -> None:
        self.store = store
        self.on_write = on_write
        self.token = secrets.token_urlsafe(32)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._auth])
        app.add_routes([
            web.post("/admin/query", self._query),
            web.post("/admin/transaction", self._transaction),
        ])
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        supplied = request.headers.get("Authorization", "")
        if not hmac.compare_digest(supplied.encode(), f"Bearer {self.token}".encode()):
            return web.json_response({"error": "admin token missing or wrong"}, status=401)
        return await handler(request)

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sql, params = body["sql"], body.get("params", [])
            table = await asyncio.to_thread(self.store.query, sql, params)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"malformed admin request: {exc!r}"}, status=400)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return web.Response(body=sink.getvalue().to_pybytes(), content_type="application/vnd.apache.arrow.stream")

    async def _transaction(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            steps = [(sql, params) for sql, params in body["steps"]]
            await asyncio.to_thread(self.store.transaction, steps)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"malformed admin request: {exc!r}"}, status=400)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.on_write()
        return web.json_response({"ok": True})

    def write_sidecar(self, db_path: str, url: str) -> Path:
        path = sidecar_path(db_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"url": url, "token": self.token, "pid": os.getpid()}, handle)
        os.replace(tmp, path)
        return path

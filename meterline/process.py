"""Running `meterline serve` as a child process: for the demo, and for tests that need a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from meterline.store import sidecar_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CollectorProcess:
    """`meterline serve` on free loopback ports; ready once its admin sidecar file exists."""

    def __init__(self, db: Path, *extra_args: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.db = Path(db)
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.extra_args = extra_args
        self.env = {**os.environ, **(env or {})}
        self.log = log or self.db.with_name(self.db.name + ".serve.log")
        self.process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30) -> "CollectorProcess":
        sidecar = sidecar_path(self.db)
        sidecar.unlink(missing_ok=True)  # a kill -9 leaves it behind
        self._log_handle = self.log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meterline.cli", "serve", "--db", str(self.db),
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.extra_args],
            stdout=self._log_handle, stderr=subprocess.STDOUT, env=self.env,
        )
        deadline = time.monotonic() + timeout
        while not sidecar.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"meterline serve exited with {self.process.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"meterline serve did not become ready in {timeout}s:\n{self.log.read_text()}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: the collector drains what it accepted, then exits."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "CollectorProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

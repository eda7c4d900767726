"""A local server that honours Langfuse's OTLP ingestion contract, for exporter tests.

`POST /api/public/otel/v1/traces` answers as langfuse/langfuse answers it
(web/src/pages/api/public/otel/v1/traces/index.ts and REFERENCE.md section 4):

- `Authorization: Basic base64(public_key:secret_key)` of a known project, else 401;
- a project whose ingestion is suspended: 403;
- Content-Type must contain application/x-protobuf or application/json, else 400;
  `Content-Encoding: gzip` is inflated (a bad gzip body: 400); an undecodable body: 400;
- any span without a usable traceId/spanId: 400 for the WHOLE batch (no partial success);
- `x-langfuse-ingestion-version` above 4: 400;
- a body over `max_body_bytes`: 413 (assumption: the limit sits in front of Langfuse);
- otherwise 200 with a JSON body. Langfuse keeps one observation per span id (a re-sent span
  replaces itself), so `latest()` is what its UI would show; `received()` keeps every copy.

Test controls are plain methods, never HTTP routes: `fail_next(n, status, retry_after)`,
`set_outage(status)`, `refuse_span(span_id)` (a batch holding it gets a 400, as one malformed span
would cause), `set_delay(seconds)` (accepted spans are recorded BEFORE the delayed reply, so a
client killed meanwhile has delivered without knowing it), `suspend(project)`.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PATH = "/api/public/otel/v1/traces"


@dataclass
class Project:
    name: str
    public_key: str
    secret_key: str
    suspended: bool = False


@dataclass(frozen=True)
class ReceivedSpan:
    project: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    request: int  # the RequestLog.index of the request that brought it

    @property
    def key(self) -> tuple[str, str]:
        return self.trace_id, self.span_id

    @property
    def tags(self) -> list[str]:
        return self.attributes.get("langfuse.trace.tags", [])

    def usage(self) -> dict[str, int]:
        return json.loads(self.attributes.get("langfuse.observation.usage_details", "{}"))

    def cost(self) -> dict[str, Any]:
        return json.loads(self.attributes.get("langfuse.observation.cost_details", "{}"), parse_float=Decimal)


@dataclass
class RequestLog:
    index: int
    at: float  # time.monotonic() when the request arrived
    project: str | None
    status: int = 0
    spans: int = 0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    project: str | None


class LangfuseServer:
    """`with LangfuseServer({"shared": ("pk-lf-1", "sk-lf-1")}) as lf:` then point an exporter at lf.url."""

    def __init__(self, projects: dict[str, tuple[str, str]], max_body_bytes: int = 4 * 1024 * 1024) -> None:
        self.projects = {name: Project(name, public, secret) for name, (public, secret) in projects.items()}
        self.max_body_bytes = max_body_bytes
        self.requests: list[RequestLog] = []
        self._received: list[ReceivedSpan] = []
        self._faults: list[_Fault] = []
        self._outage: int | None = None
        self._refused_spans: set[str] = set()
        self._delay = 0.0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> LangfuseServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- test controls ---

    def fail_next(self, n: int, status: int = 503, retry_after: int | None = None, project: str | None = None) -> None:
        with self._lock:
            self._faults.extend(_Fault(status, retry_after, project) for _ in range(n))

    def set_outage(self, status: int | None) -> None:
        """Answer every request with `status` (None: recover)."""
        self._outage = status

    def refuse_span(self, span_id: str) -> None:
        self._refused_spans.add(span_id)

    def set_delay(self, seconds: float) -> None:
        self._delay = seconds

    def suspend(self, project: str, suspended: bool = True) -> None:
        self.projects[project].suspended = suspended

    # --- what arrived ---

    def received(self, project: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self._received if project is None or span.project == project]

    def latest(self, project: str) -> dict[tuple[str, str], ReceivedSpan]:
        """One observation per span id, the last one sent: what Langfuse shows."""
        return {span.key: span for span in self.received(project)}

    def counts(self, project: str | None = None) -> Counter[tuple[str, str]]:
        return Counter(span.key for span in self.received(project))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Langfuse: {what} not met in {timeout}s; "
                                     f"{len(self.received())} span(s) received, last requests: {self.requests[-5:]}")
            time.sleep(0.05)

    # --- the endpoint ---

    def _handle(self, log: RequestLog, method: str, path: str, headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path != PATH:
            return 404, {}, {"message": "Not found"}
        if method != "POST":
            return 405, {}, {"message": "Method not allowed"}
        project = self._authenticate(headers.get("authorization", ""))
        log.project = project.name if project else None
        fault = self._take_fault(project)
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return fault.status, extra, {"message": f"injected {fault.status}"}
        if project is None:
            return 401, {}, {"message": "Invalid credentials. Confirm that you've configured the correct host."}
        if project.suspended:
            return 403, {}, {"message": "Ingestion suspended: Usage threshold exceeded. Please upgrade your plan."}
        if len(body) > self.max_body_bytes:
            return 413, {}, {"message": "Request Entity Too Large"}
        if "gzip" in headers.get("content-encoding", ""):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return 400, {}, {"error": "Failed to decompress request body"}
        content_type = headers.get("content-type", "").lower()
        if "application/x-protobuf" not in content_type:
            # JSON is part of Langfuse's contract too; the exporter under test never sends it.
            message = "Invalid content type" if "application/json" not in content_type else "JSON not supported here"
            return 400, {}, {"error": message}
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            return 400, {}, {"error": "Failed to parse OTel Protobuf Trace"}
        version = headers.get("x-langfuse-ingestion-version")
        if version is not None and (not version.isdigit() or int(version) > 4):
            return 400, {}, {"error": f'Unsupported x-langfuse-ingestion-version: "{version}". Maximum supported: "4".'}
        spans = self._spans(project.name, request, log.index)
        bad = [span for span in spans if len(span.trace_id) != 32 or len(span.span_id) != 16
               or span.span_id in self._refused_spans]
        if bad:
            return 400, {}, {"error": f"Invalid OTLP trace export: {len(bad)} of {len(spans)} span(s) cannot be "
                                      "processed. The entire export was rejected and no spans were ingested."}
        with self._lock:
            self._received.extend(spans)
        log.spans = len(spans)
        if self._delay:
            time.sleep(self._delay)
        return 200, {}, {}

    def _authenticate(self, header: str) -> Project | None:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            public, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return None
        return next((p for p in self.projects.values() if (p.public_key, p.secret_key) == (public, secret)), None)

    def _take_fault(self, project: Project | None) -> _Fault | None:
        if self._outage is not None:
            return _Fault(self._outage, None, None)
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.project is None or (project is not None and fault.project == project.name):
                    return self._faults.pop(i)
        return None

    def _spans(self, project: str, request: ExportTraceServiceRequest, index: int) -> list[ReceivedSpan]:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        project, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex() or None,
                        span.name, _attributes(span.attributes), resource, scope_spans.scope.name, index))
        return spans

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                with server._lock:
                    log = RequestLog(len(server.requests), time.monotonic(), None, headers={
                        k: v for k, v in headers.items() if k.startswith(("x-langfuse", "content-"))})
                    server.requests.append(log)
                status, extra, document = server._handle(log, self.command, self.path, headers, body)
                log.status = status
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in key_values}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None

"""What an OTLP export means, whatever protocol carried it: authenticate, decode, enrich, commit.

The HTTP and gRPC receivers only translate their protocol to `IngestService.export()` and its
`IngestError`s back (collector/errors.py decides the status). Refusals are counted by reason.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.decode import decode_traces
from collector.errors import IngestError, Kind
from collector.otlp import SIGNALS, Encoding, decompress, parse
from collector.writer import SpanWriter
from enrich.auth import Authenticator
from enrich.batch import Principal, SpanBatch
from enrich.pipeline import EnrichPipeline
from enrich.tenants import TenantRegistry

MAX_MESSAGE_CHARS = 1000


class IngestService:
    def __init__(
        self,
        authenticator: Authenticator,
        registry: TenantRegistry,
        pipeline: EnrichPipeline,
        writer: SpanWriter,
        max_request_bytes: int,
        max_inflight_bytes: int,
        retry_after: int,
        workers: int = 2,
    ) -> None:
        self.authenticator = authenticator
        self.registry = registry
        self.pipeline = pipeline
        self.writer = writer
        self.max_request_bytes = max_request_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.retry_after = retry_after
        self._inflight_bytes = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="meterline-decode")

    def principal(self, authorization: str | None) -> Principal:
        """Authenticate a request (401) and check its tenant is registered and active (403)."""
        tenant_id = self.authenticator.tenant_of(authorization)
        if tenant_id is None:
            return Principal(tenant_id=None)
        return Principal(tenant_id=tenant_id, tier=self.registry.require_active(tenant_id).tier)

    async def authenticate(self, authorization: str | None) -> Principal:
        """`principal()` off the event loop: a JWKS fetch or a registry reload may block."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.principal, authorization)

    @contextmanager
    def admitted(self, size: int) -> Iterator[None]:
        """Reserve `size` bytes of request bodies in flight, or refuse retryably (503) past the bound."""
        if self._inflight_bytes and self._inflight_bytes + size > self.max_inflight_bytes:
            raise IngestError(Kind.OVERLOADED, "too many request bytes in flight; retry later", self.retry_after)
        self._inflight_bytes += size
        try:
            yield
        finally:
            self._inflight_bytes -= size

    async def export(self, signal: str, body: bytes, encoding: Encoding, principal: Principal,
                     content_encoding: str | None = None) -> Message:
        """Decompress, decode and enrich in the executor, then wait for the commit."""
        try:
            loop = asyncio.get_running_loop()
            if signal != "traces":
                return await loop.run_in_executor(
                    self._executor, self._drop_signal, signal, body, encoding, content_encoding)
            batch = await loop.run_in_executor(
                self._executor, self._prepare, body, encoding, content_encoding, principal)
            if batch.spans:
                await asyncio.wrap_future(self.writer.submit(batch))
            else:
                for reason, count in batch.rejected.items():
                    self.writer.count_rejection("traces", reason, principal.tenant_id, count)
            return self._trace_response(batch)
        except IngestError as error:
            error.tenant_id = principal.tenant_id
            raise

    def record_refusal(self, signal: str, error: IngestError) -> None:
        """Count a refused request under its reason; receivers call this once per refusal."""
        self.writer.count_rejection(signal, error.kind.reason, error.tenant_id, 0)

    def _prepare(self, body: bytes, encoding: Encoding, content_encoding: str | None,
                 principal: Principal) -> SpanBatch:
        body = decompress(body, content_encoding, self.max_request_bytes)
        request = parse(body, encoding, SIGNALS["traces"][0])
        return self.pipeline.process(decode_traces(request, principal))

    @staticmethod
    def _trace_response(batch: SpanBatch) -> Message:
        response = SIGNALS["traces"][1]()
        rejected = sum(batch.rejected.values())
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = "; ".join(batch.messages)[:MAX_MESSAGE_CHARS]
        return response

    def _drop_signal(self, signal: str, body: bytes, encoding: Encoding, content_encoding: str | None) -> Message:
        """Metrics and logs are accepted (exporters sending all signals keep working) but not stored."""
        request = parse(decompress(body, content_encoding, self.max_request_bytes), encoding, SIGNALS[signal][0])
        response = SIGNALS[signal][1]()
        if isinstance(request, ExportMetricsServiceRequest):
            points = sum(
                len(getattr(metric, metric.WhichOneof("data")).data_points) if metric.WhichOneof("data") else 0
                for rm in request.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
            )
            if points:
                response.partial_success.rejected_data_points = points
                response.partial_success.error_message = f"Meterline stores traces only; {points} data point(s) dropped"
        elif isinstance(request, ExportLogsServiceRequest):
            records = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
            if records:
                response.partial_success.rejected_log_records = records
                response.partial_success.error_message = f"Meterline stores traces only; {records} log record(s) dropped"
        return response

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

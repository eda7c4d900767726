"""OTLP/gRPC receiver: the Trace, Metrics and Logs services' Export methods, on raw bytes.

Requests are handed over undecoded so both protocols share one decode path. gRPC itself
enforces the size limit (RESOURCE_EXHAUSTED) and handles gzip; at most 64 calls are in flight
(more get RESOURCE_EXHAUSTED from gRPC), which bounds the memory messages can hold.
"""

from __future__ import annotations

import grpc

from collector.errors import IngestError, rpc_status
from collector.service import IngestService

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _handler(service: IngestService, signal: str):
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        authorization = next((value for key, value in context.invocation_metadata() or () if key == "authorization"), None)
        try:
            principal = await service.authenticate(authorization)
            try:
                with service.admitted(len(request)):
                    response = await service.export(signal, request, "protobuf", principal)
            except IngestError as error:
                error.tenant_id = principal.tenant_id
                raise
        except IngestError as error:
            service.record_refusal(signal, error)
            await context.abort(
                error.kind.grpc_code,
                error.message,
                trailing_metadata=(("grpc-status-details-bin", rpc_status(error).SerializeToString()),),
            )
        return response.SerializeToString()

    return export


async def start_grpc_server(service: IngestService, host: str, port: int, max_request_bytes: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(maximum_concurrent_rpcs=64, options=[
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.so_reuseport", 0),
    ])
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(name, {"Export": grpc.unary_unary_rpc_method_handler(_handler(service, signal))})
        for signal, name in SERVICES.items()
    ])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {host}:{port}")
    await server.start()
    return server, bound

"""The collector as agents' exporters and operators see it: a real `meterline serve` process."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
import zstandard
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from meterline.store import open_store, rows
from tests.support import Server, cli, simple_request, token

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def auth(tenant: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant)}"}


def post(server: Server, body: bytes, headers: dict[str, str], path: str = "/v1/traces") -> httpx.Response:
    return httpx.post(server.http + path, content=body, headers=headers, timeout=30)


def stored(db: Path, where: str = "true") -> list[dict]:
    store = open_store(db)
    try:
        return rows(store, f"SELECT * FROM spans WHERE {where} ORDER BY start_time_unix_nano")
    finally:
        store.close()


def rpc_status(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status


def send_with_sdk(exporter, tenant_hint: str | None = None) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "crm-agents"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.sdk")
    with tracer.start_as_current_span("invoke_agent lead_agent", kind=SpanKind.INTERNAL) as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.agent.name", "lead_agent")
        with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT) as chat:
            chat.set_attribute("gen_ai.operation.name", "chat")
            chat.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            chat.set_attribute("gen_ai.usage.input_tokens", 1200)
            chat.set_attribute("gen_ai.usage.output_tokens", 80)
        with tracer.start_as_current_span("execute_tool convert_lead") as tool:
            tool.set_attribute("gen_ai.operation.name", "execute_tool")
            tool.set_attribute("gen_ai.tool.name", "convert_lead")
            tool.set_status(Status(StatusCode.ERROR, "CRM timeout"))
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_exporters_deliver_into_duckdb(server: Server, protocol: str) -> None:
    if protocol == "http":
        exporter = HttpSpanExporter(endpoint=server.http + "/v1/traces", headers=auth())
    else:
        exporter = GrpcSpanExporter(endpoint=server.grpc, insecure=True,
                                    headers=(("authorization", f"Bearer {token('acme')}"),))
    send_with_sdk(exporter)
    spans = {span["name"]: span for span in stored(server.db)}
    assert set(spans) == {"invoke_agent lead_agent", "chat", "execute_tool convert_lead"}
    chat, agent, tool = spans["chat"], spans["invoke_agent lead_agent"], spans["execute_tool convert_lead"]
    assert all(span["tenant_id"] == "acme" and span["tier"] == "premium" for span in spans.values())
    assert all(span["service_name"] == "crm-agents" and span["scope_name"] == "tests.sdk" for span in spans.values())
    assert chat["parent_span_id"] == agent["span_id"] and chat["trace_id"] == agent["trace_id"]
    assert agent["parent_span_id"] is None
    assert (chat["kind"], chat["op_kind"], chat["model"]) == ("CLIENT", "llm", "gpt-4o-mini")
    assert (chat["input_tokens"], chat["output_tokens"], chat["billable"]) == (1200, 80, True)
    assert (tool["status_code"], tool["status_message"], tool["outcome"]) == ("ERROR", "CRM timeout", "failure")
    assert tool["tool_name"] == "convert_lead" and agent["agent_name"] == "lead_agent"
    assert chat["duration_ns"] == chat["end_time_unix_nano"] - chat["start_time_unix_nano"] > 0
    assert json.loads(chat["attributes"])["gen_ai.usage.input_tokens"] == 1200
    assert json.loads(chat["resource_attributes"])["service.name"] == "crm-agents"


@pytest.mark.parametrize("encoding", ["none", "gzip", "deflate", "zstd"])
@pytest.mark.parametrize("media", ["protobuf", "json"])
def test_http_bodies_in_every_encoding(server: Server, encoding: str, media: str) -> None:
    request = simple_request(n=2, trace_byte=7)
    if media == "protobuf":
        body, content_type = request.SerializeToString(), "application/x-protobuf"
    else:
        from google.protobuf.json_format import MessageToDict

        document = MessageToDict(request)
        for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            import base64

            span["traceId"] = base64.b64decode(span["traceId"]).hex()
            span["spanId"] = base64.b64decode(span["spanId"]).hex()
        body, content_type = json.dumps(document).encode(), "application/json"
    compress = {"none": lambda b: b, "gzip": gzip.compress, "deflate": zlib.compress,
                "zstd": zstandard.ZstdCompressor().compress}[encoding]
    headers = {**auth(), "Content-Type": content_type}
    if encoding != "none":
        headers["Content-Encoding"] = encoding
    response = post(server, compress(body), headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(content_type)
    if media == "json":
        assert response.json() == {}
    else:
        ExportTraceServiceResponse.FromString(response.content)
    assert [s["span_id"] for s in stored(server.db)] == ["0000000000000001", "0000000000000002"]
    assert {s["trace_id"] for s in stored(server.db)} == {"07" * 16}


def test_bad_requests_get_otlp_statuses_and_the_server_keeps_serving(server: Server) -> None:
    headers = {**auth(), **PROTOBUF}
    # 400: malformed protobuf, with a google.rpc.Status body
    bad = post(server, b"\xff\xff\xff not protobuf", headers)
    assert bad.status_code == 400 and rpc_status(bad).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a valid ExportTraceServiceRequest" in rpc_status(bad).message
    # 400: malformed JSON, answered in JSON
    bad_json = post(server, b"{not json", {**auth(), "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "OTLP/JSON" in bad_json.json()["message"]
    # 400: a gzip body that is not gzip
    assert post(server, b"plain", {**headers, "Content-Encoding": "gzip"}).status_code == 400
    # 405
    wrong_method = httpx.get(server.http + "/v1/traces")
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    # 415: content type and content encoding
    assert post(server, b"x", {**auth(), "Content-Type": "text/plain"}).status_code == 415
    assert post(server, b"x", {**headers, "Content-Encoding": "br"}).status_code == 415
    # 401 without a token
    assert post(server, simple_request().SerializeToString(), PROTOBUF).status_code == 401
    # partial_success: one span without ids, the others kept
    request = simple_request(n=3, trace_byte=9)
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b""
    partial = post(server, request.SerializeToString(), headers)
    assert partial.status_code == 200
    result = ExportTraceServiceResponse.FromString(partial.content)
    assert result.partial_success.rejected_spans == 1 and "span_id" in result.partial_success.error_message
    assert [s["span_id"] for s in stored(server.db)] == ["0000000000000001", "0000000000000003"]
    # still serving, and every refusal counted by reason
    assert post(server, simple_request(n=1, trace_byte=10).SerializeToString(), headers).status_code == 200
    report = json.loads(cli("stats", "--format", "json", db=server.db).stdout)
    reasons = {(r["reason"]): r["requests"] for r in report["rejected"] if r["signal"] == "traces"}
    assert reasons == {"invalid": 3, "method_not_allowed": 1, "unsupported_media": 2,
                       "unauthenticated": 1, "invalid_span_id": 1}


def test_body_limit_applies_after_decompression(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "small.toml"
    config.write_text("[server]\nmax_request_bytes = 65536\n")
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    with Server(db, "--config", str(config)) as server:
        headers = {**auth(), **PROTOBUF}
        too_big = post(server, b"\0" * 70_000, headers)
        assert too_big.status_code == 413
        bomb = gzip.compress(b"\0" * 50_000_000)  # 50 MB of zeros in ~50 kB
        assert len(bomb) < 65536
        assert post(server, bomb, {**headers, "Content-Encoding": "gzip"}).status_code == 413
        assert post(server, zstandard.ZstdCompressor().compress(b"\0" * 50_000_000),
                    {**headers, "Content-Encoding": "zstd"}).status_code == 413
        with grpc.insecure_channel(server.grpc) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            with pytest.raises(grpc.RpcError) as refused:
                export(b"\0" * 70_000, metadata=(("authorization", f"Bearer {token('acme')}"),))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert post(server, simple_request(n=2).SerializeToString(), headers).status_code == 200


def test_grpc_status_codes(server: Server) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        good = (("authorization", f"Bearer {token('acme')}"),)
        with pytest.raises(grpc.RpcError) as malformed:
            export(b"\xff\xff\xff garbage", metadata=good)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as anonymous:
            export(simple_request().SerializeToString())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        request = simple_request(n=2, trace_byte=3)
        request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
        response = ExportTraceServiceResponse.FromString(export(request.SerializeToString(), metadata=good))
        assert response.partial_success.rejected_spans == 1
    assert len(stored(server.db)) == 1


def test_same_spans_twice_are_stored_once(server: Server) -> None:
    body = simple_request(n=5, trace_byte=4).SerializeToString()
    headers = {**auth(), **PROTOBUF}
    for _ in range(3):
        assert post(server, body, headers).status_code == 200
    # overlapping replay: spans 3..7, of which 3..5 are already stored
    assert post(server, simple_request(n=5, trace_byte=4, span_offset=2).SerializeToString(), headers).status_code == 200
    assert [int(s["span_id"], 16) for s in stored(server.db)] == [1, 2, 3, 4, 5, 6, 7]


def test_metrics_and_logs_are_accepted_not_stored(server: Server) -> None:
    metrics = ExportMetricsServiceRequest()
    gauge = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    gauge.name = "queue.depth"
    gauge.gauge.data_points.add().as_int = 3
    response = post(server, metrics.SerializeToString(), {**auth(), **PROTOBUF}, "/v1/metrics")
    assert response.status_code == 200
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    answer = post(server, json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hi"}}]}]}]}).encode(),
                  {**auth(), "Content-Type": "application/json"}, "/v1/logs")
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"]["rejectedLogRecords"] == "1"
    assert "traces only" in answer.json()["partialSuccess"]["errorMessage"]


def test_overload_is_refused_retryably_and_nothing_accepted_is_lost(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "tight.toml"
    config.write_text("[server]\nqueue_max_spans = 2000\nretry_after_seconds = 2\n")
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    with Server(db, "--config", str(config)) as server:
        headers = {**auth(), **PROTOBUF}
        bodies = [simple_request(n=1500, trace_byte=b).SerializeToString() for b in range(1, 41)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(lambda body: post(server, body, headers), bodies))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}, statuses
        assert 503 in statuses, "40 concurrent 1500-span requests against a 2000-span queue never overflowed"
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["Retry-After"] == "2"
        retry = rpc_status(refused)
        assert retry.code == grpc.StatusCode.UNAVAILABLE.value[0]
        info = error_details_pb2.RetryInfo()
        assert retry.details[0].Unpack(info) and info.retry_delay.seconds == 2
        with grpc.insecure_channel(server.grpc) as channel:  # the gRPC equivalent: UNAVAILABLE + RetryInfo
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            metadata = (("authorization", headers["Authorization"]),)
            with ThreadPoolExecutor(max_workers=16) as pool:
                outcomes = list(pool.map(lambda body: _grpc_outcome(export, body, metadata), bodies[:20]))
            assert set(o[0] for o in outcomes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
            assert any(code == grpc.StatusCode.UNAVAILABLE and delay == 2 for code, delay in outcomes), outcomes
        accepted = {b + 1 for b, r in enumerate(responses) if r.status_code == 200}
        accepted |= {b + 1 for b, (code, _) in enumerate(outcomes) if code == grpc.StatusCode.OK}
        stored_traces = {int(row["trace_id"][:2], 16) for row in stored(db, "true")}
        assert stored_traces == accepted


def _grpc_outcome(export, body: bytes, metadata) -> tuple[grpc.StatusCode, int | None]:
    """(status, RetryInfo delay in seconds) of one gRPC export."""
    try:
        export(body, metadata=metadata)
        return grpc.StatusCode.OK, None
    except grpc.RpcError as error:
        details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
        info = error_details_pb2.RetryInfo()
        if details:
            status = status_pb2.Status.FromString(details)
            status.details[0].Unpack(info)
        return error.code(), info.retry_delay.seconds if details else None


def test_kill_9_loses_nothing_acknowledged(db: Path) -> None:
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    server = Server(db).start()
    headers = {**auth(), **PROTOBUF}
    acknowledged: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        client = httpx.Client(timeout=10)
        for trace in range(1, 250):
            if stop.is_set():
                return
            try:
                response = client.post(server.http + "/v1/traces", headers=headers,
                                       content=simple_request(n=50, trace_byte=trace).SerializeToString())
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                acknowledged.append(trace)

    sender = threading.Thread(target=stream)
    sender.start()
    while len(acknowledged) < 20:
        assert sender.is_alive() or len(acknowledged) >= 20
        threading.Event().wait(0.01)
    server.kill()  # SIGKILL, mid-stream
    stop.set()
    sender.join()
    spans = stored(db)
    by_trace: dict[int, int] = {}
    for span in spans:
        by_trace[int(span["trace_id"][:2], 16)] = by_trace.get(int(span["trace_id"][:2], 16), 0) + 1
    assert acknowledged, "nothing was acknowledged before the kill"
    missing = [t for t in acknowledged if by_trace.get(t) != 50]
    assert not missing, f"acknowledged traces lost or partial after kill -9: {missing}"
    # the store opens cleanly and the server starts again on it
    with Server(db):
        pass


def test_cli_commands_work_while_serving(server: Server) -> None:
    post(server, simple_request(n=4).SerializeToString(), {**auth(), **PROTOBUF})
    cli("tenants", "add", "initech", "--tier", "enterprise", "--name", "Initech", db=server.db)
    listed = json.loads(cli("tenants", "list", "--format", "json", db=server.db).stdout)
    assert [t["tenant_id"] for t in listed] == ["acme", "globex", "initech"]
    # the running collector sees the new tenant at once
    assert post(server, simple_request(n=1, trace_byte=2).SerializeToString(),
                {**auth("initech"), **PROTOBUF}).status_code == 200
    report = json.loads(cli("stats", "--format", "json", db=server.db).stdout)
    assert report["spans"] == 5
    assert {t["tenant_id"]: t["spans"] for t in report["tenants"]} == {"acme": 4, "initech": 1}
    assert "acme" in cli("stats", db=server.db).stdout


def test_cancelled_grpc_exports_do_not_stop_ingestion(server: Server) -> None:
    """Clients whose deadline passes cancel their wait; the writer must carry on for everyone."""
    metadata = (("authorization", f"Bearer {token('acme')}"),)
    body = simple_request(n=1500, trace_byte=21).SerializeToString()
    with grpc.insecure_channel(server.grpc) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(lambda _: _deadline_code(export, body, metadata), range(40)))
        assert grpc.StatusCode.DEADLINE_EXCEEDED in codes, "no export hit its deadline: the test proves nothing"
        export(simple_request(n=2, trace_byte=22).SerializeToString(), metadata=metadata, timeout=20)
    assert post(server, simple_request(n=2, trace_byte=23).SerializeToString(), {**auth(), **PROTOBUF}).status_code == 200
    assert {s["trace_id"][:2] for s in stored(server.db)} >= {"16", "17"}


def _deadline_code(export, body: bytes, metadata) -> grpc.StatusCode:
    try:
        export(body, metadata=metadata, timeout=0.05)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_strangers_are_refused_before_their_body_is_read(server: Server) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 16000000\r\n\r\n")  # promises 16 MB, sends none of it
        assert sock.recv(200).startswith(b"HTTP/1.1 401")


def test_spans_with_impossible_times_are_refused_alone(server: Server) -> None:
    request = simple_request(n=3, trace_byte=24)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].start_time_unix_nano = spans[0].end_time_unix_nano = 2**64 - 1
    spans[1].start_time_unix_nano = time.time_ns() + 2 * 3600 * 10**9  # two hours ahead
    response = post(server, request.SerializeToString(), {**auth(), **PROTOBUF})
    result = ExportTraceServiceResponse.FromString(response.content)
    assert response.status_code == 200 and result.partial_success.rejected_spans == 2
    assert "future" in result.partial_success.error_message
    assert [s["span_id"] for s in stored(server.db)] == ["0000000000000003"]


def test_deeply_nested_json_is_a_bad_request(server: Server) -> None:
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post(server, body, {**auth(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert post(server, simple_request(n=1).SerializeToString(), {**auth(), **PROTOBUF}).status_code == 200


def test_usage_after_a_crash_counts_each_model_call_once(db: Path) -> None:
    """Killed before its resolver ran, the collector left two LLM spans marked billable for one call:
    `meterline usage` settles trace context itself before it counts."""
    from datetime import datetime

    from tests.support import spans_request

    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    call = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 10}
    at = datetime(2026, 11, 3, 12)
    server = Server(db).start()
    try:
        request = spans_request([{"trace": 9, "id": 1, "name": "chat", "start": at, "attributes": call},
                                 {"trace": 9, "id": 2, "parent": 1, "name": "chat gpt-4o", "start": at,
                                  "kind": "CLIENT", "attributes": call}])
        assert post(server, request.SerializeToString(), {**auth(), **PROTOBUF}).status_code == 200
    finally:
        server.kill()
    report = json.loads(cli("usage", "--period", "2026-11", "--tenant", "acme", "--format", "json", db=db).stdout)
    assert report["tenants"][0]["usage"]["input_tokens"] == 1000
    assert report["tenants"][0]["usage"]["llm_calls"] == 1

"""Tenant context: only a verified token names the tenant; spans that claim otherwise are caught."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from meterline.store import open_store, rows
from tests.support import CAPTURES, SECRET, Server, capture_request, cli, load_capture, simple_request, token

PROTOBUF = {"Content-Type": "application/x-protobuf"}
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def http_status(server: Server, bearer: str | None, body: bytes | None = None) -> int:
    headers = dict(PROTOBUF)
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx.post(server.http + "/v1/traces", headers=headers,
                      content=body or simple_request().SerializeToString()).status_code


def grpc_code(server: Server, bearer: str | None) -> grpc.StatusCode:
    with grpc.insecure_channel(server.grpc) as channel:
        metadata = (("authorization", f"Bearer {bearer}"),) if bearer is not None else None
        try:
            channel.unary_unary(EXPORT)(simple_request().SerializeToString(), metadata=metadata)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def query(db: Path, sql: str) -> list[dict]:
    store = open_store(db)
    try:
        return rows(store, sql)
    finally:
        store.close()


def test_tokens_are_checked_over_http_and_grpc(server: Server) -> None:
    now = int(time.time())
    cases = {
        "valid": (token("acme"), 200, grpc.StatusCode.OK),
        "no token": (None, 401, grpc.StatusCode.UNAUTHENTICATED),
        "garbage": ("not.a.jwt", 401, grpc.StatusCode.UNAUTHENTICATED),
        "wrong key": (token("acme", secret="another-secret-of-sufficient-length!"), 401, grpc.StatusCode.UNAUTHENTICATED),
        "expired": (jwt.encode({"tenant_id": "acme", "exp": now - 3600}, SECRET), 401, grpc.StatusCode.UNAUTHENTICATED),
        "not yet valid": (jwt.encode({"tenant_id": "acme", "exp": now + 3600, "nbf": now + 600}, SECRET), 401,
                          grpc.StatusCode.UNAUTHENTICATED),
        "no exp": (jwt.encode({"tenant_id": "acme"}, SECRET), 401, grpc.StatusCode.UNAUTHENTICATED),
        "no tenant claim": (jwt.encode({"sub": "acme", "exp": now + 60}, SECRET), 401, grpc.StatusCode.UNAUTHENTICATED),
        "alg none": (jwt.encode({"tenant_id": "acme", "exp": now + 60}, None, algorithm="none"), 401,
                     grpc.StatusCode.UNAUTHENTICATED),
        "unknown tenant": (token("umbrella"), 403, grpc.StatusCode.PERMISSION_DENIED),
    }
    for name, (bearer, http_expected, grpc_expected) in cases.items():
        assert http_status(server, bearer) == http_expected, name
        assert grpc_code(server, bearer) == grpc_expected, name
    cli("tenants", "suspend", "globex", db=server.db)
    assert http_status(server, token("globex")) == 403
    assert grpc_code(server, token("globex")) == grpc.StatusCode.PERMISSION_DENIED
    cli("tenants", "activate", "globex", db=server.db)
    assert http_status(server, token("globex")) == 200


def test_jwt_mode_without_a_key_refuses_to_start(db: Path) -> None:
    result = cli("serve", "--db", str(db), "--http-port", "0", env={"METERLINE_JWT_SECRET": ""}, check=False)
    assert result.returncode != 0
    assert "METERLINE_JWT_SECRET" in result.stderr and "--auth none" in result.stderr


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwks_keys_and_cognito_claim(db: Path, tmp_path: Path, algorithm: str) -> None:
    private = rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
    algo = jwt.get_algorithm_by_name(algorithm)
    jwk = json.loads(algo.to_jwk(private.public_key()))
    jwk.update(kid="key-1", alg=algorithm, use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = tmp_path / "jwks.toml"
    config.write_text(f'[auth]\njwks_file = "{tmp_path / "jwks.json"}"\nissuer = "https://cognito.example/pool"\n'
                      'audience = "meterline"\n')
    cli("tenants", "add", "acme", "--tier", "basic", db=db)

    def signed(claims: dict, key=private, kid: str = "key-1") -> str:
        base = {"exp": int(time.time()) + 600, "iss": "https://cognito.example/pool", "aud": "meterline"}
        return jwt.encode({**base, **claims}, key, algorithm=algorithm, headers={"kid": kid})

    with Server(db, "--config", str(config), env={"METERLINE_JWT_SECRET": ""}) as server:
        assert http_status(server, signed({"custom:tenant_id": "acme"})) == 200
        assert grpc_code(server, signed({"tenant_id": "acme"})) == grpc.StatusCode.OK
        other = rsa.generate_private_key(65537, 2048) if algorithm == "RS256" else ec.generate_private_key(ec.SECP256R1())
        assert http_status(server, signed({"tenant_id": "acme"}, key=other)) == 401
        assert http_status(server, signed({"tenant_id": "acme", "iss": "https://evil.example"})) == 401
        assert http_status(server, signed({"tenant_id": "acme", "aud": "someone-else"})) == 401
        # an HS256 token can't be checked against a public key (algorithm confusion): refused
        assert http_status(server, jwt.encode({"tenant_id": "acme", "exp": int(time.time()) + 60}, "x" * 32)) == 401


def test_spans_claiming_another_tenant_are_rejected_and_counted(server: Server) -> None:
    body = simple_request(n=3, trace_byte=5).SerializeToString()
    spoof = simple_request(n=2, trace_byte=6, attributes={"tenant.id": "globex"}).SerializeToString()
    via_resource = simple_request(n=1, trace_byte=8, resource={"tenant_id": "globex"}).SerializeToString()
    honest_hint = simple_request(n=1, trace_byte=9, attributes={"tenant.id": "acme"}).SerializeToString()
    headers = {**PROTOBUF, "Authorization": f"Bearer {token('acme')}"}
    assert httpx.post(server.http + "/v1/traces", headers=headers, content=body).status_code == 200
    for claimed, expected_rejections in ((spoof, 2), (via_resource, 1)):
        response = httpx.post(server.http + "/v1/traces", headers=headers, content=claimed)
        result = ExportTraceServiceResponse.FromString(response.content)
        assert result.partial_success.rejected_spans == expected_rejections
        assert "tenant" in result.partial_success.error_message
    assert httpx.post(server.http + "/v1/traces", headers=headers, content=honest_hint).status_code == 200
    stored = query(server.db, "SELECT tenant_id, trace_id, tenant_hint FROM spans")
    assert {row["tenant_id"] for row in stored} == {"acme"}
    assert len(stored) == 4 and not any(row["trace_id"].startswith(("06", "08")) for row in stored)
    report = json.loads(cli("stats", "--format", "json", db=server.db).stdout)
    assert report["spoof_attempts"] == [{"tenant_id": "acme", "attempts": 3}]


def test_spoof_policy_flag_stores_under_the_token_tenant(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "flag.toml"
    config.write_text('[auth]\nspoof_policy = "flag"\n')
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    cli("tenants", "add", "globex", "--tier", "basic", db=db)
    with Server(db, "--config", str(config)) as server:
        headers = {**PROTOBUF, "Authorization": f"Bearer {token('acme')}"}
        body = simple_request(n=2, attributes={"tenant_id": "globex"}).SerializeToString()
        result = ExportTraceServiceResponse.FromString(
            httpx.post(server.http + "/v1/traces", headers=headers, content=body).content)
        assert result.partial_success.rejected_spans == 0
        stored = query(db, "SELECT tenant_id, spoofed, tenant_hint FROM spans")
        assert stored == [{"tenant_id": "acme", "spoofed": True, "tenant_hint": "globex"}] * 2
        report = json.loads(cli("stats", "--format", "json", db=db).stdout)
        assert report["spoof_attempts"] == [{"tenant_id": "acme", "attempts": 2}]


def test_auth_none_reads_tenant_from_spans(db: Path) -> None:
    cli("tenants", "add", "acme", "--tier", "premium", db=db)
    with Server(db, "--auth", "none", env={"METERLINE_JWT_SECRET": ""}) as server:
        body = simple_request(n=2, resource={"tenant.id": "acme"}).SerializeToString()
        assert httpx.post(server.http + "/v1/traces", headers=PROTOBUF, content=body).status_code == 200
        anonymous = simple_request(n=1, trace_byte=2).SerializeToString()
        result = ExportTraceServiceResponse.FromString(
            httpx.post(server.http + "/v1/traces", headers=PROTOBUF, content=anonymous).content)
        assert result.partial_success.rejected_spans == 1
    assert "AUTH MODE 'none'" in server.log.read_text()
    assert query(db, "SELECT DISTINCT tenant_id, tier FROM spans") == [{"tenant_id": "acme", "tier": "premium"}]


def test_agentcore_captures_bill_each_model_call_once(server: Server) -> None:
    """Replay both real captures as OTLP; billable tokens = the model calls' tokens, counted once."""
    expected = {}
    for capture in CAPTURES:
        spans = load_capture(capture)
        strands_chats = [s for s in spans if s["name"] == "chat" and s["scope"]["name"] == "strands.telemetry.tracer"]
        expected[capture] = (sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in strands_chats),
                             sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in strands_chats),
                             len(strands_chats))
        # children before parents, in small requests, the way a BatchSpanProcessor delivers them
        for start in range(0, len(spans), 7):
            body = capture_request(spans[start:start + 7]).SerializeToString()
            response = httpx.post(server.http + "/v1/traces", content=body,
                                  headers={**PROTOBUF, "Authorization": f"Bearer {token('acme')}"})
            assert response.status_code == 200 and not ExportTraceServiceResponse.FromString(
                response.content).partial_success.rejected_spans
    time.sleep(1.5)  # trace context is resolved within a second of the commits
    totals = query(server.db, """
        SELECT service_name, count(*) AS spans,
               sum(input_tokens) FILTER (WHERE billable) AS billable_input,
               sum(output_tokens) FILTER (WHERE billable) AS billable_output,
               count(*) FILTER (WHERE billable) AS billable_calls,
               sum(input_tokens) AS naive_input
        FROM spans GROUP BY service_name ORDER BY spans DESC
    """)
    assert sum(t["spans"] for t in totals) == 98
    by_capture = sorted(expected.values(), reverse=True)
    got = sorted(((t["billable_input"], t["billable_output"], t["billable_calls"]) for t in totals), reverse=True)
    assert got == by_capture
    assert all(t["naive_input"] >= 3 * t["billable_input"] for t in totals if t["service_name"] == "test_eval_1.DEFAULT")
    # chat spans inherit the agent named on invoke_agent; nothing is billed on agent spans
    orphans = query(server.db, """
        SELECT count(*) AS n FROM spans WHERE op_kind IN ('llm', 'tool') AND agent_name IS NULL
    """)
    assert orphans == [{"n": 0}]
    assert query(server.db, "SELECT count(*) AS n FROM spans WHERE billable AND op_kind <> 'llm'") == [{"n": 0}]


def test_jwks_url_keys(db: Path, tmp_path: Path) -> None:
    """Keys fetched from a JWKS URL (as a Cognito user pool publishes them), served locally."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    private = rsa.generate_private_key(65537, 2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(private.public_key()))
    jwk.update(kid="pool-key", alg="RS256", use="sig")
    document = json.dumps({"keys": [jwk]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    jwks_server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=jwks_server.serve_forever, daemon=True).start()
    config = tmp_path / "jwks-url.toml"
    config.write_text(f'[auth]\njwks_url = "http://127.0.0.1:{jwks_server.server_port}/.well-known/jwks.json"\n'
                      'tenant_claim = "tenant_id"\n')
    cli("tenants", "add", "acme", "--tier", "basic", db=db)
    try:
        with Server(db, "--config", str(config), env={"METERLINE_JWT_SECRET": ""}) as server:
            claims = {"custom:tenant_id": "acme", "exp": int(time.time()) + 600}
            good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "pool-key"})
            assert http_status(server, good) == 200
            forged = jwt.encode(claims, rsa.generate_private_key(65537, 2048), algorithm="RS256",
                                headers={"kid": "pool-key"})
            assert http_status(server, forged) == 401
    finally:
        jwks_server.shutdown()


def test_a_short_hs256_secret_is_refused_at_start(db: Path) -> None:
    result = cli("serve", "--db", str(db), "--http-port", "0", env={"METERLINE_JWT_SECRET": "short"}, check=False)
    assert result.returncode != 0 and "at least 32" in result.stderr

"""The demo's traffic: a fleet of CRM agents for many tenants, a few big ones and a long tail.

Workers run real Strands agents for `minutes` of wall-clock time. Each workflow is stamped with a
time in the backfill window (by default the current month so far), so the store ends up with a
month of history. One tenant's agents occasionally write another tenant's id into a span, the
way a confused LLM might: the collector must refuse those spans.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from demo.crm import CrmDatabase, build_supervisor
from demo.telemetry import TenantRoutingExporter


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    tier: str
    name: str
    supervisor_model: str = "gpt-4o-mini"
    agent_model: str = "gpt-4o-mini"


SONNET = "us.anthropic.claude-sonnet-4-20250514-v1:0"
OPUS = "us.anthropic.claude-opus-4-20250514-v1:0"


# The biggest tenant plans on Claude Opus under an outcome-priced enterprise contract: the case
# the "which pricing fits" view exists for.
TENANTS = (
    DemoTenant("acme-corp", "enterprise", "Acme Corp", OPUS, SONNET),
    DemoTenant("globex", "premium", "Globex", SONNET, SONNET),
    DemoTenant("initech", "premium", "Initech", SONNET, "gpt-4.1-mini"),
    DemoTenant("umbrella", "basic", "Umbrella"),
    DemoTenant("hooli", "enterprise", "Hooli", "gpt-4o", "gpt-4o-mini"),
    DemoTenant("stark", "basic", "Stark Industries", "gpt-4.1", "gpt-4o-mini"),
    DemoTenant("wayne", "premium", "Wayne Enterprises", SONNET, "gpt-4o-mini"),
    DemoTenant("wonka", "basic", "Wonka Industries"),
    DemoTenant("cyberdyne", "basic", "Cyberdyne"),
    DemoTenant("tyrell", "basic", "Tyrell Corp"),
    DemoTenant("soylent", "basic", "Soylent"),
    DemoTenant("massive", "basic", "Massive Dynamic"),
)
WORKFLOWS = (
    ("lead_conversion", "Convert the new inbound lead from the webinar"),
    ("deal_review", "Review the Northwind deal and plan next steps"),
    ("support_followup", "Follow up on the escalated support ticket"),
)
BUSINESS_FAILURE_RATE = 0.12  # workflows that run fine but do not achieve their outcome


@dataclass
class FleetResult:
    workflows: int = 0
    failed: int = 0
    spans_exported: int = 0
    spans_failed: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)


def tenant_weights(tenants: list[DemoTenant]) -> list[float]:
    """Zipf-like: the first tenants take most of the traffic, the rest form a long tail."""
    return [1 / (rank + 1) ** 1.2 for rank in range(len(tenants))]


def run_fleet(tenants: list[DemoTenant], tokens: dict[str, str], http_url: str, grpc_target: str, crm_path: Path,
              minutes: float, window: tuple[datetime, datetime], workers: int = 4, seed: int = 7) -> FleetResult:
    exporter = TenantRoutingExporter.for_tenants(tokens, http_url, grpc_target)
    provider = TracerProvider(resource=Resource.create({"service.name": "crm-agents",
                                                        "deployment.environment.name": "demo"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=512,
                                                   schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("meterline.demo")
    db = CrmDatabase(crm_path)
    result = FleetResult()
    lock = threading.Lock()
    deadline = time.monotonic() + minutes * 60
    start_ns, end_ns = (int(moment.replace(tzinfo=timezone.utc).timestamp() * 1e9) for moment in window)
    weights = tenant_weights(tenants)
    spoofer, victim = (tenants[-1], tenants[0]) if len(tenants) > 1 else (None, None)

    def worker(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        supervisors = {}
        while time.monotonic() < deadline:
            tenant = rng.choices(tenants, weights)[0]
            if tenant.tenant_id not in supervisors:
                attributes = {"tenant.id": tenant.tenant_id, "session.id": f"{tenant.tenant_id}-s{number}",
                              "user.id": f"{tenant.tenant_id}-user-{number}"}
                supervisors[tenant.tenant_id] = build_supervisor(
                    db, tenant.tenant_id, tenant.supervisor_model, tenant.agent_model, attributes, rng,
                    spoof_as=victim.tenant_id if tenant is spoofer else None)
            name, prompt = WORKFLOWS[rng.randrange(len(WORKFLOWS))]
            ok = _run_workflow(tracer, exporter, supervisors[tenant.tenant_id], tenant, name,
                               f"{prompt} (run {number}-{result.workflows})", rng.randint(start_ns, end_ns), rng)
            with lock:
                result.workflows += 1
                result.failed += not ok
                result.by_tenant[tenant.tenant_id] = result.by_tenant.get(tenant.tenant_id, 0) + 1

    progress = threading.Thread(target=_progress, args=(deadline, minutes, result, exporter), daemon=True)
    progress.start()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(worker, range(workers)))
    provider.force_flush()
    provider.shutdown()
    result.spans_exported, result.spans_failed = exporter.exported, exporter.failed
    print(file=sys.stderr)
    return result


def _run_workflow(tracer: trace.Tracer, exporter: TenantRoutingExporter, supervisor, tenant: DemoTenant, name: str,
                  prompt: str, simulated_ns: int, rng: random.Random) -> bool:
    attributes = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": name,
                  "tenant.id": tenant.tenant_id}
    with tracer.start_as_current_span(f"invoke_workflow {name}", attributes=attributes) as span:
        exporter.own(span.get_span_context().trace_id, tenant.tenant_id, simulated_ns - time.time_ns())
        try:
            supervisor(prompt)
        except Exception as exc:  # the supervisor itself failed: the workflow did not complete
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute("meterline.outcome", "failure")
            return False
        achieved = rng.random() >= BUSINESS_FAILURE_RATE
        span.set_attribute("meterline.outcome", "success" if achieved else "failure")
        span.set_status(Status(StatusCode.OK))
        return achieved


def _progress(deadline: float, minutes: float, result: FleetResult, exporter: TenantRoutingExporter) -> None:
    total = max(minutes * 60, 0.001)
    while (left := deadline - time.monotonic()) > 0:
        done = min(1.0, 1 - left / total)
        bar = "#" * int(done * 30)
        print(f"\r  agents [{bar:<30}] {done:4.0%}  {result.workflows} workflows, {exporter.exported} spans sent, "
              f"{left:4.0f}s left ", end="", file=sys.stderr, flush=True)
        time.sleep(0.5)

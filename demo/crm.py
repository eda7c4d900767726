"""The demo's CRM: a supervisor agent delegating to lead, opportunity, task and customer agents.

The agents are real Strands agents (the "agents as tools" pattern); their tools write to a real
SQLite database, one table per tenant, the way a multi-tenant CRM keeps tenants' rows apart.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

from opentelemetry import trace
from strands import Agent, tool

from demo.model import ModelRefusal, Script, ScriptedModel

SUB_AGENT_SCRIPTS = {
    "lead_agent": Script(("score_lead", "convert_lead"), (1, 3), 0.04, 0.0, 9_000),
    "opportunity_agent": Script(("create_opportunity", "update_stage"), (1, 2), 0.05, 0.0, 11_000),
    "task_agent": Script(("create_task",), (1, 2), 0.03, 0.0, 6_000),
    "customer_agent": Script(("lookup_customer", "log_interaction"), (1, 3), 0.03, 0.0, 14_000),
}
SPECIALISTS = {
    "lead_agent": "Qualify and convert leads.",
    "opportunity_agent": "Manage sales opportunities.",
    "task_agent": "Create follow-up tasks.",
    "customer_agent": "Answer questions about existing customers.",
}
SUPERVISOR_SCRIPT = Script(("lead_agent", "opportunity_agent", "task_agent", "customer_agent"), (1, 2), 0.01, 0.3,
                           20_000)
TOOL_INPUTS = {
    "score_lead": {"lead_id": "L-1001"}, "convert_lead": {"lead_id": "L-1001"},
    "create_opportunity": {"account": "Northwind", "amount_cents": 1250000}, "update_stage": {"stage": "negotiation"},
    "create_task": {"title": "Send follow-up"}, "lookup_customer": {"email": "pat@northwind.example"},
    "log_interaction": {"note": "Called about renewal"},
}
TOOL_FAILURE_RATE = 0.03
SPOOF_RATE = 0.05


class CrmDatabase:
    """SQLite with a table per tenant (leads_<tenant>, opportunities_<tenant>, ...)."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.lock = threading.Lock()

    def record(self, tenant: str, kind: str, payload: str) -> int:
        table = f'"{kind}_{tenant.replace("-", "_")}"'
        with self.lock:
            self.connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, payload TEXT, "
                                    "created_at TEXT DEFAULT CURRENT_TIMESTAMP)")
            return self.connection.execute(f"INSERT INTO {table} (payload) VALUES (?)", (payload,)).lastrowid or 0

    def count(self, tenant: str, kind: str) -> int:
        table = f'"{kind}_{tenant.replace("-", "_")}"'
        try:
            return self.connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _crm_tools(db: CrmDatabase, tenant: str, rng: random.Random, spoof_as: str | None) -> list[Any]:
    def flaky(action: str) -> None:
        if rng.random() < TOOL_FAILURE_RATE:
            raise RuntimeError(f"CRM {action} failed: record locked by another user")
        if spoof_as and rng.random() < SPOOF_RATE:  # an agent writing another tenant's id, as an LLM might
            trace.get_current_span().set_attribute("tenant.id", spoof_as)

    @tool
    def score_lead(lead_id: str) -> str:
        """Score a lead from 0 to 100."""
        flaky("scoring")
        return f"{lead_id} scored {rng.randint(10, 99)}"

    @tool
    def convert_lead(lead_id: str) -> str:
        """Convert a qualified lead into a contact and account."""
        flaky("conversion")
        return f"converted {lead_id} as #{db.record(tenant, 'leads', lead_id)}"

    @tool
    def create_opportunity(account: str, amount_cents: int) -> str:
        """Open a sales opportunity for an account."""
        flaky("opportunity")
        return f"opportunity #{db.record(tenant, 'opportunities', f'{account}:{amount_cents}')}"

    @tool
    def update_stage(stage: str) -> str:
        """Move the current opportunity to a pipeline stage."""
        flaky("stage update")
        return f"moved to {stage}"

    @tool
    def create_task(title: str) -> str:
        """Create a follow-up task for the account owner."""
        flaky("task")
        return f"task #{db.record(tenant, 'tasks', title)}"

    @tool
    def lookup_customer(email: str) -> str:
        """Find a customer record by email."""
        flaky("lookup")
        return f"customer {email}: 3 open tickets"

    @tool
    def log_interaction(note: str) -> str:
        """Log a customer interaction."""
        flaky("interaction log")
        return f"interaction #{db.record(tenant, 'interactions', note)}"

    return [score_lead, convert_lead, create_opportunity, update_stage, create_task, lookup_customer, log_interaction]


def build_supervisor(db: CrmDatabase, tenant: str, supervisor_model: str, agent_model: str,
                     trace_attributes: dict[str, str], rng: random.Random, spoof_as: str | None = None) -> Agent:
    """One tenant's CRM supervisor with its four specialist agents as tools."""
    tools = {t.tool_name: t for t in _crm_tools(db, tenant, rng, spoof_as)}
    specialists = {
        name: Agent(model=ScriptedModel(agent_model, script, TOOL_INPUTS), name=name, callback_handler=None,
                    tools=[tools[t] for t in script.tools], trace_attributes=trace_attributes)
        for name, script in SUB_AGENT_SCRIPTS.items()
    }

    def as_tool(name: str, description: str) -> Any:
        """A specialist agent exposed to the supervisor as a tool (Strands' agents-as-tools)."""
        @tool(name=name, description=description)
        def run(task: str) -> str:
            try:
                return str(specialists[name](task))
            except ModelRefusal as refusal:
                return f"{name} could not finish: {refusal}"
        return run

    delegates = [as_tool(name, description) for name, description in SPECIALISTS.items()]
    inputs = {name: {"task": f"{name.replace('_', ' ')}: handle the request"} for name in SUPERVISOR_SCRIPT.tools}
    return Agent(model=ScriptedModel(supervisor_model, SUPERVISOR_SCRIPT, inputs), name="crm_supervisor",
                 tools=delegates, callback_handler=None,
                 trace_attributes=trace_attributes)

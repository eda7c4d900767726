"""What a billing run did, per Stripe total: the table an operator reads, the JSON a machine reads.

The same JSON is kept in billing_runs.summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billing.delivery import Outcome
from billing.deltas import Key, MeterEvent, Skipped
from meterline.output import table


@dataclass
class Line:
    """One Stripe total (tenant, customer, meter) in one period, or a tenant that could not be billed."""

    period: str
    tenant_id: str
    customer: str | None = None
    event_name: str | None = None
    charge: str | None = None
    target: int | None = None  # None: a row resent from another period, or a tenant-level problem
    before: int | None = None  # what Stripe had acknowledged before this run
    planned: int = 0  # the new delta this run
    resent: int = 0  # in-flight value from earlier runs, resent now
    sent: int = 0  # value Stripe acknowledged during this run
    acknowledged: int = 0  # events
    failed: int = 0  # events
    pending: int = 0  # events still in flight after the run
    problem: bool = False  # the tenant itself cannot be billed
    detail: str = ""

    def status(self, dry_run: bool) -> str:
        if self.problem or self.failed:
            return "failed"
        if self.pending:
            return "pending"
        if dry_run:
            return "would send" if self.planned or self.resent else "up to date"
        return "sent" if self.acknowledged else "up to date"

    @property
    def stripe_total(self) -> int | None:
        return None if self.before is None else self.before + self.sent

    def note(self, detail: str | None) -> None:
        if detail and not self.detail:
            self.detail = detail


@dataclass
class RunSummary:
    run_id: str
    period: str
    through: datetime
    dry_run: bool
    streams: bool
    lines: dict[tuple[str, Key | str], Line] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()
    error: str | None = None  # the run stopped (key refused, Stripe unreachable)

    def line(self, period: str, key: Key, charge: str) -> Line:
        found = self.lines.get((period, key))
        if found is None:
            found = self.lines[(period, key)] = Line(period, key.tenant_id, key.customer, key.event_name, charge)
        return found

    def problem(self, tenant_id: str, message: str) -> None:
        self.lines[(self.period, tenant_id)] = Line(self.period, tenant_id, problem=True, detail=message)

    def record(self, event: MeterEvent, outcome: Outcome) -> None:
        line = self.line(event.period, event.key, event.charge)
        if outcome.status == "acknowledged":
            line.acknowledged += 1
            line.sent += event.value
        elif outcome.status == "failed":
            line.failed += 1
        else:
            line.pending += 1
        line.note(outcome.error)

    def count(self, attribute: str) -> int:
        return sum(getattr(line, attribute) for line in self.lines.values())

    @property
    def failed(self) -> bool:
        return self.error is not None or any(line.status(self.dry_run) in ("failed", "pending")
                                             for line in self.lines.values())

    def to_json(self) -> dict[str, Any]:
        """Lines where something happened or is wrong; totals already equal are only counted."""
        shown = sorted((line for line in self.lines.values() if line.status(self.dry_run) != "up to date"), key=_order)
        return {
            "run_id": self.run_id, "period": self.period, "through": self.through.isoformat() + "Z",
            "dry_run": self.dry_run, "streams": self.streams, "status": "failed" if self.failed else "succeeded",
            "error": self.error,
            "events": {name: self.count(name) for name in ("acknowledged", "failed", "pending")},
            "lines": [{
                "period": line.period, "tenant_id": line.tenant_id, "customer": line.customer,
                "event_name": line.event_name, "charge": line.charge, "target": line.target,
                "stripe_total": line.stripe_total, "planned": line.planned, "resent": line.resent,
                "sent": line.sent, "acknowledged": line.acknowledged, "failed": line.failed,
                "pending": line.pending, "status": line.status(self.dry_run), "detail": line.detail,
            } for line in shown],
            "up_to_date": len(self.lines) - len(shown),
            "skipped": [{"tenant_id": s.tenant_id, "reason": s.reason} for s in self.skipped],
        }


def _order(line: Line) -> tuple[str, str, str, str]:
    return (line.period, line.tenant_id, line.customer or "", line.event_name or "")


def render_table(summary: RunSummary) -> str:
    """Lines where something happened or is wrong, then one line of totals."""
    dry = summary.dry_run
    shown = sorted((line for line in summary.lines.values() if line.status(dry) != "up to date"), key=_order)
    title = (f"{'dry run' if dry else 'billing run'} {summary.run_id}: period {summary.period}, "
             f"usage through {summary.through.isoformat()}Z{', v2 streams' if summary.streams else ''}")
    parts = [title]
    if shown:
        headers = ["tenant", "customer", "meter", "target", "in stripe", "to send" if dry else "sent", "status",
                   "detail"]
        body = [[line.tenant_id + (f" ({line.period})" if line.period != summary.period else ""), line.customer,
                 line.event_name, line.target, line.stripe_total,
                 None if line.problem else line.planned + line.resent if dry else line.sent, line.status(dry),
                 line.detail] for line in shown]
        parts.append(table(body, headers, right_align=(3, 4, 5)))
    else:
        parts.append("every meter is up to date: nothing to send")
    if summary.error:
        parts.append(f"run stopped: {summary.error}")
    counts = ", ".join(f"{summary.count(name)} {name}" for name in ("acknowledged", "failed", "pending"))
    tenants = {line.tenant_id for line in summary.lines.values()}
    troubled = {line.tenant_id for line in summary.lines.values() if line.status(dry) in ("failed", "pending")}
    skipped = ", ".join(f"{s.tenant_id} ({s.reason})" for s in summary.skipped)
    parts.append(f"events: {counts}; tenants: {len(tenants - troubled)} ok, {len(troubled)} with failures"
                 + (f"; not billed: {skipped}" if skipped else ""))
    return "\n".join(parts)

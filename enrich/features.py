"""Map spans to product features with the config's `[[features]]` rules (first match wins).

A rule lists any of agent, tool, workflow and span (name); all listed must match, as exact
strings or fnmatch patterns (`crm_*`). Spans whose agent or workflow is only known from an
ancestor (a tool span under an agent span) are matched again once that ancestor has arrived,
by enrich/context.py, which also lets a span inherit its nearest ancestor's feature.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from enrich.batch import SpanBatch
from meterline.config import FeatureRule


def _matcher(pattern: str | None):
    if pattern is None:
        return None
    if any(ch in pattern for ch in "*?["):
        return lambda value: value is not None and fnmatchcase(value, pattern)
    return lambda value: value == pattern


class FeatureRules:
    def __init__(self, rules: list[FeatureRule]) -> None:
        self._compiled = [
            (rule.feature, _matcher(rule.agent), _matcher(rule.tool), _matcher(rule.workflow), _matcher(rule.span))
            for rule in rules
        ]

    def __bool__(self) -> bool:
        return bool(self._compiled)

    def match(self, agent: str | None, tool: str | None, workflow: str | None, span_name: str) -> str | None:
        for feature, agent_ok, tool_ok, workflow_ok, span_ok in self._compiled:
            if (
                (agent_ok is None or agent_ok(agent))
                and (tool_ok is None or tool_ok(tool))
                and (workflow_ok is None or workflow_ok(workflow))
                and (span_ok is None or span_ok(span_name))
            ):
                return feature
        return None


class FeatureProcessor:
    def __init__(self, rules: FeatureRules) -> None:
        self.rules = rules

    def process(self, batch: SpanBatch) -> SpanBatch:
        if self.rules:
            match = self.rules.match
            for span in batch.spans:
                span.feature = match(span.agent_name, span.tool_name, span.workflow_name, span.name)
        return batch

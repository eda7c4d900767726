"""The enrich chain, assembled from config: tenant -> GenAI normalisation -> features."""

from __future__ import annotations

from enrich.batch import Processor, SpanBatch
from enrich.features import FeatureProcessor, FeatureRules
from enrich.genai import normalise
from enrich.tenant import TenantProcessor
from enrich.tenants import TenantRegistry
from meterline.config import Config


class GenAIProcessor:
    """Fill the canonical GenAI columns from whichever convention a span was written in."""

    def process(self, batch: SpanBatch) -> SpanBatch:
        for span in batch.spans:
            fields = normalise(span.name, span.status_code, span.attributes, span.resource)
            span.operation = fields.operation
            span.op_kind = fields.op_kind
            span.provider = fields.provider
            span.model = fields.model
            span.input_tokens = fields.input_tokens
            span.output_tokens = fields.output_tokens
            span.cache_read_tokens = fields.cache_read_tokens
            span.cache_write_tokens = fields.cache_write_tokens
            span.reasoning_tokens = fields.reasoning_tokens
            span.agent_name = fields.agent_name
            span.tool_name = fields.tool_name
            span.workflow_name = fields.workflow_name
            span.session_id = fields.session_id
            span.user_id = fields.user_id
            span.outcome = fields.outcome
            # Provisional: enrich/context.py clears it on an LLM span once a child LLM span
            # reports the same call, so each model call is billed exactly once.
            span.billable = fields.op_kind == "llm" and (
                fields.input_tokens is not None or fields.output_tokens is not None
            )
        return batch


class EnrichPipeline:
    def __init__(self, config: Config, registry: TenantRegistry) -> None:
        self.registry = registry
        self.feature_rules = FeatureRules(config.features)
        self.processors: list[Processor] = [
            TenantProcessor(registry, config.auth.spoof_policy),
            GenAIProcessor(),
            FeatureProcessor(self.feature_rules),
        ]

    def process(self, batch: SpanBatch) -> SpanBatch:
        for processor in self.processors:
            if not batch.spans:
                break
            batch = processor.process(batch)
        for span in batch.spans:  # the queue holds spans until commit: keep the JSON, drop the dicts
            span.attributes = span.resource = None
        return batch

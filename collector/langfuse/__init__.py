"""Export of enriched spans to Langfuse over OTLP, routed per tenant and tier, with nothing lost.

config.py reads `[langfuse]`, routing.py decides which project a span goes to, encode.py turns
stored spans into Langfuse-ready OTLP, exporter.py delivers them with a cursor per project.
"""

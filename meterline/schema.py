"""The span store's schema: one DDL script, applied idempotently on every open.

Column meanings are documented in README.md ("Store schema"); keep the two in step.
"""

SPAN_COLUMNS: tuple[str, ...] = (
    "tenant_id", "trace_id", "span_id", "parent_span_id", "trace_state", "flags",
    "name", "kind", "start_time", "end_time", "start_time_unix_nano", "end_time_unix_nano",
    "duration_ns", "status_code", "status_message",
    "service_name", "scope_name", "scope_version",
    "tier", "feature", "tenant_hint", "spoofed",
    "operation", "op_kind", "provider", "model",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
    "agent_name", "tool_name", "workflow_name", "session_id", "user_id", "outcome", "billable",
    "resource_attributes", "attributes", "events", "links",
    "ingest_seq", "received_at",
)

DDL = """
CREATE TABLE IF NOT EXISTS spans (
    tenant_id            VARCHAR   NOT NULL,
    trace_id             VARCHAR   NOT NULL,
    span_id              VARCHAR   NOT NULL,
    parent_span_id       VARCHAR,
    trace_state          VARCHAR,
    flags                UINTEGER,
    name                 VARCHAR   NOT NULL,
    kind                 VARCHAR   NOT NULL,
    start_time           TIMESTAMP NOT NULL,
    end_time             TIMESTAMP NOT NULL,
    start_time_unix_nano BIGINT    NOT NULL,
    end_time_unix_nano   BIGINT    NOT NULL,
    duration_ns          BIGINT    NOT NULL,
    status_code          VARCHAR   NOT NULL,
    status_message       VARCHAR,
    service_name         VARCHAR,
    scope_name           VARCHAR,
    scope_version        VARCHAR,
    tier                 VARCHAR,
    feature              VARCHAR,
    tenant_hint          VARCHAR,
    spoofed              BOOLEAN   NOT NULL,
    operation            VARCHAR,
    op_kind              VARCHAR   NOT NULL,
    provider             VARCHAR,
    model                VARCHAR,
    input_tokens         BIGINT,
    output_tokens        BIGINT,
    cache_read_tokens    BIGINT,
    cache_write_tokens   BIGINT,
    reasoning_tokens     BIGINT,
    agent_name           VARCHAR,
    tool_name            VARCHAR,
    workflow_name        VARCHAR,
    session_id           VARCHAR,
    user_id              VARCHAR,
    outcome              VARCHAR   NOT NULL,
    billable             BOOLEAN   NOT NULL,
    resource_attributes  JSON,
    attributes           JSON,
    events               JSON,
    links                JSON,
    ingest_seq           BIGINT    NOT NULL,
    received_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, trace_id, span_id)
);

CREATE TABLE IF NOT EXISTS tenants (
    tenant_id          VARCHAR PRIMARY KEY,
    name               VARCHAR,
    tier               VARCHAR NOT NULL,
    stripe_customer_id VARCHAR,
    status             VARCHAR NOT NULL DEFAULT 'active',
    created_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    updated_at         TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

-- Refused requests and spans, counted per minute, signal, reason and tenant ('' = unknown).
CREATE TABLE IF NOT EXISTS rejections (
    minute    TIMESTAMP NOT NULL,
    signal    VARCHAR   NOT NULL,
    reason    VARCHAR   NOT NULL,
    tenant_id VARCHAR   NOT NULL,
    requests  BIGINT    NOT NULL,
    items     BIGINT    NOT NULL,
    PRIMARY KEY (minute, signal, reason, tenant_id)
);

-- Per-destination export state (Langfuse): every span routed there with ingest_seq <= acked_seq
-- has been acknowledged by the destination or recorded in export_rejections.
CREATE TABLE IF NOT EXISTS export_cursors (
    destination          VARCHAR PRIMARY KEY,
    acked_seq            BIGINT    NOT NULL DEFAULT 0,
    spans_sent           BIGINT    NOT NULL DEFAULT 0,
    last_success_at      TIMESTAMP,
    last_attempt_at      TIMESTAMP,
    last_error           VARCHAR,
    consecutive_failures INTEGER   NOT NULL DEFAULT 0,
    route                JSON      -- which spans go there (collector/langfuse/routing.py)
);
ALTER TABLE export_cursors ADD COLUMN IF NOT EXISTS route JSON;  -- stores made before the column

-- Spans a destination refused for good (e.g. a 400 isolated to them), with the reason.
CREATE TABLE IF NOT EXISTS export_rejections (
    destination VARCHAR   NOT NULL,
    tenant_id   VARCHAR   NOT NULL,
    trace_id    VARCHAR   NOT NULL,
    span_id     VARCHAR   NOT NULL,
    ingest_seq  BIGINT    NOT NULL,
    status      INTEGER,
    reason      VARCHAR   NOT NULL,
    "at"        TIMESTAMP NOT NULL  -- quoted: AT is a keyword in DuckDB 1.5
);

-- One row per Stripe meter event the billing job means to send: the exactly-once ledger.
CREATE TABLE IF NOT EXISTS billing_ledger (
    identifier         VARCHAR   PRIMARY KEY,  -- the meter event's deterministic identifier
    run_id             VARCHAR   NOT NULL,
    period             VARCHAR   NOT NULL,     -- YYYY-MM
    tenant_id          VARCHAR   NOT NULL,
    stripe_customer_id VARCHAR   NOT NULL,
    charge             VARCHAR   NOT NULL,
    event_name         VARCHAR   NOT NULL,     -- the Stripe meter's event_name
    value              BIGINT    NOT NULL,     -- the delta this event carries
    cumulative         BIGINT    NOT NULL,     -- the period's total for this meter once it lands
    event_timestamp    TIMESTAMP NOT NULL,
    status             VARCHAR   NOT NULL,     -- intended | sent | acknowledged | failed
    stripe_response_id VARCHAR,
    error              VARCHAR,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS billing_runs (
    run_id        VARCHAR   PRIMARY KEY,
    period        VARCHAR   NOT NULL,
    through       TIMESTAMP,
    dry_run       BOOLEAN   NOT NULL,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    status        VARCHAR   NOT NULL,  -- running | succeeded | failed
    events_sent   INTEGER   NOT NULL DEFAULT 0,
    events_failed INTEGER   NOT NULL DEFAULT 0,
    summary       JSON
);

-- Small key/value state that must survive restarts (watermarks, cursors).
CREATE TABLE IF NOT EXISTS meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
"""

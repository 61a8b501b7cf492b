-- The trace database. Idempotent: run on every open of a writable store.
-- Times are Unix epoch nanoseconds (BIGINT); the `records` view converts them for Logfire-style SQL.

-- One row per span (docs/span-format.md: S+E pairs joined, X records as they are).
CREATE TABLE IF NOT EXISTS spans (
    run_id              VARCHAR NOT NULL,
    trace_id            VARCHAR,
    span_id             VARCHAR NOT NULL,
    parent_span_id      VARCHAR,          -- NULL for a root span
    name                VARCHAR,
    kind                VARCHAR,          -- INTERNAL, CLIENT, SERVER, PRODUCER, CONSUMER
    category            VARCHAR,          -- process, startup, import, subprocess, http, ...
    start_ns            BIGINT,
    end_ns              BIGINT,
    duration_ns         BIGINT,
    status              VARCHAR,          -- UNSET, OK, ERROR
    incomplete          BOOLEAN,          -- started, never ended: closed at the last time known for its file
    service_name        VARCHAR,
    pid                 INTEGER,
    attributes          JSON,
    resource_attributes JSON,
    source_file         VARCHAR           -- the span file's name, <pid>-<random>.spans
);

-- One row per loaded run (from run.json; derived from the spans where run.json is missing).
CREATE TABLE IF NOT EXISTS runs (
    run_id        VARCHAR PRIMARY KEY,
    group_id      VARCHAR,
    command       VARCHAR,
    cwd           VARCHAR,
    start_ns      BIGINT,
    end_ns        BIGINT,
    exit_code     INTEGER,
    service_name  VARCHAR,
    loaded_at     TIMESTAMPTZ,
    span_count    BIGINT,
    process_count INTEGER,               -- span files loaded: one per traced process
    run_dir       VARCHAR
);

-- The tracer's own diagnostics (D records) and the loader's warnings (codes 'loader.*').
CREATE TABLE IF NOT EXISTS diagnostics (
    run_id      VARCHAR NOT NULL,
    source_file VARCHAR,
    pid         INTEGER,
    time_ns     BIGINT,
    code        VARCHAR,
    message     VARCHAR
);

-- The spans under Pydantic Logfire's column names, so Logfire-style SQL runs unchanged, e.g.
--   SELECT span_name, duration FROM records WHERE is_exception
-- One difference: `level` is text ('info' or 'error'), so `level = 'error'` works but Logfire's
-- ordered `level > 'info'` does not.
CREATE OR REPLACE VIEW records AS
SELECT
    make_timestamptz(start_ns // 1000)                         AS start_timestamp,
    make_timestamptz(end_ns // 1000)                           AS end_timestamp,
    duration_ns / 1e9                                          AS duration,
    trace_id,
    span_id,
    parent_span_id,
    'span'                                                     AS kind,
    CASE WHEN status = 'ERROR' THEN 'error' ELSE 'info' END    AS level,
    name                                                       AS span_name,
    name                                                       AS message,
    attributes,
    status                                                     AS otel_status_code,
    CASE WHEN status = 'ERROR' THEN nullif(concat_ws(': ', exception_type, exception_message), '')
    END                                                        AS otel_status_message,
    status = 'ERROR' AND exception_type IS NOT NULL            AS is_exception,
    exception_type,
    exception_message,
    attributes->>'exception.stacktrace'                        AS exception_stacktrace,
    service_name,
    resource_attributes->>'service.version'                    AS service_version,
    resource_attributes->>'service.namespace'                  AS service_namespace,
    resource_attributes->>'service.instance.id'                AS service_instance_id,
    pid                                                        AS process_pid,
    resource_attributes                                        AS otel_resource_attributes,
    'selfopt-trace'                                            AS otel_scope_name,
    [category]                                                 AS tags,  -- the span category is our only label
    coalesce(resource_attributes->>'deployment.environment.name',
             resource_attributes->>'deployment.environment')   AS deployment_environment,
    run_id
FROM (
    -- The agent names an exception that ended a span in `error.type` (OTel semantic conventions),
    -- which also holds HTTP status codes ('500') and '_OTHER': only a class name is an exception.
    SELECT *,
           coalesce(attributes->>'exception.type',
                    CASE WHEN regexp_full_match(attributes->>'error.type', '[A-Za-z_][A-Za-z0-9_.]*')
                              AND attributes->>'error.type' <> '_OTHER'
                         THEN attributes->>'error.type' END) AS exception_type,
           attributes->>'exception.message'                  AS exception_message
    FROM spans
);

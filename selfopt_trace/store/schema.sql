-- The trace database. Idempotent: run on a writable store's open unless `store_schema` holds this
-- file's text already (store/database.py).
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
    run_dir       VARCHAR,
    pid           INTEGER,               -- CMD's process id (run.json): its process span, if traced, is CMD's own
    -- The run's own span (run.json; export/run_span.py), which the exports add as the root of its
    -- trace: its trace, its id, an incoming TRACEPARENT's span. Named apart from the spans' columns,
    -- so that `spans JOIN runs USING (run_id)` leaves those unambiguous.
    run_trace_id       VARCHAR,
    run_span_id        VARCHAR,
    run_parent_span_id VARCHAR,
    notes              VARCHAR[],    -- what followed CMD said (run.json: the live export, the profiler), for the summary
    damaged_lines      INTEGER       -- lines of the run's files the loader skipped (its diagnostics name them)
);
-- (a database written before these columns: added here, NULL for the runs it holds)
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid INTEGER;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS run_trace_id VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS run_span_id VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS run_parent_span_id VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS notes VARCHAR[];
ALTER TABLE runs ADD COLUMN IF NOT EXISTS damaged_lines INTEGER;

-- The tracer's own diagnostics (D records) and the loader's warnings (codes 'loader.*').
CREATE TABLE IF NOT EXISTS diagnostics (
    run_id      VARCHAR NOT NULL,
    source_file VARCHAR,
    pid         INTEGER,
    time_ns     BIGINT,
    code        VARCHAR,
    message     VARCHAR
);

-- CPU activity of every traced process's threads, sampled from /proc by `run` (docs/span-format.md,
-- "CPU samples"): one row per interval between two consecutive readings of one thread, so the
-- fraction of a window a thread ran is the sum, over the rows overlapping it, of cpu_ns times the
-- overlapped share of the row. A thread's first row starts when the thread started.
CREATE TABLE IF NOT EXISTS cpu_samples (
    run_id           VARCHAR NOT NULL,
    pid              INTEGER,
    tid              INTEGER,
    thread_name      VARCHAR,          -- the thread's comm when first seen (a Python thread: the program's)
    process_start_ns BIGINT,           -- with pid, names the process: a reused pid is another process
    start_ns         BIGINT,
    end_ns           BIGINT,           -- > start_ns
    cpu_ns           BIGINT,           -- on a CPU in [start_ns, end_ns]: 0 .. end_ns - start_ns
    runqueue_ns      BIGINT            -- runnable but waiting for a CPU: 0 .. end_ns - start_ns - cpu_ns
);
-- Off the CPU waiting for the GIL, as the sampler told (watchers/gil.py): 0 .. end_ns - start_ns - cpu_ns
-- - runqueue_ns; 0 where it was not told (a sample file of version 1). Added last: a store written
-- before has it so too.
ALTER TABLE cpu_samples ADD COLUMN IF NOT EXISTS gil_ns BIGINT;

-- CPU per sampled process of each run (a process is a pid and its start time).
CREATE OR REPLACE VIEW process_cpu AS
SELECT run_id, pid, process_start_ns, count(DISTINCT tid) AS threads,
       min(start_ns) AS start_ns, max(end_ns) AS last_sample_ns,
       sum(cpu_ns) AS cpu_ns, sum(runqueue_ns) AS runqueue_ns
FROM cpu_samples
GROUP BY run_id, pid, process_start_ns;

-- The CPU used by the process of each process span of a run: `FROM process_span_cpu('<run id>')`.
-- A span goes with the sampled process of its pid that started closest to the span's start, among
-- those started before it (a reused pid is another process; /proc counts 10 ms steps and a span may
-- start a little before its process, at the spawn call: 100 ms of slack). The process spans of one
-- process (an exec) share its samples at their start times, the first from the process's start,
-- the last until its last sample (a SIGKILLed process included). The sampler misses what a process
-- used after its last reading (up to one period) and may never see a short one: where the agent
-- recorded the process's CPU time at its end (process.cpu_ns, every thread, since the process
-- started), the last span of the process gets that, less what its earlier spans got, when it is more.
CREATE OR REPLACE MACRO process_span_cpu(target_run) AS TABLE
WITH process AS (
    SELECT s.span_id, s.pid, s.start_ns, TRY_CAST(s.attributes->>'process.cpu_ns' AS BIGINT) AS recorded_ns,
           (SELECT arg_min(c.process_start_ns, abs(c.process_start_ns - s.start_ns)) FROM process_cpu AS c
            WHERE c.run_id = target_run AND c.pid = s.pid
              AND c.process_start_ns <= s.start_ns + 100000000) AS process_start_ns
    FROM spans AS s
    WHERE s.run_id = target_run AND s.name = 'process' AND s.category = 'process'
),
bounded AS (
    SELECT span_id, pid, process_start_ns, recorded_ns,
           CASE WHEN row_number() OVER w > 1 THEN start_ns END AS from_ns,
           lead(start_ns) OVER w AS until_ns
    FROM process
    WHERE process_start_ns IS NOT NULL
    WINDOW w AS (PARTITION BY pid, process_start_ns ORDER BY start_ns, span_id)
),
shared AS (  -- each sample, with the share of it inside the span's part of the process's life
    SELECT b.span_id, b.pid, b.process_start_ns, c.cpu_ns, c.runqueue_ns,
           (least(c.end_ns, coalesce(b.until_ns, c.end_ns)) - greatest(c.start_ns, coalesce(b.from_ns, c.start_ns)))
           / (c.end_ns - c.start_ns) AS share
    FROM bounded AS b
    JOIN cpu_samples AS c
      ON c.run_id = target_run AND c.pid = b.pid AND c.process_start_ns = b.process_start_ns
     AND (b.from_ns IS NULL OR c.end_ns > b.from_ns) AND (b.until_ns IS NULL OR c.start_ns < b.until_ns)
),
sampled AS (
    SELECT b.span_id, b.pid, b.process_start_ns, b.recorded_ns, b.until_ns IS NULL AS last,
           round(sum(s.cpu_ns * s.share))::BIGINT AS cpu_ns, round(sum(s.runqueue_ns * s.share))::BIGINT AS runqueue_ns
    FROM bounded AS b
    LEFT JOIN shared AS s ON s.span_id = b.span_id
    GROUP BY ALL
)
SELECT span_id, pid, process_start_ns,
       CASE WHEN last AND recorded_ns IS NOT NULL
            THEN greatest(coalesce(cpu_ns, 0),
                          recorded_ns - coalesce(sum(cpu_ns) OVER (PARTITION BY pid, process_start_ns) - cpu_ns, 0))
            ELSE cpu_ns END AS cpu_ns,
       runqueue_ns
FROM sampled
WHERE cpu_ns IS NOT NULL OR recorded_ns IS NOT NULL
UNION ALL  -- never sampled (too short, or /proc unreadable): what the agent recorded
SELECT span_id, pid, NULL, recorded_ns, NULL
FROM process
WHERE process_start_ns IS NULL AND recorded_ns IS NOT NULL;

-- py-spy samples of `run --profile` (docs/span-format.md, "Profile samples"). One row per slice: a
-- stretch a thread stayed in one stack, from the sample that saw it to the one that saw another
-- (py-spy merges identical consecutive stacks); `weight` is the samples it stands for.
CREATE TABLE IF NOT EXISTS samples (
    run_id       VARCHAR NOT NULL,
    pid          INTEGER,
    tid          INTEGER,           -- the thread's native id (the main thread's is the pid); NULL: not known
    thread_name  VARCHAR,
    time_ns      BIGINT,            -- the first sample of the slice, on the trace's clock
    duration_ns  BIGINT,            -- until the sample that saw another stack (or the thread's end)
    weight       DOUBLE,            -- samples it stands for: duration x the sampling rate
    stack_id     BIGINT,            -- its stack: stacks.frames (the view)
    idle         BOOLEAN,           -- the thread was waiting, not running (kept only with run --idle)
    span_id      VARCHAR            -- the innermost span open on its process and thread then
);

-- Each frame of the samples' stacks (a function in a file) once per run ...
CREATE TABLE IF NOT EXISTS frames (
    run_id   VARCHAR NOT NULL,
    frame_id UBIGINT,            -- hash(function, file)
    function VARCHAR,
    file     VARCHAR,
    number   INTEGER             -- 1, 2, ... in its run: what stack_numbers holds
);
-- (a database written before `number`: added here, filled by convert_whole_stacks in store/profile.py)
ALTER TABLE frames ADD COLUMN IF NOT EXISTS number INTEGER;

-- ... each stack once per run, as its frames' numbers and lines, root first, the running one last
-- (integers: a million-sample load writes ~2 M frames; as structs of strings they cost a second
-- more to write and commit, docs/benchmarks.md) ...
CREATE TABLE IF NOT EXISTS stack_numbers (
    run_id   VARCHAR NOT NULL,
    stack_id BIGINT,
    numbers  INTEGER[],          -- frames.number of each frame
    lines    INTEGER[]           -- the line each frame was at
);

-- ... the same stacks taken apart, so that hot_frames and the report join integers instead of
-- reading lists: each stack's frames, each once (recursion or not).
CREATE TABLE IF NOT EXISTS stack_frames (
    run_id   VARCHAR NOT NULL,
    stack_id BIGINT,
    frame_id UBIGINT,
    running  BOOLEAN,            -- it is the stack's running frame (its last)
    line     INTEGER             -- when running, the line it was running (else NULL)
);

-- The stacks with their frames in place, root first, the running one last: each number becomes
-- its frame's function and file. list_select reads them from one list of every run's frames (run by
-- run, each in number order, so a run's frame n is at its run's start + n): a list from a scalar
-- subquery is one constant, where a list per run joined to the stacks would be copied into each
-- stack's row (5 CPU s instead of 0.1 for a million-sample run's 2 M frames).
CREATE OR REPLACE VIEW stacks AS
WITH every_frame AS (
    SELECT list(function ORDER BY run_id, number) AS functions, list(file ORDER BY run_id, number) AS files
    FROM frames
),
runs_start AS (SELECT run_id, (sum(count(*)) OVER (ORDER BY run_id) - count(*))::BIGINT AS start FROM frames GROUP BY run_id),
placed AS (
    SELECT k.run_id, k.stack_id, k.lines, [n + r.start FOR n IN k.numbers] AS positions
    FROM stack_numbers AS k JOIN runs_start AS r USING (run_id)
)
SELECT run_id, stack_id,
       list_zip(list_select((SELECT functions FROM every_frame), positions),
                list_select((SELECT files FROM every_frame), positions), lines
               )::STRUCT(function VARCHAR, file VARCHAR, line INTEGER)[] AS frames
FROM placed;

-- What was sent where (selfopt_trace/export/ledger.py): one row per live export or `push` of a run.
CREATE TABLE IF NOT EXISTS exports (
    run_id       VARCHAR,
    sent_at_ns   BIGINT,     -- when the export ended (epoch ns)
    via          VARCHAR,    -- 'live' (during the run) or 'push'
    endpoint     VARCHAR,    -- without credentials
    protocol     VARCHAR,    -- grpc | http/protobuf
    spans_total  BIGINT,     -- spans of the run (live: the store's, its own span included, once loaded)
    spans_sent   BIGINT,     -- accepted by the receiver
    complete     BOOLEAN,    -- every span of the run accepted
    error        VARCHAR
);

-- The text of this file as it was last run on the database (one row): a writable open of a store
-- that holds this text, and the tables, runs nothing of it.
CREATE TABLE IF NOT EXISTS store_schema (
    schema_sql VARCHAR
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

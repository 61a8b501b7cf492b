-- Container start-up, per container: where the time of each `docker run` (CLI or SDK) went.
--
-- A container is a docker/podman run, create or exec (or Docker SDK call) into which selfopt-trace
-- injected the trace: its client span has a `container.inject` child. Its first process is the
-- process span whose parent is that client span. The parts add up to the total: engine start-up
-- (docker CLI start -> the container's first process starts: CLI, engine, image layers, mounts,
-- namespaces), interpreter start-up, imports (the cold start: top-level imports of the first
-- process), work (the rest of the first process), teardown (the first process exits -> the docker
-- command returns: container stop, --rm, CLI exit). Host and container share the kernel clock on
-- Linux, so these differences are exact there. A detached container (`-d`) has no teardown, and
-- its total runs to its first process's exit. A container whose spans never arrived (no Python
-- >= 3.8 in the image, a run directory it could not write) has `traced` false and only a total.
--
-- After the containers, one row per group of containers with and without bind mounts of their own
-- (medians), when both groups exist: the volume-mount overhead shows in engine start-up; then the
-- totals over all containers.
--
-- Parameters:
--   run_id                the run
-- Columns:
--   row                   'container', 'with bind mounts', 'without bind mounts', or 'total'
--   container             container.name, else the first 12 characters of container.id
--   image                 container.image.name
--   subcommand            run, create or exec
--   containers            how many containers the row covers
--   engine_startup_ms     docker CLI start -> the container's first process start
--   interpreter_ms        interpreter start-up of the first process
--   imports_ms            top-level imports of the first process
--   work_ms               the rest of the first process
--   teardown_ms           first process exit -> the docker command returns (null when detached)
--   total_ms              the docker command (detached: to the first process's exit)
--   user_mounts           bind mounts the command itself gave (besides selfopt-trace's two)
--   detached              started with -d / detach=True
--   traced                whether the container's own spans arrived
WITH
run_spans AS (
    SELECT * FROM spans WHERE run_id = $run_id
),
-- A process that exec'd docker (`run -- docker run ...`'s shim) ended its client span, the exec, as
-- docker started: the docker command returns when that process exits, as its spawner saw it (the
-- end of the subprocess span that started it) or, for CMD, as `run` did (store/macros.sql, cmd_exit).
injected AS (
    SELECT c.span_id AS client_id, c.start_ns, i.attributes AS inject,
           CASE WHEN c.name = 'exec' THEN coalesce(spawn.end_ns, cmd.exited_ns, c.end_ns) ELSE c.end_ns END AS end_ns
    FROM run_spans i JOIN run_spans c ON c.span_id = i.parent_span_id AND c.trace_id = i.trace_id
    LEFT JOIN run_spans p ON c.name = 'exec' AND p.span_id = c.parent_span_id AND p.category = 'process'
    LEFT JOIN run_spans spawn ON spawn.span_id = p.parent_span_id AND spawn.category = 'subprocess'
                             AND spawn.name <> 'exec' AND TRY_CAST(spawn.attributes->>'process.pid' AS INTEGER) = p.pid
    LEFT JOIN cmd_exit($run_id) AS cmd ON cmd.id = hash(p.span_id) AND cmd.replaced
    WHERE i.name = 'container.inject'
),
first_process AS (
    SELECT p.parent_span_id AS client_id, p.span_id, p.source_file, p.start_ns, p.end_ns, p.resource_attributes,
           row_number() OVER (PARTITION BY p.parent_span_id ORDER BY p.start_ns) AS nth
    FROM run_spans p
    WHERE p.category = 'process' AND p.parent_span_id IN (SELECT client_id FROM injected)
),
startup AS (
    SELECT parent_span_id AS process_id, sum(duration_ns) AS ns FROM run_spans
    WHERE category = 'startup' GROUP BY parent_span_id
),
imports AS (  -- imports not nested in another import, in the first process's own file
    SELECT f.span_id AS process_id, sum(s.duration_ns) AS ns
    FROM first_process f
    JOIN run_spans s ON s.source_file = f.source_file AND s.category = 'import'
    LEFT JOIN run_spans up ON up.span_id = s.parent_span_id AND up.source_file = s.source_file
    WHERE f.nth = 1 AND (up.category IS NULL OR up.category <> 'import')
    GROUP BY f.span_id
),
containers AS (
    SELECT
        coalesce(nullif(f.resource_attributes->>'container.name', ''), nullif(i.inject->>'container.name', ''),
                 left(f.resource_attributes->>'container.id', 12)) AS container,
        nullif(i.inject->>'container.image.name', '') AS image,
        i.inject->>'selfopt_trace.docker.subcommand' AS subcommand,
        coalesce(TRY_CAST(i.inject->>'selfopt_trace.docker.detached' AS BOOLEAN), false) AS detached,
        coalesce(TRY_CAST(i.inject->>'selfopt_trace.docker.user_mounts' AS INTEGER), 0) AS user_mounts,
        f.span_id IS NOT NULL AS traced,
        i.start_ns,
        f.start_ns - i.start_ns AS engine_ns,
        CASE WHEN f.span_id IS NOT NULL THEN coalesce(st.ns, 0) END AS interpreter_ns,
        CASE WHEN f.span_id IS NOT NULL THEN coalesce(im.ns, 0) END AS imports_ns,
        (f.end_ns - f.start_ns) - coalesce(st.ns, 0) - coalesce(im.ns, 0) AS work_ns,
        CASE WHEN NOT coalesce(TRY_CAST(i.inject->>'selfopt_trace.docker.detached' AS BOOLEAN), false)
             THEN i.end_ns - f.end_ns END AS teardown_ns,
        CASE WHEN coalesce(TRY_CAST(i.inject->>'selfopt_trace.docker.detached' AS BOOLEAN), false)
             THEN greatest(i.end_ns, f.end_ns) ELSE i.end_ns END - i.start_ns AS total_ns
    FROM injected i
    LEFT JOIN first_process f ON f.client_id = i.client_id AND f.nth = 1
    LEFT JOIN startup st ON st.process_id = f.span_id
    LEFT JOIN imports im ON im.process_id = f.span_id
),
groups AS (
    SELECT CASE WHEN user_mounts > 0 THEN 'with bind mounts' ELSE 'without bind mounts' END AS row, *
    FROM containers WHERE traced
),
rows AS (
    SELECT 1 AS section, start_ns AS ord, 'container' AS row, container, image, subcommand, 1 AS containers,
           engine_ns, interpreter_ns, imports_ns, work_ns, teardown_ns, total_ns, user_mounts, detached, traced
    FROM containers
    UNION ALL
    SELECT 2, CASE row WHEN 'with bind mounts' THEN 0 ELSE 1 END, row, NULL, NULL, NULL, count(*),
           median(engine_ns), median(interpreter_ns), median(imports_ns), median(work_ns), median(teardown_ns),
           median(total_ns), median(user_mounts), NULL, true
    FROM groups
    WHERE (SELECT count(DISTINCT row) FROM groups) = 2
    GROUP BY row
    UNION ALL
    SELECT 3, 0, 'total', NULL, NULL, NULL, count(*),
           sum(engine_ns), sum(interpreter_ns), sum(imports_ns), sum(work_ns), sum(teardown_ns), sum(total_ns),
           sum(user_mounts), NULL, bool_and(traced)
    FROM containers
    HAVING count(*) > 0
)
SELECT row, container, image, subcommand, containers,
       round(engine_ns / 1e6, 3) AS engine_startup_ms,
       round(interpreter_ns / 1e6, 3) AS interpreter_ms,
       round(imports_ns / 1e6, 3) AS imports_ms,
       round(work_ns / 1e6, 3) AS work_ms,
       round(teardown_ns / 1e6, 3) AS teardown_ms,
       round(total_ns / 1e6, 3) AS total_ms,
       user_mounts, detached, traced
FROM rows
ORDER BY section, ord

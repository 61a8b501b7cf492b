-- HTTP round-trips per endpoint: how many, how long, how big, and how much of it the server took.
--
-- An endpoint is the method, the server (address:port) and the route: the route template the
-- server reported (http.route) when its SERVER span is in the store, else the client's URL path
-- with ids collapsed to {id} (numbers, UUIDs, long hex). A request's server time is the part of
-- the client span during which a matching SERVER span ran (one whose parent is the client span:
-- the traceparent header joined them; the server may have been traced as another run; several,
-- as for a redirect, count each instant once): a server span is clipped to its client span, as
-- a client that timed out, or read a streamed body after its span ended, did not wait on the rest.
-- The overhead is the rest of the client span (never negative): connection set-up, network,
-- proxies, queueing, sending and reading. Retries are resends of the same request
-- (http.request.resend_count).
--
-- Parameters:
--   run_id                the run
--   limit = 30 [>= 0]     endpoints shown
-- Columns:
--   method                GET, POST...
--   server                address:port called
--   route                 route template, or path with ids collapsed
--   calls                 requests
--   p50_ms                median client-side duration
--   p95_ms                95th percentile
--   max_ms                slowest
--   total_ms              sum of client-side durations
--   request_bytes         request bodies sent
--   response_bytes        response bodies received
--   server_ms             sum of server time within the client spans (requests with a server span)
--   overhead_ms           sum of client minus server time, 0 or more (requests with a server span)
--   overhead_p50_ms       median of a request's client minus server time (requests with a server span)
--   with_server           requests whose server span is known
--   new_connections       requests that opened a new connection
--   reused_connections    requests that reused one
--   retries               resends
--   errors                requests that failed (status >= 400 or an exception)
WITH
client AS (
    SELECT span_id, trace_id, start_ns, end_ns, duration_ns, status,
           attributes->>'http.request.method' AS method,
           concat_ws(':', attributes->>'server.address', attributes->>'server.port') AS server,
           regexp_extract(attributes->>'url.full', '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)', 1) AS path,
           TRY_CAST(attributes->>'http.request.body.size' AS BIGINT) AS request_bytes,
           TRY_CAST(attributes->>'http.response.body.size' AS BIGINT) AS response_bytes,
           TRY_CAST(attributes->>'selfopt_trace.http.connection.reused' AS BOOLEAN) AS reused,
           coalesce(TRY_CAST(attributes->>'http.request.resend_count' AS INTEGER), 0) AS retries
    FROM spans
    WHERE run_id = $run_id AND category = 'http' AND kind = 'CLIENT'
),
answers AS (  -- the SERVER spans answering each client span, in this run or another one, clipped to it
    SELECT s.parent_span_id AS client_id, s.attributes->>'http.route' AS route,
           greatest(s.start_ns, c.start_ns) AS lo, least(s.end_ns, c.end_ns) AS hi
    FROM spans AS s
    JOIN client AS c ON c.span_id = s.parent_span_id AND c.trace_id = s.trace_id
    WHERE s.kind = 'SERVER' AND s.category = 'http'
),
server AS (  -- per client span: how long some server span of it ran (the union of the clipped spans)
    SELECT client_id, any_value(route) AS route,
           -- in start order, each span adds what it runs past the ends of those before it
           sum(greatest(0, hi - greatest(lo, coalesce(reached, lo)))) AS duration_ns
    FROM (SELECT *, max(hi) OVER (PARTITION BY client_id ORDER BY lo, hi
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reached
          FROM answers)
    GROUP BY client_id
),
requests AS (
    SELECT c.*, s.duration_ns AS server_ns,
           coalesce(s.route, array_to_string(list_transform(string_split(coalesce(nullif(c.path, ''), '/'), '/'),
               lambda part: CASE WHEN regexp_full_match(part, '[0-9]+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}')
                            THEN '{id}' ELSE part END), '/')) AS route
    FROM client AS c
    LEFT JOIN server AS s ON s.client_id = c.span_id
)
SELECT method, server, route, count(*) AS calls,
       round(median(duration_ns) / 1e6, 3) AS p50_ms,
       round(quantile_cont(duration_ns, 0.95) / 1e6, 3) AS p95_ms,
       round(max(duration_ns) / 1e6, 3) AS max_ms,
       round(sum(duration_ns) / 1e6, 3) AS total_ms,
       sum(request_bytes) AS request_bytes,
       sum(response_bytes) AS response_bytes,
       round(sum(server_ns) / 1e6, 3) AS server_ms,
       round(sum(duration_ns - server_ns) / 1e6, 3) AS overhead_ms,
       round(median(duration_ns - server_ns) / 1e6, 3) AS overhead_p50_ms,
       count(server_ns) AS with_server,
       count(*) FILTER (WHERE NOT reused) AS new_connections,
       count(*) FILTER (WHERE reused) AS reused_connections,
       sum(retries) AS retries,
       count(*) FILTER (WHERE status = 'ERROR') AS errors
FROM requests
GROUP BY method, server, route
ORDER BY sum(duration_ns) DESC, method, server, route
LIMIT $limit

-- Every query the Postgres store makes, by name (aggregator.postgres reads them at import).
-- Parameters are psycopg's %(name)s placeholders.

-- name: insert_request
-- A new request with its first event, in one statement (a round trip, where a transaction of
-- two inserts takes four); nothing when the customer's idempotency key is taken (see
-- find_by_key). The event row's reference to the request is checked at the statement's end,
-- when the request's row is there.
WITH request AS (
    INSERT INTO osago_requests (
        id, customer_id, idempotency_key, fingerprint, vehicle_data, application, insurers,
        status, created_at, expires_at, owner, lease_epoch
    ) VALUES (
        %(id)s, %(customer_id)s, %(idempotency_key)s, %(fingerprint)s, %(vehicle_data)s,
        %(application)s, %(insurers)s, 'running', %(created_at)s, %(expires_at)s, %(owner)s, 1
    )
    ON CONFLICT ON CONSTRAINT osago_requests_idempotency DO NOTHING
    RETURNING id, lease_epoch
),
first AS (
    INSERT INTO osago_events (request_id, seq, kind, event, created_at)
    SELECT request.id, %(seq)s, %(kind)s, %(event)s, %(time)s FROM request
)
SELECT lease_epoch FROM request;

-- name: find_by_key
SELECT id, customer_id, idempotency_key, fingerprint, insurers, status, created_at, expires_at
FROM osago_requests
WHERE customer_id = %(customer_id)s AND idempotency_key = %(idempotency_key)s;

-- name: get_request
SELECT id, customer_id, idempotency_key, fingerprint, insurers, status, created_at, expires_at
FROM osago_requests
WHERE id = %(id)s;

-- name: append_events
-- One statement: the fence (the writer's epoch is still the request's, row locked against a
-- concurrent takeover until this commits), the events, each insurer's one answer, and the end
-- of the request when a session_finished is among the events. Counts the events stored: 0
-- means the lease was lost and nothing was stored. The arrays go in binary form (placeholders
-- ending in b): psycopg writes a list in text form by escaping each element with a regular
-- expression, a sixth of the statement's client CPU (docs/BENCHMARKS.md, "With Postgres + Redis").
WITH fence AS (
    SELECT id FROM osago_requests
    WHERE id = %(id)s AND lease_epoch = %(epoch)s AND owner = %(owner)s AND status = 'running'
    FOR NO KEY UPDATE
),
stored AS (
    INSERT INTO osago_events (request_id, seq, kind, event, created_at)
    SELECT fence.id, e.seq, e.kind, e.event, e.created_at
    FROM fence,
         unnest(%(seqs)b::bigint[], %(kinds)b::text[], %(events)b::bytea[], %(times)b::timestamptz[])
             AS e (seq, kind, event, created_at)
    RETURNING seq
),
answers AS (
    INSERT INTO osago_quotes (request_id, company_id, quote_data, status, received_at)
    SELECT fence.id, a.company_id, a.quote_data, a.status, a.received_at
    FROM fence,
         unnest(%(companies)b::text[], %(answers)b::jsonb[], %(answer_status)b::text[],
                %(answer_times)b::timestamptz[])
             AS a (company_id, quote_data, status, received_at)
    ON CONFLICT ON CONSTRAINT osago_quotes_one_answer DO NOTHING
),
finished AS (
    UPDATE osago_requests r
    SET status = %(final_status)s, finished_at = %(finished_at)s, owner = NULL
    FROM fence
    WHERE r.id = fence.id AND %(final_status)s::text IS NOT NULL
)
SELECT count(*) FROM stored;

-- name: events_after
SELECT event FROM osago_events
WHERE request_id = %(id)s AND seq > %(after_seq)s
ORDER BY seq;

-- name: events_between
SELECT event FROM osago_events
WHERE request_id = %(id)s AND seq BETWEEN %(first)s AND %(last)s
ORDER BY seq;

-- name: heartbeat
-- Renews the instance's lease; returns the lease it had (NULL for a new instance).
WITH before AS (SELECT lease_until FROM osago_instances WHERE id = %(owner)s)
INSERT INTO osago_instances (id, started_at, lease_until)
VALUES (%(owner)s, %(now)s, %(lease_until)s)
ON CONFLICT (id) DO UPDATE SET lease_until = EXCLUDED.lease_until
RETURNING (SELECT lease_until FROM before);

-- name: owned
SELECT id, lease_epoch FROM osago_requests
WHERE id = ANY(%(ids)s) AND owner = %(owner)s AND status = 'running';

-- name: claim_orphans
-- Running requests whose owner is gone (no live instance lease), that were released, or that are
-- long past their deadline (their owner failed to finish them), oldest deadline first; rows
-- another instance is claiming right now are skipped, not waited for.
WITH orphans AS (
    SELECT r.id FROM osago_requests r
    WHERE r.status = 'running'
      AND (r.owner IS NULL OR r.expires_at < %(overdue_before)s OR NOT EXISTS (
          SELECT 1 FROM osago_instances i WHERE i.id = r.owner AND i.lease_until > %(now)s))
    ORDER BY r.expires_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE OF r SKIP LOCKED
)
UPDATE osago_requests r
SET owner = %(owner)s, lease_epoch = r.lease_epoch + 1,
    claimed_from = coalesce(r.owner, r.released_by), claimed_at = %(now)s, released_by = NULL
FROM orphans
WHERE r.id = orphans.id
RETURNING r.id, r.customer_id, r.idempotency_key, r.fingerprint, r.insurers, r.status,
          r.created_at, r.expires_at, r.application, r.lease_epoch;

-- name: events_of
SELECT request_id, event FROM osago_events
WHERE request_id = ANY(%(ids)s)
ORDER BY request_id, seq;

-- name: release
UPDATE osago_requests
SET owner = NULL, released_by = owner, lease_epoch = lease_epoch + 1
WHERE id = %(id)s AND lease_epoch = %(epoch)s AND status = 'running';

-- name: forget
DELETE FROM osago_requests WHERE id = %(id)s;

-- name: drop_instance
DELETE FROM osago_instances WHERE id = %(owner)s;

-- name: purge_personal
-- Erases the personal data of up to %(limit)s finished requests created before %(before)s; the
-- rows, their events and answers stay. Rows another instance is purging are skipped.
WITH due AS (
    SELECT id FROM osago_requests
    WHERE application IS NOT NULL AND status <> 'running' AND created_at < %(before)s
    ORDER BY created_at
    LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE osago_requests r
SET application = NULL, customer_id = '', idempotency_key = NULL, fingerprint = '', purged_at = %(now)s
FROM due
WHERE r.id = due.id;

-- The quote requests, their events and the insurers' answers; the aggregator instances alive.
-- Times are timestamptz everywhere. Personal data (names, birth dates, licence and document
-- numbers, the VIN) lives only in osago_requests.application, which nothing logs or measures
-- and which retention purges.

-- Aggregator instances and how long each is known to be alive. Every session row names its
-- owner; a session whose owner's lease lapsed (or that was released) is taken over.
CREATE TABLE osago_instances (
    id          text PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    lease_until timestamptz NOT NULL
);

CREATE TABLE osago_requests (
    id              text PRIMARY KEY,
    -- Who asked ('' until callers are identified); idempotency keys are unique per customer.
    customer_id     text NOT NULL DEFAULT '',
    -- NULL when the caller gave none (NULLs never conflict in the unique index below).
    idempotency_key text,
    -- SHA-256 of the normalised application: tells a retried create from a reused key, and
    -- keys the cache of results.
    fingerprint     text NOT NULL,
    -- What the policy is about, without personal data: category, power, year, region, ...
    vehicle_data    jsonb NOT NULL,
    -- The application as sent to the insurers (osago.v1.Application, protobuf): personal data,
    -- needed to resume the session on another instance; NULL once purged.
    application     bytea,
    -- [[insurer_id, insurer_name], ...] in the order the insurers are asked.
    insurers        jsonb NOT NULL,
    -- running, completed, deadline_exceeded, upstream_outage, cancelled.
    status          text NOT NULL,
    created_at      timestamptz NOT NULL,
    -- The session's deadline: it ends by then whoever runs it.
    expires_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    -- The instance running the session; NULL when released (a draining instance) or finished.
    owner           text,
    -- The fencing token: raised by every takeover and release; a write carrying an older epoch
    -- is refused, so an owner that lost its lease cannot append after the new owner started.
    lease_epoch     bigint NOT NULL DEFAULT 1,
    CONSTRAINT osago_requests_idempotency UNIQUE (customer_id, idempotency_key)
);

-- The takeover scan reads only running sessions.
CREATE INDEX osago_requests_running ON osago_requests (expires_at) WHERE status = 'running';

-- Every event of every request, numbered 1, 2, 3, ... without gaps (osago.v1.QuoteEvent).
CREATE TABLE osago_events (
    request_id text NOT NULL REFERENCES osago_requests (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    kind       text NOT NULL,
    event      bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, seq)
);

-- Each insurer's answer to a request, stored once: the offer, or why there was none.
CREATE TABLE osago_quotes (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL REFERENCES osago_requests (id) ON DELETE CASCADE,
    company_id  text NOT NULL,
    -- The offer (premium in kopecks, coefficients, validity) or the failure (reason, message).
    quote_data  jsonb NOT NULL,
    -- offered, or the failure reason: declined, unavailable, deadline, ...
    status      text NOT NULL,
    received_at timestamptz NOT NULL,
    CONSTRAINT osago_quotes_one_answer UNIQUE (request_id, company_id)
);

-- Personal data is kept only as long as configured (OSAGO_PERSONAL_DATA_RETENTION_S): then the
-- purge erases a finished request's application (names, birth dates, licences, documents, VIN),
-- its customer id, idempotency key and fingerprint (a hash of the application), and notes when.
-- The request's row, its events and the insurers' answers (osago_quotes) stay: the audit trail of
-- which offers were made, without the person.
ALTER TABLE osago_requests ADD COLUMN purged_at timestamptz;

-- The purge reads finished requests that still hold personal data, oldest first.
CREATE INDEX osago_requests_personal ON osago_requests (created_at)
    WHERE application IS NOT NULL AND status <> 'running';

-- Who a running session was taken over from, and when: the trail of takeovers and handovers that
-- operators (and the failover benchmark) read to see how long a session went unattended.

-- The instance that released the session (a draining instance), until another claims it.
ALTER TABLE osago_requests ADD COLUMN released_by text;
-- The last claim: from which instance (the dead owner, or the one that released it), and when.
ALTER TABLE osago_requests ADD COLUMN claimed_from text;
ALTER TABLE osago_requests ADD COLUMN claimed_at timestamptz;

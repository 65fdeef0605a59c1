-- "Clear rate limits" requests. The control message that follows one only tells processes to
-- look here: a process clears its counters when it finds a newer row than it has seen, so a
-- forged or replayed message changes nothing.
CREATE TABLE rate_limit_resets (
    id bigserial PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

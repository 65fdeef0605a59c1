-- Rate limits shared by every process (the HubSpot proxy's per-portal budget, the per-client
-- limits of the OAuth install flow and of log-in). One row per bucket holds a sliding-window
-- log: the send instants (past, or reserved in the near future) of the requests in the window,
-- oldest first. A reservation locks the row for the length of one function call, so processes
-- queue on the row lock instead of retrying a compare-and-set.
--
-- Unlogged: the state is worth seconds; after a crash an empty table only forgets the current
-- window, and not writing WAL keeps a reservation to a fraction of a millisecond.
CREATE UNLOGGED TABLE rate_limit_windows (
    bucket        text PRIMARY KEY,
    -- Send instants in the window, non-decreasing; at most max * (1 + max_wait / window).
    slots         timestamptz[] NOT NULL DEFAULT '{}',
    -- Set when the far side said stop (HubSpot's 429): nothing is sent before it.
    blocked_until timestamptz,
    -- After this instant the row holds nothing that counts; swept in batches.
    expires_at    timestamptz NOT NULL
);

CREATE INDEX rate_limit_windows_expires ON rate_limit_windows (expires_at);

-- Reserves the earliest instant at which one more request fits in `p_bucket`'s window (no more
-- than p_max within any p_window_ms), if it is at most p_max_wait_ms away.
-- Returns microseconds: >= 0, reserved, send after waiting that long; < 0, refused (nothing is
-- reserved), and the absolute value is how long until the earliest free slot.
CREATE FUNCTION hk_rate_limit_reserve(p_bucket text, p_max integer, p_window_ms bigint,
                                      p_max_wait_ms bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := clock_timestamp();
    v_window  interval := p_window_ms * interval '1 millisecond';
    v_slots   timestamptz[];
    v_blocked timestamptz;
    v_len     integer;
    v_at      timestamptz;
    v_wait    bigint;
BEGIN
    SELECT slots, blocked_until INTO v_slots, v_blocked
      FROM rate_limit_windows WHERE bucket = p_bucket FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO rate_limit_windows (bucket, expires_at) VALUES (p_bucket, v_now)
            ON CONFLICT (bucket) DO NOTHING;
        SELECT slots, blocked_until INTO v_slots, v_blocked
          FROM rate_limit_windows WHERE bucket = p_bucket FOR UPDATE;
    END IF;
    -- Drop what has left the window (a send at t counts while now - t < window).
    v_slots := ARRAY(SELECT s FROM unnest(v_slots) AS s WHERE s > v_now - v_window ORDER BY s);
    v_len := coalesce(array_length(v_slots, 1), 0);
    v_at := v_now;
    IF v_len >= p_max THEN
        -- The request p_max places back must have left the window first.
        v_at := greatest(v_at, v_slots[v_len - p_max + 1] + v_window);
    END IF;
    IF v_len > 0 THEN
        v_at := greatest(v_at, v_slots[v_len]);  -- keep the log ordered
    END IF;
    IF v_blocked IS NOT NULL AND v_blocked > v_at THEN
        v_at := v_blocked;
    END IF;
    v_wait := ceil(extract(epoch FROM (v_at - v_now)) * 1000000)::bigint;
    IF v_wait > p_max_wait_ms * 1000 THEN
        UPDATE rate_limit_windows
           SET slots = v_slots,
               expires_at = greatest(coalesce(v_slots[v_len], v_now) + v_window,
                                     coalesce(v_blocked, v_now))
         WHERE bucket = p_bucket;
        RETURN -greatest(v_wait, 1);
    END IF;
    UPDATE rate_limit_windows
       SET slots = v_slots || v_at,
           expires_at = greatest(v_at + v_window, coalesce(v_blocked, v_now))
     WHERE bucket = p_bucket;
    RETURN v_wait;
END
$$;

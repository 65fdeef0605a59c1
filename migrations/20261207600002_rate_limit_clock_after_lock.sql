-- hk_rate_limit_reserve reads the clock after taking the bucket's row lock, not before: callers
-- that queued on the lock saw the previous holder's slot in their future and, when they may not
-- wait, were refused although the bucket was far from full.
CREATE OR REPLACE FUNCTION hk_rate_limit_reserve(p_bucket text, p_max integer, p_window_ms bigint,
                                      p_max_wait_ms bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz;
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
        INSERT INTO rate_limit_windows (bucket, expires_at) VALUES (p_bucket, clock_timestamp())
            ON CONFLICT (bucket) DO NOTHING;
        SELECT slots, blocked_until INTO v_slots, v_blocked
          FROM rate_limit_windows WHERE bucket = p_bucket FOR UPDATE;
    END IF;
    -- Now, read once the row is ours: a caller that queued on the lock must not see the slot
    -- the previous holder just took as lying in its future (that refused concurrent callers of
    -- a bucket far from full).
    v_now := clock_timestamp();
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

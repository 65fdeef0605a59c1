-- The followers of the global order (relay, billing projection) are woken after the commit by
-- the writers (hubkeeper-store `EventsWaker`), no longer by a trigger: a NOTIFY inside a writing
-- transaction makes its commit take a database-wide lock and hold it through the WAL flush, so
-- every transaction that inserted events waited for the fsync of the one before it (16 clients:
-- about 300 commits/s instead of about 5,000). Followers still read after a short idle wait, so
-- an event written without a wake-up is relayed a little later, never lost.
DROP TRIGGER events_notify ON events;
DROP FUNCTION hk_notify_events();

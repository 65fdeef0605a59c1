//! Postgres side of Hubkeeper: the connection pool, the schema migrations, and the reader of the
//! global event order that postgres-es does not give.
//!
//! postgres-es writes and reads events per aggregate; everything that needs *all* events in commit
//! order (the relay to NATS, exports, replay) goes through [`log`] instead, never through
//! `stream_all_events` (which orders by per-aggregate sequence and `unwrap()`s row errors).

pub mod cursor;
pub mod follow;
pub mod log;
pub mod pool;
pub mod wake;

pub use cursor::{load_cursor, save_cursor, LazyCursor};
pub use follow::{follow, FollowConfig, Follower, Step};
pub use log::{read_after, reader_lag, GlobalCursor, ReaderLag, StoredEvent, EVENTS_CHANNEL};
pub use pool::{connect, migrate, migrations_pending, PoolConfig, StoreError, MIGRATOR};
pub use wake::EventsWaker;

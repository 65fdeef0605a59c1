//! Time as an injected service, so every rule that depends on "now" is testable.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Duration, Utc};

/// Source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests and simulations in any crate.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Jumps to `instant`.
    pub fn set(&self, instant: DateTime<Utc>) {
        // A poisoned lock only means another test thread panicked; the time value is still valid.
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = instant;
    }

    /// Moves forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `Services` of both aggregates.
///
/// Deliberately only a clock: all I/O (HubSpot calls, encryption) happens at the edge before a
/// command is issued, so aggregates stay pure and replayable.
#[derive(Clone)]
pub struct DomainServices {
    clock: Arc<dyn Clock>,
}

impl DomainServices {
    /// Services backed by the given clock.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }

    /// Services backed by the system clock.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemClock))
    }

    /// Services whose clock is stopped at `instant`.
    pub fn fixed(instant: DateTime<Utc>) -> Self {
        Self::new(Arc::new(ManualClock::new(instant)))
    }

    /// The current time according to the configured clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

impl Default for DomainServices {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for DomainServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DomainServices")
            .field("now", &self.clock.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        let clock = Arc::new(ManualClock::new(start));
        let services = DomainServices::new(clock.clone());
        assert_eq!(services.now(), start);
        clock.advance(Duration::minutes(5));
        assert_eq!(services.now(), start + Duration::minutes(5));
        clock.set(start);
        assert_eq!(services.now(), start);
    }
}

//! Wall-clock time in milliseconds since the Unix epoch.
//!
//! Every expiry is a wall-clock instant so that holds survive restarts. The clock is a trait
//! so that tests control time instead of sleeping.
//!
//! The server runs on a [`SteadyClock`]: the wall clock read once at start, then advanced by
//! the monotonic clock. A wall clock stepped back or forward while the server runs (a bad NTP
//! step, an operator's `date`) then neither keeps holds for an extra hour nor releases them an
//! hour early; the step is picked up at the next start, and reported meanwhile by
//! [`SteadyClock::wall_skew_ms`] (the `stockroom_clock_skew_seconds` gauge).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// How far the operating system's wall clock is from this clock, in milliseconds
    /// (0 for clocks that are the wall clock).
    fn wall_skew_ms(&self) -> i64 {
        0
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        // unwrap_or: a clock set before 1970 is a broken machine; treat it as the epoch.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// Wall-clock time that does not jump: the wall clock at start plus monotonic time since.
pub struct SteadyClock {
    wall: Arc<dyn Clock>,
    start_ms: u64,
    start: Instant,
}

impl SteadyClock {
    /// Anchors on the operating system's wall clock now.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemClock))
    }

    /// Anchors on `wall` now (tests pass a clock they can step).
    pub fn new(wall: Arc<dyn Clock>) -> Self {
        Self {
            start_ms: wall.now_ms(),
            start: Instant::now(),
            wall,
        }
    }

    /// How far the wall clock is ahead of this clock (negative: behind), in milliseconds.
    pub fn wall_skew_ms(&self) -> i64 {
        let wall = i128::from(self.wall.now_ms());
        let steady = i128::from(self.now_ms());
        i64::try_from(wall - steady).unwrap_or(if wall > steady { i64::MAX } else { i64::MIN })
    }
}

impl Clock for SteadyClock {
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_ms.saturating_add(elapsed)
    }

    fn wall_skew_ms(&self) -> i64 {
        SteadyClock::wall_skew_ms(self)
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `now_ms` until it is moved.
    pub fn new(now_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock to `now_ms`, forwards or backwards.
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock forwards by `delta_ms`.
    pub fn advance(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let instant = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(instant).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_clock_ignores_steps_of_the_wall_clock() {
        let wall = Arc::new(ManualClock::new(1_000_000_000));
        let clock = SteadyClock::new(Arc::clone(&wall) as Arc<dyn Clock>);
        let before = clock.now_ms();
        wall.set(1_000_000_000 - 3_600_000);
        let after_back = clock.now_ms();
        assert!(
            after_back >= before && after_back - before < 1_000,
            "a step back is ignored"
        );
        assert!(
            clock.wall_skew_ms() <= -3_599_000,
            "and reported: {}",
            clock.wall_skew_ms()
        );
        wall.set(1_000_000_000 + 3_600_000);
        assert!(clock.now_ms() - before < 1_000, "a step forward is ignored");
        assert!(clock.wall_skew_ms() >= 3_599_000);
    }
}

//! Exponential back-off between retries of a Redis operation: 100 ms doubling to 5 s, reset
//! after a success.

use std::time::Duration;

/// First delay after a failure.
const INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
const MAX: Duration = Duration::from_secs(5);

/// The delay before the next attempt.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Starts at 100 ms.
    pub(crate) fn new() -> Self {
        Self { next: INITIAL }
    }

    /// The delay to wait now; the one after it is twice as long, up to 5 s.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// Back to 100 ms, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_five_seconds_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), INITIAL);
    }
}

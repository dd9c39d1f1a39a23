//! Time for the scheduler, injected: the owner task reads `now()` and sleeps
//! until its next deadline only through a [`Clock`]. The server uses the
//! system clock; tests use a [`ManualClock`] that moves only when told, so
//! no decision depends on how long a step really took.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Completes once `now() >= at`.
    fn sleep_until(&self, at: Instant) -> Sleep;
}

/// The real clock (tokio's timer).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep_until(&self, at: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at)))
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it.
pub struct ManualClock {
    start: Instant,
    elapsed: watch::Sender<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self { start: Instant::now(), elapsed: watch::channel(Duration::ZERO).0 }
    }
}

impl ManualClock {
    /// Moves time forward, waking every sleeper whose deadline passed.
    pub fn advance(&self, by: Duration) {
        self.elapsed.send_modify(|e| *e += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.elapsed.borrow()
    }
    fn sleep_until(&self, at: Instant) -> Sleep {
        let mut elapsed = self.elapsed.subscribe();
        let start = self.start;
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, never wake.
            if elapsed.wait_for(|e| start + *e >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_only_when_the_clock_is_advanced_past_it() {
        let clock = ManualClock::default();
        let at = clock.now() + Duration::from_secs(5);
        let mut sleep = clock.sleep_until(at);
        clock.advance(Duration::from_secs(4));
        assert!(futures_util::FutureExt::now_or_never(&mut sleep).is_none());
        clock.advance(Duration::from_secs(1));
        sleep.await;
        assert_eq!(clock.now(), at);
    }
}

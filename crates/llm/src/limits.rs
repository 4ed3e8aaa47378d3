//! Per-backend budgets: requests per minute, tokens per minute, a concurrency cap, and the
//! pause a provider's 429 asks for. Callers wait their turn (first come, first served); they
//! never fail for want of budget.
//!
//! Hand-written rather than `governor`: tokens are estimated before a call and reconciled with
//! the reported usage after it, which needs a bucket that can take more (or give back) after
//! the fact; GCRA cells cannot be returned.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use switchyard_core::config::RawLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A token bucket refilled continuously; bursts up to one second's worth (at least one unit),
/// so a per-minute limit is spread over the minute the way providers enforce it.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    capacity: f64,
    level: Mutex<(f64, Instant)>,
    /// Held by the waiter at the head of the line: tokio's mutex is fair, so turns are FIFO.
    turn: tokio::sync::Mutex<()>,
}

impl Bucket {
    fn per_minute(limit: u32) -> Bucket {
        let per_second = f64::from(limit.max(1)) / 60.0;
        let capacity = per_second.max(1.0);
        Bucket {
            per_second,
            capacity,
            level: Mutex::new((capacity, Instant::now())),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (f64, Instant)> {
        self.level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refill(&self, state: &mut (f64, Instant)) {
        let now = Instant::now();
        let elapsed = now.duration_since(state.1).as_secs_f64();
        state.0 = (state.0 + elapsed * self.per_second).min(self.capacity);
        state.1 = now;
    }

    /// Waits until `amount` can be taken, then takes it. An amount over the capacity waits for
    /// a full bucket and leaves it in debt, which later callers wait out.
    async fn take(&self, amount: f64) {
        let _turn = self.turn.lock().await;
        loop {
            let wait = {
                let mut state = self.lock();
                self.refill(&mut state);
                let needed = amount.min(self.capacity);
                if state.0 >= needed {
                    state.0 -= amount;
                    return;
                }
                (needed - state.0) / self.per_second
            };
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// Takes `delta` more (positive) or gives it back (negative), after the fact.
    fn adjust(&self, delta: f64) {
        let mut state = self.lock();
        self.refill(&mut state);
        state.0 = (state.0 - delta).min(self.capacity);
    }
}

/// One backend's limits.
#[derive(Debug)]
pub struct Limits {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    slots: Option<Arc<Semaphore>>,
    paused_until: Mutex<Option<Instant>>,
}

/// The right to make one call; holds a concurrency slot until dropped.
#[derive(Debug)]
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
    reserved_tokens: u64,
}

impl Limits {
    pub fn new(limits: &RawLimits) -> Arc<Limits> {
        Arc::new(Limits {
            requests: limits.requests_per_minute.map(Bucket::per_minute),
            tokens: limits.tokens_per_minute.map(Bucket::per_minute),
            slots: limits
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            paused_until: Mutex::new(None),
        })
    }

    pub fn unlimited() -> Arc<Limits> {
        Limits::new(&RawLimits::default())
    }

    /// Waits for a pause to end, a free slot, a request and `estimated_tokens`, in that order.
    pub async fn acquire(&self, estimated_tokens: u64) -> Permit {
        self.wait_out_pause().await;
        let slot = match &self.slots {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        if let Some(requests) = &self.requests {
            requests.take(1.0).await;
        }
        if let Some(tokens) = &self.tokens {
            tokens.take(estimated_tokens as f64).await;
        }
        // A 429 that arrived while this caller queued pauses it too.
        self.wait_out_pause().await;
        Permit {
            _slot: slot,
            reserved_tokens: estimated_tokens,
        }
    }

    /// Settles a call's tokens: `used` as the provider reported them (zero for a call that
    /// failed before the provider counted it).
    pub fn reconcile(&self, permit: &Permit, used: u64) {
        if let Some(tokens) = &self.tokens {
            tokens.adjust(used as f64 - permit.reserved_tokens as f64);
        }
    }

    /// Holds every caller back for `wait` (a provider's Retry-After): one 429 should not be
    /// followed by a burst of others.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    async fn wait_out_pause(&self) {
        loop {
            let until = *self
                .paused_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u32>, concurrency: Option<u32>) -> Arc<Limits> {
        Limits::new(&RawLimits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrency: concurrency,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_spread_over_the_minute() {
        let limits = limits(Some(120), None, None);
        let start = Instant::now();
        for _ in 0..11 {
            let _ = limits.acquire(0).await;
        }
        // 2 per second, a burst of 2: the 11th waits for 9 refills.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(4_490) && elapsed <= Duration::from_millis(4_600),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reported_tokens_settle_the_estimate() {
        let limits = limits(None, Some(600), None);
        // 10 tokens a second, capacity 10. Estimated 10, really used 40: 30 of debt.
        let permit = limits.acquire(10).await;
        limits.reconcile(&permit, 40);
        let start = Instant::now();
        let _ = limits.acquire(10).await;
        // From -30 back to 10: 4 s.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(3_990) && waited <= Duration::from_millis(4_100),
            "{waited:?}"
        );
        // A refund makes room at once.
        let permit = limits.acquire(0).await;
        limits.reconcile(&permit, 0);
        let big = limits.acquire(10).await;
        limits.reconcile(&big, 0);
        let start = Instant::now();
        let _ = limits.acquire(10).await;
        assert!(start.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_everyone_and_slots_cap_concurrency() {
        let limits = limits(None, None, Some(2));
        limits.pause_for(Duration::from_secs(3));
        let start = Instant::now();
        let first = limits.acquire(0).await;
        assert!(start.elapsed() >= Duration::from_secs(3));
        let _second = limits.acquire(0).await;
        let third = tokio::time::timeout(Duration::from_secs(1), limits.acquire(0)).await;
        assert!(third.is_err(), "a third call must wait for a slot");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), limits.acquire(0)).await;
        assert!(third.is_ok());
    }
}

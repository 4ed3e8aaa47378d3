//! Live backend state: observed latency, queue depth and a circuit breaker per backend.
//!
//! Observations come from outcomes (lifecycle events of finished jobs) and from the bus's
//! depth reports; `apply` folds them into the snapshot `decide` reads. Pure bookkeeping over
//! explicit instants: no clock, no I/O, so time-dependent behaviour is tested directly.
//!
//! The breaker opens after `consecutive_failures` failures in a row, or when at least half of
//! the last `window` outcomes failed (with a minimum sample), for `cooldown`, doubled on each
//! re-trip up to `max_cooldown`. A backend that is alone in its group cools down too: the
//! router prefers a clear `no_route` (or a fallback) to feeding a failing backend. After the
//! cooldown one failure re-opens it at once (half-open).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use switchyard_core::BackendId;

use crate::policy::{BackendState, Health};

#[derive(Clone, Debug)]
pub struct LiveSettings {
    /// Weight of the newest latency sample in the moving average.
    pub ewma_alpha: f64,
    pub consecutive_failures: u32,
    pub window: usize,
    pub min_samples: usize,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Ready messages on a backend's queue beyond which it counts as saturated.
    pub saturation_depth: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        LiveSettings {
            ewma_alpha: 0.2,
            consecutive_failures: 5,
            window: 20,
            min_samples: 10,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            saturation_depth: 10_000,
        }
    }
}

#[derive(Debug, Default)]
struct Backend {
    latency_ms: Option<f64>,
    recent: VecDeque<bool>,
    consecutive_failures: u32,
    trips: u32,
    cooling_until: Option<Instant>,
    ready: u64,
}

/// What the router has observed of each backend.
#[derive(Debug, Default)]
pub struct LiveState {
    settings: LiveSettings,
    backends: HashMap<BackendId, Backend>,
}

impl LiveState {
    pub fn new(settings: LiveSettings) -> LiveState {
        LiveState {
            settings,
            backends: HashMap::new(),
        }
    }

    /// A finished call on `backend`: its latency when it succeeded, a failure otherwise.
    pub fn observe(&mut self, backend: &BackendId, outcome: Result<u64, ()>, at: Instant) {
        let settings = &self.settings;
        let state = self.backends.entry(backend.clone()).or_default();
        let ok = outcome.is_ok();
        if let Ok(latency) = outcome {
            let sample = latency as f64;
            state.latency_ms = Some(match state.latency_ms {
                Some(average) => average + settings.ewma_alpha * (sample - average),
                None => sample,
            });
        }
        state.recent.push_back(ok);
        while state.recent.len() > settings.window {
            state.recent.pop_front();
        }
        if ok {
            state.consecutive_failures = 0;
            if state.cooling_until.is_some_and(|until| at >= until) {
                // Half-open and it worked: closed again with a clean slate (failures of jobs
                // still in flight during the cooldown say nothing about now), and the next
                // trip starts short.
                state.cooling_until = None;
                state.trips = 0;
                state.recent.clear();
                state.recent.push_back(true);
            }
            return;
        }
        state.consecutive_failures += 1;
        let failed = state.recent.iter().filter(|ok| !**ok).count();
        let rate_tripped =
            state.recent.len() >= settings.min_samples && failed * 2 >= state.recent.len();
        let cooling = state.cooling_until.is_some_and(|until| at < until);
        let half_open = state.cooling_until.is_some_and(|until| at >= until);
        if !cooling
            && (half_open
                || state.consecutive_failures >= settings.consecutive_failures
                || rate_tripped)
        {
            let factor = 1u32 << state.trips.min(16);
            let cooldown = settings
                .cooldown
                .saturating_mul(factor)
                .min(settings.max_cooldown);
            state.cooling_until = Some(at + cooldown);
            state.trips += 1;
            state.recent.clear();
        }
    }

    /// The latest depth report of `backend`'s queue.
    pub fn observe_depth(&mut self, backend: &BackendId, ready: u64) {
        self.backends.entry(backend.clone()).or_default().ready = ready;
    }

    /// Whether `backend`'s breaker is open at `at`.
    pub fn cooling(&self, backend: &BackendId, at: Instant) -> bool {
        self.backends
            .get(backend)
            .and_then(|b| b.cooling_until)
            .is_some_and(|until| at < until)
    }

    /// Replaces priors with observations and marks cooling or saturated backends.
    pub fn apply(&self, states: &mut [BackendState], at: Instant) {
        for state in states {
            let Some(live) = self.backends.get(&state.id) else {
                continue;
            };
            if let Some(latency) = live.latency_ms {
                state.latency_ms = latency.round() as u64;
            }
            state.health = if live.cooling_until.is_some_and(|until| at < until) {
                Health::Cooling
            } else if live.ready > self.settings.saturation_depth {
                Health::Saturated
            } else {
                Health::Ok
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use switchyard_core::QueueName;
    use switchyard_core::contracts::TaskKind;

    use super::*;

    fn state(id: &BackendId) -> BackendState {
        BackendState {
            id: id.clone(),
            queue: QueueName::backend(id),
            tasks: vec![TaskKind::Chat],
            quality: 0.5,
            latency_ms: 1000,
            cost_usd: Decimal::ONE,
            health: Health::Ok,
        }
    }

    fn health(live: &LiveState, id: &BackendId, at: Instant) -> (Health, u64) {
        let mut states = [state(id)];
        live.apply(&mut states, at);
        (states[0].health, states[0].latency_ms)
    }

    #[test]
    fn observed_latency_replaces_the_prior_as_a_moving_average() {
        let id = BackendId::new("b").unwrap();
        let mut live = LiveState::default();
        let t = Instant::now();
        assert_eq!(
            health(&live, &id, t),
            (Health::Ok, 1000),
            "prior until observed"
        );
        live.observe(&id, Ok(100), t);
        assert_eq!(health(&live, &id, t).1, 100);
        live.observe(&id, Ok(200), t);
        assert_eq!(health(&live, &id, t).1, 120);
    }

    #[test]
    fn consecutive_failures_open_the_breaker_for_a_cooldown_that_doubles() {
        let id = BackendId::new("lonely").unwrap();
        let mut live = LiveState::default();
        let t = Instant::now();
        for _ in 0..4 {
            live.observe(&id, Err(()), t);
        }
        assert_eq!(health(&live, &id, t).0, Health::Ok);
        live.observe(&id, Err(()), t);
        assert_eq!(health(&live, &id, t).0, Health::Cooling);
        assert_eq!(
            health(&live, &id, t + Duration::from_secs(29)).0,
            Health::Cooling
        );
        let reopened = t + Duration::from_secs(30);
        assert_eq!(health(&live, &id, reopened).0, Health::Ok);
        // Half-open: one more failure trips it again, for twice as long.
        live.observe(&id, Err(()), reopened);
        assert_eq!(
            health(&live, &id, reopened + Duration::from_secs(59)).0,
            Health::Cooling
        );
        assert_eq!(
            health(&live, &id, reopened + Duration::from_secs(60)).0,
            Health::Ok
        );
        // A success after the cooldown closes it and resets the doubling.
        let later = reopened + Duration::from_secs(61);
        live.observe(&id, Ok(10), later);
        for _ in 0..5 {
            live.observe(&id, Err(()), later);
        }
        assert_eq!(
            health(&live, &id, later + Duration::from_secs(29)).0,
            Health::Cooling
        );
        assert_eq!(
            health(&live, &id, later + Duration::from_secs(30)).0,
            Health::Ok
        );
    }

    #[test]
    fn a_high_error_rate_opens_the_breaker_without_a_streak() {
        let id = BackendId::new("flaky").unwrap();
        let mut live = LiveState::default();
        let t = Instant::now();
        for i in 0..9 {
            live.observe(&id, if i % 2 == 0 { Err(()) } else { Ok(50) }, t);
        }
        assert_eq!(health(&live, &id, t).0, Health::Ok, "too few samples");
        live.observe(&id, Ok(50), t);
        live.observe(&id, Err(()), t);
        assert_eq!(health(&live, &id, t).0, Health::Cooling);
    }

    #[test]
    fn failures_during_the_cooldown_do_not_retrip_a_recovered_backend() {
        let id = BackendId::new("recovering").unwrap();
        let mut live = LiveState::default();
        let t = Instant::now();
        for _ in 0..5 {
            live.observe(&id, Err(()), t);
        }
        // Jobs already in flight fail during the cooldown.
        for _ in 0..10 {
            live.observe(&id, Err(()), t + Duration::from_secs(1));
        }
        let after = t + Duration::from_secs(31);
        live.observe(&id, Ok(20), after);
        live.observe(&id, Err(()), after);
        assert_eq!(health(&live, &id, after).0, Health::Ok);
    }

    #[test]
    fn a_deep_queue_is_saturated_until_it_drains() {
        let id = BackendId::new("busy").unwrap();
        let mut live = LiveState::new(LiveSettings {
            saturation_depth: 100,
            ..LiveSettings::default()
        });
        let t = Instant::now();
        live.observe_depth(&id, 101);
        assert_eq!(health(&live, &id, t).0, Health::Saturated);
        live.observe_depth(&id, 100);
        assert_eq!(health(&live, &id, t).0, Health::Ok);
    }
}

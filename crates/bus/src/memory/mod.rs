//! The in-process bus: for `switchyard dev` and tests. Same semantics as the brokers: leases
//! that expire into redeliveries, delayed redelivery on nack, dead-letter queues.
//!
//! All consumers of a queue compete for its messages whatever their group: one process has no
//! use for two groups reading the same queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_core::QueueName;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{
    Bus, BusError, Consumer, Delivery, Headers, Outgoing, QueueDepth, Rejection,
    dead_letter_message,
};

/// How long a delivery stays leased before it is redelivered, unless extended.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queues: Mutex<HashMap<QueueName, Arc<Queue>>>,
    lease: Duration,
}

#[derive(Debug)]
struct Queue {
    name: QueueName,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Stored>,
    /// Nacked messages waiting out their delay, by due time then sequence.
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    delayed_messages: HashMap<u64, Stored>,
    leased: HashMap<u64, Leased>,
    next_id: u64,
}

#[derive(Clone, Debug)]
struct Stored {
    key: Option<String>,
    headers: Headers,
    body: Arc<[u8]>,
    attempt: u32,
    first_failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Leased {
    stored: Stored,
    deadline: Instant,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new(DEFAULT_LEASE)
    }
}

impl MemoryBus {
    pub fn new(lease: Duration) -> MemoryBus {
        MemoryBus {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
                lease,
            }),
        }
    }

    fn queue(&self, name: &QueueName) -> Result<Arc<Queue>, BusError> {
        lock(&self.inner.queues)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownQueue(name.to_string()))
    }

    fn ensure_one(&self, name: &QueueName) -> Arc<Queue> {
        lock(&self.inner.queues)
            .entry(name.clone())
            .or_insert_with(|| {
                Arc::new(Queue {
                    name: name.clone(),
                    state: Mutex::new(State::default()),
                    notify: Notify::new(),
                })
            })
            .clone()
    }
}

/// A poisoned lock means a panic while holding it; the state itself is still consistent
/// because every critical section is a few infallible collection operations.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `now + by`, saturating at a year instead of panicking on absurd durations.
fn later(by: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(by)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl Queue {
    fn push(&self, stored: Stored) {
        lock(&self.state).ready.push_back(stored);
        self.notify.notify_waiters();
    }

    /// Moves due retries and expired leases back to `ready`; returns when to look again.
    fn sweep(state: &mut State, now: Instant) -> Option<Instant> {
        while let Some(Reverse((due, id))) = state.delayed.peek().copied() {
            if due > now {
                break;
            }
            state.delayed.pop();
            if let Some(stored) = state.delayed_messages.remove(&id) {
                state.ready.push_back(stored);
            }
        }
        let expired: Vec<u64> = state
            .leased
            .iter()
            .filter(|(_, leased)| leased.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(leased) = state.leased.remove(&id) {
                let mut stored = leased.stored;
                stored.attempt += 1;
                stored.first_failed_at.get_or_insert_with(Utc::now);
                state.ready.push_back(stored);
            }
        }
        let next_delay = state.delayed.peek().map(|Reverse((due, _))| *due);
        let next_expiry = state.leased.values().map(|l| l.deadline).min();
        match (next_delay, next_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Bus for MemoryBus {
    type Consumer = MemoryConsumer;

    async fn ensure(&self, queues: &[QueueName]) -> Result<(), BusError> {
        for queue in queues {
            self.ensure_one(queue);
            self.ensure_one(&queue.dead_letter());
        }
        Ok(())
    }

    async fn publish(&self, queue: &QueueName, message: Outgoing) -> Result<(), BusError> {
        let queue = self.queue(queue)?;
        queue.push(stored_from(message));
        Ok(())
    }

    async fn publish_batch(
        &self,
        queue: &QueueName,
        messages: Vec<Outgoing>,
    ) -> Result<(), BusError> {
        let queue = self.queue(queue)?;
        {
            let mut state = lock(&queue.state);
            state.ready.extend(messages.into_iter().map(stored_from));
        }
        queue.notify.notify_waiters();
        Ok(())
    }

    async fn consume(&self, queue: &QueueName, _group: &str) -> Result<MemoryConsumer, BusError> {
        Ok(MemoryConsumer {
            queue: self.queue(queue)?,
            bus: self.clone(),
            closed: false,
        })
    }

    async fn depth(&self, queue: &QueueName) -> Result<QueueDepth, BusError> {
        let queue = self.queue(queue)?;
        let state = lock(&queue.state);
        Ok(QueueDepth {
            ready: state.ready.len() as u64,
            in_flight: (state.leased.len() + state.delayed_messages.len()) as u64,
        })
    }
}

fn stored_from(message: Outgoing) -> Stored {
    let attempt = message
        .headers
        .get(crate::headers::ATTEMPT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Stored {
        key: message.key,
        headers: message.headers,
        body: message.body.into(),
        attempt,
        first_failed_at: None,
    }
}

#[derive(Debug)]
pub struct MemoryConsumer {
    queue: Arc<Queue>,
    bus: MemoryBus,
    closed: bool,
}

impl MemoryConsumer {
    /// A delivery if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<MemoryDelivery> {
        if self.closed {
            return None;
        }
        let now = Instant::now();
        let mut state = lock(&self.queue.state);
        Queue::sweep(&mut state, now);
        let stored = state.ready.pop_front()?;
        let lease_id = state.next_id;
        state.next_id += 1;
        state.leased.insert(
            lease_id,
            Leased {
                stored: stored.clone(),
                deadline: later(self.bus.inner.lease),
            },
        );
        Some(MemoryDelivery {
            queue: self.queue.clone(),
            bus: self.bus.clone(),
            lease_id,
            stored,
        })
    }
}

impl Consumer for MemoryConsumer {
    type Delivery = MemoryDelivery;

    async fn next(&mut self) -> Result<Option<MemoryDelivery>, BusError> {
        loop {
            if self.closed {
                return Ok(None);
            }
            // Register for wake-ups before looking, so a publish in between is not missed.
            let queue = self.queue.clone();
            let notified = queue.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(delivery) = self.try_next() {
                return Ok(Some(delivery));
            }
            let wake_at = Queue::sweep(&mut lock(&queue.state), Instant::now());
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    async fn close(mut self) {
        self.closed = true;
    }
}

#[derive(Debug)]
pub struct MemoryDelivery {
    queue: Arc<Queue>,
    bus: MemoryBus,
    lease_id: u64,
    stored: Stored,
}

impl MemoryDelivery {
    /// Removes the lease; `Err` when it had already expired (the message was redelivered).
    fn settle(&self) -> Result<(), BusError> {
        match lock(&self.queue.state).leased.remove(&self.lease_id) {
            Some(_) => Ok(()),
            None => Err(BusError::LeaseExpired),
        }
    }
}

impl Delivery for MemoryDelivery {
    fn queue(&self) -> &QueueName {
        &self.queue.name
    }

    fn body(&self) -> &[u8] {
        &self.stored.body
    }

    fn headers(&self) -> &Headers {
        &self.stored.headers
    }

    fn key(&self) -> Option<&str> {
        self.stored.key.as_deref()
    }

    fn attempt(&self) -> u32 {
        self.stored.attempt
    }

    fn first_failed_at(&self) -> Option<DateTime<Utc>> {
        self.stored.first_failed_at
    }

    async fn ack(self) -> Result<(), BusError> {
        self.settle()
    }

    async fn nack(self, delay: Duration, error: &str) -> Result<(), BusError> {
        let mut state = lock(&self.queue.state);
        if state.leased.remove(&self.lease_id).is_none() {
            return Err(BusError::LeaseExpired);
        }
        let mut stored = self.stored.clone();
        stored.attempt += 1;
        stored.first_failed_at.get_or_insert_with(Utc::now);
        stored
            .headers
            .insert(crate::headers::LAST_ERROR.to_owned(), error.to_owned());
        let id = state.next_id;
        state.next_id += 1;
        state.delayed.push(Reverse((later(delay), id)));
        state.delayed_messages.insert(id, stored);
        drop(state);
        // A waiting consumer must re-arm its timer for the new due time.
        self.queue.notify.notify_waiters();
        Ok(())
    }

    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        match lock(&self.queue.state).leased.get_mut(&self.lease_id) {
            Some(leased) => {
                leased.deadline = later(by);
                Ok(())
            }
            None => Err(BusError::LeaseExpired),
        }
    }

    fn leased(&self) -> bool {
        true
    }

    async fn dead_letter(self, rejection: Rejection) -> Result<(), BusError> {
        let letter = dead_letter_message(
            &self.queue.name,
            &self.stored.body,
            &self.stored.headers,
            self.stored.key.as_deref(),
            self.stored.attempt,
            self.stored.first_failed_at,
            &rejection,
        );
        let dlq = self.bus.ensure_one(&self.queue.name.dead_letter());
        // Write the letter before removing the original: a crash in between duplicates the
        // letter, never loses the message.
        dlq.push(stored_from(letter));
        self.settle()
    }
}

//! Weighted, starvation-free consumption of several queues (the priority tiers).
//!
//! [`WeightedConsumer`] holds at most one delivery per source, taken without waiting, and picks
//! among the sources that have one by smooth weighted round-robin (nginx's algorithm). With
//! weights 8:3:1 and every tier busy, 12 consecutive picks take 8 realtime, 3 standard and
//! 1 batch message, interleaved; an idle tier gives its share to the others. So batch work
//! always progresses, and a realtime message waits behind at most the picks of one round,
//! however deep the batch backlog. Only when no source has anything does it wait, on all of
//! them at once.

use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::select_all;
use tokio::time::Instant;

use crate::{BusError, Consumer, Delivery};

/// A stashed delivery older than this has its lease renewed when the consumer is next asked.
const STASH_REFRESH: Duration = Duration::from_secs(5);
/// ...by this much.
const STASH_LEASE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Source<C: Consumer> {
    weight: i64,
    current: i64,
    consumer: C,
    /// A delivery taken from this source and not yet handed out (it is leased meanwhile).
    stash: Option<C::Delivery>,
    stashed_at: Instant,
    done: bool,
}

/// Several consumers read as one, by weight.
#[derive(Debug)]
pub struct WeightedConsumer<C: Consumer> {
    sources: Vec<Source<C>>,
}

impl<C: Consumer> WeightedConsumer<C> {
    /// `consumers` with their weights (each at least 1), most urgent first: ties go to the
    /// earlier one.
    pub fn new(consumers: Vec<(u32, C)>) -> WeightedConsumer<C> {
        WeightedConsumer {
            sources: consumers
                .into_iter()
                .map(|(weight, consumer)| Source {
                    weight: i64::from(weight.max(1)),
                    current: 0,
                    consumer,
                    stash: None,
                    stashed_at: Instant::now(),
                    done: false,
                })
                .collect(),
        }
    }

    /// Takes a delivery from every source that has one ready now, without waiting. A failing
    /// source does not hold up the others: its error is returned only when nothing is ready.
    fn fill(&mut self) -> Option<BusError> {
        let mut first_error = None;
        for source in &mut self.sources {
            if source.stash.is_some() || source.done {
                continue;
            }
            // Every transport's `next` is cancel-safe: a delivery exists only once returned.
            match source.consumer.next().now_or_never() {
                Some(Ok(Some(delivery))) => {
                    source.stash = Some(delivery);
                    source.stashed_at = Instant::now();
                }
                Some(Ok(None)) => source.done = true,
                Some(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                None => {}
            }
        }
        first_error
    }

    /// Renews the leases of deliveries that have waited in the stash for a while, so a
    /// delivery taken ahead of its turn does not expire into a duplicate.
    async fn refresh_stale(&mut self) {
        // Only deliveries (which are `Sync`) are held across the awaits, not the consumers.
        let stale: Vec<&C::Delivery> = self
            .sources
            .iter_mut()
            .filter(|s| s.stashed_at.elapsed() >= STASH_REFRESH)
            .filter_map(|s| {
                s.stashed_at = Instant::now();
                s.stash.as_ref()
            })
            .collect();
        for delivery in stale {
            if let Err(error) = delivery.extend(STASH_LEASE).await {
                tracing::warn!(message = "Failed to extend a waiting delivery.", %error);
            }
        }
    }

    fn pick(&mut self) -> Option<C::Delivery> {
        let total: i64 = self
            .sources
            .iter()
            .filter(|s| s.stash.is_some())
            .map(|s| s.weight)
            .sum();
        if total == 0 {
            return None;
        }
        for source in &mut self.sources {
            if source.stash.is_some() {
                source.current += source.weight;
            }
        }
        let best = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.stash.is_some())
            .max_by_key(|(i, s)| (s.current, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)?;
        let source = &mut self.sources[best];
        source.current -= total;
        source.stash.take()
    }
}

impl<C: Consumer> Consumer for WeightedConsumer<C> {
    type Delivery = C::Delivery;

    async fn next(&mut self) -> Result<Option<C::Delivery>, BusError> {
        loop {
            let error = self.fill();
            self.refresh_stale().await;
            if let Some(delivery) = self.pick() {
                return Ok(Some(delivery));
            }
            if let Some(error) = error {
                return Err(error);
            }
            let waiting: Vec<_> = self
                .sources
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.done)
                .map(|(i, s)| {
                    let next = s.consumer.next();
                    Box::pin(async move { (i, next.await) })
                })
                .collect();
            if waiting.is_empty() {
                return Ok(None);
            }
            let ((index, result), _, _) = select_all(waiting).await;
            match result? {
                Some(delivery) => {
                    self.sources[index].stash = Some(delivery);
                    self.sources[index].stashed_at = Instant::now();
                }
                None => self.sources[index].done = true,
            }
        }
    }

    async fn close(self) {
        for source in self.sources {
            // A stashed delivery is dropped unsettled: its lease expires into a redelivery.
            drop(source.stash);
            source.consumer.close().await;
        }
    }
}

//! Outcomes: where every job ends.
//!
//! - [`store`]: the [`Store`] trait (results, the cost ledger, job status timelines, spend
//!   totals, webhook deliveries, dashboard queries) with a MongoDB implementation and an embedded
//!   SQLite one for `switchyard dev`;
//! - [`ledger`]: [`Ledger::finish`], the one way a worker ends a job: price the usage, write
//!   the usage events, the result and the status, queue the webhook, announce the event — all
//!   idempotent by `job_id`, so a redelivered job changes nothing;
//! - [`webhook`]: Standard Webhooks signing, the SSRF guard and durable delivery;
//! - [`events`]: lifecycle event sinks (EventBridge, a bus topic, none);
//! - [`blobs`]: large inputs and outputs (S3, a local directory).
//!
//! Architecture invariant: only this crate knows MongoDB, S3 (for blobs) and EventBridge.

pub mod blobs;
pub mod events;
pub mod ledger;
pub mod serving;
pub mod store;
pub mod webhook;

pub use ledger::{Call, FinishError, Finished, Ledger, LedgerSettings, Outcome, price_call};
pub use store::{AnyStore, Store, StoreError};

//! Switchyard's core: the message contracts, ids, tiers, rates and cost math, and configuration.
//!
//! Architecture invariant: this crate does no I/O beyond reading a config or rates file when
//! asked, and knows no transport, store or provider. Everything else depends on it.

pub mod config;
pub mod contracts;
pub mod ids;
pub mod money;
pub mod rates;
pub mod tier;

pub use ids::{BackendId, JobId, PlanName, TenantId};
pub use money::Micros;
pub use tier::{QueueName, Tier};

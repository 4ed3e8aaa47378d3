//! The router. `policy` is the decision itself: a pure function over the job's facts, the
//! policy and a snapshot of backend state. No async, no I/O, so it is tested table-driven and
//! costs microseconds. `budget` (spend limits) and `live` (observed latency, depth, circuit
//! breaker) are pure too; `worker` is the only part that touches the bus.

pub mod budget;
pub mod classify;
pub mod estimate;
pub mod live;
pub mod policy;
pub mod policy_file;
pub mod worker;

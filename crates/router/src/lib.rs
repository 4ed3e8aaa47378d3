//! The router. `policy` is the decision itself: a pure function over the job's facts, the
//! policy and a snapshot of backend state. No async, no I/O, so it is tested table-driven and
//! costs microseconds.

pub mod estimate;
pub mod policy;
pub mod policy_file;

//! Priority tiers and the queue names derived from them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::BackendId;

/// How urgently a job must run. Each tier has a queue of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Realtime,
    Standard,
    Batch,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Realtime, Tier::Standard, Tier::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Realtime => "realtime",
            Tier::Standard => "standard",
            Tier::Batch => "batch",
        }
    }

    /// The logical queue the producers write this tier's jobs to.
    pub fn queue(self) -> QueueName {
        QueueName(format!("switchyard.jobs.{}", self.as_str()))
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "realtime" => Ok(Tier::Realtime),
            "standard" => Ok(Tier::Standard),
            "batch" => Ok(Tier::Batch),
            other => Err(format!(
                "unknown tier `{other}`: expected realtime, standard or batch"
            )),
        }
    }
}

/// A logical queue name (`switchyard.jobs.realtime`, `switchyard.backend.gpt-4o-mini`, ...).
///
/// Logical names are transport-neutral; each bus maps them to what its broker accepts (SQS, for
/// one, allows no dots).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueueName(String);

impl QueueName {
    /// Longest logical name; leaves room for the `switchyard.dlq.` prefix within SQS's 80 chars.
    pub const MAX_LEN: usize = 64;

    pub fn new(name: impl Into<String>) -> Result<QueueName, String> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(format!(
                "queue name `{name}` must be 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        let ok = name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if !ok {
            return Err(format!(
                "queue name `{name}` may hold only lowercase letters, digits, '.', '_' and '-'"
            ));
        }
        Ok(QueueName(name))
    }

    /// The queue a backend's workers consume.
    pub fn backend(backend_id: &BackendId) -> QueueName {
        QueueName(format!("switchyard.backend.{backend_id}"))
    }

    /// The dead-letter queue that collects what failed on `self`.
    pub fn dead_letter(&self) -> QueueName {
        QueueName(format!("switchyard.dlq.{}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_map_to_their_queues() {
        assert_eq!(Tier::Realtime.queue().as_str(), "switchyard.jobs.realtime");
        assert_eq!(
            Tier::Batch.queue().dead_letter().as_str(),
            "switchyard.dlq.switchyard.jobs.batch"
        );
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
        }
        assert!("urgent".parse::<Tier>().unwrap_err().contains("urgent"));
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(QueueName::new("switchyard.backend.gpt-4o").is_ok());
        assert!(QueueName::new("").is_err());
        assert!(QueueName::new("Has Space").is_err());
        assert!(QueueName::new("q".repeat(65)).is_err());
    }
}

//! Which offsets may be committed when work completes out of order.
//!
//! Deliveries arrive in offset order per partition but finish in any order. The committed
//! offset of a partition is the smallest offset delivered and not yet settled, or one past the
//! highest settled when nothing is pending: committing further would skip unfinished work after
//! a crash.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    /// Topic → partition → its offsets. Two levels so that the per-message calls look a topic
    /// up by `&str` instead of allocating a key.
    topics: HashMap<String, HashMap<i32, Partition>>,
}

#[derive(Debug, Default)]
struct Partition {
    pending: BTreeSet<i64>,
    /// One past the highest offset settled so far.
    settled_to: Option<i64>,
    /// The offset last committed (or handed out to be committed).
    committed: Option<i64>,
}

impl OffsetTracker {
    pub(crate) fn delivered(&mut self, topic: &str, partition: i32, offset: i64) {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_owned(), HashMap::new());
        }
        if let Some(partitions) = self.topics.get_mut(topic) {
            partitions
                .entry(partition)
                .or_default()
                .pending
                .insert(offset);
        }
    }

    /// Marks `offset` settled. Returns false when the partition is no longer tracked (it was
    /// revoked: the message will be redelivered to its new owner).
    pub(crate) fn settled(&mut self, topic: &str, partition: i32, offset: i64) -> bool {
        let Some(track) = self
            .topics
            .get_mut(topic)
            .and_then(|partitions| partitions.get_mut(&partition))
        else {
            return false;
        };
        if !track.pending.remove(&offset) {
            return false;
        }
        track.settled_to = Some(track.settled_to.map_or(offset + 1, |s| s.max(offset + 1)));
        true
    }

    fn commit_point(track: &Partition) -> Option<i64> {
        match track.pending.first() {
            Some(first) => Some(*first),
            None => track.settled_to,
        }
    }

    /// Offsets to commit now: partitions whose commit point moved since the last call.
    pub(crate) fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for (topic, partitions) in &mut self.topics {
            for (partition, track) in partitions {
                if let Some(point) = Self::commit_point(track)
                    && track.committed.is_none_or(|c| point > c)
                {
                    track.committed = Some(point);
                    out.push((topic.clone(), *partition, point));
                }
            }
        }
        out
    }

    /// Stops tracking revoked partitions; returns their final commit points.
    pub(crate) fn revoke(&mut self, revoked: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for (topic, partition) in revoked {
            if let Some(track) = self
                .topics
                .get_mut(topic)
                .and_then(|partitions| partitions.remove(partition))
                && let Some(point) = Self::commit_point(&track)
                && track.committed.is_none_or(|c| point > c)
            {
                out.push((topic.clone(), *partition, point));
            }
        }
        out
    }

    pub(crate) fn pending(&self) -> usize {
        self.topics
            .values()
            .flat_map(HashMap::values)
            .map(|p| p.pending.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_commits_past_an_unfinished_offset() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.delivered("t", 0, offset);
        }
        // 11..14 finish first; 10 is still running.
        for offset in 11..15 {
            assert!(tracker.settled("t", 0, offset));
        }
        assert_eq!(tracker.take_commits(), vec![("t".to_owned(), 0, 10)]);
        // Nothing moved: nothing to commit again.
        assert_eq!(tracker.take_commits(), vec![]);
        assert!(tracker.settled("t", 0, 10));
        assert_eq!(tracker.take_commits(), vec![("t".to_owned(), 0, 15)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered("t", 0, 5);
        tracker.delivered("t", 1, 7);
        tracker.settled("t", 1, 7);
        let mut commits = tracker.take_commits();
        commits.sort();
        assert_eq!(
            commits,
            vec![("t".to_owned(), 0, 5), ("t".to_owned(), 1, 8)]
        );
    }

    #[test]
    fn settling_after_revoke_is_refused() {
        let mut tracker = OffsetTracker::default();
        tracker.delivered("t", 0, 1);
        tracker.delivered("t", 0, 2);
        tracker.settled("t", 0, 1);
        assert_eq!(
            tracker.revoke(&[("t".to_owned(), 0)]),
            vec![("t".to_owned(), 0, 2)]
        );
        assert!(!tracker.settled("t", 0, 2));
        assert_eq!(tracker.pending(), 0);
    }
}

//! Store reads for cache misses, coalesced: concurrent misses of different
//! counters share one `get_many`.
//!
//! A miss joins the open group. A group reads when one of its members gets
//! a turn (at most [`READS_IN_FLIGHT`] groups read at once): at that moment
//! the group closes and every key that joined it is read in one call, so
//! while reads are in flight the next group gathers the misses that arrive
//! meanwhile. A cold wave of N counters costs a few reads instead of N.
//!
//! The read of a group is the same as a single counter's (claims touching
//! its keys land first, then the store is read), and it starts after every
//! member's miss, so each member gets the base the protocol asks for. If a
//! group's read fails, each member falls back to a read of its own counter:
//! one counter the store refuses, or whose claims cannot land, never fails
//! the others' increments.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use crate::error::Result;
use crate::key::Key;

/// Groups reading at once.
pub(crate) const READS_IN_FLIGHT: usize = 2;

/// Most counters in one group (a store splits a read as it must, for
/// example DynamoDB into requests of 100 keys).
pub(crate) const MAX_GROUP: usize = 1_000;

/// What a group's read found: the durable value of each of its keys, or
/// the error of the read, and how many keys it covered.
#[derive(Debug)]
pub(crate) struct GroupRead {
    /// Keys read.
    pub(crate) keys: usize,
    /// Their durable values (`None`: not in the store).
    pub(crate) values: Result<HashMap<Key, Option<i64>>>,
}

/// The misses of one engine waiting for, or in, a store read.
#[derive(Debug)]
pub(crate) struct ColdReads {
    open: Mutex<Option<Arc<Group>>>,
    turns: Semaphore,
}

impl Default for ColdReads {
    fn default() -> Self {
        ColdReads { open: Mutex::new(None), turns: Semaphore::new(READS_IN_FLIGHT) }
    }
}

/// Keys whose misses share one read, and its outcome.
#[derive(Debug, Default)]
pub(crate) struct Group {
    keys: Mutex<Vec<Key>>,
    values: OnceCell<GroupRead>,
}

impl Group {
    /// The group's read, run once by whichever member gets there first
    /// (another member takes over if that one is cancelled).
    pub(crate) fn read(&self) -> &OnceCell<GroupRead> {
        &self.values
    }
}

impl ColdReads {
    /// Joins `key` to the open group (opening one if there is none, or if
    /// the open one is full).
    pub(crate) fn join(&self, key: &Key) -> Arc<Group> {
        let mut open = self.open.lock().expect("cold reads lock");
        if let Some(group) = open.as_ref() {
            let mut keys = group.keys.lock().expect("group lock");
            if keys.len() < MAX_GROUP {
                keys.push(key.clone());
                return group.clone();
            }
        }
        let group = Arc::new(Group { keys: Mutex::new(vec![key.clone()]), values: OnceCell::new() });
        *open = Some(group.clone());
        group
    }

    /// Waits for a turn to read, then closes `group` (no key joins it any
    /// more) and returns its keys, each once. Hold the permit while reading.
    pub(crate) async fn close(&self, group: &Arc<Group>) -> (tokio::sync::SemaphorePermit<'_>, Vec<Key>) {
        let turn = self.turns.acquire().await.expect("the semaphore is never closed");
        {
            let mut open = self.open.lock().expect("cold reads lock");
            if open.as_ref().is_some_and(|g| Arc::ptr_eq(g, group)) {
                *open = None;
            }
        }
        let mut keys = group.keys.lock().expect("group lock").clone();
        keys.sort_unstable();
        keys.dedup();
        (turn, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new("ns", name).unwrap()
    }

    #[tokio::test]
    async fn misses_join_the_open_group_until_it_closes() {
        let reads = ColdReads::default();
        let first = reads.join(&key("a"));
        let same = reads.join(&key("b"));
        reads.join(&key("a"));
        assert!(Arc::ptr_eq(&first, &same));
        let (_turn, keys) = reads.close(&first).await;
        assert_eq!(keys, [key("a"), key("b")], "each key once");
        let next = reads.join(&key("c"));
        assert!(!Arc::ptr_eq(&first, &next), "a closed group takes no key");
        let (_turn, keys) = reads.close(&next).await;
        assert_eq!(keys, [key("c")]);
    }

    #[tokio::test]
    async fn a_full_group_makes_way_for_a_new_one() {
        let reads = ColdReads::default();
        let first = reads.join(&key("k0"));
        for i in 1..MAX_GROUP {
            assert!(Arc::ptr_eq(&first, &reads.join(&key(&format!("k{i}")))));
        }
        let next = reads.join(&key("one more"));
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(reads.close(&first).await.1.len(), MAX_GROUP);
    }

    #[tokio::test]
    async fn at_most_two_groups_read_at_once() {
        let reads = ColdReads::default();
        let (a, b, c) = (reads.join(&key("a")), reads.join(&key("b")), reads.join(&key("c")));
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&b, &c));
        let first = reads.close(&a).await;
        let other = reads.join(&key("d"));
        let second = reads.close(&other).await;
        let third_group = reads.join(&key("e"));
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), reads.close(&third_group)).await;
        assert!(third.is_err(), "a third read waits for a turn");
        drop(first);
        let (_turn, keys) = reads.close(&third_group).await;
        assert_eq!(keys, [key("e")]);
        drop(second);
    }
}

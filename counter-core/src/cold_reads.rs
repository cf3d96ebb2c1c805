//! Store reads for cache misses, coalesced: concurrent misses of different
//! counters share one `get_many`.
//!
//! A miss joins the open group. A group reads when one of its members gets
//! the turn (one group reads at a time): at that moment the group closes
//! and every key that joined it is read in one call, so while a read is in
//! flight the next group gathers the misses that arrive meanwhile (and for
//! [`LINGER`] after it ended, so that the misses it woke are in too). A
//! cold wave of N counters costs a few reads instead of N.
//!
//! The read of a group is the same as a single counter's (claims touching
//! its keys land first, then the store is read), and it starts after every
//! member's miss, so each member gets the base the protocol asks for. A
//! miss of a counter whose read is already in flight does not use that
//! read (it started before this miss): it waits for it and then tries the
//! cache again, where the read's member has loaded the counter. If a
//! group's read fails, each member falls back to a read of its own counter:
//! one counter the store refuses, or whose claims cannot land, never fails
//! the others' increments.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::error::Result;
use crate::key::Key;

/// Most counters in one group (a store splits a read as it must, for
/// example DynamoDB into requests of 100 keys).
pub(crate) const MAX_GROUP: usize = 1_000;

/// How long after the end of a read the next group waits to close: long
/// enough for the misses the read woke to reach their next miss, short
/// against a store read. A miss with no read in flight and none ended
/// that recently reads at once.
pub(crate) const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// What a group's read found: the durable value of each of its keys, or
/// the error of the read, and how many keys it covered.
#[derive(Debug)]
pub(crate) struct GroupRead {
    /// Keys read.
    pub(crate) keys: usize,
    /// Their durable values (`None`: not in the store).
    pub(crate) values: Result<HashMap<Key, Option<i64>>>,
}

/// Keys whose misses share one read, and its outcome.
#[derive(Debug, Default)]
pub(crate) struct Group {
    keys: Mutex<BTreeSet<Key>>,
    read: OnceCell<GroupRead>,
}

impl Group {
    /// The group's read, run once by whichever member gets there first
    /// (another member takes over if that one is cancelled).
    pub(crate) fn read(&self) -> &OnceCell<GroupRead> {
        &self.read
    }
}

/// Where a miss stands.
#[derive(Debug, Clone)]
pub(crate) enum Joined {
    /// In the open group, whose read will start after this miss.
    Open(Arc<Group>),
    /// The counter is in a group whose read is in flight: wait for it, then
    /// try the cache again.
    InFlight(Arc<Group>),
}

#[derive(Debug, Default)]
struct State {
    open: Option<Arc<Group>>,
    /// The keys of closed groups whose read has not finished.
    reading: HashMap<Key, Arc<Group>>,
}

/// The misses of one engine waiting for, or in, a store read.
#[derive(Debug)]
pub(crate) struct ColdReads {
    state: Mutex<State>,
    turn: Semaphore,
    /// When the last read ended.
    last_end: Mutex<Option<Instant>>,
}

impl Default for ColdReads {
    fn default() -> Self {
        ColdReads { state: Mutex::default(), turn: Semaphore::new(1), last_end: Mutex::new(None) }
    }
}

impl ColdReads {
    /// Joins a miss of `key` to the open group (opening one if there is
    /// none, or if the open one is full), unless its read is in flight.
    pub(crate) fn join(&self, key: &Key) -> Joined {
        let mut state = self.state.lock().expect("cold reads lock");
        if let Some(group) = state.reading.get(key) {
            return Joined::InFlight(group.clone());
        }
        if let Some(group) = state.open.as_ref() {
            let mut keys = group.keys.lock().expect("group lock");
            if keys.len() < MAX_GROUP || keys.contains(key) {
                keys.insert(key.clone());
                return Joined::Open(group.clone());
            }
        }
        let group = Arc::new(Group { keys: Mutex::new(BTreeSet::from([key.clone()])), read: OnceCell::new() });
        state.open = Some(group.clone());
        Joined::Open(group)
    }

    /// Waits for the turn to read, then closes `group` (no miss joins it
    /// any more) and returns its keys. Hold the permit while reading, and
    /// call [`finish`](Self::finish) after.
    pub(crate) async fn close(&self, group: &Arc<Group>) -> (SemaphorePermit<'_>, Vec<Key>) {
        let turn = self.turn.acquire().await.expect("the semaphore is never closed");
        // If a read ended a moment ago, the misses it woke try the cache
        // again and move on to their next counters: their next misses join
        // this group if it waits for them before it closes.
        let ended = *self.last_end.lock().expect("cold reads lock");
        if let Some(since) = ended.map(|at| at.elapsed()).filter(|since| *since < LINGER) {
            tokio::time::sleep(LINGER - since).await;
        }
        // Under the state lock, which every join takes: no key joins after
        // the snapshot.
        let mut state = self.state.lock().expect("cold reads lock");
        if state.open.as_ref().is_some_and(|g| Arc::ptr_eq(g, group)) {
            state.open = None;
        }
        let keys: Vec<Key> = group.keys.lock().expect("group lock").iter().cloned().collect();
        for key in &keys {
            state.reading.insert(key.clone(), group.clone());
        }
        (turn, keys)
    }

    /// Calls [`finish`](Self::finish) when dropped: when the read is over,
    /// or when the member reading was cancelled.
    pub(crate) fn finish_on_drop<'a>(&'a self, group: &'a Arc<Group>, keys: &'a [Key]) -> impl Drop + 'a {
        struct Finish<'a> {
            reads: &'a ColdReads,
            group: &'a Arc<Group>,
            keys: &'a [Key],
        }
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.reads.finish(self.group, self.keys);
            }
        }
        Finish { reads: self, group, keys }
    }

    /// `group`'s read is over: its keys are no longer in flight.
    pub(crate) fn finish(&self, group: &Arc<Group>, keys: &[Key]) {
        *self.last_end.lock().expect("cold reads lock") = Some(Instant::now());
        let mut state = self.state.lock().expect("cold reads lock");
        for key in keys {
            if state.reading.get(key).is_some_and(|g| Arc::ptr_eq(g, group)) {
                state.reading.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::new("ns", name).unwrap()
    }

    fn open(joined: Joined) -> Arc<Group> {
        match joined {
            Joined::Open(group) => group,
            Joined::InFlight(_) => panic!("expected the open group"),
        }
    }

    #[tokio::test]
    async fn misses_join_the_open_group_until_it_closes() {
        let reads = ColdReads::default();
        let first = open(reads.join(&key("b")));
        let same = open(reads.join(&key("a")));
        open(reads.join(&key("b")));
        assert!(Arc::ptr_eq(&first, &same));
        let (turn, keys) = reads.close(&first).await;
        assert_eq!(keys, [key("a"), key("b")], "each key once");
        let next = open(reads.join(&key("c")));
        assert!(!Arc::ptr_eq(&first, &next), "a closed group takes no key");
        match reads.join(&key("a")) {
            Joined::InFlight(group) => assert!(Arc::ptr_eq(&group, &first)),
            Joined::Open(_) => panic!("a key whose read is in flight waits for it"),
        }
        reads.finish(&first, &keys);
        drop(turn);
        assert!(Arc::ptr_eq(&next, &open(reads.join(&key("a")))), "after the read, a new miss reads again");
        assert_eq!(reads.close(&next).await.1, [key("a"), key("c")]);
    }

    #[tokio::test]
    async fn a_full_group_makes_way_for_a_new_one() {
        let reads = ColdReads::default();
        let first = open(reads.join(&key("k0")));
        for i in 1..MAX_GROUP {
            assert!(Arc::ptr_eq(&first, &open(reads.join(&key(&format!("k{i}"))))));
        }
        assert!(Arc::ptr_eq(&first, &open(reads.join(&key("k7")))), "a key already in takes no room");
        let next = open(reads.join(&key("one more")));
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(reads.close(&first).await.1.len(), MAX_GROUP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_closing_right_after_a_read_waits_for_the_misses_it_woke() {
        let reads = Arc::new(ColdReads::default());
        let first = open(reads.join(&key("a")));
        let (turn, keys) = reads.close(&first).await;
        reads.finish(&first, &keys);
        drop(turn);
        // The woken member misses again at once: its group waits before it closes.
        let second = open(reads.join(&key("b")));
        let closing = tokio::spawn({
            let (reads, second) = (reads.clone(), second.clone());
            async move { reads.close(&second).await.1 }
        });
        tokio::time::sleep(LINGER / 2).await;
        assert!(Arc::ptr_eq(&second, &open(reads.join(&key("c")))), "still gathering");
        assert_eq!(closing.await.unwrap(), [key("b"), key("c")]);
        // Long after the last read ended, a miss reads at once.
        tokio::time::sleep(LINGER * 2).await;
        let third = open(reads.join(&key("d")));
        let started = Instant::now();
        assert_eq!(reads.close(&third).await.1, [key("d")]);
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    }

    #[tokio::test]
    async fn one_group_reads_at_a_time() {
        let reads = ColdReads::default();
        let first = open(reads.join(&key("a")));
        let reading = reads.close(&first).await;
        let second = open(reads.join(&key("b")));
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), reads.close(&second)).await;
        assert!(waiting.is_err(), "a second read waits for the turn");
        assert!(Arc::ptr_eq(&second, &open(reads.join(&key("c")))), "and its group still gathers misses");
        drop(reading);
        assert_eq!(reads.close(&second).await.1, [key("b"), key("c")]);
    }
}

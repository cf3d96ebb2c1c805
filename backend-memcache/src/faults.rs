//! Fault injection for tests: losing the whole cache, or one entry of a
//! counter, the way memcached itself loses data.

use async_trait::async_trait;
use counter_core::testing::{CacheFaults, CachePart};
use counter_core::{Key, Result, now_ms};

use crate::cache::{CellRef, MemcacheCache, State};
use crate::client::Pipeline;

#[async_trait]
impl CacheFaults for MemcacheCache {
    /// Loses everything this handle sees, claims included, as a restart
    /// of the server would: the handle moves to a fresh, empty key space
    /// under its prefix (`<prefix>~<random>:`), and the old entries are
    /// left for memcached to evict. Nothing is flushed on a server others
    /// use, and memcached's key listing (`lru_crawler metadump`) is not
    /// used either: while its crawler runs, memcached 1.6.18 refuses
    /// increments of the items it visits, which would disturb every other
    /// user of the server. (The crate's tests restart private servers for
    /// the real thing.)
    async fn lose_everything(&self) -> Result<()> {
        self.layout.start_generation(rand::random::<u32>());
        self.forget_all_lineages();
        self.registry.clear();
        self.last_listing.clear();
        self.parts.lock().expect("parts lock").clear();
        Ok(())
    }

    /// Deletes the dirty lists of every window the index can still hold
    /// (from the lookback before now to the next window) and the head,
    /// leaving totals, flushed marks and claims in place.
    async fn lose_index(&self) -> Result<bool> {
        let window = self.options.dirty_window.as_millis().max(1) as u64;
        let now = now_ms() / window;
        let span = (self.options.lookback.as_millis() as u64).div_ceil(window)
            + (self.options.clock_margin.as_millis() as u64).div_ceil(window)
            + 2;
        let mut p = Pipeline::new();
        for w in now.saturating_sub(span)..=now + 1 {
            for shard in 0..self.options.dirty_shards {
                p.delete(&self.layout.dirty_list(w, shard), "");
            }
        }
        p.delete(&self.layout.dirty_head(), "");
        for reply in self.client.run(&p).await? {
            reply.check()?;
        }
        Ok(true)
    }

    /// Deletes one entry of the counter: its total, or its flushed mark
    /// (an eviction of that item alone).
    async fn lose_part(&self, key: &Key, part: CachePart) -> Result<()> {
        let c = CellRef::counter(key);
        let target = match (part, self.states_of(std::slice::from_ref(&c)).await?[0]) {
            (CachePart::Total, State::Live { lineage, .. }) => self.layout.total(&c.enc, lineage),
            (CachePart::Total, _) => return Ok(()),
            (CachePart::FlushedMark, _) => self.layout.flushed(&c.enc),
        };
        let mut p = Pipeline::new();
        p.delete(&target, "");
        self.client.run(&p).await?[0].check()?;
        Ok(())
    }
}

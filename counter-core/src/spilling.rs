//! What a shutdown that could not drain does with the rest: writes it to
//! the spill journal (with an in-process cache, after claiming whatever is
//! still pending), or checks that the shared cache still records it.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;

use crate::backlog::Origin;
use crate::batch::{Batch, BatchId};
use crate::cache::CacheLayer;
use crate::cell::Cell;
use crate::engine::Engine;
use crate::error::Result;
use crate::store::DurableStore;

/// A spill journal file written, and what it holds: (file, batches, cells).
pub(crate) type Spilled = (PathBuf, usize, u64);

impl<C: CacheLayer + ?Sized, S: DurableStore + ?Sized> Engine<C, S> {
    /// Whether every batch this engine holds is recorded as a claim in the
    /// cache (so that other flushers can land it if this one stops).
    pub(crate) async fn backlog_recorded_in_cache(&self) -> Result<bool> {
        let roots = self.backlog().origins();
        if roots.is_empty() {
            return Ok(true);
        }
        let claims = self.cache.claims(0).await?;
        Ok(roots.iter().all(|(root, origin)| *origin == Origin::Journal || claims.iter().any(|c| c.id == *root)))
    }

    /// Shutdown could not drain: writes the backlog to the spill journal
    /// (with `claim_pending`, for an in-process cache, whatever is still
    /// pending in the cache too) and forgets it. Returns the file and what it
    /// holds (batches, cells).
    pub(crate) async fn spill(&self, claim_pending: bool) -> Result<Option<Spilled>> {
        let Some(journal) = &self.journal else { return Ok(None) };
        // Whatever is still pending in an in-process cache goes into batches too.
        if claim_pending {
            loop {
                let dirty = self.cache.dirty(u64::MAX, self.config.dirty_page(self.batch_size())).await?;
                if dirty.is_empty() {
                    break;
                }
                let cells: Vec<Cell> = dirty.into_iter().map(|d| d.cell).collect();
                let mut claimed = false;
                for part in cells.chunks(self.batch_size()) {
                    let batch = self.cache.claim(BatchId::new(), part).await?;
                    if !batch.is_empty() {
                        claimed = true;
                        self.backlog().add(Arc::new(batch), Origin::Claimed);
                    }
                }
                if !claimed {
                    break;
                }
            }
        }
        let pieces = self.backlog().all();
        if pieces.is_empty() {
            return Ok(None);
        }
        let batches: Vec<Batch> = pieces.iter().map(|p| Batch::clone(&p.batch)).collect();
        let cells = batches.iter().map(|b| b.entries.len() as u64).sum();
        let path = journal.write(&batches)?;
        let (roots, files) = self.backlog().take_all();
        // A shared cache keeps its claims, so that other processes land them
        // (the journal's copy then lands as a no-op); an in-process one dies
        // with the process anyway.
        if !self.cache.capabilities().shared {
            for (root, origin) in roots {
                if origin != Origin::Journal {
                    let _ = self.cache.ack(root).await;
                }
            }
        }
        // The batches of the files replayed are in the new file now.
        for file in files {
            if let Err(e) = journal.remove(&file) {
                warn!(file = %file.display(), error = %e, "could not delete a spill journal file rewritten into a new one");
            }
        }
        Ok(Some((path, batches.len(), cells)))
    }
}

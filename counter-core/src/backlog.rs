//! The engine's backlog: every batch it claimed (or adopted: an orphaned
//! claim, a spill journal file) and has not seen land in full.
//!
//! A batch lands as one piece, or, when the store refuses it for good, as
//! the [halves](Batch::halves) it is split into, and so on down to the
//! refused cells alone. The backlog keeps, per claimed batch (its *root*),
//! the pieces still to land, each with its last error and when to try it
//! again. A root whose pieces all landed is done: its claim is acknowledged
//! in the cache (or its journal file deleted).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::{Batch, BatchId};
use crate::cell::Cell;
use crate::error::Error;
use crate::key::Key;

/// Where a root batch came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Claimed by this engine.
    Claimed,
    /// A claim another flusher left (or one a reload must see landed).
    Orphan,
    /// Adopted from a spill journal.
    Journal,
}

/// A part of a root that has not landed.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) batch: Arc<Batch>,
    /// The store's last answer, if it failed.
    pub(crate) error: Option<Error>,
    /// Failures in a row.
    pub(crate) failures: u32,
    /// Not tried again before this (ms since the epoch) unless forced.
    pub(crate) retry_at_ms: u64,
    /// When it first failed (ms since the epoch), 0 if it never did.
    pub(crate) failing_since_ms: u64,
}

impl Piece {
    fn new(batch: Arc<Batch>) -> Piece {
        Piece { batch, error: None, failures: 0, retry_at_ms: 0, failing_since_ms: 0 }
    }
}

#[derive(Debug)]
struct Root {
    origin: Origin,
    pieces: Vec<Piece>,
    /// The counters its pieces touch.
    keys: Vec<Key>,
}

/// A root whose pieces all landed.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) root: BatchId,
    pub(crate) origin: Origin,
    /// The counters it touched.
    pub(crate) keys: Vec<Key>,
    /// Journal files none of whose roots is left.
    pub(crate) files_done: Vec<PathBuf>,
}

/// The roots and their pieces.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    roots: HashMap<BatchId, Root>,
    /// Entries across all pieces: cells taken from the cache, not durable.
    cells: u64,
    /// The roots not done, per journal file they came from.
    files: HashMap<PathBuf, HashSet<BatchId>>,
}

impl Backlog {
    /// Adds a batch: a root as claimed, or (from a journal) a piece of one.
    /// A no-op if it is there already; returns whether it was new.
    pub(crate) fn add(&mut self, batch: Arc<Batch>, origin: Origin) -> bool {
        let root = batch.root();
        let r = self.roots.entry(root).or_insert_with(|| Root { origin, pieces: Vec::new(), keys: Vec::new() });
        let known = r.pieces.iter().any(|p| p.batch.id == batch.id || batch.lineage.contains(&p.batch.id));
        if known {
            return false;
        }
        // Sorted and deduplicated as a whole: a batch holds thousands of
        // cells, and a search per cell would cost their square.
        let before = r.keys.len();
        r.keys.extend(batch.entries.iter().filter_map(|e| match &e.cell {
            Cell::Counter(key) => Some(key.clone()),
            Cell::Slice(_) => None,
        }));
        if r.keys.len() > before {
            r.keys.sort_unstable();
            r.keys.dedup();
        }
        self.cells += batch.entries.len() as u64;
        r.pieces.push(Piece::new(batch));
        true
    }

    /// Adds a piece read from journal file `file`.
    pub(crate) fn adopt(&mut self, batch: Arc<Batch>, file: PathBuf) {
        let root = batch.root();
        self.add(batch, Origin::Journal);
        self.files.entry(file).or_default().insert(root);
    }

    pub(crate) fn contains(&self, root: BatchId) -> bool {
        self.roots.contains_key(&root)
    }

    /// Cells in the pieces not landed.
    pub(crate) fn cells(&self) -> u64 {
        self.cells
    }

    /// Roots not done.
    pub(crate) fn roots(&self) -> usize {
        self.roots.len()
    }

    /// The pieces `keep` selects, with their roots, oldest root first.
    pub(crate) fn pieces(&self, keep: impl Fn(&Piece) -> bool) -> Vec<(BatchId, Arc<Batch>)> {
        let mut out: Vec<(BatchId, Arc<Batch>)> = self
            .roots
            .iter()
            .flat_map(|(root, r)| r.pieces.iter().filter(|p| keep(p)).map(|p| (*root, p.batch.clone())))
            .collect();
        out.sort_by_key(|(root, piece)| (*root, piece.id));
        out
    }

    /// Every piece in full, for diagnostics and the spill journal.
    pub(crate) fn all(&self) -> Vec<Piece> {
        self.roots.values().flat_map(|r| r.pieces.iter().cloned()).collect()
    }

    /// The pieces of roots adopted from a journal (they stay in its files).
    pub(crate) fn all_from_journal(&self) -> Vec<Piece> {
        self.roots.values().filter(|r| r.origin == Origin::Journal).flat_map(|r| r.pieces.iter().cloned()).collect()
    }

    /// The roots not done, and where they came from.
    pub(crate) fn origins(&self) -> Vec<(BatchId, Origin)> {
        self.roots.iter().map(|(id, r)| (*id, r.origin.clone())).collect()
    }

    /// Cells of single-cell pieces the store refused (kept out of new
    /// claims until they land).
    pub(crate) fn refused_cells(&self) -> HashSet<Cell> {
        self.roots
            .values()
            .flat_map(|r| &r.pieces)
            .filter(|p| p.error.as_ref().is_some_and(refuses_cell) && p.batch.entries.len() == 1)
            .map(|p| p.batch.entries[0].cell.clone())
            .collect()
    }

    /// Piece `piece` of `root` landed (or was found landed): it and every
    /// piece split from it are forgotten. Returns the root if that was its
    /// last piece.
    pub(crate) fn landed(&mut self, root: BatchId, piece: BatchId) -> Option<Done> {
        let r = self.roots.get_mut(&root)?;
        let before: u64 = r.pieces.iter().map(|p| p.batch.entries.len() as u64).sum();
        r.pieces.retain(|p| p.batch.id != piece && !p.batch.lineage.contains(&piece));
        let after: u64 = r.pieces.iter().map(|p| p.batch.entries.len() as u64).sum();
        self.cells -= before - after;
        if !r.pieces.is_empty() {
            return None;
        }
        let Root { origin, keys, .. } = self.roots.remove(&root).expect("present");
        let mut files_done = Vec::new();
        self.files.retain(|file, roots| {
            roots.remove(&root);
            if roots.is_empty() {
                files_done.push(file.clone());
            }
            !roots.is_empty()
        });
        Some(Done { root, origin, keys, files_done })
    }

    /// Piece `piece` of `root` was split: it is replaced by its halves,
    /// unless it is gone (landed or split by someone else meanwhile).
    pub(crate) fn split(&mut self, root: BatchId, piece: BatchId, halves: [Arc<Batch>; 2]) {
        let Some(r) = self.roots.get_mut(&root) else { return };
        let Some(at) = r.pieces.iter().position(|p| p.batch.id == piece) else { return };
        r.pieces.remove(at);
        for half in halves {
            if !r.pieces.iter().any(|p| p.batch.id == half.id) {
                r.pieces.push(Piece::new(half));
            }
        }
    }

    /// Failures in a row of piece `piece` of `root`.
    pub(crate) fn failures(&self, root: BatchId, piece: BatchId) -> u32 {
        self.roots.get(&root).and_then(|r| r.pieces.iter().find(|p| p.batch.id == piece)).map_or(0, |p| p.failures)
    }

    /// Piece `piece` of `root` failed with `error`; not to be tried again
    /// before `retry_at_ms` unless forced.
    pub(crate) fn failed(&mut self, root: BatchId, piece: BatchId, error: Error, now_ms: u64, retry_at_ms: u64) {
        let Some(p) = self.roots.get_mut(&root).and_then(|r| r.pieces.iter_mut().find(|p| p.batch.id == piece)) else {
            return;
        };
        p.error = Some(error);
        p.failures = p.failures.saturating_add(1);
        p.retry_at_ms = retry_at_ms;
        if p.failing_since_ms == 0 {
            p.failing_since_ms = now_ms;
        }
    }

    /// Forgets every root (they were spilled), returning them and the
    /// journal files they came from.
    pub(crate) fn take_all(&mut self) -> (Vec<(BatchId, Origin)>, Vec<PathBuf>) {
        self.cells = 0;
        let files = self.files.drain().map(|(f, _)| f).collect();
        (self.roots.drain().map(|(id, r)| (id, r.origin)).collect(), files)
    }
}

/// Whether `error` is the store refusing one cell for good (an overflow, or
/// another permanent refusal naming the key): a batch refused so is split
/// so that its other cells land.
pub(crate) fn refuses_cell(error: &Error) -> bool {
    use crate::error::ErrorKind::*;
    match error.kind() {
        Overflow => true,
        Permanent | InvalidInput => error.key().is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchEntry, ErrorKind, Key};

    fn batch(names: &[&str]) -> Arc<Batch> {
        let entries =
            names.iter().map(|n| BatchEntry { cell: Cell::Counter(Key::named(n).unwrap()), delta: 1 }).collect();
        Arc::new(Batch::claimed(BatchId::new(), entries))
    }

    #[test]
    fn a_root_is_done_when_its_pieces_landed_and_a_landed_piece_takes_its_parts_along() {
        let mut backlog = Backlog::default();
        let root = batch(&["a", "b", "c"]);
        assert!(backlog.add(root.clone(), Origin::Claimed));
        assert!(!backlog.add(root.clone(), Origin::Orphan));
        assert_eq!(backlog.cells(), 3);
        let (l, r) = root.halves().unwrap();
        backlog.split(root.id, root.id, [Arc::new(l.clone()), Arc::new(r.clone())]);
        let (rl, rr) = r.halves().unwrap();
        backlog.split(root.id, r.id, [Arc::new(rl.clone()), Arc::new(rr.clone())]);
        let overflow = Error::new(ErrorKind::Overflow, "x").with_key("c");
        backlog.failed(root.id, rr.id, overflow, 1, 2);
        assert_eq!(backlog.refused_cells().len(), 1);
        assert!(backlog.landed(root.id, l.id).is_none());
        assert_eq!(backlog.cells(), 2);
        // Someone landed the whole right half: its parts go too.
        let done = backlog.landed(root.id, r.id).expect("last piece");
        assert_eq!((done.root, done.origin), (root.id, Origin::Claimed));
        assert_eq!(backlog.cells(), 0);
        assert_eq!(backlog.roots(), 0);
        assert!(backlog.landed(root.id, r.id).is_none(), "twice is a no-op");
    }

    #[test]
    fn journal_files_are_done_with_their_last_root() {
        let mut backlog = Backlog::default();
        let (f, g) = (PathBuf::from("f"), PathBuf::from("g"));
        let (one, two) = (batch(&["a"]), batch(&["b", "c"]));
        let (l, r) = two.halves().unwrap();
        backlog.adopt(one.clone(), f.clone());
        backlog.adopt(Arc::new(l.clone()), f.clone());
        backlog.adopt(Arc::new(r.clone()), g.clone());
        backlog.adopt(Arc::new(r.clone()), f.clone());
        assert_eq!(backlog.roots(), 2);
        assert_eq!(backlog.cells(), 3, "a piece adopted twice counts once");
        assert!(backlog.landed(one.id, one.id).unwrap().files_done.is_empty());
        assert!(backlog.landed(two.id, l.id).is_none());
        let mut done = backlog.landed(two.id, r.id).unwrap().files_done;
        done.sort();
        assert_eq!(done, vec![f, g]);
    }
}

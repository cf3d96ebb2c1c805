//! The spill journal: where an in-process cache puts, at shutdown, the
//! batches the store did not take (it was down, hung, or refused some
//! cells), so that a clean shutdown loses nothing whatever the store does.
//!
//! The journal is a directory. Each shutdown that spills writes one file,
//! `spill-<id>.batches`, holding every batch it could not deliver with its
//! identity and lineage: written to a temporary name, fsynced, renamed, and
//! the directory fsynced, so a file is either there whole or not at all.
//! The next `Counters` handle built over the same journal adopts every file
//! and lands its batches first; a file is deleted once all its batches
//! landed. Landing is idempotent by batch identity, so two processes
//! replaying the same file, or a file replayed twice after a crash, change
//! nothing more. A file that does not parse is left where it is (and
//! logged), never half-applied.
//!
//! The format is UTF-8 text, one record a line, fields separated by tabs
//! (key names never hold control characters):
//!
//! ```text
//! counters-spill 1
//! batch <id> <lineage ids, comma-separated, or -> <entries>
//! c <delta> <namespace> <name>
//! s <delta> <precision> <start> <namespace> <name>
//! end <batches> <FNV-1a 64 of every byte before this line, hex>
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::batch::{Batch, BatchEntry, BatchId};
use crate::cell::{Cell, Precision, SliceId};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;

const MAGIC: &str = "counters-spill 1";
const EXTENSION: &str = "batches";

/// A journal directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

/// A journal file that does not parse, and why.
pub(crate) type Damaged = (PathBuf, Error);

/// One journal file and the batches it holds.
#[derive(Debug)]
pub(crate) struct SpillFile {
    pub(crate) path: PathBuf,
    pub(crate) batches: Vec<Batch>,
}

fn io_error(what: String, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Permanent, what).with_source(e)
}

impl Journal {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Journal {
        Journal { dir: dir.into() }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every whole journal file, oldest first. A file that does not parse is
    /// reported in the second list and left in place.
    pub(crate) fn read_all(&self) -> Result<(Vec<SpillFile>, Vec<Damaged>)> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(io_error(format!("reading the spill journal {}", self.dir.display()), e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        paths.sort();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for path in paths {
            match fs::read_to_string(&path)
                .map_err(|e| io_error(format!("reading {}", path.display()), e))
                .and_then(|text| parse(&text).map_err(|e| e.with_key(path.display())))
            {
                Ok(batches) => good.push(SpillFile { path, batches }),
                // Deleted by another process that landed it meanwhile.
                Err(_) if !path.exists() => {}
                Err(e) => bad.push((path, e)),
            }
        }
        Ok((good, bad))
    }

    /// Writes `batches` to a new journal file, durably, and returns its path.
    pub(crate) fn write(&self, batches: &[Batch]) -> Result<PathBuf> {
        let what = |doing: &str| format!("{doing} the spill journal {}", self.dir.display());
        fs::create_dir_all(&self.dir).map_err(|e| io_error(what("creating"), e))?;
        let name = format!("spill-{}.{EXTENSION}", BatchId::new());
        let path = self.dir.join(&name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let text = render(batches);
        let written = (|| {
            let mut file = fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temporary, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temporary);
            return Err(io_error(what("writing"), e));
        }
        Ok(path)
    }

    /// Deletes a journal file whose batches all landed (already gone is fine).
    pub(crate) fn remove(&self, path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => {
                let _ = fs::File::open(&self.dir).and_then(|d| d.sync_all());
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(format!("deleting {}", path.display()), e)),
        }
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn render(batches: &[Batch]) -> String {
    let mut out = format!("{MAGIC}\n");
    for batch in batches {
        let lineage = if batch.lineage.is_empty() {
            "-".to_string()
        } else {
            batch.lineage.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(",")
        };
        out.push_str(&format!("batch\t{}\t{lineage}\t{}\n", batch.id, batch.entries.len()));
        for entry in &batch.entries {
            let key = entry.cell.key();
            match &entry.cell {
                Cell::Counter(_) => {
                    out.push_str(&format!("c\t{}\t{}\t{}\n", entry.delta, key.namespace(), key.name()));
                }
                Cell::Slice(s) => out.push_str(&format!(
                    "s\t{}\t{}\t{}\t{}\t{}\n",
                    entry.delta,
                    s.precision.secs(),
                    s.start,
                    key.namespace(),
                    key.name()
                )),
            }
        }
    }
    let sum = fnv64(out.as_bytes());
    out.push_str(&format!("end\t{}\t{sum:016x}\n", batches.len()));
    out
}

fn damaged(why: impl Into<String>) -> Error {
    Error::new(ErrorKind::Permanent, format!("damaged spill journal file: {}", why.into()))
}

fn parse(text: &str) -> Result<Vec<Batch>> {
    let end = text.trim_end_matches('\n').rfind('\n').map(|i| i + 1).ok_or_else(|| damaged("no end line"))?;
    let (body, trailer) = text.split_at(end);
    let trailer: Vec<&str> = trailer.trim_end_matches('\n').split('\t').collect();
    let [tag, count, sum] = trailer[..] else { return Err(damaged("no end line")) };
    if tag != "end" || u64::from_str_radix(sum, 16).ok() != Some(fnv64(body.as_bytes())) {
        return Err(damaged("checksum mismatch (truncated or edited)"));
    }
    let mut lines = body.lines();
    if lines.next() != Some(MAGIC) {
        return Err(damaged(format!("not a spill journal file (expected {MAGIC:?})")));
    }
    let number = |s: &str| s.parse::<i64>().map_err(|_| damaged(format!("bad number {s:?}")));
    let key = |ns: &str, name: &str| Key::stored(ns, name).map_err(|e| damaged(format!("bad key: {e}")));
    let mut batches = Vec::new();
    while let Some(line) = lines.next() {
        let fields: Vec<&str> = line.split('\t').collect();
        let ["batch", id, lineage, n] = fields[..] else { return Err(damaged(format!("unexpected line {line:?}"))) };
        let id: BatchId = id.parse().map_err(|_| damaged(format!("bad batch id {id:?}")))?;
        let lineage = match lineage {
            "-" => Vec::new(),
            ids => ids
                .split(',')
                .map(|i| i.parse().map_err(|_| damaged(format!("bad id {i:?}"))))
                .collect::<Result<_>>()?,
        };
        let n: usize = n.parse().map_err(|_| damaged(format!("bad entry count {n:?}")))?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let line = lines.next().ok_or_else(|| damaged("a batch ends early"))?;
            let fields: Vec<&str> = line.split('\t').collect();
            let entry = match fields[..] {
                ["c", delta, ns, name] => BatchEntry { cell: Cell::Counter(key(ns, name)?), delta: number(delta)? },
                ["s", delta, precision, start, ns, name] => {
                    let precision = precision
                        .parse::<u32>()
                        .ok()
                        .and_then(Precision::from_secs)
                        .ok_or_else(|| damaged(format!("bad precision {precision:?}")))?;
                    let slice = SliceId { key: key(ns, name)?, precision, start: number(start)? };
                    BatchEntry { cell: Cell::Slice(slice), delta: number(delta)? }
                }
                _ => return Err(damaged(format!("unexpected entry line {line:?}"))),
            };
            entries.push(entry);
        }
        batches.push(Batch { id, entries, lineage });
    }
    if count.parse::<usize>().ok() != Some(batches.len()) {
        return Err(damaged("batch count mismatch"));
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Batch> {
        let k = Key::new("ns", "clicks:a b\u{e9}").unwrap();
        let slice = SliceId { key: k.clone(), precision: Precision::from_secs(60).unwrap(), start: -120 };
        let root = Batch::claimed(
            BatchId::new(),
            vec![
                BatchEntry { cell: Cell::Counter(k.clone()), delta: i64::MIN },
                BatchEntry { cell: Cell::Slice(slice), delta: i64::MAX },
                BatchEntry { cell: Cell::Counter(Key::named("x").unwrap()), delta: 3 },
            ],
        );
        let (_, right) = root.halves().unwrap();
        vec![root, right]
    }

    #[test]
    fn batches_round_trip_and_damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("counters-spill-test-{}", BatchId::new()));
        let journal = Journal::new(&dir);
        assert!(journal.read_all().unwrap().0.is_empty(), "a missing journal is empty");
        let batches = sample();
        let path = journal.write(&batches).unwrap();
        let (files, bad) = journal.read_all().unwrap();
        assert!(bad.is_empty());
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].batches, batches);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replacen("\t3\n", "\t4\n", 1)).unwrap();
        let (files, bad) = journal.read_all().unwrap();
        assert!(files.is_empty());
        assert!(bad[0].1.to_string().contains("checksum"), "{}", bad[0].1);
        fs::write(&path, &text[..text.len() - 5]).unwrap();
        assert_eq!(journal.read_all().unwrap().1.len(), 1, "a truncated file is refused");
        journal.remove(&path).unwrap();
        journal.remove(&path).unwrap();
        assert!(journal.read_all().unwrap().0.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}

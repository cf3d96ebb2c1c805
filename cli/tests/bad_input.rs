//! A bad-input corpus for the `counters` binary, tried as an attacker and a
//! careless user would: times that wrap or leave years 1-9999, series
//! ranges past the bucket bound, invalid namespaces and prefixes, options
//! that contradict each other, events older than every retention, numbers
//! that do not fit, bad keys and bad backend URLs.
//!
//! Every case asserts its exit code and a clear message on stderr, that it
//! finished (no hang: each run has a time limit), that nothing changed (the
//! files of the directory, the SQLite file's bytes and mtime included, the
//! sentinel counters, their listings and series), and that a good command
//! works afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{counters, run, run_for, stderr, stdout};

/// How long one bad command may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(60);

/// Earliest and latest epoch seconds accepted (years 1 and 9999).
const MIN_EPOCH: i64 = -62_135_596_800;
const MAX_EPOCH: i64 = 253_402_300_799;

/// What a bad command must answer.
struct Case {
    args: Vec<String>,
    /// Expected exit code.
    code: i32,
    /// Expected on stderr.
    message: &'static str,
}

fn case(args: &[&str], code: i32, message: &'static str) -> Case {
    Case { args: args.iter().map(|s| s.to_string()).collect(), code, message }
}

fn owned(args: Vec<String>, code: i32, message: &'static str) -> Case {
    Case { args, code, message }
}

/// A directory with sentinel counters in its default SQLite file.
struct Sandbox {
    dir: tempfile::TempDir,
}

/// Everything a bad command must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct Files(BTreeMap<PathBuf, (Vec<u8>, SystemTime)>);

#[derive(Debug, PartialEq, Eq)]
struct Values {
    totals: String,
    default_listing: String,
    ns_listing: String,
    series: String,
}

impl Sandbox {
    fn new() -> Sandbox {
        let sandbox = Sandbox { dir: tempfile::tempdir().unwrap() };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        sandbox.ok(&["put", "s1", "41"]);
        sandbox.ok(&["incr", "ns/s2", "3", "--sliced", "--at", &now]);
        sandbox.ok(&["incr", "s3:child", "2", "--rollup"]);
        sandbox
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = run(self.path(), args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// Every file under the directory: bytes and mtime.
    fn files(&self) -> Files {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    out.insert(entry.path(), (Vec::new(), meta.modified().unwrap()));
                    walk(&entry.path(), out);
                } else {
                    out.insert(entry.path(), (std::fs::read(entry.path()).unwrap(), meta.modified().unwrap()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.path(), &mut out);
        Files(out)
    }

    /// The sentinels as the CLI shows them.
    fn values(&self) -> Values {
        Values {
            totals: self.ok(&["get", "s1", "ns/s2", "s3", "s3:child", "k", "ns/k"]),
            default_listing: self.ok(&["list"]),
            ns_listing: self.ok(&["list", "--namespace", "ns"]),
            series: self.ok(&["series", "ns/s2", "--precision", "86400"]),
        }
    }

    /// Runs a bad case and checks its answer, that nothing changed and that
    /// a good command works afterwards.
    fn refuses(&self, case: &Case, files: &Files, values: &Values) {
        let mut command = counters(self.path());
        command.args(&case.args);
        let (status, out, err) = run_for(command, LIMIT);
        let err = err.trim();
        let status = status.unwrap_or_else(|| panic!("{:?} did not finish within {LIMIT:?} (hung)", case.args));
        assert_eq!(status.code(), Some(case.code), "{:?}: exit code; stderr: {err}", case.args);
        assert!(err.contains(case.message), "{:?}: stderr should say {:?}: {err}", case.args, case.message);
        assert!(!err.contains("panicked"), "{:?}: {err}", case.args);
        if err.starts_with("counters: ") {
            assert_eq!(err.lines().count(), 1, "{:?}: one line: {err}", case.args);
        } else {
            assert!(err.starts_with("error: "), "{:?}: an argument error of clap: {err}", case.args);
        }
        assert_eq!(out.trim(), "", "{:?}: nothing on stdout", case.args);
        assert!(self.files() == *files, "{:?}: the directory's files (SQLite bytes, mtime) changed", case.args);
        assert_eq!(self.values(), *values, "{:?}: the sentinel counters changed", case.args);
        assert_eq!(self.ok(&["get", "s1"]), "41", "{:?}: a good command works afterwards", case.args);
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Items 5 and 6 of issue 14: series bounds that wrapped (a hang in a
/// release build, an overflow panic in a debug one) or panicked.
fn wrapping_series() -> Vec<Case> {
    let max = i64::MAX.to_string();
    let min = i64::MIN.to_string();
    vec![
        case(&["series", "k", "--precision", "1", "--to", &max], 2, "--to: time 9223372036854775807 is out of range"),
        case(
            &["series", "k", "--precision", "86400", "--from", "9223372036854775000", "--to", &max],
            2,
            "--to: time 9223372036854775807 is out of range",
        ),
        case(&["series", "k", "--precision", "60", "--to", &min], 2, "--to: time -9223372036854775808 is out of range"),
        case(
            &["series", "k", "--precision", "60", "--from", &min, "--to", "0"],
            2,
            "--from: time -9223372036854775808",
        ),
        case(&["series", "k", "--precision", "86400", "--from", "9223372036854775000"], 2, "is out of range (years 1"),
        case(&["series", "k", "--precision", "60", "--to", &(MAX_EPOCH + 1).to_string()], 2, "years 1 to 9999"),
        case(&["series", "k", "--precision", "60", "--from", &(MIN_EPOCH - 1).to_string()], 2, "years 1 to 9999"),
    ]
}

/// Item 7: event times outside years 1-9999 are refused like the HTTP API
/// refuses them.
fn event_times_out_of_range() -> Vec<Case> {
    [i64::MIN, i64::MAX, MAX_EPOCH + 1, MIN_EPOCH - 1]
        .into_iter()
        .map(|at| owned(strings(&["incr", "k", "--sliced", "--at", &at.to_string()]), 2, "--at: time "))
        .chain([case(&["incr", "ns/k", "5", "--sliced", "--at", "253402300800"], 2, "years 1 to 9999")])
        .collect()
}

/// Item 8: a series query spans at most 100,000 buckets.
fn too_many_buckets() -> Vec<Case> {
    vec![
        case(&["series", "k", "--precision", "1", "--from", "0", "--to", "100000"], 2, "at most 100000 buckets"),
        case(
            &["series", "ns/s2", "--precision", "1", "--from", &MIN_EPOCH.to_string(), "--to", &MAX_EPOCH.to_string()],
            2,
            "buckets of 1s; a series query may span at most 100000 buckets",
        ),
        case(&["series", "k", "--precision", "5", "--from", "-1000000", "--to", "0"], 2, "200001 buckets of 5s"),
    ]
}

/// Item 11: a listing by an invalid namespace or prefix is refused like an
/// invalid key.
fn invalid_listings() -> Vec<Case> {
    let long_namespace = "n".repeat(256);
    let long_prefix = "p".repeat(1025);
    vec![
        case(&["list", "--namespace", "a/b"], 2, "invalid key \"a/b/\": namespace contains '/'"),
        case(&["list", "--namespace", "a\u{1}"], 2, "namespace contains control character U+0001"),
        case(&["list", "--namespace", &long_namespace], 2, "namespace is 256 bytes, the limit is 255"),
        case(&["list", "--namespace", "ns\u{202e}"], 2, "namespace contains U+202E"),
        case(&["list", "--prefix", "s\u{1}"], 2, "prefix contains control character U+0001"),
        case(&["list", "--prefix", "s\u{200b}"], 2, "prefix contains U+200B"),
        case(&["list", "--namespace", "ns", "--prefix", &long_prefix], 2, "prefix is 1025 bytes, the limit is 1024"),
        case(&["list", "--namespace", "ns", "--top", "1", "--prefix", "\n"], 2, "invalid key"),
    ]
}

/// Item 15: contradicting options, and an event older than every
/// precision's retention (1 day x 120 samples by default).
fn ignored_or_silent() -> Vec<Case> {
    let old = (now_secs() - 121 * 86_400).to_string();
    vec![
        case(&["list", "--top", "1", "--limit", "3"], 2, "cannot be used with"),
        case(&["list", "--limit", "3", "--top", "1"], 2, "cannot be used with"),
        case(&["incr", "k", "--sliced", "--at", "1"], 2, "older than the retention of every precision"),
        case(&["incr", "ns/s2", "4", "--sliced", "--at", &old], 2, "older than the retention of every precision"),
        case(&["incr", "s3:child", "--rollup", "--sliced", "--at", "0"], 2, "older than the retention of every"),
    ]
}

/// More of each class: precisions, ranges, numbers, keys and URLs.
fn more_hostile_arguments() -> Vec<Case> {
    let file_as_dir = "sqlite://counters.sqlite/inner.sqlite";
    let mut cases = vec![
        case(&["series", "k", "--precision", "0"], 2, "unknown precision 0s (configured: 1, 5, 60"),
        case(&["series", "k", "--precision", "7"], 2, "unknown precision 7s"),
        case(&["series", "k", "--precision", "4294967296"], 2, "4294967296 is not in 0..=4294967295"),
        case(&["series", "k", "--precision", "-1"], 2, "unexpected argument '-1'"),
        case(&["series", "k", "--precision", "60", "--from", "10", "--to", "5"], 2, "--from is after --to"),
        case(&["series", "k", "--precision", "60", "--from", "1e3"], 2, "invalid value '1e3' for '--from"),
        case(&["incr", "k", "9223372036854775808"], 2, "number too large to fit in target type"),
        case(&["incr", "k", "-9223372036854775809"], 2, "number too small to fit in target type"),
        case(&["incr", "s1", "9223372036854775807"], 2, "overflow for key \"s1\""),
        case(&["decr", "s1", "-9223372036854775808"], 2, "cannot negate the delta"),
        case(&["incr", "k", "--default", "9223372036854775807", "1"], 2, "overflow for key \"k\""),
        case(&["incr", "k", "abc"], 2, "invalid value 'abc' for '[DELTA]'"),
        case(&["put", "s1", "0x10"], 2, "invalid value '0x10'"),
        case(&["incr", "k", "--at", "5"], 2, "--sliced"),
        case(&["incr", ""], 2, "invalid key \"\": name is empty"),
        case(&["incr", "ns/"], 2, "invalid key \"ns/\": name is empty"),
        case(&["put", "a\u{1}", "1"], 2, "name contains control character U+0001"),
        case(&["get", "s1", "s\u{202e}1"], 2, "name contains U+202E"),
        case(&["delete", "a/b/\u{7f}"], 2, "control character U+007F"),
        case(&["--store", "gopher://x", "incr", "k"], 2, "unknown store URL \"gopher://x\""),
        case(&["--cache", "gopher://x", "incr", "k"], 2, "unknown cache URL \"gopher://x\""),
        case(&["--cache", "memory://?size=1", "incr", "k"], 2, "unknown cache URL \"memory://?size=1\""),
        case(&["--store", "sqlite://", "incr", "k"], 2, "the path is empty"),
        case(&["--store", "counters.sqlite", "incr", "k"], 2, "is not a backend URL"),
        case(&["--store", file_as_dir, "incr", "k"], 4, "cannot open the SQLite file"),
    ];
    if cfg!(feature = "redis") {
        cases.push(case(&["--cache", "redis://127.0.0.1:1/0?bogus=1", "incr", "k"], 2, "unknown parameter \"bogus\""));
        cases.push(case(&["--store", "redis://127.0.0.1:1/notadb", "incr", "k"], 2, "notadb"));
    }
    if cfg!(feature = "memcache") {
        cases.push(case(&["--cache", "memcache://127.0.0.1:1?x=y", "incr", "k"], 2, "unknown parameter \"x\""));
    }
    cases
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn check_all(cases: Vec<Case>) {
    let sandbox = Sandbox::new();
    let files = sandbox.files();
    let values = sandbox.values();
    assert!(values.series.ends_with("\t3"), "the sentinel series: {}", values.series);
    assert_eq!(sandbox.files(), files, "reading changes no file");
    for case in &cases {
        sandbox.refuses(case, &files, &values);
    }
}

#[test]
fn series_bounds_that_wrapped_or_panicked_are_bad_input() {
    check_all(wrapping_series());
}

#[test]
fn event_times_outside_years_1_to_9999_are_bad_input() {
    check_all(event_times_out_of_range());
}

#[test]
fn a_series_spans_at_most_the_bucket_bound() {
    check_all(too_many_buckets());
    let sandbox = Sandbox::new();
    // Right at the bound: 100,000 buckets of 1 s answer.
    let now = now_secs();
    let from = (now - 99_999).to_string();
    assert_eq!(sandbox.ok(&["series", "k", "--precision", "1", "--from", &from, "--to", &now.to_string()]), "");
}

#[test]
fn listings_by_an_invalid_namespace_or_prefix_are_bad_input() {
    check_all(invalid_listings());
}

#[test]
fn contradicting_options_and_events_past_retention_are_refused() {
    check_all(ignored_or_silent());
    // An event within the longest retention only still counts.
    let sandbox = Sandbox::new();
    let two_days_ago = (now_secs() - 2 * 86_400).to_string();
    assert_eq!(sandbox.ok(&["incr", "old", "--sliced", "--at", &two_days_ago]), "1");
    assert!(sandbox.ok(&["series", "old", "--precision", "86400"]).ends_with("\t1"));
}

#[test]
fn more_hostile_arguments_are_refused_and_change_nothing() {
    check_all(more_hostile_arguments());
}

#[test]
fn a_directory_as_the_sqlite_path_is_refused_and_creates_nothing() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path().join("adir")).unwrap();
    let files = sandbox.files();
    let values = sandbox.values();
    let adir = format!("sqlite://{}", sandbox.path().join("adir").display());
    sandbox.refuses(
        &owned(strings(&["--store", &adir, "incr", "k"]), 4, "cannot open the SQLite file"),
        &files,
        &values,
    );
    assert!(std::fs::read_dir(sandbox.path().join("adir")).unwrap().next().is_none());
}

/// A store file this user may not write: every command is a backend failure
/// (exit 4) naming it read-only, and the file stays as it was. As root
/// (who may write anything) the command runs as `nobody` through
/// `setpriv`.
#[test]
fn a_read_only_store_is_a_backend_failure_and_stays_untouched() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("counters.sqlite");
    let root = std::fs::metadata(&file).unwrap().uid() == 0;
    if root && !common::installed("setpriv") {
        eprintln!("*** SKIPPING: running as root and setpriv is not installed: cannot drop the right to write ***");
        return;
    }
    let files = sandbox.files();
    let values = sandbox.values();
    let set_mode =
        |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    set_mode(sandbox.path(), 0o555);
    set_mode(&file, 0o444);
    for args in [vec!["incr", "s1", "1"], vec!["put", "ns/s2", "0"], vec!["get", "s1"], vec!["list"]] {
        let command = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(common::binary());
            let template = counters(sandbox.path());
            for (name, value) in template.get_envs() {
                match value {
                    Some(v) => c.env(name, v),
                    None => c.env_remove(name),
                };
            }
            c.current_dir(sandbox.path());
            c
        } else {
            counters(sandbox.path())
        };
        let mut command = command;
        command.args(&args);
        let (status, out, err) = run_for(command, LIMIT);
        let status = status.unwrap_or_else(|| panic!("{args:?} hung"));
        assert_eq!(status.code(), Some(4), "{args:?}: {err}");
        assert!(err.trim().starts_with("counters: permanent failure"), "{args:?}: {err}");
        assert!(err.contains("the SQLite file is read-only"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert_eq!(out.trim(), "", "{args:?}");
        set_mode(sandbox.path(), 0o755);
        assert!(sandbox.files() == files, "{args:?}: the read-only store was touched");
        set_mode(sandbox.path(), 0o555);
    }
    set_mode(sandbox.path(), 0o755);
    set_mode(&file, 0o644);
    assert_eq!(sandbox.values(), values, "the sentinels are as they were");
    assert_eq!(sandbox.ok(&["incr", "s1", "1"]), "42", "writable again, a good command works");
}

/// A key with NUL cannot reach the command: the operating system refuses
/// an argument carrying one, so nothing runs and nothing is created.
#[test]
fn a_nul_in_an_argument_never_reaches_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let e = counters(dir.path()).args(["incr", "a\0b"]).output().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

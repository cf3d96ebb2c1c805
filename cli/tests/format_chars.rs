//! Keys with Unicode format characters or line/paragraph separators through
//! the real binary (issue 14, item 14): every command that takes a key
//! exits 2 naming the code point, and nothing changes: the SQLite file's
//! bytes, the listing, the sentinel. `counters serve` answers 400
//! `invalid_key` over HTTP and creates nothing.

mod common;

use std::path::Path;

use common::{Server, run, stderr, stdout};

const SPOOFERS: &[char] =
    &['\u{202E}', '\u{2066}', '\u{200B}', '\u{200D}', '\u{FEFF}', '\u{2028}', '\u{2029}', '\u{00AD}'];

fn list(dir: &Path) -> String {
    let out = run(dir, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn the_cli_refuses_format_characters_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(run(d, &["incr", "sentinel", "3"]).status.success());
    let file = d.join("counters.sqlite");
    let (bytes, listing) = (std::fs::read(&file).unwrap(), list(d));
    for &c in SPOOFERS {
        let point = format!("U+{:04X}", c as u32);
        for key in [format!("admin{c}txt.exe"), format!("ns{c}/x"), format!("{c}")] {
            for args in [
                vec!["incr", key.as_str()],
                vec!["incr", key.as_str(), "--rollup", "--sliced"],
                vec!["decr", key.as_str()],
                vec!["put", key.as_str(), "7"],
                vec!["get", key.as_str()],
                vec!["delete", key.as_str()],
                vec!["series", key.as_str(), "--precision", "60"],
            ] {
                let out = run(d, &args);
                assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
                let err = stderr(&out);
                assert!(err.contains("invalid key") && err.contains(&point), "{args:?}: {err}");
            }
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the SQLite file changed");
    assert_eq!(list(d), listing);
    let out = run(d, &["incr", "sentinel"]);
    assert_eq!(stdout(&out), "4", "{}", stderr(&out));
}

#[test]
fn serve_answers_invalid_key_for_format_characters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.json("POST", "/v1/counters/sentinel", r#"{"delta": 3}"#).0, 200);
    let before = server.json("GET", "/v1/counters", "").1;
    // U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, U+2029, U+FEFF.
    for encoded in ["admin%E2%80%AEtxt.exe", "a%E2%80%8Bb", "ns%E2%80%A9/x", "%EF%BB%BFbom"] {
        let (status, body) = server.json("POST", &format!("/v1/counters/{encoded}"), r#"{"delta": 1}"#);
        assert_eq!(status, 400, "{encoded}: {body}");
        assert_eq!(body["error"]["kind"], "invalid_key", "{encoded}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("U+"), "{encoded}: {body}");
    }
    assert_eq!(server.json("GET", "/v1/counters", "").1, before, "a refused key created a counter");
    assert_eq!(server.json("POST", "/v1/counters/sentinel", "").1["value"], 4);
}

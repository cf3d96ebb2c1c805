//! `counters serve --config FILE`: a bad file is exit 2 naming the file and
//! the line before anything is opened; a good one's families and settings are
//! what the service runs with, and options on the command line win over it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, counters, get_all, incr, value};

/// Runs `counters serve --listen 127.0.0.1:0 ARGS` in a fresh directory with
/// `env`, expecting a refusal at start: exit 2, stderr containing every one
/// of `messages`, and nothing created in the directory.
fn refused(args: &[&str], env: &[(&str, &str)], messages: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = counters(dir.path());
    command.env_remove("COUNTERS_CONFIG").args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let o = command.stdin(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
    for message in messages {
        assert!(stderr.contains(message), "{args:?} {env:?}: no {message:?} in {stderr}");
    }
    if stderr.starts_with("counters: ") {
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "{args:?}: a file was created");
}

/// `text` written to `name` in `dir`; its path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_bad_config_file_is_exit_2_naming_the_file_and_line() {
    let files = tempfile::tempdir().unwrap();
    let twice = write(
        files.path(),
        "twice.toml",
        "flush_interval = \"5s\"\n\n[[family]]\nnamespace = \"clicks\"\nprefix = \"ad:\"\n\n\
         [[family]]\nnamespace = \"clicks\"\nprefix = \"ad:\"\npolicy = \"immediate\"\n",
    );
    refused(
        &["--config", &twice],
        &[],
        &[&format!("{twice}:7:1:"), "family namespace \"clicks\", prefix \"ad:\" is given twice (first at line 3)"],
    );
    let unknown = write(files.path(), "unknown.toml", "# tokens come from COUNTERS_TOKEN\n\ntoken = \"s3cret\"\n");
    refused(&["--config", &unknown], &[], &[&format!("{unknown}:3:1:"), "unknown field `token`"]);
    let zero = write(files.path(), "zero.toml", "[[family]]\nnamespace = \"a\"\ninterval = \"0ms\"\n");
    refused(&["--config", &zero], &[], &[&format!("{zero}:3:12:"), "\"0ms\" must be above zero"]);
    let syntax = write(files.path(), "syntax.toml", "listen = \"127.0.0.1:0\"\nflush_interval = \n");
    refused(&["--config", &syntax], &[], &[&format!("{syntax}:2:")]);
    // COUNTERS_CONFIG names the file when --config is absent; --config wins.
    refused(&[], &[("COUNTERS_CONFIG", &zero)], &[&format!("{zero}:3:12:")]);
    refused(&["--config", &unknown], &[("COUNTERS_CONFIG", &zero)], &[&format!("{unknown}:3:1:")]);
    let missing = files.path().join("missing.toml").to_str().unwrap().to_string();
    refused(&["--config", &missing], &[], &[&format!("cannot read the configuration file {missing}")]);
    // An empty one is refused by the argument parser.
    refused(&[], &[("COUNTERS_CONFIG", "")], &["a value is required for '--config <FILE>'"]);
}

#[test]
fn an_immediate_family_from_the_file_writes_the_store_before_answering() {
    let dir = tempfile::tempdir().unwrap();
    let reader = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("counters.sqlite").display());
    // The file's listen address is taken: if the file won over --listen, the
    // service could not start. Its flush interval is short: if it won over
    // --flush-interval, web/clicks would be in the store within a second.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = write(
        dir.path(),
        "counters.toml",
        &format!(
            "listen = \"{}\"\nflush_interval = \"100ms\"\n\n\
             [[family]]\nnamespace = \"payments\"\npolicy = \"immediate\"\n\n\
             [[family]]\nnamespace = \"web\"\nprefix = \"tree:\"\nrollup = true\n",
            taken.local_addr().unwrap()
        ),
    );
    let mut command = counters(dir.path());
    command.env_remove("COUNTERS_CONFIG").args(["--cache", "memory://", "--store", &store]).args([
        "serve",
        "--config",
        &file,
        "--listen",
        "127.0.0.1:0",
        "--flush-interval",
        "1h",
    ]);
    let server = Server::spawn(command);
    assert_ne!(server.addr, taken.local_addr().unwrap(), "--listen wins over the file");

    assert_eq!(value(&incr(&server, "payments%2Forder", 7)), (200, 7));
    assert_eq!(value(&incr(&server, "web%2Fclicks", 5)), (200, 5));
    // Immediate: in the SQLite file as soon as the increment answered, read
    // by another process over a cache of its own.
    assert_eq!(get_all(reader.path(), &store, &["payments/order"]), [7], "the immediate family wrote through");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get_all(reader.path(), &store, &["payments/order", "web/clicks"]), [7, 0], "web/clicks waits an hour");

    // The rollup family counts into the ancestors; others do not.
    assert_eq!(value(&incr(&server, "web%2Ftree%3Ax%3Ay", 3)), (200, 3));
    assert_eq!(value(&incr(&server, "web%2Fflat%3Ax", 2)), (200, 2));
    for (key, expected) in [("web%2Ftree%3Ax", 3), ("web%2Ftree", 3), ("web%2Fflat", 0)] {
        let (status, body) = server.http("GET", &format!("/v1/counters/{key}"), "");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!(r#""value":{expected}}}"#)), "{key}: {body}");
    }
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(get_all(reader.path(), &store, &["payments/order", "web/clicks"]), [7, 5], "the drain wrote the rest");
}

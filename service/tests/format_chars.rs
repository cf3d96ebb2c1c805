//! Keys with Unicode format characters (bidirectional overrides and
//! isolates, zero-width characters, the byte order mark, soft hyphen, tag
//! characters) or the line and paragraph separators are refused as invalid
//! keys on every endpoint that takes a key or a namespace, naming the code
//! point, and create nothing (issue 14, item 14). Names compare as bytes:
//! the NFC and NFD spellings of a name are two counters.

mod common;

use axum::http::{Method, StatusCode};
use common::{call, get, post, service};
use serde_json::json;

/// The refused characters tried, each as `(char, what the message says)`.
const REFUSED: &[(char, &str)] = &[
    ('\u{202A}', "format character"),
    ('\u{202B}', "format character"),
    ('\u{202C}', "format character"),
    ('\u{202D}', "format character"),
    ('\u{202E}', "format character"),
    ('\u{2066}', "format character"),
    ('\u{2067}', "format character"),
    ('\u{2068}', "format character"),
    ('\u{2069}', "format character"),
    ('\u{200B}', "format character"),
    ('\u{200C}', "format character"),
    ('\u{200D}', "format character"),
    ('\u{200E}', "format character"),
    ('\u{2060}', "format character"),
    ('\u{FEFF}', "format character"),
    ('\u{00AD}', "format character"),
    ('\u{E0041}', "format character"),
    ('\u{2028}', "line separator"),
    ('\u{2029}', "paragraph separator"),
];

/// Percent-encodes every byte that is not unreserved.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
}

#[tokio::test]
async fn format_characters_in_keys_are_invalid_keys_and_create_nothing() {
    let (service, _) = service();
    let app = service.router();
    let r = post(&app, "/v1/counters/sentinel", r#"{"delta": 3}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let listing = || async { get(&app, "/v1/counters").await.json["counters"].clone() };
    // What inspecting shows, without the age of the pending delta (it grows).
    let inspected = || async {
        let mut rows = get(&app, "/v1/inspect").await.json["counters"].clone();
        for row in rows.as_array_mut().unwrap() {
            row.as_object_mut().unwrap().remove("pending_for_ms");
        }
        rows
    };
    let (list_before, inspect_before) = (listing().await, inspected().await);
    assert_eq!(list_before, json!([{ "key": "sentinel", "value": 3 }]));

    for &(c, class) in REFUSED {
        for key in [format!("admin{c}txt.exe"), format!("ns{c}/name"), format!("{c}"), format!("ok/{c}x")] {
            let path = format!("/v1/counters/{}", encode(&key));
            for (method, body) in [
                (Method::POST, Some(r#"{"delta": 1}"#)),
                (Method::POST, Some(r#"{"delta": 1, "rollup": true, "sliced": true}"#)),
                (Method::PUT, Some(r#"{"value": 5}"#)),
                (Method::GET, None),
                (Method::DELETE, None),
            ] {
                let r = call(&app, method.clone(), &path, body, None).await;
                assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {key:?}: {}", r.text);
                assert_eq!(r.kind(), "invalid_key", "{method} {key:?}: {}", r.text);
                let message = r.json["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains(&code_point(c)), "{method} {key:?}: {message}");
                assert!(message.contains(class), "{method} {key:?}: {message}");
            }
            let r = post(&app, "/v1/get_many", &json!({ "keys": ["sentinel", key] }).to_string()).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "get_many {key:?}: {}", r.text);
            assert_eq!((r.kind(), r.field()), ("invalid_key", "keys[1]"), "get_many {key:?}: {}", r.text);
        }
        let r = get(&app, &format!("/v1/counters?namespace={}", encode(&format!("ns{c}")))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "list namespace {c:?}: {}", r.text);
        assert_eq!((r.kind(), r.field()), ("invalid_key", "namespace"), "{}", r.text);
    }
    assert_eq!(listing().await, list_before, "a refused key created a counter");
    assert_eq!(inspected().await, inspect_before);
    // Still serving.
    let r = post(&app, "/v1/counters/sentinel", r#"{"delta": 1}"#).await;
    assert_eq!((r.status, r.json["value"].clone()), (StatusCode::OK, json!(4)), "{}", r.text);
}

#[tokio::test]
async fn visible_neighbours_stay_valid_and_names_compare_as_bytes() {
    let (service, _) = service();
    let app = service.router();
    // NFC "café" and NFD "cafe" + combining acute are two counters.
    for (key, delta) in [("caf\u{e9}", 1), ("cafe\u{301}", 10), ("a\u{2010}b", 2), ("\u{2764}\u{FE0F}", 3)] {
        let r = post(&app, &format!("/v1/counters/{}", encode(key)), &json!({ "delta": delta }).to_string()).await;
        assert_eq!((r.status, r.json["value"].clone()), (StatusCode::OK, json!(delta)), "{key:?}: {}", r.text);
    }
    let listed = get(&app, "/v1/counters").await.json["counters"].clone();
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|row| row["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 4, "{listed}");
    assert!(keys.contains(&"caf\u{e9}") && keys.contains(&"cafe\u{301}"), "{listed}");
}

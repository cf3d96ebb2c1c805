//! Hostile HTTP against the real service on a loopback port, one raw
//! request at a time: foreign origins and hosts, CORS-simple content types,
//! badly encoded keys and queries, `null` and huge numbers, oversized heads,
//! request smuggling shapes, wrong methods and odd header bytes. Every case
//! asserts the documented status and JSON `kind` (and `field`), that nothing
//! changed (the sentinel counters and the listings of every namespace the
//! cases touch are identical) and that the service still answers.

mod common;

use std::net::SocketAddr;

use common::{Reply, Running, WRITE_TOKEN, raw, request, request_without_host};
use counters_service::ServiceConfig;
use serde_json::{Value, json};

/// Namespaces whose listings must not change.
const WATCHED: [&str; 5] = ["", "h", "sentinel", "victim", "a"];

/// A bad request: what to send, and what must come back.
struct Case {
    what: String,
    bytes: Vec<u8>,
    status: u16,
    kind: &'static str,
    field: Option<&'static str>,
}

fn case(what: impl Into<String>, bytes: Vec<u8>, status: u16, kind: &'static str, field: Option<&'static str>) -> Case {
    Case { what: what.into(), bytes, status, kind, field }
}

const JSON: (&str, &[u8]) = ("content-type", b"application/json");

/// Everything the cases must leave alone: sentinel values and listings.
async fn snapshot(service: &Running) -> Value {
    let mut out = serde_json::Map::new();
    for ns in WATCHED {
        let r = service.http("GET", &format!("/v1/counters?namespace={ns}"), None, None).await;
        assert_eq!(r.status, 200, "listing {ns:?}: {}", r.text);
        out.insert(format!("list {ns:?}"), r.json["counters"].clone());
    }
    for key in ["sentinel%2Fa", "h%2Fexisting", "victim"] {
        let r = service.http("GET", &format!("/v1/counters/{key}"), None, None).await;
        out.insert(key.to_string(), r.json["value"].clone());
    }
    Value::Object(out)
}

async fn seed(service: &Running) {
    let token = Some(WRITE_TOKEN);
    let r = service.http("PUT", "/v1/counters/sentinel%2Fa", Some(r#"{"value": 42}"#), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = service.http("POST", "/v1/counters/h%2Fexisting", Some(r#"{"delta": 5}"#), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Sends every case; each must answer as documented, in JSON with the
/// hardening headers, change nothing, and leave the service serving.
async fn run_cases(service: &Running, cases: Vec<Case>) {
    let before = snapshot(service).await;
    let mut failures = Vec::new();
    for case in cases {
        let reply = raw(service.addr, &case.bytes).await;
        if let Err(problem) = check(&case, reply.as_ref()) {
            failures.push(format!("{}: {problem}", case.what));
        }
        let after = snapshot(service).await;
        if after != before {
            failures.push(format!("{}: something changed:\nbefore {before}\nafter  {after}", case.what));
            break;
        }
    }
    let r = service.http("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200, "the service still answers");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn check(case: &Case, reply: Option<&Reply>) -> Result<(), String> {
    let r = reply.ok_or("closed the connection without an answer")?;
    let shown = || format!("{} {}", r.status, &r.text[..r.text.len().min(300)]);
    if r.status != case.status {
        return Err(format!("status {} wanted, got {}", case.status, shown()));
    }
    if r.kind() != case.kind {
        return Err(format!("kind {:?} wanted, got {}", case.kind, shown()));
    }
    if let Some(field) = case.field {
        if r.field() != field {
            return Err(format!("field {field:?} wanted, got {}", shown()));
        }
    }
    if r.json["error"]["status"] != case.status {
        return Err(format!("the body's status is not {}: {}", case.status, shown()));
    }
    if !r.header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(format!("not JSON: {:?}", r.header("content-type")));
    }
    if r.header("x-content-type-options") != Some("nosniff") || r.header("cache-control") != Some("no-store") {
        return Err(format!("missing nosniff / no-store: {:?}", r.headers));
    }
    Ok(())
}

fn post_json(addr: SocketAddr, path: &str, body: &str) -> Vec<u8> {
    request(addr, "POST", path, &[JSON], body.as_bytes())
}

/// Item 1: writes from another origin, CORS-simple content types and
/// foreign `Host` headers (DNS rebinding) are refused; the service's own
/// origin, `localhost` and configured names still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_simple_content_types_and_foreign_hosts_are_refused() {
    let config = ServiceConfig { allowed_hosts: vec!["counters.test".into()], ..ServiceConfig::default() };
    let service = Running::start(config).await;
    seed(&service).await;
    let addr = service.addr;
    let port = addr.port();
    let other = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let body = br#"{"delta": 7}"#;
    let victim = "/v1/counters/victim";
    let with = |headers: &[(&str, &[u8])]| request(addr, "POST", victim, headers, body);
    let mut cases = vec![
        case(
            "text/plain from evil.example",
            with(&[("origin", b"http://evil.example"), ("content-type", b"text/plain")]),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "JSON from evil.example",
            with(&[("origin", b"http://evil.example"), JSON]),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "JSON from another loopback port",
            with(&[("origin", other.as_bytes()), JSON]),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "JSON from https of the own authority's port+1",
            with(&[("origin", format!("https://localhost:{}", port.wrapping_add(1)).as_bytes()), JSON]),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case("Origin: null", with(&[("origin", b"null"), JSON]), 403, "cross_origin", Some("origin")),
        case(
            "Origin not UTF-8",
            with(&[("origin", b"http://\xff.example"), JSON]),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "foreign origin, DELETE",
            request(addr, "DELETE", "/v1/counters/sentinel%2Fa", &[("origin", b"http://evil.example")], b""),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "foreign origin, flush",
            request(addr, "POST", "/v1/flush", &[("origin", b"http://evil.example")], b""),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "text/plain without Origin",
            with(&[("content-type", b"text/plain")]),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case(
            "text/plain;charset=UTF-8",
            with(&[("content-type", b"text/plain;charset=UTF-8")]),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case(
            "form-urlencoded",
            with(&[("content-type", b"application/x-www-form-urlencoded")]),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case(
            "multipart",
            with(&[("content-type", b"multipart/form-data; boundary=x")]),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case(
            "application/jsonx",
            with(&[("content-type", b"application/jsonx")]),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case("a JSON body without Content-Type", with(&[]), 415, "unsupported_media_type", Some("content-type")),
        case(
            "text/plain put",
            request(addr, "PUT", "/v1/counters/sentinel%2Fa", &[("content-type", b"text/plain")], br#"{"value": 1}"#),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
        case(
            "text/plain get_many",
            request(addr, "POST", "/v1/get_many", &[("content-type", b"text/plain")], br#"{"keys": ["victim"]}"#),
            415,
            "unsupported_media_type",
            Some("content-type"),
        ),
    ];
    let host = |h: &[u8], method: &str, path: &str, extra: &[(&str, &[u8])], body: &[u8]| {
        let mut headers: Vec<(&str, &[u8])> = vec![("host", h)];
        headers.extend_from_slice(extra);
        request_without_host(method, path, &headers, body)
    };
    let evil_port = format!("evil.example:{port}");
    let wrong_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    cases.extend([
        case(
            "Host: evil.example, write",
            host(b"evil.example", "POST", victim, &[JSON], body),
            421,
            "unknown_host",
            Some("host"),
        ),
        case(
            "Host: evil.example:port, write",
            host(evil_port.as_bytes(), "POST", victim, &[JSON], body),
            421,
            "unknown_host",
            Some("host"),
        ),
        case(
            "Host: evil.example:port, read",
            host(evil_port.as_bytes(), "GET", "/v1/counters/sentinel%2Fa", &[], b""),
            421,
            "unknown_host",
            Some("host"),
        ),
        case(
            "Host: evil.example:port, listing",
            host(evil_port.as_bytes(), "GET", "/v1/counters?namespace=sentinel", &[], b""),
            421,
            "unknown_host",
            Some("host"),
        ),
        case(
            "Host: evil.example:port, admin page",
            host(evil_port.as_bytes(), "GET", "/admin", &[], b""),
            421,
            "unknown_host",
            Some("host"),
        ),
        case(
            "Host: own IP, other port",
            host(wrong_port.as_bytes(), "POST", victim, &[JSON], body),
            421,
            "unknown_host",
            Some("host"),
        ),
        case("Host not UTF-8", host(b"\xffevil", "POST", victim, &[JSON], body), 421, "unknown_host", Some("host")),
        case(
            "Host: localhost.evil.example",
            host(format!("localhost.evil.example:{port}").as_bytes(), "POST", victim, &[JSON], body),
            421,
            "unknown_host",
            Some("host"),
        ),
        case("no Host", request_without_host("POST", victim, &[JSON], body), 400, "invalid_input", Some("host")),
        case(
            "two Hosts",
            host(addr.to_string().as_bytes(), "POST", victim, &[JSON, ("host", b"evil.example")], body),
            400,
            "invalid_input",
            Some("host"),
        ),
        case(
            "absolute-form URI to evil.example",
            request(addr, "POST", "http://evil.example/v1/counters/victim", &[JSON], body),
            421,
            "unknown_host",
            Some("host"),
        ),
    ]);
    run_cases(&service, cases).await;

    // The own origin, localhost and a configured name still write.
    let own = format!("http://{addr}");
    let localhost = format!("localhost:{port}");
    let named = format!("counters.test:{port}");
    let allowed: Vec<Vec<u8>> = vec![
        request(addr, "POST", victim, &[("origin", own.as_bytes()), JSON], body),
        request(addr, "POST", victim, &[("origin", format!("http://{localhost}").as_bytes()), JSON], body),
        request(addr, "POST", victim, &[("content-type", b"application/json; charset=utf-8")], body),
        request(addr, "POST", victim, &[], b""),
        host(localhost.as_bytes(), "POST", victim, &[JSON], body),
        host(named.as_bytes(), "POST", victim, &[JSON, ("origin", format!("http://{named}").as_bytes())], body),
        host(b"counters.test", "POST", victim, &[JSON], body),
    ];
    let mut expected = 0;
    for (i, bytes) in allowed.iter().enumerate() {
        let r = raw(addr, bytes).await.expect("an answer");
        expected += if i == 3 { 1 } else { 7 };
        assert_eq!(r.status, 200, "allowed request {i}: {}", r.text);
        assert_eq!(r.json["value"], expected, "allowed request {i}");
    }
    let r = raw(addr, &host(localhost.as_bytes(), "GET", "/admin", &[], b"")).await.unwrap();
    assert_eq!(r.status, 200, "the admin page by localhost");
    service.stop().await;
}

/// Item 9: bad percent-encoding and invalid UTF-8 in a key are 400
/// `invalid_key` with field `key`, and create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badly_encoded_keys_are_invalid_keys_and_create_nothing() {
    let service = Running::start(ServiceConfig::default()).await;
    seed(&service).await;
    let addr = service.addr;
    let mut cases = Vec::new();
    for key in ["%zz", "%", "a%2", "%G0x", "x%", "h%2F%zz", "h/a%2", "%FF", "%C3%28", "%C0%AF", "%ED%A0%80", "h%2F%FF"]
    {
        for (method, prefix) in [
            ("POST", "/v1/counters/"),
            ("PUT", "/v1/counters/"),
            ("GET", "/v1/counters/"),
            ("DELETE", "/v1/counters/"),
            ("GET", "/v1/series/"),
            ("GET", "/v1/inspect/"),
        ] {
            let body: &[u8] = if method == "PUT" {
                br#"{"value": 9}"#
            } else if method == "POST" {
                br#"{"delta": 9}"#
            } else {
                b""
            };
            let bytes = request(addr, method, &format!("{prefix}{key}"), &[JSON], body);
            cases.push(case(format!("{method} {prefix}{key}"), bytes, 400, "invalid_key", Some("key")));
        }
    }
    for path in ["/v1/inspect/", "/v1/counters/", "/v1/series/"] {
        cases.push(case(format!("GET {path}"), request(addr, "GET", path, &[], b""), 400, "invalid_key", Some("key")));
    }
    run_cases(&service, cases).await;
    service.stop().await;
}

/// Item 10: `null` and numbers beyond i64 name their field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_and_huge_numbers_name_their_field() {
    let service = Running::start(ServiceConfig::default()).await;
    seed(&service).await;
    let addr = service.addr;
    let huge = "9".repeat(401);
    let key = "/v1/counters/h%2Fexisting";
    let mut cases = Vec::new();
    for (body, field) in [
        (r#"{"delta": null}"#.to_string(), "delta"),
        (format!(r#"{{"delta": {huge}}}"#), "delta"),
        (format!(r#"{{"delta": -{huge}}}"#), "delta"),
        (r#"{"delta": 1e400}"#.to_string(), "delta"),
        (r#"{"delta": 1e3}"#.to_string(), "delta"),
        (r#"{"default": null}"#.to_string(), "default"),
        (format!(r#"{{"default": {huge}}}"#), "default"),
        (r#"{"at": null}"#.to_string(), "at"),
        (format!(r#"{{"at": {huge}}}"#), "at"),
        (r#"{"sliced": null}"#.to_string(), "sliced"),
        (r#"{"rollup": null}"#.to_string(), "rollup"),
        (r#"{"policy": null}"#.to_string(), "policy"),
        (r#"{"policy": {"threshold": null}}"#.to_string(), "policy.threshold"),
        (format!(r#"{{"policy": {{"interval_ms": {huge}}}}}"#), "policy.interval_ms"),
        (r#"{"policy": {"immediate": null}}"#.to_string(), "policy.immediate"),
    ] {
        cases.push(case(format!("POST {body:.60}"), post_json(addr, key, &body), 400, "invalid_input", Some(field)));
    }
    for body in
        [r#"{"value": null}"#.to_string(), format!(r#"{{"value": {huge}}}"#), format!(r#"{{"value": -{huge}}}"#)]
    {
        let bytes = request(addr, "PUT", key, &[JSON], body.as_bytes());
        cases.push(case(format!("PUT {body:.60}"), bytes, 400, "invalid_input", Some("value")));
    }
    cases.push(case(
        "get_many null",
        post_json(addr, "/v1/get_many", r#"{"keys": null}"#),
        400,
        "invalid_input",
        Some("keys"),
    ));
    cases.push(case(
        "get_many [null]",
        post_json(addr, "/v1/get_many", r#"{"keys": [null]}"#),
        400,
        "invalid_input",
        Some("keys[0]"),
    ));
    run_cases(&service, cases).await;
    service.stop().await;
}

/// Item 11: invalid namespaces and prefixes in a listing's query, however
/// encoded, are 400 like an invalid key; the query is decoded strictly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_refuse_invalid_namespaces_prefixes_and_encodings() {
    let service = Running::start(ServiceConfig::default()).await;
    seed(&service).await;
    let addr = service.addr;
    let long = "n".repeat(256);
    let mut cases = Vec::new();
    for route in ["/v1/counters", "/v1/inspect"] {
        for (query, field) in [
            ("namespace=%FF".to_string(), "namespace"),
            ("namespace=%C3%28".to_string(), "namespace"),
            ("namespace=a/b".to_string(), "namespace"),
            ("namespace=a%2Fb".to_string(), "namespace"),
            ("namespace=a%01".to_string(), "namespace"),
            ("namespace=a%0A".to_string(), "namespace"),
            ("namespace=%E2%80%AE".to_string(), "namespace"),
            (format!("namespace={long}"), "namespace"),
            ("namespace=%zz".to_string(), "namespace"),
            ("namespace=%".to_string(), "namespace"),
            ("namespace=a%2".to_string(), "namespace"),
            ("prefix=%FF".to_string(), "prefix"),
            ("prefix=a%01".to_string(), "prefix"),
            ("prefix=%zz".to_string(), "prefix"),
            ("prefix=x%".to_string(), "prefix"),
            ("namespace=h&prefix=%E2%80%8B".to_string(), "prefix"),
            (format!("prefix={}", "p".repeat(1025)), "prefix"),
        ] {
            let path = format!("{route}?{query}");
            cases.push(case(
                format!("GET {path:.80}"),
                request(addr, "GET", &path, &[], b""),
                400,
                "invalid_key",
                Some(field),
            ));
        }
        for (query, field) in [
            ("limit=%zz", "limit"),
            ("limit=1&limit=2", "limit"),
            ("namespace=h&namespace=sentinel", "namespace"),
            ("%zz=1", "query"),
            ("%FF=1", "query"),
            ("limit=18446744073709551616", "limit"),
        ] {
            let path = format!("{route}?{query}");
            cases.push(case(
                format!("GET {path}"),
                request(addr, "GET", &path, &[], b""),
                400,
                "invalid_input",
                Some(field),
            ));
        }
    }
    run_cases(&service, cases).await;
    // Strict decoding still decodes: `+` is a space in a query, `%2B` a plus.
    let r = service.http("GET", "/v1/counters?namespace=h&prefix=exi%73", None, None).await;
    assert_eq!(r.json["counters"], json!([{ "key": "h/existing", "value": 5 }]), "{}", r.text);
    service.stop().await;
}

/// Item 15: 414 and 431 are JSON errors too, and every JSON answer says
/// `nosniff` and `no-store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_json_errors_and_every_answer_is_hardened() {
    let service = Running::start(ServiceConfig::default()).await;
    seed(&service).await;
    let addr = service.addr;
    let long_uri = format!("/v1/counters/{}", "u".repeat(70_000));
    let big_header = vec![b'h'; 500_000];
    let many: Vec<(String, Vec<u8>)> = (0..150).map(|i| (format!("x-h{i}"), b"1".to_vec())).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let cases = vec![
        case("a 70 000-byte URI", request(addr, "GET", &long_uri, &[], b""), 414, "uri_too_long", None),
        case(
            "a 500 kB header",
            request(addr, "GET", "/v1/counters/victim", &[("x-big", &big_header)], b""),
            431,
            "headers_too_large",
            None,
        ),
        case("150 headers", request(addr, "GET", "/v1/counters/victim", &many, b""), 431, "headers_too_large", None),
        case("a request line that is not HTTP", b"HELLO\r\n\r\n".to_vec(), 400, "bad_request", None),
    ];
    run_cases(&service, cases).await;
    for (method, path, body) in [
        ("GET", "/v1/counters/victim", None),
        ("GET", "/v1/counters", None),
        ("POST", "/v1/counters/h%2Fexisting", Some("{}")),
        ("GET", "/v1/status", None),
        ("GET", "/v1/inspect", None),
        ("GET", "/healthz", None),
        ("GET", "/nope", None),
    ] {
        let r = service.http(method, path, body, None).await;
        assert!(r.header("content-type").unwrap().starts_with("application/json"), "{method} {path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{method} {path}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{method} {path}");
    }
    let r = service.http("GET", "/metrics", None, None).await;
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "/metrics");
    service.stop().await;
}

/// The corpus beyond the numbered items: duplicate and unknown JSON keys,
/// deep nesting, bodies that are not UTF-8, wrong methods, smuggling shapes
/// (`Transfer-Encoding` with `Content-Length`, unknown codings, absurd or
/// doubled lengths), odd token bytes, and `Expect: 100-continue` from a
/// foreign origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_hostile_requests_changes_nothing() {
    let config = ServiceConfig { token: Some(WRITE_TOKEN.into()), body_limit: 4096, ..ServiceConfig::default() };
    let service = Running::start(config).await;
    seed(&service).await;
    let addr = service.addr;
    let auth = format!("Bearer {WRITE_TOKEN}");
    let auth: (&str, &[u8]) = ("authorization", auth.as_bytes());
    let key = "/v1/counters/h%2Fexisting";
    let write = |body: &[u8]| request(addr, "POST", key, &[auth, JSON], body);
    let deep = format!(r#"{{"policy": {}{}}}"#, "[".repeat(1500), "]".repeat(1500));
    let deep_objects = format!(r#"{{"policy": {}1{}}}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
    let chunked_big = {
        let chunk = " ".repeat(3000);
        format!("bb8\r\n{chunk}\r\nbb8\r\n{chunk}\r\n0\r\n\r\n")
    };
    let cases = vec![
        case("duplicate JSON keys", write(br#"{"delta": 1, "delta": 5}"#), 400, "invalid_input", Some("delta")),
        case("an unknown field", write(br#"{"delta": 1, "admin": true}"#), 400, "invalid_input", Some("admin")),
        case("1500 nested arrays", write(deep.as_bytes()), 400, "invalid_input", None),
        case("200 nested objects", write(deep_objects.as_bytes()), 400, "invalid_input", None),
        case("a body that is not UTF-8", write(b"{\"delta\": \"\xff\"}"), 400, "invalid_input", None),
        case("a byte-order mark", write("\u{feff}{\"delta\": 1}".as_bytes()), 400, "invalid_input", Some("body")),
        case("a JSON array body", write(b"[1]"), 400, "invalid_input", Some("body")),
        case("a JSON array body filling delta by position", write(b" [5, null]"), 400, "invalid_input", Some("body")),
        case(
            "duplicate nested keys",
            write(br#"{"policy": {"threshold": 1, "threshold": 2}}"#),
            400,
            "invalid_input",
            Some("policy.threshold"),
        ),
        case("a JSON string body", write(b"\"delta\""), 400, "invalid_input", Some("body")),
        case("two JSON documents", write(br#"{"delta": 1}{"delta": 1}"#), 400, "invalid_input", Some("body")),
        case("PATCH", request(addr, "PATCH", key, &[auth, JSON], br#"{"delta": 1}"#), 405, "method_not_allowed", None),
        case(
            "OPTIONS preflight",
            request(
                addr,
                "OPTIONS",
                key,
                &[("origin", b"http://evil.example"), ("access-control-request-method", b"POST")],
                b"",
            ),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case("TRACE", request(addr, "TRACE", key, &[], b""), 405, "method_not_allowed", None),
        case(
            "lower-case post",
            request(addr, "post", key, &[auth, JSON], br#"{"delta": 1}"#),
            405,
            "method_not_allowed",
            None,
        ),
        case(
            "Transfer-Encoding: gzip",
            request(addr, "POST", key, &[auth, JSON, ("transfer-encoding", b"gzip")], b"{}"),
            400,
            "bad_request",
            None,
        ),
        case(
            "two different Content-Lengths",
            request(
                addr,
                "POST",
                key,
                &[auth, JSON, ("content-length", b"2"), ("content-length", b"12")],
                br#"{"delta": 9}"#,
            ),
            400,
            "bad_request",
            None,
        ),
        case(
            "a negative Content-Length",
            request(addr, "POST", key, &[auth, JSON, ("content-length", b"-1")], b"{}"),
            400,
            "bad_request",
            None,
        ),
        case(
            "a 20-digit Content-Length",
            request(addr, "POST", key, &[auth, JSON, ("content-length", b"99999999999999999999")], b"{}"),
            400,
            "bad_request",
            None,
        ),
        case(
            "a Content-Length over the limit",
            request(addr, "POST", key, &[auth, JSON, ("content-length", b"1000000000")], br#"{"delta": 1}"#),
            413,
            "body_too_large",
            Some("body"),
        ),
        case(
            "a chunked body over the limit",
            request(addr, "POST", key, &[auth, JSON, ("transfer-encoding", b"chunked")], chunked_big.as_bytes()),
            413,
            "body_too_large",
            Some("body"),
        ),
        case("no token", request(addr, "POST", key, &[JSON], b"{}"), 401, "unauthorized", Some("authorization")),
        case(
            "a token prefix",
            request(
                addr,
                "POST",
                key,
                &[JSON, ("authorization", format!("Bearer {}", &WRITE_TOKEN[..WRITE_TOKEN.len() - 1]).as_bytes())],
                b"{}",
            ),
            401,
            "unauthorized",
            Some("authorization"),
        ),
        case(
            "the token and a byte more",
            request(addr, "POST", key, &[JSON, ("authorization", format!("Bearer {WRITE_TOKEN}x").as_bytes())], b"{}"),
            401,
            "unauthorized",
            Some("authorization"),
        ),
        case(
            "the token with a 0xFF byte",
            request(
                addr,
                "POST",
                key,
                &[
                    JSON,
                    ("authorization", [b"Bearer ".as_slice(), WRITE_TOKEN.as_bytes(), b"\xff"].concat().as_slice()),
                ],
                b"{}",
            ),
            401,
            "unauthorized",
            Some("authorization"),
        ),
        case(
            "two Authorization headers",
            request(addr, "POST", key, &[JSON, ("authorization", b"Bearer nope"), auth], b"{}"),
            401,
            "unauthorized",
            Some("authorization"),
        ),
        case(
            "Basic auth",
            request(addr, "POST", key, &[JSON, ("authorization", b"Basic dzp0")], b"{}"),
            401,
            "unauthorized",
            Some("authorization"),
        ),
        case(
            "Expect: 100-continue from evil.example",
            request(
                addr,
                "POST",
                key,
                &[auth, JSON, ("origin", b"http://evil.example"), ("expect", b"100-continue")],
                br#"{"delta": 1}"#,
            ),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "foreign origin with the token",
            request(addr, "POST", key, &[auth, JSON, ("origin", b"http://evil.example")], br#"{"delta": 1}"#),
            403,
            "cross_origin",
            Some("origin"),
        ),
        case(
            "a key with a bidi override",
            request(addr, "POST", "/v1/counters/h%2F%E2%80%AEevil", &[auth, JSON], b"{}"),
            400,
            "invalid_key",
            Some("key"),
        ),
        case(
            "a key that is a NUL",
            request(addr, "POST", "/v1/counters/%00", &[auth, JSON], b"{}"),
            400,
            "invalid_key",
            Some("key"),
        ),
        case(
            "a query on a write",
            request(addr, "POST", &format!("{key}?delta=5"), &[auth, JSON], b"{}"),
            400,
            "invalid_input",
            Some("delta"),
        ),
        case(
            "a query on a read",
            request(addr, "GET", &format!("{key}?x=1"), &[], b""),
            400,
            "invalid_input",
            Some("x"),
        ),
        case(
            "a query on inspect",
            request(addr, "GET", "/v1/inspect/h%2Fexisting?limit=1", &[], b""),
            400,
            "invalid_input",
            Some("limit"),
        ),
        case(
            "a query on a delete",
            request(addr, "DELETE", &format!("{key}?really=1"), &[auth], b""),
            400,
            "invalid_input",
            Some("really"),
        ),
    ];
    run_cases(&service, cases).await;

    // Content-Length and Transfer-Encoding together: the chunked framing
    // wins (RFC 9112 6.1), the connection closes after the answer, and what
    // the Content-Length would have framed as a second request never runs.
    let before = snapshot(&service).await;
    let smuggled = format!(
        "POST /v1/counters/victim HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {WRITE_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 12\r\n\r\n{{\"delta\": 7}}"
    );
    let mut bytes = format!(
        "GET /v1/counters/victim HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        5 + smuggled.len()
    )
    .into_bytes();
    bytes.extend_from_slice(smuggled.as_bytes());
    let r = raw(addr, &bytes).await.expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text.matches("HTTP/1.1").count(), 0, "one answer only: {}", r.text);
    assert_eq!(snapshot(&service).await, before, "the smuggled write did not run");
    service.stop().await;
}

//! Redis over TLS (`rediss://`, `rediss+cluster://`) against the test
//! servers `scripts/services/redis_tls.sh` starts: a standalone server and
//! a Cluster that speak only TLS, with a certificate from a CA the script
//! makes, and an ACL user on the standalone one.

mod common;

use std::sync::Arc;

use backend_redis::{RedisCache, RedisCacheOptions, RedisStore, RedisStoreOptions, RedisTarget};
use common::{random_prefix, service_url};
use counter_core::{Counters, DurableStore, ErrorKind, Key};

/// `url` with its `ca` parameter swapped for `ca` (or dropped).
fn with_ca(url: &str, ca: Option<&str>) -> String {
    let base = url.split_once("?ca=").map_or(url, |(base, _)| base);
    match ca {
        Some(ca) => format!("{base}?ca={ca}"),
        None => base.to_string(),
    }
}

/// Counts through a TLS cache into a TLS store (a standalone server: the
/// store does not run on a Cluster) and reads it back from both.
async fn counts_over_tls(cache: &str, store: &str) {
    let prefix = random_prefix();
    let cache = RedisCache::connect_with(RedisTarget::parse(cache).unwrap(), RedisCacheOptions::with_prefix(&prefix))
        .await
        .expect("connect to the TLS cache");
    let store = RedisStore::connect_with(
        RedisTarget::parse(store).unwrap(),
        RedisStoreOptions::default().prefix(format!("{prefix}store:")),
    )
    .await
    .expect("connect to the TLS store");
    let counters = Counters::builder(Arc::new(cache), Arc::new(store)).background(false).build().unwrap();
    let keys: Vec<Key> = (0..20).map(|i| Key::new("tls", format!("k{i}")).unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(counters.incr(key, i as i64 + 1).await.unwrap(), i as i64 + 1);
        assert_eq!(counters.incr(key, -1).await.unwrap(), i as i64);
    }
    let report = counters.flush().await.unwrap();
    assert_eq!(report.counters, keys.len() as u64 - 1, "every counter but the one at 0 moved: {report:?}");
    let stored = counters.store().get_many(&keys).await.unwrap();
    let expected: Vec<Option<i64>> = (0..20).map(|i| (i > 0).then_some(i)).collect();
    assert_eq!(stored, expected);
    assert_eq!(counters.get_many(&keys).await.unwrap(), (0..20).collect::<Vec<i64>>());
    counters.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tls_server_counts_and_stores() {
    let Some(url) = service_url("COUNTERS_TEST_REDIS_TLS_URL") else { return };
    counts_over_tls(&url, &url).await;
}

#[tokio::test]
async fn a_tls_cluster_counts_and_stores() {
    let Some(cluster) = service_url("COUNTERS_TEST_REDIS_TLS_CLUSTER_URL") else { return };
    let Some(store) = service_url("COUNTERS_TEST_REDIS_TLS_URL") else { return };
    counts_over_tls(&cluster, &store).await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_a_permanent_error() {
    let Some(url) = service_url("COUNTERS_TEST_REDIS_TLS_URL") else { return };
    let Some(cluster) = service_url("COUNTERS_TEST_REDIS_TLS_CLUSTER_URL") else { return };
    let Some(wrong) = service_url("COUNTERS_TEST_REDIS_TLS_WRONG_CA") else { return };
    // The wrong CA, and the system's roots (which do not hold the test CA).
    for url in [with_ca(&url, Some(&wrong)), with_ca(&url, None), with_ca(&cluster, Some(&wrong))] {
        let e = RedisCache::connect(&url).await.expect_err(&url);
        assert_eq!(e.kind(), ErrorKind::Permanent, "{url}: {e}");
        assert!(e.to_string().contains("TLS certificate is not trusted"), "{url}: {e}");
        if !url.starts_with("rediss+cluster://") {
            let e = RedisStore::connect(&url).await.expect_err(&url);
            assert_eq!(e.kind(), ErrorKind::Permanent, "{url}: {e}");
        }
    }
}

#[tokio::test]
async fn a_plain_connection_to_a_tls_port_is_refused() {
    let Some(url) = service_url("COUNTERS_TEST_REDIS_TLS_URL") else { return };
    let plain =
        with_ca(&url, None).replacen("rediss://", "redis://", 1) + "?connect_timeout=500ms&response_timeout=500ms";
    RedisCache::connect(&plain).await.expect_err("a TLS port does not speak plain RESP");
}

#[tokio::test]
async fn an_acl_user_logs_in_with_its_password_only() {
    let Some(url) = service_url("COUNTERS_TEST_REDIS_TLS_ACL_URL") else { return };
    let prefix = random_prefix();
    let cache = RedisCache::connect_with(RedisTarget::parse(&url).unwrap(), RedisCacheOptions::with_prefix(&prefix))
        .await
        .expect("the ACL user logs in");
    let counters = Counters::builder(Arc::new(cache), Arc::new(counter_core::MemoryStore::new()))
        .background(false)
        .build()
        .unwrap();
    let key = Key::new("acl", "k").unwrap();
    assert_eq!(counters.incr(&key, 7).await.unwrap(), 7);
    counters.shutdown().await.unwrap();

    let wrong = url.replacen(":counters-acl-secret@", ":not-the-password@", 1);
    assert_ne!(wrong, url, "the test knows the script's password");
    let e = RedisCache::connect(&wrong).await.expect_err("a wrong password is refused");
    assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
    assert!(!e.to_string().contains("not-the-password"), "the error does not show the password: {e}");
    assert!(!format!("{e:?}").contains("not-the-password"), "nor its debug form: {e:?}");
}

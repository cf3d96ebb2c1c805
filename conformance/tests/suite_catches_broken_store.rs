//! The suite tests itself: against a store that applies a retried batch
//! twice (it forwards every apply under a fresh identity), the cases about
//! retries and recovery, and the model test, must fail; so must the no-loss
//! cases and the model against a store that answers "applied" for batches
//! it refused (what an engine that drops refused batches amounts to). A
//! suite that passed here would prove nothing about exactly-once.

use std::sync::Arc;

use conformance::faults::{Breakage, BrokenStore};
use conformance::{Backends, cases, model};
use counter_core::{MemoryCache, MemoryStore};

type Broken = BrokenStore<MemoryStore>;

fn broken(breakage: Breakage) -> Backends<MemoryCache, Broken> {
    Backends::new(Arc::new(MemoryCache::new()), Arc::new(BrokenStore::new(Arc::new(MemoryStore::new()), breakage)))
}

fn double_applying() -> Backends<MemoryCache, Broken> {
    broken(Breakage::AppliesRetriesTwice)
}

fn dropping() -> Backends<MemoryCache, Broken> {
    broken(Breakage::DropsRefused("c".into()))
}

fn reference() -> Backends<MemoryCache, MemoryStore> {
    Backends::new(Arc::new(MemoryCache::new()), Arc::new(MemoryStore::new()))
}

/// The model test must fail over `setup`'s backends, and for the model's reason.
fn model_fails(setup: fn() -> Backends<MemoryCache, Broken>) {
    let outcome = std::panic::catch_unwind(|| model::run_model(256, || async move { Some(setup()) }));
    let message = outcome.expect_err("the model test must find the broken store");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains("model test failed"), "failed for another reason: {text}");
}

#[tokio::test]
async fn retried_batch_case_fails_against_a_double_applying_store() {
    let b = double_applying();
    let outcome = tokio::spawn(async move { cases::retried_batch_applies_once(&b).await }).await;
    assert!(outcome.expect_err("the case must fail").is_panic());
}

#[tokio::test]
async fn orphan_recovery_case_fails_against_a_double_applying_store() {
    let b = double_applying();
    let outcome = tokio::spawn(async move { cases::orphaned_claims_are_recovered_once(&b).await }).await;
    assert!(outcome.expect_err("the case must fail").is_panic());
}

#[tokio::test]
async fn refused_cell_case_fails_when_refused_batches_are_dropped() {
    let b = dropping();
    let outcome = tokio::spawn(async move { cases::refused_cell_is_isolated_and_held(&b).await }).await;
    assert!(outcome.expect_err("the case must fail").is_panic());
}

#[tokio::test]
async fn the_same_cases_pass_against_the_reference_store() {
    cases::retried_batch_applies_once(&reference()).await;
    cases::orphaned_claims_are_recovered_once(&reference()).await;
    cases::refused_cell_is_isolated_and_held(&reference()).await;
    cases::refused_cell_survives_shutdown(&reference()).await;
}

#[test]
fn model_test_fails_against_a_double_applying_store() {
    model_fails(double_applying);
}

#[test]
fn model_test_fails_when_refused_batches_are_dropped() {
    model_fails(dropping);
}

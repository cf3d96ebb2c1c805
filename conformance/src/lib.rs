//! The behavioural suite every cache x store combination of the counters
//! library passes against real servers.
//!
//! - [`cases`]: plain `pub async fn`s over a [`Backends`] pair.
//! - [`model`]: the model-based property test with injected faults.
//! - [`faults`]: stores that fail, lose acks, go down, or (deliberately
//!   broken) apply a retried batch twice.
//! - [`conformance_suite!`]: stamps every case for one combination, once
//!   through the concrete types and once through `dyn`.
//!
//! - [`processes`]: several OS processes over one shared pair, one of them
//!   SIGKILLed, for every pair whose capabilities promise it.
//! - [`servers`]: a redis-server or memcached of a test's own, to kill or
//!   restart; every test of the workspace uses these and [`service_url`].
//! - [`matrix`]: every backend, opened fresh per test, and
//!   [`conformance_matrix!`], which stamps the suite for every cache x
//!   store pair (`tests/matrix.rs`).
//!
//! A backend joins the matrix with a module in [`matrix`] and one word in
//! `tests/matrix.rs`. A backend of your own runs the suite with one line:
//!
//! ```ignore
//! async fn setup() -> Option<conformance::Backends<MyCache, MemoryStore>> { ... }
//! conformance::conformance_suite!(setup);
//! ```
#![deny(missing_docs)]

pub mod cancelled;
pub mod cases;
pub mod cold;
pub mod convergence;
pub mod delivery;
pub mod faults;
pub mod harness;
pub mod hostile;
pub mod idempotency;
pub mod leases;
pub mod listing;
pub mod matrix;
pub mod model;
pub mod processes;
#[cfg(feature = "redis")]
pub mod redis;
pub mod refusals;
pub mod servers;

pub use harness::{Backends, service_url};

/// Stamps the whole suite for one cache x store combination.
///
/// `$setup` names an `async fn() -> Option<Backends<C, S>>` in the calling
/// module; it returns `None` to skip (a missing service, locally only).
/// Each case runs twice: `concrete::case` over `C` and `S`, and
/// `dyn_dispatch::case` over `dyn CacheLayer` and `dyn DurableStore`. The
/// model test runs `model_cases` sequences each way.
#[macro_export]
macro_rules! conformance_suite {
    ($setup:ident) => {
        $crate::conformance_suite!($setup, model_cases = 64);
    };
    ($setup:ident, model_cases = $cases:expr) => {
        $crate::__stamp_cases!($setup, $cases;
            incr_returns_new_totals,
            default_applies_only_to_missing_counters,
            get_many_mixes_cache_and_store,
            put_sets_and_writes_through,
            delete_removes_counter_and_series,
            list_and_top_n,
            flush_coalesces_one_write_per_counter,
            interval_policy_flushes_idle_counters,
            threshold_policy_flushes_when_reached,
            immediate_policy_writes_through,
            rollup_counts_into_ancestors,
            time_slices_count_query_and_clean,
            bad_input_changes_nothing,
            full_i64_range_round_trips,
            retried_batch_applies_once,
            orphaned_claims_are_recovered_once,
            store_outage_keeps_counts_then_backpressure,
            backpressure_can_wait,
            permanent_errors_are_not_retried,
            cache_loss_never_moves_durable_backwards,
            shutdown_drains_and_reports,
            concurrent_increments_see_every_total_once,
            racing_flushers_flush_each_delta_once,
            cache_claims_hand_out_each_delta_once,
            shutdown_with_increments_in_flight_loses_nothing,
            refused_cell_is_isolated_and_held,
            refused_cell_survives_shutdown,
            permanent_store_failure_stops_retrying_and_keeps_deltas,
            hung_store_gets_backpressure_at_the_bound,
            slow_store_is_reported_as_exceeding_the_age_bound,
            write_through_failure_is_deferred_and_lands_once,
            store_without_the_protocol_is_refused_before_any_write,
            flush_reports_outstanding_claims_and_recovers_them,
            failed_shutdown_can_be_called_again,
            another_writer_of_the_store_converges,
            a_second_cache_over_the_store_converges,
            a_reload_that_missed_a_batch_in_flight_converges,
            drift_converges_in_the_background,
            refused_rollup_leaves_no_trace,
            hostile_names_stay_distinct_and_list_literally,
            counters_idle_beyond_a_lease_still_flush,
            cold_counters_load_in_few_reads,
            cancelled_increments_fail_no_one_else_and_count_at_most_once,
            cold_counters_refused_together_while_the_store_is_down,
            dirty_counters_list_one_namespace_by_name,
            a_retried_keyed_increment_counts_once,
            a_keyed_increment_racing_its_retries_counts_once,
            keyed_increments_count_once_after_a_cache_loss,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __stamp_cases {
    ($setup:ident, $cases:expr; $($case:ident),* $(,)?) => {
        mod concrete {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::$setup().await {
                        $crate::cases::$case(&b).await;
                    }
                }
            )*

            #[test]
            fn model_with_faults() {
                $crate::model::run_model($cases, super::$setup);
            }
        }

        mod dyn_dispatch {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(b) = super::$setup().await {
                        $crate::cases::$case(&b.into_dyn()).await;
                    }
                }
            )*

            #[test]
            fn model_with_faults() {
                $crate::model::run_model($cases, || async { super::$setup().await.map(|b| b.into_dyn()) });
            }
        }
    };
}

//! The conformance suite: every store of operations and jobs passes the
//! same tests. LMDB always; PostgreSQL with the `postgres` feature, against
//! the server in `KEEL_TEST_PG_URL` (missing, the PostgreSQL tests fail and
//! say how to start one). PostgreSQL-only behaviours — database time,
//! cross-host wake-ups, enqueue in the caller's transaction, the schema's
//! versions, keyed locks — are in `tests/postgres_*.rs`.

mod conformance;

/// One `#[test]` per conformance test, on the store `$backend`.
macro_rules! on_store {
    ($backend:expr) => {
        on_store!(@tests $backend;
            jobs::dequeue_takes_the_most_urgent_priority_then_the_oldest,
            jobs::dequeue_only_takes_the_kinds_asked_for,
            jobs::scheduled_jobs_do_not_run_early,
            jobs::a_live_unique_key_returns_the_existing_job_until_it_finishes,
            jobs::an_always_failing_job_is_dead_after_exactly_max_attempts_with_growing_delays,
            jobs::a_non_retryable_failure_is_dead_at_once,
            jobs::an_expired_lease_is_reset_and_the_late_finish_is_refused,
            jobs::a_heartbeat_keeps_the_lease,
            jobs::past_max_resets_the_job_dies_saying_its_processor_kept_dying,
            jobs::cancel_fences_a_running_attempt_and_refuses_finished_jobs,
            jobs::release_requeues_without_counting_a_failure,
            jobs::cleanup_deletes_only_finished_jobs_past_retention,
            jobs::counts_follow_every_move,
            jobs::bad_input_is_refused_and_stores_nothing,
            jobs::the_dequeues_resetter_requeues_and_kills_as_reset_expired_does,
            jobs::dequeue_many_claims_the_best_first_each_with_its_own_token,
            jobs::finish_many_stores_each_outcome_on_its_own,
            operations::next_lists_ready_items_oldest_first_without_claiming,
            operations::claim_takes_oldest_ready_items_once_each_with_a_token,
            operations::update_enables_downstream_operations_in_the_same_transaction,
            operations::a_refused_update_enables_nothing,
            operations::an_expired_lease_is_claimable_again_and_the_dead_workers_update_is_refused,
            operations::error_marks_the_operation_failed_with_its_reason,
            operations::an_update_without_a_token_is_refused_while_a_claim_is_live,
            operations::bad_names_and_keys_are_invalid_arguments,
            operations::an_expired_claim_reads_as_expired_and_is_listed_by_next,
            operations::the_reset_pass_requeues_lapsed_claims_and_fails_them_past_max_lapses,
            operations::an_update_by_the_holder_clears_the_lapse_count,
            operations::next_lists_by_item_key_when_asked_and_oldest_first_by_default,
            operations::list_finds_the_records_of_an_operation_in_a_state_by_item
        );
    };
    (@tests $backend:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                crate::conformance::$module::$test(&$backend)
            }
        )*
    };
}

mod lmdb {
    on_store!(crate::conformance::Lmdb);
}

#[cfg(feature = "postgres")]
mod postgres {
    on_store!(crate::conformance::postgres::Pg);
}

//! Runs the [`EventStore`] conformance suite (`lienthong_engine::store::conformance`) against
//! [`SledStore`] on a real sled database in a temporary directory. A second backend adds one
//! such file with its own `open`.

use lienthong_engine::store::{EventStore, SledStore, conformance};

fn with_store(check: fn(&dyn EventStore)) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open store");
    check(&store);
    // Every check must leave a store that verifies.
    conformance::verify_is_clean(&store);
    store.close().expect("close");
}

#[test]
fn seq_has_no_gaps() {
    with_store(conformance::seq_has_no_gaps);
}

#[test]
fn expected_seq_conflict_has_one_winner() {
    with_store(conformance::expected_seq_conflict_has_one_winner);
}

#[test]
fn feed_is_strictly_increasing_and_complete() {
    with_store(conformance::feed_is_strictly_increasing_and_complete);
}

#[test]
fn codes_are_unique_per_prefix_under_concurrency() {
    with_store(conformance::codes_are_unique_per_prefix_under_concurrency);
}

#[test]
fn striped_codes_keep_partitions_apart() {
    with_store(conformance::striped_codes_keep_partitions_apart);
}

#[test]
fn idempotency_is_stored_atomically() {
    with_store(conformance::idempotency_is_stored_atomically);
}

#[test]
fn definitions_are_content_addressed() {
    with_store(conformance::definitions_are_content_addressed);
}

#[test]
fn timers_are_set_and_cleared_with_the_events() {
    with_store(conformance::timers_are_set_and_cleared_with_the_events);
}

#[test]
fn invalid_requests_write_nothing() {
    with_store(conformance::invalid_requests_write_nothing);
}

/// All checks on one shared store, in sequence: they must not depend on an empty store.
#[test]
fn all_checks_share_one_store() {
    with_store(|store| {
        conformance::seq_has_no_gaps(store);
        conformance::feed_is_strictly_increasing_and_complete(store);
        conformance::codes_are_unique_per_prefix_under_concurrency(store);
        conformance::idempotency_is_stored_atomically(store);
        conformance::expected_seq_conflict_has_one_winner(store);
        conformance::definitions_are_content_addressed(store);
        conformance::invalid_requests_write_nothing(store);
        conformance::timers_are_set_and_cleared_with_the_events(store);
    });
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    conformance::reopen_keeps_everything(&move || -> Box<dyn EventStore> {
        Box::new(SledStore::open(&path).expect("open store"))
    });
}

#[test]
fn timers_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    conformance::timers_survive_reopen(&move || -> Box<dyn EventStore> {
        Box::new(SledStore::open(&path).expect("open store"))
    });
}

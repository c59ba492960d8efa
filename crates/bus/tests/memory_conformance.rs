//! Runs the bus conformance suite (`lienthong_bus::conformance`) against the in-process
//! [`MemoryBus`]. Each check gets a fresh bus; `all_checks_share_one_bus` runs them all on one.

use lienthong_bus::conformance;
use lienthong_bus::memory::MemoryBus;

fn bus() -> MemoryBus {
    MemoryBus::new(conformance::config()).expect("conformance config is valid")
}

macro_rules! check {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            conformance::$name(&bus()).await;
        }
    };
}

check!(commands_route_by_partition);
check!(dropped_inbox_stops_serving);
check!(feed_dedups_by_msg_id);
check!(feed_reads_from_a_position);
check!(task_is_delivered_once_to_its_agency);
check!(unacked_task_is_redelivered);
check!(redelivered_task_acked_twice_has_one_effect);
check!(max_deliveries_leads_to_a_dead_letter);
check!(unacked_max_bounds_in_flight_tasks);
check!(stalled_agency_does_not_block_another);
check!(queue_is_bounded_per_agency);
check!(oversized_payloads_are_refused);
check!(nak_redelivers_after_the_delay_asked);
check!(in_progress_holds_off_redelivery);
check!(leases_are_exclusive);
check!(an_unrenewed_lease_expires);

/// The checks must not depend on an empty bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_share_one_bus() {
    let bus = bus();
    conformance::feed_dedups_by_msg_id(&bus).await;
    conformance::feed_reads_from_a_position(&bus).await;
    conformance::commands_route_by_partition(&bus).await;
    conformance::task_is_delivered_once_to_its_agency(&bus).await;
    conformance::queue_is_bounded_per_agency(&bus).await;
    conformance::stalled_agency_does_not_block_another(&bus).await;
}

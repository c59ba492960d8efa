//! Runs the bus conformance suite (`lienthong_bus::conformance`) against [`NatsBus`] on a real
//! nats-server (JetStream, free loopback port, fresh storage) started per test by
//! `lienthong_bus::testing::NatsServer`. Without a nats-server >= 2.10 these tests fail and say
//! to run `scripts/nats-server.sh`.

use lienthong_bus::conformance;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;

async fn bus(server: &NatsServer) -> NatsBus {
    NatsBus::connect(&server.url(), conformance::config())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", server.url()))
}

macro_rules! check {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = NatsServer::start();
            conformance::$name(&bus(&server).await).await;
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
    let server = NatsServer::start();
    let bus = bus(&server).await;
    conformance::feed_dedups_by_msg_id(&bus).await;
    conformance::feed_reads_from_a_position(&bus).await;
    conformance::commands_route_by_partition(&bus).await;
    conformance::task_is_delivered_once_to_its_agency(&bus).await;
    conformance::queue_is_bounded_per_agency(&bus).await;
    conformance::stalled_agency_does_not_block_another(&bus).await;
}

/// The helper's server is recent enough, and the bus read the same version from INFO.
#[tokio::test]
async fn connect_reads_the_server_version() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    assert_eq!(bus.server_version(), server.version());
    lienthong_bus::nats::check_server_version(bus.server_version()).expect("a current server");
}

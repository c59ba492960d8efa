//! A 3-node JetStream cluster with every stream replicated 3 times: one node is killed in the
//! middle of the traffic and nothing acknowledged is lost, nothing is stored twice. (Issue 4:
//! "a 3-node JetStream cluster (replicas 3) with one node killed mid-load (no loss)".)
//!
//! How: feed events and tasks are published through a client connected to all three nodes;
//! node 0 is killed; more are published (each publish retried while the cluster elects new
//! leaders, with the same message id); then the feed must hold every event once, in order, and
//! the agency's queue every task once.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsCluster;
use lienthong_bus::{Agency, Config, Feed, FeedEvent, Task, TaskId, Tasks};
use uuid::Uuid;

/// How long an operation is retried while the cluster recovers.
const RECOVERY: Duration = Duration::from_secs(30);

async fn retry<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, lienthong_bus::Error>>,
{
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_load_loses_nothing() {
    let mut cluster = NatsCluster::start(3);
    let config = Config {
        replicas: 3,
        ..Config::default()
    };
    // The cluster elects its JetStream leader first: connecting creates the streams.
    let urls = cluster.urls();
    let bus = retry("connect", || NatsBus::connect(&urls, config.clone())).await;
    let agency = Agency::new("tu-phap").expect("agency");
    let dossier = Uuid::now_v7();

    let publish = |bus: &NatsBus, seq: u64| {
        let bus = bus.clone();
        let agency = agency.clone();
        async move {
            retry("publish event", || {
                bus.publish_event(FeedEvent {
                    dossier,
                    seq,
                    payload: Bytes::from(format!("event {seq}")),
                })
            })
            .await;
            retry("publish task", || {
                bus.publish_task(Task {
                    agency: agency.clone(),
                    id: TaskId::new(&format!("{dossier}/{seq}")).expect("task id"),
                    payload: Bytes::from(format!("task {seq}")),
                })
            })
            .await;
        }
    };
    for seq in 1..=40 {
        publish(&bus, seq).await;
    }
    // Node 0 dies without warning.
    cluster.nodes[0].stop();
    for seq in 41..=80 {
        publish(&bus, seq).await;
    }

    // The feed: every event once, in order.
    let mut seqs = Vec::new();
    let mut from = 1;
    loop {
        let batch = retry("read the feed", || bus.read(from, 256)).await;
        if batch.is_empty() {
            break;
        }
        from = batch.last().expect("non-empty").position + 1;
        seqs.extend(batch.into_iter().map(|r| r.seq));
    }
    assert_eq!(
        seqs,
        (1..=80).collect::<Vec<u64>>(),
        "the feed after the kill"
    );

    // The queue: every task once. An empty pull is not the end while the cluster may still be
    // electing the consumer's leader: pull until all are seen (or the recovery time is over),
    // then once more to find nothing left.
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + RECOVERY;
    while seen.len() < 80 && tokio::time::Instant::now() < deadline {
        let got = retry("pull", || bus.pull(&agency, 64, Duration::from_millis(500))).await;
        for d in got {
            assert!(seen.insert(d.task.to_string()), "task {} twice", d.task);
            retry("ack", || d.ack()).await;
        }
    }
    assert_eq!(seen.len(), 80, "every task is in the queue once");
    let rest = retry("pull", || bus.pull(&agency, 64, Duration::from_millis(500))).await;
    assert!(
        rest.is_empty(),
        "nothing is queued twice: {:?}",
        rest.iter().map(|d| d.task.to_string()).collect::<Vec<_>>()
    );
}

//! The NATS bus against servers it must refuse, and across a server restart.

use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::conformance;
use lienthong_bus::nats::NatsBus;
use lienthong_bus::testing::NatsServer;
use lienthong_bus::{Error, Feed, FeedEvent, Tasks};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A fake NATS server that announces `version` (and `jetstream`) in its INFO and answers PINGs:
/// enough for a client to connect and read the INFO, nothing more.
async fn fake_server(version: &'static str, jetstream: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"FAKE\",\"server_name\":\"fake\",\"version\":\"{version}\",\
                     \"go\":\"go1.21\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\
                     \"max_payload\":1048576,\"proto\":1,\"jetstream\":{jetstream}}}\r\n"
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("nats://127.0.0.1:{port}")
}

/// Debian's nats-server 2.9.10 is refused at connect, with the version found and the fix.
#[tokio::test]
async fn an_old_server_is_refused_with_its_version() {
    let url = fake_server("2.9.10", true).await;
    match NatsBus::connect(&url, conformance::config()).await {
        Err(e @ Error::ServerTooOld { .. }) => {
            let text = e.to_string();
            assert!(text.contains("2.9.10"), "{text}");
            assert!(text.contains("2.10 or newer"), "{text}");
            assert!(text.contains("scripts/nats-server.sh"), "{text}");
        }
        Err(e) => panic!("expected ServerTooOld, got {e}"),
        Ok(_) => panic!("a 2.9.10 server must be refused"),
    }
}

/// A current server without JetStream is refused, saying how to enable it.
#[tokio::test]
async fn a_server_without_jetstream_is_refused() {
    let url = fake_server("2.12.1", false).await;
    match NatsBus::connect(&url, conformance::config()).await {
        Err(e @ Error::JetStreamDisabled { .. }) => {
            assert!(e.to_string().contains("-js"), "{e}");
        }
        Err(e) => panic!("expected JetStreamDisabled, got {e}"),
        Ok(_) => panic!("a server without JetStream must be refused"),
    }
}

/// Proves the streams are on disk and the agency consumer durable: after the server is killed
/// (SIGKILL) and restarted on the same storage, the same bus reconnects by itself, the feed and
/// a queued task are still there, and a republished event is still recognised as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_and_tasks_survive_a_server_restart() {
    let mut server = NatsServer::start();
    let bus = NatsBus::connect(&server.url(), conformance::config())
        .await
        .expect("connect");
    let dossier = uuid::Uuid::now_v7();
    let event = FeedEvent {
        dossier,
        seq: 1,
        payload: Bytes::from_static(b"event 1"),
    };
    let first = bus.publish_event(event.clone()).await.expect("publish");
    let agency = conformance::fresh_agency("restart");
    let task = conformance::fresh_task(&agency, "t");
    bus.publish_task(task.clone()).await.expect("publish task");
    bus.task_counts(&agency)
        .await
        .expect("creates the consumer");

    server.start_again();

    // The client reconnects on its own; retry until it has.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    let again = loop {
        match bus.publish_event(event.clone()).await {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::debug!(error = %e, "not reconnected yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no reconnection after the restart: {e}"),
        }
    };
    assert!(again.duplicate, "the dedup window survives the restart");
    assert_eq!(again.position, first.position);
    let records = bus.read(first.position, 10).await.expect("read");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].dossier, records[0].seq), (dossier, 1));

    let got = bus
        .pull(&agency, 10, Duration::from_secs(5))
        .await
        .expect("pull");
    assert_eq!(got.len(), 1, "the queued task survives the restart");
    assert_eq!(got[0].task, task.id);
    got[0].ack().await.expect("ack");
}

/// Two processes (two connections) working one agency share its durable consumer, and two
/// engines serving one partition share its queue group: each task and each command is handled
/// by exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_share_the_agency_consumer_and_the_partition() {
    use lienthong_bus::{Commands, Partition};
    use std::collections::HashSet;

    let server = NatsServer::start();
    let one = NatsBus::connect(&server.url(), conformance::config())
        .await
        .expect("connect");
    let two = NatsBus::connect(&server.url(), conformance::config())
        .await
        .expect("connect");

    let agency = conformance::fresh_agency("shared");
    let tasks: Vec<_> = (0..conformance::UNACKED_MAX)
        .map(|i| conformance::fresh_task(&agency, &format!("t{i}")))
        .collect();
    for t in &tasks {
        one.publish_task(t.clone()).await.expect("publish");
    }
    let short = conformance::REDELIVERY / 2;
    let (a, b) = tokio::join!(one.pull(&agency, 2, short), two.pull(&agency, 2, short));
    let (a, b) = (a.expect("pull"), b.expect("pull"));
    let mut seen = HashSet::new();
    for d in a.iter().chain(b.iter()) {
        assert!(seen.insert(d.task.clone()), "{} went to both", d.task);
        d.ack().await.expect("ack");
    }
    assert_eq!(seen.len(), tasks.len(), "every task went to one of them");

    let partition = Partition(7);
    let mut inboxes = vec![
        one.serve(partition).await.expect("serve"),
        two.serve(partition).await.expect("serve"),
    ];
    let counters: Vec<_> = inboxes
        .drain(..)
        .enumerate()
        .map(|(i, mut inbox)| {
            tokio::spawn(async move {
                let mut n = 0u32;
                while let Ok(Some(cmd)) =
                    tokio::time::timeout(Duration::from_millis(500), inbox.next()).await
                {
                    n += 1;
                    cmd.reply
                        .send(Bytes::from(format!("{i}")))
                        .await
                        .expect("reply");
                }
                n
            })
        })
        .collect();
    for _ in 0..20 {
        one.request(
            partition,
            Bytes::from_static(b"cmd"),
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    }
    let mut total = 0;
    for c in counters {
        total += c.await.expect("server task");
    }
    assert_eq!(total, 20, "each command handled once");
}

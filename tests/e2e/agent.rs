//! `lienthong agent --grpc` as separate processes, one per agency, against the real
//! `lienthong serve`: proves that simulated agency systems working their queues over gRPC carry
//! birth-group dossiers from submission to the returned result, and that an agent run again over
//! the same backlog (a redelivery) has no second effect: every act is answered as a replay.

use lienthong_e2e::{Serving, bearer, birth, grpc_agent, summary, worked_every_dossier};
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use serde_json::Value;

/// Dossiers submitted.
const DOSSIERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_carry_dossiers_to_the_returned_result_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Serving::start(dir.path());
    let addr = server.addr.clone();
    let mut client = DossierServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut ids = Vec::new();
    for i in 0..DOSSIERS {
        let answer = client
            .submit(bearer("dev-desk", birth(&format!("agent-e2e-{i}"))))
            .await
            .expect("submitted")
            .into_inner();
        ids.push(answer.dossier_id);
    }

    // Four agency systems, each its own process, working in parallel.
    let agencies = [
        ("tu-phap", "dev-tu-phap"),
        ("cong-an", "dev-cong-an"),
        ("bhxh", "dev-bhxh"),
        ("ubnd-xa", "dev-desk"),
    ];
    let children: Vec<_> = agencies
        .iter()
        .map(|(a, t)| grpc_agent(&addr, a, t, &["--delay", "10ms"]))
        .collect();
    let summaries: Vec<Value> = children
        .into_iter()
        .zip(agencies)
        .map(|(child, (a, _))| worked_every_dossier(child, a, DOSSIERS as u64))
        .collect();
    assert_eq!(
        summaries[3]["returned"], DOSSIERS as u64,
        "the desk returned every result"
    );

    for id in &ids {
        let d = client
            .get(bearer(
                "dev-desk",
                pb::GetDossierRequest {
                    dossier: id.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(d.status(), pb::DossierStatus::Closed, "{}", d.code);
        assert_eq!(d.status_text, "closed:result-returned", "{}", d.code);
    }
    let seq_before: Vec<u64> = {
        let mut v = Vec::new();
        for id in &ids {
            let d = client
                .get(bearer(
                    "dev-desk",
                    pb::GetDossierRequest {
                        dossier: id.clone(),
                    },
                ))
                .await
                .expect("get")
                .into_inner();
            v.push(d.seq);
        }
        v
    };

    // The justice agency's system restarts from the beginning of its queue: every task comes
    // again, every act is the first answer replayed, and no dossier gains an event.
    let again = summary(grpc_agent(&addr, "tu-phap", "dev-tu-phap", &[]));
    assert_eq!(again["tasks"], DOSSIERS as u64, "{again}");
    assert_eq!(again["replayed"], DOSSIERS as u64, "{again}");
    assert_eq!(
        again["completed"], 0,
        "nothing is done a second time: {again}"
    );
    assert_eq!(again["failed"], 0, "{again}");
    for (id, before) in ids.iter().zip(seq_before) {
        let d = client
            .get(bearer(
                "dev-desk",
                pb::GetDossierRequest {
                    dossier: id.clone(),
                },
            ))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(d.seq, before, "no new event on {id}");
    }
}

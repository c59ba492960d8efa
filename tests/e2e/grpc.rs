//! `lienthong serve` as a separate process, driven by a tonic client: proves the binary wires the
//! engine, the read models, the gateway and the auth file together, serves on the address it
//! prints (port 0 picks a free one), and stops cleanly with exit 0 on SIGTERM.

use lienthong_e2e::Serving;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::dossier_service_client::DossierServiceClient;
use lienthong_proto::v1::report_service_client::ReportServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binary_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Serving::start(dir.path());
    let addr = server.addr.clone();
    let mut client = DossierServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");

    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(
        "child.age_months".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Integer(3)),
        },
    );
    attributes.insert(
        "child.birth_date".to_string(),
        pb::AttributeValue {
            kind: Some(pb::attribute_value::Kind::Date("2026-08-20".into())),
        },
    );
    let mut req = tonic::Request::new(pb::SubmitRequest {
        idempotency_key: "e2e-1".into(),
        procedure_code: "2.000986".into(),
        channel: pb::Channel::Online as i32,
        applicant: Some(pb::Applicant {
            full_name: "Lê Văn C".into(),
            ..Default::default()
        }),
        attributes,
        documents: Vec::new(),
        officer: String::new(),
    });
    // The development token of examples/auth.toml.
    req.metadata_mut()
        .insert("authorization", "Bearer dev-desk".parse().expect("ascii"));
    let answer = client.submit(req).await.expect("submitted").into_inner();
    assert!(answer.dossier_code.starts_with("UBND.XA-"), "{answer:?}");

    let unauth = client
        .get(tonic::Request::new(pb::GetDossierRequest {
            dossier: answer.dossier_id,
        }))
        .await
        .expect_err("no token");
    assert_eq!(unauth.code(), tonic::Code::Unauthenticated);

    // The read models over the same store: the auditor's board already has the new dossier's
    // first step, with justice (the call folds every acknowledged event before answering).
    let mut reports = ReportServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    let mut req = tonic::Request::new(pb::BoardRequest::default());
    req.metadata_mut().insert(
        "authorization",
        "Bearer dev-auditor".parse().expect("ascii"),
    );
    let board = reports.board(req).await.expect("board").into_inner();
    let header = board.header.expect("header");
    assert!(
        header.checkpoint > 0 && header.checkpoint + header.lag == header.head,
        "{header:?}"
    );
    assert!(
        board
            .steps
            .iter()
            .any(|s| s.dossier_code == answer.dossier_code
                && s.agency == "tu-phap"
                && s.step_id == "register-birth"),
        "{:?}",
        board.steps
    );

    // SIGTERM: graceful stop, exit 0.
    let status = server.stop(15_000);
    assert!(status.success(), "exit status {status:?}");

    // The read models live beside the store.
    assert!(dir.path().join("projections").is_dir());

    // The dossier is durable: the CLI reads it from the same directory.
    let out = lienthong_e2e::run(&["dossiers", "--data", &dir.path().display().to_string()]);
    assert!(
        lienthong_e2e::stdout(&out).contains("UBND.XA-"),
        "{}",
        lienthong_e2e::stdout(&out)
    );
}

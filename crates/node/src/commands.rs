//! The engine node's command server: serves the partitions it owns on the bus's `Commands`
//! (`lienthong.cmd.<partition>`), decoding each request as a `lienthong.v1.BusCommand`, executing
//! it on the embedded engine exactly as the gRPC gateway would (the same conversion,
//! `lienthong_gateway::commands::ToCommand`, the same error map) and answering with a
//! `lienthong.v1.BusReply`.
//!
//! The bus is a trusted zone (`proto/lienthong/v1/bus.proto`): the actor a command names is who
//! acts. The engine's own rules still hold (an agency completes only its own step, a closed
//! dossier takes no command), and a retry with the same idempotency key returns the first answer,
//! so a requester that timed out simply sends the same command again. The reply is sent only after
//! the engine's append is durable.
//!
//! Limits: at most [`COMMANDS_IN_FLIGHT_MAX`] commands are executed at once per node (the engine
//! group-commits them); further requests wait in the bus's inbox, whose capacity is the bus's
//! configuration.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use lienthong_bus::{
    Bus, IncomingCommand, Partition, PartitionCount, partition_of, partition_of_key,
};
use lienthong_gateway::auth::{Principal, Role, Via};
use lienthong_gateway::commands::ToCommand;
use lienthong_gateway::shared::Shared;
use lienthong_gateway::status::invalid;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::bus_command::Command as C;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::Status;

/// Commands executed at the same time by one node.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 256;

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bus refused to serve a partition.
    #[error("cannot serve partition {partition}: {source}")]
    Serve {
        /// The partition.
        partition: Partition,
        /// The bus's error.
        source: lienthong_bus::Error,
    },
}

/// Serves `partitions` until `shutdown` completes, then stops taking requests and waits for the
/// commands in flight.
pub async fn serve(
    shared: Arc<Shared>,
    bus: Arc<dyn Bus>,
    count: PartitionCount,
    partitions: &[Partition],
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let permits = Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT_MAX));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for &partition in partitions {
        let mut inbox = bus
            .serve(partition)
            .await
            .map_err(|source| Error::Serve { partition, source })?;
        let (shared, permits, mut stop) = (shared.clone(), permits.clone(), stop_rx.clone());
        loops.push(tokio::spawn(async move {
            loop {
                let incoming = tokio::select! {
                    c = inbox.next() => c,
                    _ = stop.wait_for(|s| *s) => None,
                };
                let Some(incoming) = incoming else { break };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    handle(&shared, count, incoming).await;
                    drop(permit);
                });
            }
        }));
        tracing::info!(%partition, "serving commands");
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // Wait for the commands in flight: every permit back.
    let _all = permits
        .acquire_many(COMMANDS_IN_FLIGHT_MAX as u32)
        .await
        .ok();
    tracing::info!("command server stopped");
    Ok(())
}

/// Answers one request.
async fn handle(shared: &Shared, count: PartitionCount, incoming: IncomingCommand) {
    let reply = match pb::BusCommand::decode(incoming.payload.as_ref()) {
        Ok(command) => match routed_here(shared, count, incoming.partition, &command) {
            Ok(()) => answer(shared, command).await,
            Err(s) => error_reply(s),
        },
        Err(e) => error_reply(invalid(
            "payload",
            format!("is not a lienthong.v1.BusCommand: {e}"),
        )),
    };
    let bytes = Bytes::from(reply.encode_to_vec());
    if let Err(e) = incoming.reply.send(bytes).await {
        // The requester sees a timeout and retries with its idempotency key.
        tracing::warn!(partition = %incoming.partition, error = %e, "could not send a command's reply");
    }
}

/// Refuses a command sent to the wrong partition: a sender whose partition count differs from
/// this node's (its routing and ours disagree), or a bug. Executing it here would put the dossier,
/// or look for it, on a node that does not own it.
fn routed_here(
    shared: &Shared,
    count: PartitionCount,
    partition: Partition,
    command: &pb::BusCommand,
) -> Result<(), Status> {
    let expected = match &command.command {
        Some(C::Submit(r)) => {
            let agency = command.actor.as_ref().map_or("", |a| a.agency.as_str());
            partition_of_key(agency, &r.idempotency_key, count)
        }
        Some(c) => {
            let dossier = match c {
                C::CompleteStep(r) => &r.dossier,
                C::RejectStep(r) => &r.dossier,
                C::RequestSupplement(r) => &r.dossier,
                C::ProvideSupplement(r) => &r.dossier,
                C::Refuse(r) => &r.dossier,
                C::Stop(r) => &r.dossier,
                C::IssueApology(r) => &r.dossier,
                C::ReturnResult(r) => &r.dossier,
                C::Withdraw(r) => &r.dossier,
                C::Get(r) => &r.dossier,
                C::Submit(_) => return Ok(()),
            };
            partition_of(shared.resolve(dossier)?.0, count)
        }
        None => return Ok(()),
    };
    if expected == partition {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "wrong partition: this command belongs to partition {expected} of {} but was sent to {partition}; every process of a deployment must use the same partition count",
            count.get()
        )))
    }
}

/// The reply to one decoded command.
pub async fn answer(shared: &Shared, command: pb::BusCommand) -> pb::BusReply {
    let actor = command.actor;
    let routed = command.routed_only;
    let result = match command.command {
        Some(C::Submit(r)) => run(shared, actor, routed, &r).await,
        Some(C::CompleteStep(r)) => run(shared, actor, routed, &r).await,
        Some(C::RejectStep(r)) => run(shared, actor, routed, &r).await,
        Some(C::RequestSupplement(r)) => run(shared, actor, routed, &r).await,
        Some(C::ProvideSupplement(r)) => run(shared, actor, routed, &r).await,
        Some(C::Refuse(r)) => run(shared, actor, routed, &r).await,
        Some(C::Stop(r)) => run(shared, actor, routed, &r).await,
        Some(C::IssueApology(r)) => run(shared, actor, routed, &r).await,
        Some(C::ReturnResult(r)) => run(shared, actor, routed, &r).await,
        Some(C::Withdraw(r)) => run(shared, actor, routed, &r).await,
        Some(C::Get(g)) => {
            return match get(shared, actor, routed, &g).await {
                Ok(d) => pb::BusReply {
                    result: Some(pb::bus_reply::Result::Dossier(d)),
                },
                Err(s) => error_reply(s),
            };
        }
        None => Err(invalid(
            "command",
            "is required: one of the BusCommand commands",
        )),
    };
    match result {
        Ok(r) => pb::BusReply {
            result: Some(pb::bus_reply::Result::Response(r)),
        },
        Err(s) => error_reply(s),
    }
}

/// Executes one mutating request as `actor`.
async fn run<R: ToCommand>(
    shared: &Shared,
    actor: Option<pb::Actor>,
    routed_only: bool,
    request: &R,
) -> Result<pb::CommandResponse, Status> {
    let mut actor = actor
        .filter(|a| !a.agency.is_empty())
        .ok_or_else(|| invalid("actor.agency", "is required: who acts"))?;
    if let Some(channel) = request.channel() {
        actor.channel = channel;
    }
    let command = request.command(&shared.limits)?;
    // The bus is trusted: the actor acts as itself, on any dossier; the engine's rules decide.
    // With `routed_only` (a gateway's caller that is not an admin), only on the dossiers routed
    // to the actor's agency, checked by `execute` against the current state.
    let principal = bus_principal(&actor.agency, routed_only);
    shared
        .execute(
            &principal,
            R::RPC,
            request.dossier(),
            actor,
            request.idempotency_key(),
            command,
        )
        .await
}

/// Who a bus command acts as: an admin (the trusted bus), or with `routed_only` an agency, which
/// acts and reads only on the dossiers routed to it.
fn bus_principal(agency: &str, routed_only: bool) -> Principal {
    Principal {
        id: format!("bus:{agency}"),
        agency: agency.to_string(),
        role: if routed_only {
            Role::Agency
        } else {
            Role::Admin
        },
        via: Via::Bus,
    }
}

/// A dossier's state; with `routed_only`, only if it is routed to the actor's agency.
async fn get(
    shared: &Shared,
    actor: Option<pb::Actor>,
    routed_only: bool,
    request: &pb::GetDossierRequest,
) -> Result<pb::Dossier, Status> {
    let id = shared.resolve(&request.dossier)?;
    let state = shared.state(id).await?;
    if routed_only {
        let agency = actor
            .as_ref()
            .map(|a| a.agency.as_str())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid("actor.agency", "is required with routed_only: who reads"))?;
        shared.check_read(&bus_principal(agency, true), &state)?;
    }
    Ok(shared.dossier_msg(&state))
}

/// A status as a reply: code, message and the encoded details, as gRPC would carry them.
fn error_reply(s: Status) -> pb::BusReply {
    pb::BusReply {
        result: Some(pb::bus_reply::Result::Error(pb::BusError {
            code: s.code() as i32,
            message: s.message().to_string(),
            details: s.details().to_vec(),
        })),
    }
}

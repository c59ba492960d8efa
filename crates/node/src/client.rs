//! The requester's side of the bus's commands: [`BusCommands`] sends a `lienthong.v1.BusCommand`
//! to the engine node that owns it (`lienthong.cmd.<partition>`, routed as `docs/nats.md` says)
//! and decodes the `BusReply`. It is the gateway role's [`CommandSink`] and the transport of
//! `lienthong agent --nats`.
//!
//! A command that got no answer (no engine serves its partition yet, a timeout, a broken
//! connection) is sent again, up to [`SEND_TRIES_MAX`] times with a doubling pause: every command
//! carries an idempotency key, so the engine executes it once however often it arrives and
//! answers a repeat with the first answer. What is still unanswered after that is UNAVAILABLE, and
//! the caller may retry with the same key.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lienthong_bus::{Bus, Partition, PartitionCount, partition_of, partition_of_key};
use lienthong_gateway::backend::{BoxFuture, CommandSink};
use lienthong_gateway::status::invalid;
use lienthong_proto::v1 as pb;
use lienthong_proto::v1::bus_command::Command as C;
use prost::Message;
use tonic::Status;

/// How long one send waits for the engine's reply.
pub const REPLY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Sends of one command before it is UNAVAILABLE.
pub const SEND_TRIES_MAX: u32 = 5;
/// First pause between two sends; it doubles up to [`RESEND_PAUSE_MAX`].
pub const RESEND_PAUSE_MIN: Duration = Duration::from_millis(50);
/// Longest pause between two sends.
pub const RESEND_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Commands over the bus to the engines (see the module docs).
#[derive(Clone)]
pub struct BusCommands {
    /// The bus.
    bus: Arc<dyn Bus>,
    /// The deployment's partition count (every process must agree on it).
    count: PartitionCount,
    /// How long one send waits.
    timeout: Duration,
}

impl BusCommands {
    /// Commands over `bus`, routed among `count` partitions, each send waiting up to `timeout`.
    pub fn new(bus: Arc<dyn Bus>, count: PartitionCount, timeout: Duration) -> Self {
        BusCommands {
            bus,
            count,
            timeout,
        }
    }

    /// The partition `command` goes to: its dossier's (which it must name by id), or for a
    /// submission its actor's agency and idempotency key.
    pub fn route(&self, command: &pb::BusCommand) -> Result<Partition, Status> {
        let dossier = match &command.command {
            None => {
                return Err(invalid(
                    "command",
                    "is required: one of the BusCommand commands",
                ));
            }
            Some(C::Submit(r)) => {
                let agency = command.actor.as_ref().map_or("", |a| a.agency.as_str());
                return Ok(partition_of_key(agency, &r.idempotency_key, self.count));
            }
            Some(C::CompleteStep(r)) => &r.dossier,
            Some(C::RejectStep(r)) => &r.dossier,
            Some(C::RequestSupplement(r)) => &r.dossier,
            Some(C::ProvideSupplement(r)) => &r.dossier,
            Some(C::Refuse(r)) => &r.dossier,
            Some(C::Stop(r)) => &r.dossier,
            Some(C::IssueApology(r)) => &r.dossier,
            Some(C::ReturnResult(r)) => &r.dossier,
            Some(C::Withdraw(r)) => &r.dossier,
            Some(C::Get(r)) => &r.dossier,
        };
        let id: uuid::Uuid = dossier.parse().map_err(|_| {
            invalid(
                "dossier",
                "must be the dossier's id (a UUID) on the bus, which routes by id",
            )
        })?;
        Ok(partition_of(id, self.count))
    }

    /// Sends `command` and waits for its reply, resending what got no answer.
    pub async fn call(&self, command: &pb::BusCommand) -> Result<pb::BusReply, Status> {
        let partition = self.route(command)?;
        let payload = Bytes::from(command.encode_to_vec());
        let mut pause = RESEND_PAUSE_MIN;
        let mut last = None;
        for attempt in 1..=SEND_TRIES_MAX {
            match self
                .bus
                .request(partition, payload.clone(), self.timeout)
                .await
            {
                Ok(reply) => {
                    return pb::BusReply::decode(reply.as_ref()).map_err(|e| {
                        Status::internal(format!(
                            "the engine of partition {partition} answered with something that is not a lienthong.v1.BusReply: {e}"
                        ))
                    });
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(%partition, attempt, error = %e, "no answer to a command; sending it again");
                    last = Some(e);
                    if attempt < SEND_TRIES_MAX {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RESEND_PAUSE_MAX);
                    }
                }
                Err(e @ lienthong_bus::Error::PayloadTooLarge { .. }) => {
                    return Err(Status::resource_exhausted(e.to_string()));
                }
                Err(e) => return Err(Status::unavailable(e.to_string())),
            }
        }
        Err(Status::unavailable(format!(
            "{} (after {SEND_TRIES_MAX} tries; retry with the same idempotency key)",
            last.map_or_else(|| "no answer".to_string(), |e| e.to_string())
        )))
    }

    /// Sends `command` and returns the engine's answer to a mutating command (its errors as the
    /// statuses a gRPC call would get).
    pub async fn execute(&self, command: &pb::BusCommand) -> Result<pb::CommandResponse, Status> {
        lienthong_gateway::status::command_response(self.call(command).await?)
    }
}

impl CommandSink for BusCommands {
    fn send(&self, command: pb::BusCommand) -> BoxFuture<'_, Result<pb::BusReply, Status>> {
        Box::pin(async move { self.call(&command).await })
    }
}

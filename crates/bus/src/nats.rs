//! The NATS bus: async-nats with JetStream, for the distributed mode.
//!
//! # Connecting
//! [`NatsBus::connect`] reads the server's version from its INFO and refuses a nats-server older
//! than 2.10 ([`check_server_version`]; 2.9 silently ignores settings this bus relies on), and a
//! server without JetStream. It then creates or updates the three streams:
//!
//! | stream            | subjects           | retention  | limits (from [`Config`])                                         |
//! |-------------------|--------------------|------------|-------------------------------------------------------------------|
//! | `LIENTHONG_FEED`  | `lienthong.feed.>` | limits     | `feed_messages_max`, `feed_bytes_max`, discard old; direct get on |
//! | `LIENTHONG_TASKS` | `lienthong.task.>` | work queue | `tasks_per_agency_max` per subject, discard new per subject       |
//! | `LIENTHONG_DEAD`  | `lienthong.dead.>` | limits     | `dead_letters_max`, discard new                                   |
//!
//! All three are file-backed, have `replicas` replicas and a `duplicate_window` dedup window.
//!
//! # Commands
//! Core NATS request/reply on `lienthong.cmd.<partition>`; servers subscribe in the queue group
//! `lienthong-engine`. No JetStream: a command is answered by a live engine or times out.
//!
//! # Feed
//! Published with `Nats-Msg-Id: <dossier>/<seq>`, `Lienthong-Dossier: <uuid>` and
//! `Lienthong-Seq: <seq>`. [`Feed::read`] uses the stream's message-get API (no consumer is
//! created); [`Feed::subscribe`] an ordered, ephemeral pull consumer starting at the position.
//!
//! # Tasks
//! Published to `lienthong.task.<agency>` with `Nats-Msg-Id: <task id>` and
//! `Lienthong-Task-Id: <task id>`. Each agency has the durable pull consumer `agency-<agency>`
//! filtered on its subject: explicit ack, `max_ack_pending = task_unacked_max`,
//! `backoff = task_redelivery_backoff` (and `ack_wait` its first element), `max_deliver = -1`.
//! The maximum number of deliveries is enforced by the bus client, not the server, so a task is
//! never left undeliverable in the queue: when a client receives delivery number
//! `task_deliveries_max + 1` of a task, it publishes the dead-letter record (to
//! `lienthong.dead.<agency>`, `Nats-Msg-Id: dead/<task id>`, headers `Lienthong-Task-Id`,
//! `Lienthong-Agency`, `Lienthong-Deliveries`, the task's payload unchanged), waits for the
//! stream's acknowledgement, logs a `warn`, and only then acks the task. A crash in between
//! redelivers the task and the dead-letter record is deduplicated. An agency system written
//! against another client library should do the same (else its poisoned tasks are retried at
//! the last backoff forever: visible, never lost).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use tokio_stream::{Stream, StreamExt};
use uuid::Uuid;

use crate::config::{Config, HEADERS_BYTES_MAX};
use crate::contract::{self, Agency, Partition, TaskId};
use crate::message::{
    Acker, CommandInbox, DeadLetter, Delivery, FeedEvent, FeedRecord, FeedSubscription, InboxInner,
    IncomingCommand, Published, Reply, ReplyInner, SubscriptionInner, Task, TaskCounts,
};
use crate::{
    BoxFuture, Commands, Error, Feed, Lease, Leases, PULL_BATCH_MAX, Tasks, check_payload,
};

/// The oldest nats-server the bus accepts: (major, minor).
pub const SERVER_VERSION_MIN: (u64, u64) = (2, 10);

/// After the first task of a pull, how long the pull waits for more to fill its batch.
pub const PULL_TOP_UP_WAIT: Duration = PULL_EXPIRES_MIN;

/// The shortest expiry of a pull request.
pub const PULL_EXPIRES_MIN: Duration = Duration::from_millis(10);

/// How long a JetStream API call may take before the bus reports a fault.
pub const JETSTREAM_API_TIMEOUT: Duration = Duration::from_secs(10);

/// The NATS bus; cheap to clone (all clones share one connection).
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connection (reconnects by itself).
    client: async_nats::Client,
    /// JetStream on that connection.
    js: jetstream::Context,
    /// Limits and timings, validated.
    config: Config,
    /// The version the server announced at connect.
    server_version: String,
    /// The feed stream.
    feed: stream::Stream,
    /// The task stream.
    tasks: stream::Stream,
    /// The dead-letter stream.
    dead: stream::Stream,
    /// The partition leases' key-value bucket, opened on the first lease operation: only engine
    /// nodes use leases, so only they create the bucket or depend on its time to live.
    leases: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// Each agency's durable consumer, created (or updated) on first use by this process.
    consumers: tokio::sync::Mutex<HashMap<Agency, PullConsumer>>,
}

/// Parses `2.10.3`, `v2.9.10` or `2.11.0-RC.1` into (major, minor, patch).
pub fn parse_server_version(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    Some((major, minor, patch))
}

/// Refuses a server older than [`SERVER_VERSION_MIN`] (or whose version cannot be read).
pub fn check_server_version(version: &str) -> Result<(), Error> {
    match parse_server_version(version) {
        Some((major, minor, _)) if (major, minor) >= SERVER_VERSION_MIN => Ok(()),
        _ => Err(Error::ServerTooOld {
            found: if version.is_empty() {
                "(no version announced)".into()
            } else {
                version.to_owned()
            },
        }),
    }
}

/// The user and password (or token: a user without a password) written into a NATS URL.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    /// The user, or the token.
    user: String,
    /// The password, if the URL has one.
    password: Option<String>,
}

/// A NATS server address (`nats://user:pass@host:port`) without its credentials, and them
/// (percent-decoded).
fn without_credentials(address: &str) -> (String, Option<Credentials>) {
    let (scheme, rest) = match address.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, address),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (address.to_string(), None);
    };
    let userinfo = &rest[..at];
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(percent_decoded(p))),
        None => (userinfo, None),
    };
    let host = &rest[at + 1..];
    let stripped = match scheme {
        Some(s) => format!("{s}://{host}"),
        None => host.to_string(),
    };
    let credentials = Credentials {
        user: percent_decoded(user),
        password,
    };
    (stripped, Some(credentials))
}

/// `text` with its `%XX` escapes decoded (an escape that is not one stays as it is).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` (one NATS server address, or several separated by commas) with any user and password
/// replaced by `***`, for messages and logs: a password in the URL must not reach them.
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let (scheme, rest) = match u.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, u),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let shown = match rest[..authority_end].rfind('@') {
                Some(at) => format!("***@{}", &rest[at + 1..]),
                None => rest.to_string(),
            };
            match scheme {
                Some(s) => format!("{s}://{shown}"),
                None => shown,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl NatsBus {
    /// Connects to `url` (e.g. `nats://127.0.0.1:4222`, or several servers of a cluster
    /// separated by commas), checks the server, and creates or updates the streams.
    pub async fn connect(url: &str, config: Config) -> Result<Self, Error> {
        config.validate()?;
        // Credentials leave the addresses before the client sees them: the client logs its
        // server addresses (password included) at debug level, and ignores their credentials.
        let mut servers = Vec::new();
        let mut credentials: Option<Credentials> = None;
        for u in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let (address, found) = without_credentials(u);
            if let Some(c) = found {
                if credentials.as_ref().is_some_and(|known| known != &c) {
                    return Err(Error::Connect {
                        url: redacted(url),
                        reason: "the servers carry different credentials: give every server of the list the same user and password (or token)".into(),
                    });
                }
                credentials = Some(c);
            }
            servers.push(address.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::Connect {
                    url: redacted(u),
                    reason: format!("not a NATS server address: {e}"),
                }
            })?);
        }
        let shown = redacted(url);
        let options = async_nats::ConnectOptions::new().name("lienthong");
        let options = match credentials {
            Some(Credentials {
                user,
                password: Some(password),
            }) => options.user_and_password(user, password),
            Some(Credentials {
                user: token,
                password: None,
            }) => options.token(token),
            None => options,
        };
        let client = options.connect(servers).await.map_err(|e| Error::Connect {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::with_client(client, &shown, config).await
    }

    /// Like [`NatsBus::connect`] on a connection made elsewhere (credentials, TLS ...); `url` is
    /// only used in messages and logs (pass it through [`redacted`] if it may hold a password).
    pub async fn with_client(
        client: async_nats::Client,
        url: &str,
        config: Config,
    ) -> Result<Self, Error> {
        config.validate()?;
        let info = client.server_info();
        check_server_version(&info.version)?;
        if !info.jetstream {
            return Err(Error::JetStreamDisabled {
                url: url.to_owned(),
                version: info.version,
            });
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(JETSTREAM_API_TIMEOUT)
            .build(client.clone());
        let feed = ensure_stream(&js, feed_stream_config(&config)).await?;
        let tasks = ensure_stream(&js, task_stream_config(&config)).await?;
        let dead = ensure_stream(&js, dead_stream_config(&config)).await?;
        tracing::info!(
            url,
            server_version = %info.version,
            server = %info.server_name,
            "connected to NATS; streams ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                js,
                config,
                server_version: info.version,
                feed,
                tasks,
                dead,
                leases: tokio::sync::OnceCell::new(),
                consumers: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The lease bucket: created with `lease_ttl` as its `max_age` if missing; an existing
    /// bucket with another time to live is refused (every engine node must use the same, or one
    /// node's renewals would come too late for the bucket's expiry).
    async fn lease_bucket(&self) -> Result<&jetstream::kv::Store, Error> {
        let js = &self.inner.js;
        let ttl = self.inner.config.lease_ttl;
        self.inner
            .leases
            .get_or_try_init(|| async {
                let stream = format!("KV_{}", contract::LEASE_BUCKET);
                if let Ok(mut existing) = js.get_stream(&stream).await {
                    let info = existing
                        .info()
                        .await
                        .map_err(|e| Error::nats("read the lease bucket", e))?;
                    if info.config.max_age != ttl {
                        return Err(Error::Config(format!(
                            "the lease bucket {} on this NATS has a time to live of {} ms, this \
                             process {} ms: give every engine node the same --lease-ttl (or \
                             delete the bucket while no engine node runs)",
                            contract::LEASE_BUCKET,
                            info.config.max_age.as_millis(),
                            ttl.as_millis()
                        )));
                    }
                }
                js.create_or_update_key_value(jetstream::kv::Config {
                    bucket: contract::LEASE_BUCKET.to_owned(),
                    description: "lienthong: which engine node serves which partition".to_owned(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: self.inner.config.replicas,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::Nats {
                    op: "create or update the lease bucket",
                    reason: format!("{}: {e}", contract::LEASE_BUCKET),
                })
            })
            .await
    }

    /// The version the server announced at connect.
    pub fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    /// The underlying connection, e.g. to flush or to close it.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, Error> {
    let name = config.name.clone();
    js.create_or_update_stream(config).await.map_err(|e| {
        let text = e.to_string();
        // JetStream reserves each stream's byte limit against the server's max_file_store
        // (by default 75% of the disk's free space).
        let hint = if text.contains("insufficient storage") {
            " (hint: the server's JetStream `max_file_store` is below this stream's byte \
                 limit: raise it in the server's config, see deploy/nats/single.conf, or lower the \
                 bus's `feed_bytes_max`)"
        } else {
            ""
        };
        Error::Nats {
            op: "create or update stream",
            reason: format!("{name}: {text}{hint}"),
        }
    })?;
    js.get_stream(&name)
        .await
        .map_err(|e| Error::nats("get stream", e))
}

/// Stream limits are signed on the wire; [`Config::validate`] has checked they fit.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn feed_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: contract::FEED_STREAM.into(),
        description: Some("lienthong event feed: every dossier's events, in order".into()),
        subjects: vec![contract::feed_subjects()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_messages: signed(config.feed_messages_max),
        max_bytes: signed(config.feed_bytes_max),
        max_message_size: i32::try_from(config.payload_bytes_max + HEADERS_BYTES_MAX)
            .unwrap_or(i32::MAX),
        discard: DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

fn task_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: contract::TASK_STREAM.into(),
        description: Some("lienthong agency tasks: one work queue per agency subject".into()),
        subjects: vec![contract::task_subjects()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_messages_per_subject: signed(config.tasks_per_agency_max),
        max_message_size: i32::try_from(config.payload_bytes_max + HEADERS_BYTES_MAX)
            .unwrap_or(i32::MAX),
        discard: DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Default::default()
    }
}

fn dead_stream_config(config: &Config) -> stream::Config {
    stream::Config {
        name: contract::DEAD_STREAM.into(),
        description: Some("lienthong dead letters: tasks an agency never acknowledged".into()),
        subjects: vec![contract::dead_subjects()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_messages: signed(config.dead_letters_max),
        discard: DiscardPolicy::New,
        ..Default::default()
    }
}

/// The durable consumer of `agency` (see the module docs).
fn agency_consumer_config(config: &Config, agency: &Agency) -> pull::Config {
    let name = contract::agency_consumer(agency);
    pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("lienthong tasks of agency {agency}")),
        filter_subject: contract::task_subject(agency),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait_of_delivery(1),
        backoff: config.task_redelivery_backoff.clone(),
        max_deliver: -1,
        max_ack_pending: i64::from(config.task_unacked_max),
        num_replicas: config.replicas,
        ..Default::default()
    }
}

fn header(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    headers
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_owned())
}

fn feed_record(
    subject: &str,
    position: u64,
    headers: Option<&HeaderMap>,
    payload: Bytes,
) -> Result<FeedRecord, Error> {
    let malformed = |why: &str| Error::Malformed {
        subject: subject.to_owned(),
        why: why.to_owned(),
    };
    let dossier = header(headers, contract::HEADER_DOSSIER)
        .and_then(|d| Uuid::parse_str(&d).ok())
        .ok_or_else(|| malformed("no valid Lienthong-Dossier header"))?;
    let seq = header(headers, contract::HEADER_SEQ)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| malformed("no valid Lienthong-Seq header"))?;
    Ok(FeedRecord {
        position,
        dossier,
        seq,
        payload,
    })
}

/// The requests of one served partition.
pub(crate) struct CommandSubscription {
    subscriber: async_nats::Subscriber,
    client: async_nats::Client,
    partition: Partition,
    payload_bytes_max: usize,
}

impl CommandSubscription {
    pub(crate) async fn next(&mut self) -> Option<IncomingCommand> {
        loop {
            let message = self.subscriber.next().await?;
            let Some(reply) = message.reply else {
                tracing::warn!(
                    subject = %message.subject,
                    "command without a reply subject ignored: send commands as requests"
                );
                continue;
            };
            return Some(IncomingCommand {
                partition: self.partition,
                payload: message.payload,
                reply: Reply {
                    inner: ReplyInner::Nats {
                        client: self.client.clone(),
                        subject: reply,
                    },
                    payload_bytes_max: self.payload_bytes_max,
                },
            });
        }
    }
}

/// The records of a feed subscription.
pub(crate) type FeedStream = Pin<Box<dyn Stream<Item = Result<FeedRecord, Error>> + Send>>;

impl Inner {
    async fn consumer(&self, agency: &Agency) -> Result<PullConsumer, Error> {
        let mut consumers = self.consumers.lock().await;
        if let Some(c) = consumers.get(agency) {
            return Ok(c.clone());
        }
        let consumer = self
            .tasks
            .create_consumer(agency_consumer_config(&self.config, agency))
            .await
            .map_err(|e| Error::Nats {
                op: "create agency consumer",
                reason: format!("{}: {e}", contract::agency_consumer(agency)),
            })?;
        consumers.insert(agency.clone(), consumer.clone());
        Ok(consumer)
    }

    /// One pull request for up to `max` tasks that the server ends after `expires` at the
    /// latest, read to its end: the server never sends a task to a request nobody reads, so no
    /// delivery is lost to a timed-out ack wait.
    async fn fetch(
        &self,
        consumer: &PullConsumer,
        max: usize,
        expires: Duration,
    ) -> Result<Vec<jetstream::Message>, Error> {
        let batch = consumer
            .batch()
            .max_messages(max)
            .expires(expires.max(PULL_EXPIRES_MIN))
            .messages()
            .await
            .map_err(|e| Error::nats("task pull", e))?;
        Ok(drain(batch).await)
    }

    /// Turns a received task message into a delivery, or dead-letters it (`None`).
    async fn deliver_or_dead_letter(
        &self,
        agency: &Agency,
        message: jetstream::Message,
    ) -> Result<Option<Delivery>, Error> {
        let (position, delivered) = {
            let info = message
                .info()
                .map_err(|e| Error::nats("task metadata", e))?;
            (
                info.stream_sequence,
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
            )
        };
        let task = header(message.headers.as_ref(), contract::HEADER_TASK_ID)
            .and_then(|id| TaskId::new(&id).ok());
        let (message, acker) = message.split();
        let Some(task) = task else {
            // Not a lienthong task: record it as dead at once rather than loop on it.
            tracing::warn!(
                agency = %agency,
                position,
                "task without a valid Lienthong-Task-Id header"
            );
            let id = TaskId::new(&format!("malformed/{position}"))?;
            self.dead_letter(agency, &id, delivered, message.payload, &acker)
                .await?;
            return Ok(None);
        };
        if delivered > self.config.task_deliveries_max {
            let deliveries = delivered - 1;
            self.dead_letter(agency, &task, deliveries, message.payload, &acker)
                .await?;
            return Ok(None);
        }
        Ok(Some(Delivery {
            agency: agency.clone(),
            task,
            payload: message.payload,
            delivered,
            position,
            acker: Acker::Nats(Box::new(acker)),
        }))
    }

    /// Records the dead letter (deduplicated by task id), then removes the task.
    async fn dead_letter(
        &self,
        agency: &Agency,
        task: &TaskId,
        deliveries: u32,
        payload: Bytes,
        acker: &jetstream::message::Acker,
    ) -> Result<(), Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            contract::HEADER_MSG_ID,
            contract::dead_msg_id(task).as_str(),
        );
        headers.insert(contract::HEADER_TASK_ID, task.as_str());
        headers.insert(contract::HEADER_AGENCY, agency.as_str());
        headers.insert(contract::HEADER_DELIVERIES, deliveries.to_string().as_str());
        let recorded = async {
            self.js
                .publish_with_headers(contract::dead_subject(agency), headers, payload)
                .await?
                .await
        }
        .await;
        if let Err(e) = recorded {
            tracing::error!(
                agency = %agency,
                task = %task,
                error = %e,
                "could not record a dead letter: the task stays queued and is retried; check \
                 the LIENTHONG_DEAD stream (full? dead_letters_max)"
            );
            return Err(Error::nats("dead-letter publish", e));
        }
        tracing::warn!(
            agency = %agency,
            task = %task,
            deliveries,
            subject = %contract::dead_subject(agency),
            "task dead-lettered: the agency never acknowledged it; it is kept on the dead-letter \
             subject for an operator to resolve"
        );
        acker
            .double_ack()
            .await
            .map_err(|e| Error::nats("ack of a dead-lettered task", e))
    }
}

/// Collects a batch to its end. A status that ends a pull early (e.g. max ack pending reached)
/// just ends the batch.
async fn drain<S>(mut batch: S) -> Vec<jetstream::Message>
where
    S: Stream<Item = Result<jetstream::Message, async_nats::Error>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(item) = batch.next().await {
        match item {
            Ok(m) => out.push(m),
            Err(e) => {
                tracing::debug!(error = %e, "pull ended by the server");
                break;
            }
        }
    }
    out
}

impl Commands for NatsBus {
    fn serve(&self, partition: Partition) -> BoxFuture<'_, Result<CommandInbox, Error>> {
        Box::pin(async move {
            let subscriber = self
                .inner
                .client
                .queue_subscribe(
                    contract::command_subject(partition),
                    contract::COMMAND_QUEUE_GROUP.into(),
                )
                .await
                .map_err(|e| Error::nats("command subscribe", e))?;
            // Make sure the server has the subscription before anyone is told we serve.
            self.inner
                .client
                .flush()
                .await
                .map_err(|e| Error::nats("flush", e))?;
            Ok(CommandInbox {
                inner: InboxInner::Nats(CommandSubscription {
                    subscriber,
                    client: self.inner.client.clone(),
                    partition,
                    payload_bytes_max: self.inner.config.payload_bytes_max,
                }),
            })
        })
    }

    fn request(
        &self,
        partition: Partition,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, Error>> {
        Box::pin(async move {
            check_payload(&payload, &self.inner.config)?;
            let request = async_nats::Request::new()
                .payload(payload)
                .timeout(Some(timeout));
            match self
                .inner
                .client
                .send_request(contract::command_subject(partition), request)
                .await
            {
                Ok(message) => Ok(message.payload),
                Err(e) => Err(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => Error::NoResponders { partition },
                    async_nats::RequestErrorKind::TimedOut => Error::Timeout {
                        partition,
                        timeout_ms: timeout.as_millis() as u64,
                    },
                    _ => Error::nats("command request", e),
                }),
            }
        })
    }
}

impl Feed for NatsBus {
    fn publish_event(&self, event: FeedEvent) -> BoxFuture<'_, Result<Published, Error>> {
        Box::pin(async move {
            check_payload(&event.payload, &self.inner.config)?;
            let mut headers = HeaderMap::new();
            headers.insert(
                contract::HEADER_MSG_ID,
                contract::feed_msg_id(event.dossier, event.seq).as_str(),
            );
            headers.insert(
                contract::HEADER_DOSSIER,
                event.dossier.hyphenated().to_string().as_str(),
            );
            headers.insert(contract::HEADER_SEQ, event.seq.to_string().as_str());
            let ack = self
                .inner
                .js
                .publish_with_headers(
                    contract::feed_subject(event.dossier),
                    headers,
                    event.payload,
                )
                .await
                .map_err(|e| Error::nats("feed publish", e))?
                .await
                .map_err(|e| Error::nats("feed publish ack", e))?;
            Ok(Published {
                position: ack.sequence,
                duplicate: ack.duplicate,
            })
        })
    }

    fn read(&self, from: u64, max: usize) -> BoxFuture<'_, Result<Vec<FeedRecord>, Error>> {
        Box::pin(async move {
            let max = max.min(PULL_BATCH_MAX);
            let mut out = Vec::new();
            let mut next = from.max(1);
            while out.len() < max {
                let got = self
                    .inner
                    .feed
                    .raw_message_builder()
                    .sequence(next)
                    .next_by_subject(contract::feed_subjects())
                    .send()
                    .await;
                let message = match got {
                    Ok(m) => m,
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                    Err(e) => return Err(Error::nats("feed read", e)),
                };
                next = message.sequence + 1;
                out.push(feed_record(
                    &message.subject,
                    message.sequence,
                    Some(&message.headers),
                    message.payload,
                )?);
            }
            Ok(out)
        })
    }

    fn subscribe(&self, from: u64) -> BoxFuture<'_, Result<FeedSubscription, Error>> {
        Box::pin(async move {
            let consumer = self
                .inner
                .feed
                .create_consumer(pull::OrderedConfig {
                    filter_subject: contract::feed_subjects(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: from.max(1),
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::nats("feed subscribe", e))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| Error::nats("feed subscribe", e))?;
            let records = messages.map(|m| {
                let m = m.map_err(|e| Error::nats("feed subscription", e))?;
                let position = m
                    .info()
                    .map_err(|e| Error::nats("feed metadata", e))?
                    .stream_sequence;
                feed_record(&m.subject, position, m.headers.as_ref(), m.payload.clone())
            });
            let stream: FeedStream = Box::pin(records);
            Ok(FeedSubscription {
                inner: SubscriptionInner::Nats(stream),
            })
        })
    }

    fn last(&self) -> BoxFuture<'_, Result<Option<FeedRecord>, Error>> {
        Box::pin(async move {
            let info = self
                .inner
                .feed
                .get_info()
                .await
                .map_err(|e| Error::nats("feed info", e))?;
            let last = info.state.last_sequence;
            if info.state.messages == 0 || last == 0 {
                return Ok(None);
            }
            let m = self
                .inner
                .feed
                .get_raw_message(last)
                .await
                .map_err(|e| Error::nats("feed last", e))?;
            feed_record(&m.subject, m.sequence, Some(&m.headers), m.payload).map(Some)
        })
    }
}

impl Tasks for NatsBus {
    fn publish_task(&self, task: Task) -> BoxFuture<'_, Result<Published, Error>> {
        Box::pin(async move {
            check_payload(&task.payload, &self.inner.config)?;
            let mut headers = HeaderMap::new();
            headers.insert(contract::HEADER_MSG_ID, task.id.as_str());
            headers.insert(contract::HEADER_TASK_ID, task.id.as_str());
            let published = async {
                self.inner
                    .js
                    .publish_with_headers(
                        contract::task_subject(&task.agency),
                        headers,
                        task.payload,
                    )
                    .await?
                    .await
            }
            .await;
            match published {
                Ok(ack) => Ok(Published {
                    position: ack.sequence,
                    duplicate: ack.duplicate,
                }),
                // nats-server: "maximum messages per subject exceeded" (discard new per subject).
                Err(e) if e.to_string().contains("maximum messages per subject") => {
                    Err(Error::QueueFull {
                        agency: task.agency,
                        max: self.inner.config.tasks_per_agency_max,
                    })
                }
                Err(e) => Err(Error::nats("task publish", e)),
            }
        })
    }

    fn pull(
        &self,
        agency: &Agency,
        max: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let max = max.min(PULL_BATCH_MAX);
            if max == 0 {
                return Ok(Vec::new());
            }
            let consumer = self.inner.consumer(&agency).await?;
            let give_up = tokio::time::Instant::now() + wait;
            loop {
                // First one request for one task, held by the server until a task can be
                // delivered (a task is there and the agency is below max_ack_pending) or the
                // wait is over; then a short one for whatever else is ready. The top-up's wait
                // is the shortest the server keeps a request ([`PULL_EXPIRES_MIN`]): every task
                // just pulled waits that long, so each hand-off of a dossier between agencies
                // costs it (it was 50 ms). A no-wait request would not wait at all, but the
                // server then let more than max_ack_pending out and gave one task to two
                // workers of an agency (the conformance suite caught both).
                let left = give_up.saturating_duration_since(tokio::time::Instant::now());
                let mut messages = self.inner.fetch(&consumer, 1, left).await?;
                if messages.is_empty() {
                    return Ok(Vec::new());
                }
                // A pull for more than max_ack_pending is refused outright (409) by the server,
                // so the top-up asks for no more than that bound.
                let top_up = (max - 1).min(self.inner.config.task_unacked_max as usize);
                if top_up > 0 {
                    messages.extend(
                        self.inner
                            .fetch(&consumer, top_up, PULL_TOP_UP_WAIT)
                            .await?,
                    );
                }
                let mut out = Vec::new();
                for m in messages {
                    match self.inner.deliver_or_dead_letter(&agency, m).await {
                        Ok(Some(d)) => out.push(d),
                        Ok(None) => {}
                        // The task stays unacknowledged and comes back: keep the others.
                        Err(e) => tracing::error!(
                            agency = %agency,
                            error = %e,
                            "could not deliver or dead-letter a task; it will be redelivered"
                        ),
                    }
                }
                if !out.is_empty() || tokio::time::Instant::now() >= give_up {
                    return Ok(out);
                }
            }
        })
    }

    fn task_counts(&self, agency: &Agency) -> BoxFuture<'_, Result<TaskCounts, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let consumer = self.inner.consumer(&agency).await?;
            let info = consumer
                .get_info()
                .await
                .map_err(|e| Error::nats("consumer info", e))?;
            Ok(TaskCounts {
                waiting: info.num_pending,
                unacked: info.num_ack_pending as u64,
            })
        })
    }

    fn dead_letters(
        &self,
        agency: &Agency,
        from: u64,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<DeadLetter>, Error>> {
        let agency = agency.clone();
        Box::pin(async move {
            let max = max.min(PULL_BATCH_MAX);
            let subject = contract::dead_subject(&agency);
            let mut out = Vec::new();
            let mut next = from.max(1);
            while out.len() < max {
                let got = self
                    .inner
                    .dead
                    .raw_message_builder()
                    .sequence(next)
                    .next_by_subject(subject.clone())
                    .send()
                    .await;
                let m = match got {
                    Ok(m) => m,
                    Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                    Err(e) => return Err(Error::nats("dead-letter read", e)),
                };
                next = m.sequence + 1;
                let malformed = |why: &str| Error::Malformed {
                    subject: m.subject.to_string(),
                    why: why.to_owned(),
                };
                let task = header(Some(&m.headers), contract::HEADER_TASK_ID)
                    .and_then(|id| TaskId::new(&id).ok())
                    .ok_or_else(|| malformed("no valid Lienthong-Task-Id header"))?;
                let deliveries = header(Some(&m.headers), contract::HEADER_DELIVERIES)
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| malformed("no valid Lienthong-Deliveries header"))?;
                out.push(DeadLetter {
                    position: m.sequence,
                    agency: agency.clone(),
                    task,
                    deliveries,
                    payload: m.payload,
                });
            }
            Ok(out)
        })
    }
}

impl Leases for NatsBus {
    fn acquire(&self, partition: Partition, holder: &str) -> BoxFuture<'_, Result<Lease, Error>> {
        let holder = holder.to_owned();
        Box::pin(async move {
            let kv = self.lease_bucket().await?;
            let key = contract::lease_key(partition);
            let value = Bytes::from(holder.clone());
            // Twice at most: a lease that expires between our create and our read is free.
            for _ in 0..2 {
                match kv.create(&key, value.clone()).await {
                    Ok(revision) => {
                        return Ok(Lease {
                            partition,
                            holder,
                            revision,
                        });
                    }
                    Err(e) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::nats("create a lease", e)),
                }
                let entry = kv
                    .entry(&key)
                    .await
                    .map_err(|e| Error::nats("read a lease", e))?;
                match entry {
                    Some(e) if e.operation == jetstream::kv::Operation::Put => {
                        if e.value != value {
                            return Err(Error::LeaseHeld {
                                partition,
                                holder: String::from_utf8_lossy(&e.value).into_owned(),
                            });
                        }
                        // Ours already (a restarted node with the same id): take it back.
                        let revision = kv
                            .update(&key, value.clone(), e.revision)
                            .await
                            .map_err(|e| Error::nats("take back a lease", e))?;
                        return Ok(Lease {
                            partition,
                            holder,
                            revision,
                        });
                    }
                    _ => {}
                }
            }
            Err(Error::Nats {
                op: "acquire a lease",
                reason: format!("partition {partition}: the lease changed hands while it was read"),
            })
        })
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<Lease, Error>> {
        let lease = lease.clone();
        Box::pin(async move {
            let kv = self.lease_bucket().await?;
            let key = contract::lease_key(lease.partition);
            match kv
                .update(&key, Bytes::from(lease.holder.clone()), lease.revision)
                .await
            {
                Ok(revision) => Ok(Lease { revision, ..lease }),
                Err(e) if e.kind() == jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                    let now = kv
                        .entry(&key)
                        .await
                        .map_err(|e| Error::nats("read a lease", e))?;
                    // Still ours at a later revision: an earlier renewal landed after its caller
                    // stopped waiting for it. Adopt it.
                    if let Some(e) = &now
                        && e.operation == jetstream::kv::Operation::Put
                        && e.value.as_ref() == lease.holder.as_bytes()
                    {
                        let revision = kv
                            .update(&key, Bytes::from(lease.holder.clone()), e.revision)
                            .await
                            .map_err(|e| Error::nats("renew a lease", e))?;
                        return Ok(Lease { revision, ..lease });
                    }
                    let why = match now {
                        Some(e) if e.operation == jetstream::kv::Operation::Put => {
                            format!("it is now held by `{}`", String::from_utf8_lossy(&e.value))
                        }
                        Some(_) => "it was released".to_owned(),
                        None => "it expired before it was renewed".to_owned(),
                    };
                    Err(Error::LeaseLost {
                        partition: lease.partition,
                        why,
                    })
                }
                Err(e) => Err(Error::nats("renew a lease", e)),
            }
        })
    }

    fn release(&self, lease: Lease) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let kv = self.lease_bucket().await?;
            let key = contract::lease_key(lease.partition);
            match kv.delete_expect_revision(&key, Some(lease.revision)).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Refused because the lease is no longer this one: nothing to give up.
                    let now = kv
                        .entry(&key)
                        .await
                        .map_err(|e| Error::nats("read a lease", e))?;
                    if now.is_some_and(|n| n.revision == lease.revision) {
                        Err(Error::nats("release a lease", e))
                    } else {
                        Ok(())
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redacted("nats://user:s3cret@10.0.0.1:4222,tls://tok@nats.example:4222/x"),
            "nats://***@10.0.0.1:4222,tls://***@nats.example:4222/x"
        );
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("u:p@host:4222"), "***@host:4222");
    }

    #[test]
    fn credentials_leave_the_address() {
        let (address, c) = without_credentials("nats://ops:p%40ss@10.0.0.1:4222");
        assert_eq!(address, "nats://10.0.0.1:4222");
        let c = c.expect("credentials");
        assert_eq!(
            (c.user.as_str(), c.password.as_deref()),
            ("ops", Some("p@ss"))
        );
        let (address, c) = without_credentials("tok123@host");
        assert_eq!(address, "host");
        let c = c.expect("token");
        assert_eq!((c.user.as_str(), c.password), ("tok123", None));
        assert!(without_credentials("nats://127.0.0.1:4222").1.is_none());
    }

    #[test]
    fn versions_are_parsed() {
        assert_eq!(parse_server_version("2.10.3"), Some((2, 10, 3)));
        assert_eq!(parse_server_version("v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_server_version("2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(parse_server_version("2.15"), Some((2, 15, 0)));
        assert_eq!(parse_server_version("banana"), None);
    }

    #[test]
    fn old_servers_are_refused_with_the_version_and_the_fix() {
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("3.0.0").is_ok());
        let err = check_server_version("2.9.10").expect_err("2.9 is too old");
        let text = err.to_string();
        assert!(text.contains("2.9.10"), "{text}");
        assert!(text.contains("2.10"), "{text}");
        assert!(text.contains("scripts/nats-server.sh"), "{text}");
        assert!(check_server_version("").is_err());
    }
}

//! RabbitMQ: the topology of architecture §4, publishing with confirms, and consumers run under
//! a supervisor that reconnects with backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    DefaultConnectionBuilder, ExchangeKind,
};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use chrono::{DateTime, Utc};

use crate::tls::{CaFile, certificate_advice};
use crate::trace;
use weft_domain::messages::{Message, NodeTask, encode};
use weft_domain::retry::{TIERS, tier_for};

/// Redeliveries of a task before it is dead-lettered as poison.
pub const TASK_DELIVERY_LIMIT: i64 = 5;
/// Redeliveries of a run request or result (processing is cheap and idempotent, so a
/// higher limit rides out a database outage).
pub const CONTROL_DELIVERY_LIMIT: i64 = 50;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker did not confirm the message to `{0}` in time")]
    ConfirmTimeout(String),
    #[error("broker refused the message to `{0}`")]
    Nacked(String),
    #[error("message to `{0}` was unroutable (is the topology declared?)")]
    Unroutable(String),
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}

impl QueueError {
    /// A low-cardinality name for the failure (a span's `error.type`).
    fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::ConfirmTimeout(_) => "confirm_timeout",
            Self::Nacked(_) => "nacked",
            Self::Unroutable(_) => "unroutable",
            Self::Amqp(_) => "amqp",
        }
    }
}

/// Names of exchanges and queues under one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    pub namespace: String,
}

impl Topology {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }
    /// RunRequested: gateway → scheduler.
    pub fn runs(&self) -> String {
        format!("{}.runs", self.namespace)
    }
    /// NodeTask: scheduler → workers.
    pub fn tasks(&self) -> String {
        format!("{}.tasks", self.namespace)
    }
    /// NodeResult: workers → scheduler.
    pub fn results(&self) -> String {
        format!("{}.results", self.namespace)
    }
    /// NodeResult of poll triggers' requests: workers → scheduler. Workers publish them
    /// through the default exchange (the tasks name this queue as their `reply_to`).
    pub fn polls(&self) -> String {
        format!("{}.polls", self.namespace)
    }
    /// Poison messages.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.namespace)
    }
    /// The queue that holds a delayed task for one tier.
    pub fn retry(&self, tier: &str) -> String {
        format!("{}.retry.{tier}", self.namespace)
    }

    /// Where a task goes now: straight to the workers, or into the delay tier that fits
    /// the time left before its `not_before` (the receiver hops again while time remains).
    /// Returns (exchange, routing key).
    pub fn route_task(&self, task: &NodeTask, now: DateTime<Utc>) -> (String, String) {
        let remaining = task
            .not_before
            .and_then(|at| (at - now).to_std().ok())
            .unwrap_or_default();
        match tier_for(remaining) {
            Some(tier) => (String::new(), self.retry(tier)),
            None => (self.tasks(), self.tasks()),
        }
    }

    /// Every queue of the namespace.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![
            self.runs(),
            self.tasks(),
            self.results(),
            self.polls(),
            self.dead(),
        ];
        queues.extend(TIERS.iter().map(|(tier, _)| self.retry(tier)));
        queues
    }

    /// Declares everything, idempotently and with the same arguments in every service.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for exchange in [self.runs(), self.tasks(), self.results(), self.dead()] {
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let quorum = |delivery_limit: Option<i64>| {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            if let Some(limit) = delivery_limit {
                args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
                args.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(self.dead().into()),
                );
                args.insert(
                    "x-dead-letter-routing-key".into(),
                    AMQPValue::LongString(self.dead().into()),
                );
            }
            args
        };
        let queues = [
            (self.runs(), quorum(Some(CONTROL_DELIVERY_LIMIT))),
            (self.tasks(), quorum(Some(TASK_DELIVERY_LIMIT))),
            (self.results(), quorum(Some(CONTROL_DELIVERY_LIMIT))),
            (self.dead(), quorum(None)),
        ];
        for (queue, args) in queues {
            channel
                .queue_declare(queue.as_str().into(), durable, args)
                .await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    queue.as_str().into(),
                    queue.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for (tier, length) in TIERS {
            let mut args = FieldTable::default();
            let ttl = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(self.tasks().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.tasks().into()),
            );
            channel
                .queue_declare(self.retry(tier).as_str().into(), durable, args)
                .await?;
        }
        // No exchange of its own: only the default exchange routes to it, by its name.
        channel
            .queue_declare(
                self.polls().as_str().into(),
                durable,
                quorum(Some(CONTROL_DELIVERY_LIMIT)),
            )
            .await?;
        Ok(())
    }

    /// Deletes every queue and exchange of the namespace (tests clean up with this).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for queue in self.queues() {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [self.runs(), self.tasks(), self.results(), self.dead()] {
            channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await?;
        }
        Ok(())
    }
}

/// Where the broker is: its AMQP URL, which holds its password, and for `amqps://` the CA
/// certificates its certificate may be signed by besides the system's.
#[derive(Debug, Clone)]
pub struct Broker {
    url: SecretString,
    ca: Option<CaFile>,
}

impl Broker {
    pub fn new(url: &str, ca: Option<CaFile>) -> Self {
        Self {
            url: SecretString::from(url),
            ca,
        }
    }

    fn tls(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca.as_ref().map(|ca| ca.pem().to_owned()),
        }
    }
}

/// Opens a named connection (the name shows in the broker's management UI).
pub async fn connect(broker: &Broker, name: &str) -> Result<Connection, QueueError> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    let connecting = async {
        DefaultConnectionBuilder::new()?
            .with_uri_str(broker.url.expose_secret().to_owned())
            .with_properties(properties)
            .with_tls_config(broker.tls())
            .connect()
            .await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(QueueError::Unavailable(format!(
            "{e}{}",
            certificate_advice(&e, "WEFT_AMQP_CA_FILE")
        ))),
        Err(_) => Err(QueueError::Unavailable("connection timed out".into())),
    }
}

/// Properties of every message: persistent JSON with its type.
pub fn properties<M: Message>() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_type(ShortString::from(M::TYPE))
}

struct PublisherState {
    connection: Option<Connection>,
    channel: Option<Channel>,
    last_failure: Option<Instant>,
}

/// Publishes with confirms on one connection, reconnecting lazily. While the broker is
/// down, publishes fail fast instead of piling up.
pub struct Publisher {
    broker: Broker,
    name: String,
    topology: Topology,
    state: Mutex<PublisherState>,
}

/// After a failed connection, publishes fail at once for this long.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

impl Publisher {
    pub fn new(broker: Broker, name: &str, topology: Topology) -> Arc<Self> {
        Arc::new(Self {
            broker,
            name: name.to_owned(),
            topology,
            state: Mutex::new(PublisherState {
                connection: None,
                channel: None,
                last_failure: None,
            }),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut state = self.state.lock().await;
        if let Some(channel) = &state.channel
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        if let Some(failed) = state.last_failure
            && failed.elapsed() < RECONNECT_PAUSE
        {
            return Err(QueueError::Unavailable("reconnecting".into()));
        }
        if let Some(old) = state.connection.take() {
            drop(old.close(200, "reconnecting".into()).await);
        }
        state.channel = None;
        let opened = async {
            let connection = connect(&self.broker, &self.name).await?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            self.topology.declare(&channel).await?;
            Ok::<_, QueueError>((connection, channel))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
            Ok(Ok((connection, channel))) => {
                state.connection = Some(connection);
                state.channel = Some(channel.clone());
                state.last_failure = None;
                Ok(channel)
            }
            Ok(Err(e)) => {
                state.last_failure = Some(Instant::now());
                Err(e)
            }
            Err(_) => {
                state.last_failure = Some(Instant::now());
                Err(QueueError::Unavailable("connecting timed out".into()))
            }
        }
    }

    /// Whether the broker is reachable (connects if needed).
    pub async fn is_connected(&self) -> bool {
        self.channel().await.is_ok()
    }

    /// Publishes to `exchange` and waits for the broker's confirm.
    pub async fn publish<M: Message>(
        &self,
        exchange: &str,
        routing_key: &str,
        message: &M,
    ) -> Result<(), QueueError> {
        self.publish_raw(exchange, routing_key, &encode(message), properties::<M>())
            .await
    }

    /// Publishes prepared bytes and waits for the broker's confirm, in a producer span
    /// whose trace context travels in the message headers.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let destination = exchange_name(exchange);
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {destination}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = destination,
            messaging.rabbitmq.destination.routing_key = routing_key,
            error.type = tracing::field::Empty,
        );
        let mut headers = properties.headers().clone().unwrap_or_default();
        trace::inject_amqp(&span, &mut headers);
        let properties = if headers.inner().is_empty() {
            properties
        } else {
            properties.with_headers(headers)
        };
        let result = self
            .confirmed(exchange, routing_key, payload, properties)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", e.kind());
        }
        result
    }

    async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        let channel = self.channel().await?;
        let sent = async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    payload,
                    properties,
                )
                .await?;
            confirm.await
        };
        let outcome = tokio::time::timeout(CONFIRM_TIMEOUT, sent).await;
        let result = match outcome {
            Err(_) => Err(QueueError::ConfirmTimeout(routing_key.to_owned())),
            Ok(Err(e)) => Err(QueueError::Amqp(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => {
                Err(QueueError::Unroutable(routing_key.to_owned()))
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(QueueError::Nacked(routing_key.to_owned())),
            Ok(Ok(Confirmation::NotRequested)) => Err(QueueError::Nacked(routing_key.to_owned())),
        };
        if matches!(
            result,
            Err(QueueError::Amqp(_) | QueueError::ConfirmTimeout(_))
        ) {
            // The channel may be dead: drop it so the next publish reconnects.
            self.state.lock().await.channel = None;
        }
        result
    }

    pub async fn close(&self) {
        let mut state = self.state.lock().await;
        state.channel = None;
        if let Some(connection) = state.connection.take() {
            drop(connection.close(200, "shutting down".into()).await);
        }
    }
}

/// What to do with a consumed message once it was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (including "nothing to do"): remove it.
    Ack,
    /// A passing failure (database down): give it back after a pause.
    Retry,
    /// It can never be processed: dead-letter it.
    Reject,
}

/// How often a message was delivered before, from the quorum queue's header.
pub fn delivery_count(delivery: &Delivery) -> i64 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned())
        .and_then(|value| match value {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            AMQPValue::ShortInt(n) => Some(i64::from(n)),
            AMQPValue::LongUInt(n) => Some(i64::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}

/// Where a consumer reads and how much it takes at once.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub broker: Broker,
    pub topology: Topology,
    pub queue: String,
    /// Unacknowledged messages in flight (per consumer).
    pub prefetch: u16,
    pub name: String,
    /// How long in-flight messages may finish after shutdown begins.
    pub drain_timeout: Duration,
}

const RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Consumes `spec.queue` until `shutdown` is cancelled, handling messages concurrently
/// (up to the prefetch). Reconnects with exponential backoff and jitter whenever the
/// connection or channel is lost; unacked messages are redelivered by the broker.
///
/// Each message is handled in its own span, a child of the span that published it.
pub async fn consume<H, F>(spec: ConsumerSpec, handler: H, shutdown: CancellationToken)
where
    H: Fn(Delivery) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Disposition> + Send + 'static,
{
    let queue = spec.queue.clone();
    let one_at_a_time = move |batch: Vec<Delivery>| {
        let handler = handler.clone();
        let queue = queue.clone();
        futures_util::future::join_all(batch.into_iter().map(move |delivery| {
            let span = delivery_span(&queue, &delivery);
            let handled = handler(delivery);
            async move {
                let disposition = handled.await;
                if disposition != Disposition::Ack {
                    Span::current().record("otel.status_code", "ERROR");
                }
                disposition
            }
            .instrument(span)
        }))
    };
    consume_batches(spec, 1, one_at_a_time, shutdown).await;
}

/// Like [`consume`], for handlers that do better with several messages at once (say, one
/// transaction for all): a batch is the first message and whatever else had already
/// arrived, up to `max_batch`. Nothing waits to fill a batch, so a lone message is not
/// delayed; batches grow only when messages arrive faster than they are handled.
///
/// The handler returns one disposition per message, in order, and makes the messages'
/// spans itself ([`delivery_span`]).
pub async fn consume_batches<H, F>(
    spec: ConsumerSpec,
    max_batch: usize,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Vec<Delivery>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Vec<Disposition>> + Send + 'static,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match consume_once(&spec, max_batch, handler.clone(), &shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                let pause = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                tracing::warn!(queue = %spec.queue, error = %e, retry_in_ms = pause.as_millis() as u64, "consumer lost its broker connection");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

async fn consume_once<H, F>(
    spec: &ConsumerSpec,
    max_batch: usize,
    handler: H,
    shutdown: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), QueueError>
where
    H: Fn(Vec<Delivery>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Vec<Disposition>> + Send + 'static,
{
    let connection = connect(&spec.broker, &spec.name).await?;
    let channel = connection.create_channel().await?;
    spec.topology.declare(&channel).await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = channel
        .basic_consume(
            spec.queue.as_str().into(),
            spec.name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *backoff = Duration::from_millis(100);
    tracing::info!(queue = %spec.queue, prefetch = spec.prefetch, max_batch, "consuming");

    let mut in_flight = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let mut batch = vec![delivery];
                    let mut lost = None;
                    while batch.len() < max_batch {
                        match consumer.next().now_or_never() {
                            Some(Some(Ok(delivery))) => batch.push(delivery),
                            Some(Some(Err(e))) => {
                                lost = Some(QueueError::Amqp(e));
                                break;
                            }
                            Some(None) | None => break,
                        }
                    }
                    in_flight.spawn(settle(batch, handler.clone()));
                    if let Some(e) = lost {
                        break Err(e);
                    }
                }
                Some(Err(e)) => break Err(QueueError::Amqp(e)),
                None => break Err(QueueError::Unavailable(format!("consumer of {} was cancelled by the broker", spec.queue))),
            },
        }
    };
    // Let in-flight messages finish; what is still unacked after the drain timeout is
    // requeued by the broker when the channel closes.
    let drained = tokio::time::timeout(spec.drain_timeout, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(queue = %spec.queue, left = in_flight.len(), "drain timeout: unfinished messages go back to the queue");
        in_flight.abort_all();
    }
    drop(channel.close(200, "consumer stopping".into()).await);
    drop(connection.close(200, "consumer stopping".into()).await);
    outcome
}

/// An exchange as spans name it: the conventions call the default one `amq.default`.
fn exchange_name(exchange: &str) -> &str {
    if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    }
}

/// The span of handling one message: a child of the span that published it (its trace
/// context is in the headers), never of whatever span happens to be current. Handlers fill
/// in the ids once they decoded the message ([`trace::record_run`]).
pub fn delivery_span(queue: &str, delivery: &Delivery) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = exchange_name(delivery.exchange.as_str()),
        messaging.destination.subscription.name = queue,
        messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        weft.run_id = tracing::field::Empty,
        weft.workspace_id = tracing::field::Empty,
        weft.scenario_id = tracing::field::Empty,
        weft.node_id = tracing::field::Empty,
        weft.attempt = tracing::field::Empty,
    );
    // Fails only when tracing is off or the span is filtered out: then there is no trace.
    drop(span.set_parent(trace::extract_amqp(delivery.properties.headers().as_ref())));
    span
}

async fn settle<H, F>(batch: Vec<Delivery>, handler: H)
where
    H: Fn(Vec<Delivery>) -> F,
    F: Future<Output = Vec<Disposition>>,
{
    let ackers: Vec<Acker> = batch.iter().map(|d| d.acker.clone()).collect();
    let dispositions = handler(batch).await;
    // Done and poison messages are settled at once; only those to retry wait for the pause.
    let (retry, settle_now): (Vec<_>, Vec<_>) = ackers
        .iter()
        .zip(dispositions)
        .partition(|(_, disposition)| *disposition == Disposition::Retry);
    for (acker, disposition) in settle_now {
        let settled = match disposition {
            Disposition::Reject => acker.reject(BasicRejectOptions { requeue: false }).await,
            _ => acker.ack(BasicAckOptions::default()).await,
        };
        warn_unsettled(settled);
    }
    if retry.is_empty() {
        return;
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    for (acker, _) in retry {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        warn_unsettled(acker.nack(requeue).await);
    }
}

/// A message left unsettled is redelivered by the broker: worth a warning, not a failure.
fn warn_unsettled(settled: Result<bool, lapin::Error>) {
    match settled {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "channel closed before the message was settled; the broker will redeliver it"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not settle a message; the broker will redeliver it")
        }
    }
}

//! Wires the scheduler together: pool, publisher, consumers of runs, results, poll
//! answers and dead letters, the sweeper, schedule and poll triggers, queue metrics and
//! the operations server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Span;
use weft_domain::messages::{self, NodeResult, RunRequested};
use weft_runtime::db::{self, DbError};
use weft_runtime::queue::{
    self, Broker, ConsumerSpec, Disposition, Publisher, QueueError, Topology,
};
use weft_runtime::telemetry::{self, Readiness};

use crate::config::Config;
use crate::dead_letters;
use crate::dispatch::Dispatcher;
use crate::engine::{Engine, Received};
use crate::metrics::Metrics;
use crate::polls::{PollSettings, Polls};
use crate::run_cache::RunCache;
use crate::schedules::Schedules;
use crate::sweeper::Sweeper;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] DbError),
    #[error("operations server: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Scheduler {
    config: Config,
    pool: Pool,
    publisher: Arc<Publisher>,
    engine: Arc<Engine>,
    metrics: Metrics,
}

impl Scheduler {
    /// Builds the pool (migrating when configured) and the publisher.
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let pool = db::pool(
            &config.database.database_url,
            config.database.database_ca_file.as_ref(),
            config.database.database_pool_size,
        )?;
        if config.database.auto_migrate {
            db::migrate(&pool).await?;
        }
        let topology = Topology::new(&config.broker.namespace);
        let publisher =
            Publisher::new(config.broker.broker(), "weft-scheduler publisher", topology);
        let metrics = Metrics::new();
        let engine = Engine::new(
            pool.clone(),
            Dispatcher::new(publisher.clone()),
            metrics.clone(),
            config.node_deadline_grace,
            RunCache::new(config.cached_runs),
        );
        Ok(Self {
            config,
            pool,
            publisher,
            engine,
            metrics,
        })
    }

    /// Runs until `shutdown` resolves, then drains in-flight messages.
    pub async fn serve(
        self,
        ops: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let topology = self.publisher.topology().clone();
        let spec = |queue: String, name: &str| ConsumerSpec {
            broker: self.config.broker.broker(),
            topology: topology.clone(),
            queue,
            prefetch: self.config.prefetch,
            name: format!("weft-scheduler {name}"),
            drain_timeout: self.config.process.shutdown_timeout,
        };

        let engine = self.engine.clone();
        tasks.spawn(queue::consume(
            spec(topology.runs(), "runs"),
            move |delivery| {
                let engine = engine.clone();
                async move {
                    match messages::decode::<RunRequested>(&delivery.data) {
                        Ok(request) => settle(engine.take_up(&request).await),
                        Err(e) => {
                            tracing::error!(error = %e, "undecodable run request: dead-lettering it");
                            Disposition::Reject
                        }
                    }
                }
            },
            token.clone(),
        ));

        let (engine, results, metrics) = (
            self.engine.clone(),
            topology.results(),
            self.metrics.clone(),
        );
        tasks.spawn(queue::consume_batches(
            spec(topology.results(), "results"),
            usize::from(self.config.result_batch),
            move |deliveries| {
                let (engine, queue) = (engine.clone(), results.clone());
                metrics
                    .result_batches
                    .with_label_values::<&str>(&[])
                    .observe(deliveries.len() as f64);
                async move { record_results(&engine, &queue, deliveries).await }
            },
            token.clone(),
        ));

        let (engine, metrics) = (self.engine.clone(), self.metrics.clone());
        tasks.spawn(queue::consume(
            spec(topology.dead(), "dead letters"),
            move |delivery| {
                let (engine, metrics) = (engine.clone(), metrics.clone());
                async move { dead_letters::handle(&engine, &metrics, &delivery).await }
            },
            token.clone(),
        ));

        let sweeper = Arc::new(Sweeper {
            engine: self.engine.clone(),
            publisher: self.publisher.clone(),
            requeue_after: self.config.requeue_after,
        });
        tasks.spawn(every(
            self.config.sweep_interval,
            token.clone(),
            move || {
                let sweeper = sweeper.clone();
                async move {
                    if let Err(e) = sweeper.sweep().await {
                        tracing::warn!(error = %e, "sweep failed; trying again next interval");
                    }
                }
            },
        ));

        let schedules = Arc::new(Schedules::new(
            self.pool.clone(),
            self.publisher.clone(),
            self.metrics.clone(),
            self.config.schedule_interval,
            self.config.schedule_max_catch_up,
        ));
        tasks.spawn(every(
            self.config.schedule_interval,
            token.clone(),
            move || {
                let schedules = schedules.clone();
                async move {
                    if let Err(e) = schedules.pass().await {
                        tracing::warn!(error = %e, "schedule pass failed; trying again next interval");
                    }
                }
            },
        ));

        let polls = Arc::new(Polls::new(
            self.pool.clone(),
            self.publisher.clone(),
            self.metrics.clone(),
            PollSettings {
                max_backoff: self.config.poll_max_backoff,
                seen_limit: self.config.poll_seen_limit,
                lost_after: self.config.node_deadline_grace,
            },
        ));
        let answers = polls.clone();
        tasks.spawn(queue::consume(
            spec(topology.polls(), "polls"),
            move |delivery| {
                let polls = answers.clone();
                async move {
                    match messages::decode::<NodeResult>(&delivery.data) {
                        Ok(result) => settle(polls.handle(&result).await),
                        Err(e) => {
                            tracing::error!(error = %e, "undecodable poll answer: dead-lettering it");
                            Disposition::Reject
                        }
                    }
                }
            },
            token.clone(),
        ));
        tasks.spawn(every(
            self.config.poll_check_interval,
            token.clone(),
            move || {
                let polls = polls.clone();
                async move {
                    if let Err(e) = polls.pass().await {
                        tracing::warn!(error = %e, "poll pass failed; trying again next interval");
                    }
                }
            },
        ));

        let (broker, metrics, queue_topology) = (
            self.config.broker.broker(),
            self.metrics.clone(),
            topology.clone(),
        );
        tasks.spawn(every(
            self.config.queue_metrics_interval,
            token.clone(),
            move || {
                let (broker, metrics, topology) =
                    (broker.clone(), metrics.clone(), queue_topology.clone());
                async move {
                    if let Err(e) = read_queue_depths(&broker, &topology, &metrics).await {
                        tracing::debug!(error = %e, "could not read queue depths");
                    }
                }
            },
        ));

        let (pool, publisher) = (self.pool.clone(), self.publisher.clone());
        let readiness: Readiness = Arc::new(move || {
            let (pool, publisher) = (pool.clone(), publisher.clone());
            Box::pin(async move {
                vec![
                    ("database", db::is_reachable(&pool).await),
                    ("broker", publisher.is_connected().await),
                ]
            })
        });
        let ops_token = token.clone();
        let ops_server = tokio::spawn(telemetry::serve_ops(
            ops,
            self.metrics.registry.clone(),
            readiness,
            async move { ops_token.cancelled().await },
        ));

        shutdown.await;
        tracing::info!("shutting down: draining in-flight messages");
        token.cancel();
        while tasks.join_next().await.is_some() {}
        self.publisher.close().await;
        match ops_server.await {
            Ok(result) => result?,
            Err(e) => tracing::warn!(error = %e, "operations server task failed"),
        }
        Ok(())
    }
}

/// Records a batch of results together; an undecodable one is dead-lettered alone.
async fn record_results(
    engine: &Engine,
    queue: &str,
    deliveries: Vec<Delivery>,
) -> Vec<Disposition> {
    let mut dispositions = vec![Disposition::Ack; deliveries.len()];
    let mut received = Vec::with_capacity(deliveries.len());
    let mut positions = Vec::with_capacity(deliveries.len());
    for (position, delivery) in deliveries.iter().enumerate() {
        let span = queue::delivery_span(queue, delivery);
        match messages::decode::<NodeResult>(&delivery.data) {
            Ok(result) => {
                positions.push(position);
                received.push(Received {
                    result,
                    message_bytes: delivery.data.len(),
                    span,
                });
            }
            Err(e) => {
                span.in_scope(
                    || tracing::error!(error = %e, "undecodable node result: dead-lettering it"),
                );
                span.record("otel.status_code", "ERROR");
                dispositions[position] = Disposition::Reject;
            }
        }
    }
    let spans: Vec<Span> = received.iter().map(|r| r.span.clone()).collect();
    let outcomes = engine.record_all(received).await;
    for ((position, outcome), span) in positions.into_iter().zip(outcomes).zip(spans) {
        let disposition = span.in_scope(|| settle(outcome));
        if disposition != Disposition::Ack {
            span.record("otel.status_code", "ERROR");
        }
        dispositions[position] = disposition;
    }
    dispositions
}

/// Maps a handler's outcome to what happens to its message.
fn settle(outcome: Result<(), crate::engine::EngineError>) -> Disposition {
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "handling failed; the message will be redelivered");
            Disposition::Retry
        }
    }
}

/// Calls `tick` every `period` until cancelled.
async fn every<F, Fut>(period: Duration, token: CancellationToken, tick: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => tick().await,
            () = token.cancelled() => return,
        }
    }
}

/// Reads each queue's depth and consumers with a passive declare.
async fn read_queue_depths(
    broker: &Broker,
    topology: &Topology,
    metrics: &Metrics,
) -> Result<(), QueueError> {
    let connection = queue::connect(broker, "weft-scheduler queue metrics").await?;
    let channel = connection.create_channel().await?;
    for name in topology.queues() {
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(name.as_str().into(), options, FieldTable::default())
            .await?;
        metrics
            .queue_messages
            .with_label_values(&[&name])
            .set(i64::from(declared.message_count()));
        metrics
            .queue_consumers
            .with_label_values(&[&name])
            .set(i64::from(declared.consumer_count()));
    }
    drop(connection.close(200, "done".into()).await);
    Ok(())
}

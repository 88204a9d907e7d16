//! One task, from delivery to published result: the at-least-once contract of the worker
//! (architecture §3.3): execute, publish the result with a confirm, only then ack.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use tracing::Instrument;
use weft_domain::messages::{self, BUILTIN_CONNECTOR, NodeResult, NodeTask};
use weft_domain::retry::TIERS;
use weft_runtime::queue::{Disposition, Publisher, QueueError};
use weft_runtime::trace;

use crate::engine::{Engine, Execution};
use crate::metrics::Metrics;

pub struct Executor {
    pub engine: Engine,
    pub publisher: Arc<Publisher>,
    pub metrics: Metrics,
}

/// Decrements the in-flight gauge however the task ends.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Executor {
    pub async fn handle(&self, delivery: &Delivery) -> Disposition {
        let task = match messages::decode::<NodeTask>(&delivery.data) {
            Ok(task) => task,
            Err(e) => {
                tracing::error!(error = %e, "undecodable task: dead-lettering it");
                return Disposition::Reject;
            }
        };
        trace::record_run(task.run_id, task.workspace_id);
        trace::record_node(&task.node_id, task.attempt);
        self.run(task).await
    }

    async fn run(&self, task: NodeTask) -> Disposition {
        let now = Utc::now();
        if let Some(at) = task.not_before
            && let Ok(early) = (at - now).to_std()
        {
            // Shorter than the shortest delay tier: another hop through the broker would
            // overshoot by more than the wait itself.
            if early >= TIERS[0].1 {
                return self.wait_longer(&task).await;
            }
            tokio::time::sleep(early).await;
        }
        let waited = (Utc::now() - task.ready_at).to_std().unwrap_or_default();
        self.metrics
            .dispatch_latency
            .with_label_values::<&str>(&[])
            .observe(waited.as_secs_f64());

        let _in_flight = InFlight::enter(&self.metrics.tasks_in_flight);
        let started_at = Utc::now();
        let span = tracing::info_span!(
            "execute",
            otel.name = %format_args!("execute {}.{}", task.connector, task.action),
            weft.connector = %task.connector,
            weft.action = %task.action,
        );
        let execution = self.engine.execute(&task).instrument(span).await;
        let finished_at = Utc::now();
        if let Err(error) = &execution.result {
            tracing::info!(connector = %task.connector, class = error.class.as_str(), status = error.status, message = %error.message, "node attempt failed");
        }
        if let Some(update) = &execution.connection
            && let Some(error) = &update.error
        {
            tracing::warn!(connection_id = %update.id, error = %error, "connection no longer works");
        }
        self.observe(
            &task,
            &execution,
            (finished_at - started_at).to_std().unwrap_or_default(),
        );
        let result = execution.into_result(&task, started_at, finished_at);
        self.deliver(&task, &result).await
    }

    /// Publishes the result to the results queue, or to the reply queue of the gateway
    /// that asked for it.
    async fn deliver(&self, task: &NodeTask, result: &NodeResult) -> Disposition {
        let topology = self.publisher.topology();
        let Some(reply_to) = &task.reply_to else {
            return match self
                .publisher
                .publish(&topology.results(), &topology.results(), result)
                .await
            {
                Ok(()) => Disposition::Ack,
                Err(e) => {
                    tracing::warn!(run_id = %task.run_id, node_id = %task.node_id, error = %e, "could not publish a result; the task will run again");
                    Disposition::Retry
                }
            };
        };
        match self.publisher.publish("", reply_to, result).await {
            Ok(()) => Disposition::Ack,
            // The gateway that waited for it is gone, and its reply queue with it: nobody
            // will ever read this result, so running the task again would be pointless.
            Err(QueueError::Unroutable(_)) => {
                tracing::warn!(run_id = %task.run_id, reply_to = %reply_to, "the reply queue of a direct execution is gone; dropping its result");
                Disposition::Ack
            }
            Err(e) => {
                tracing::warn!(run_id = %task.run_id, reply_to = %reply_to, error = %e, "could not publish a direct execution's result; the task will run again");
                Disposition::Retry
            }
        }
    }

    /// A delayed task arrived early (it waits in tiers): send it to the next tier.
    async fn wait_longer(&self, task: &NodeTask) -> Disposition {
        let (exchange, routing_key) = self.publisher.topology().route_task(task, Utc::now());
        match self.publisher.publish(&exchange, &routing_key, task).await {
            Ok(()) => Disposition::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "could not re-delay a task");
                Disposition::Retry
            }
        }
    }

    fn observe(&self, task: &NodeTask, execution: &Execution, took: Duration) {
        let outcome = match &execution.result {
            Ok(_) => "success",
            Err(error) => error.class.as_str(),
        };
        self.metrics
            .node_duration
            .with_label_values(&[task.connector.as_str(), task.action.as_str(), outcome])
            .observe(took.as_secs_f64());
        if task.connector == BUILTIN_CONNECTOR {
            // Built-in pseudo-actions call nothing outside.
            return;
        }
        let status_class = match execution.status {
            Some(status) => format!("{}xx", status / 100),
            None => "error".to_owned(),
        };
        self.metrics
            .external_requests
            .with_label_values(&[task.connector.as_str(), status_class.as_str()])
            .inc();
    }
}

//! One task, from delivery to published result: the at-least-once contract of the worker
//! (DESIGN §2.3): execute, publish the result with a confirm, only then ack.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use tracing::Instrument;
use weft_shared::messages::{
    self, BUILTIN_CONNECTOR, DELAY_ACTION, ErrorClass, NodeError, NodeResult, NodeTask, Outcome,
    VERSION,
};
use weft_shared::queue::{Disposition, Publisher};
use weft_shared::trace;

use crate::http::{Exchange, HttpEngine};
use crate::metrics::Metrics;

pub struct Executor {
    pub http: HttpEngine,
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
        if task.not_before.is_some_and(|at| at > now) {
            return self.wait_longer(&task).await;
        }
        let waited = (now - task.ready_at).to_std().unwrap_or_default();
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
        let exchange = self.execute(&task).instrument(span).await;
        let finished_at = Utc::now();
        if let Err(error) = &exchange.result {
            tracing::info!(connector = %task.connector, class = error.class.as_str(), status = error.status, message = %error.message, "node attempt failed");
        }
        self.observe(
            &task,
            &exchange,
            (finished_at - started_at).to_std().unwrap_or_default(),
        );

        let result = NodeResult {
            v: VERSION,
            run_id: task.run_id,
            workspace_id: task.workspace_id,
            node_id: task.node_id.clone(),
            item_index: task.item_index,
            attempt: task.attempt,
            started_at,
            finished_at,
            outcome: match exchange.result {
                Ok(output) => Outcome::Success { output },
                Err(error) => Outcome::Failure { error },
            },
            connection: None,
        };
        let topology = self.publisher.topology();
        match self
            .publisher
            .publish(&topology.results(), &topology.results(), &result)
            .await
        {
            Ok(()) => Disposition::Ack,
            Err(e) => {
                tracing::warn!(run_id = %task.run_id, node_id = %task.node_id, error = %e, "could not publish a result; the task will run again");
                Disposition::Retry
            }
        }
    }

    async fn execute(&self, task: &NodeTask) -> Exchange {
        let timeout = Duration::from_millis(task.timeout_ms.max(1));
        match (task.connector.as_str(), task.action.as_str()) {
            ("http", "request") => self.http.request(&task.input, timeout).await,
            // A delay node's task: it is due (it waited in the delay tiers), so it is done.
            (BUILTIN_CONNECTOR, DELAY_ACTION) => {
                let until = task
                    .input
                    .get("until")
                    .cloned()
                    .unwrap_or_else(|| serde_json::Value::from(Utc::now().to_rfc3339()));
                Exchange {
                    status: None,
                    result: Ok(serde_json::json!({ "waited_until": until })),
                }
            }
            (connector, action) => Exchange {
                status: None,
                result: Err(NodeError::new(
                    ErrorClass::Permanent,
                    format!("this worker cannot execute `{connector}.{action}`"),
                )),
            },
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

    fn observe(&self, task: &NodeTask, exchange: &Exchange, took: Duration) {
        let outcome = match &exchange.result {
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
        let status_class = match exchange.status {
            Some(status) => format!("{}xx", status / 100),
            None => "error".to_owned(),
        };
        self.metrics
            .external_requests
            .with_label_values(&[task.connector.as_str(), status_class.as_str()])
            .inc();
    }
}

//! The dead-letter queue: messages no consumer could process. Each is counted, and the
//! run or node it belongs to fails with a "poison message" error instead of hanging.

use lapin::message::Delivery;
use lapin::types::AMQPValue;
use weft_domain::messages::{
    self, ErrorClass, Message, NodeError, NodeResult, NodeTask, RunRequested,
};
use weft_runtime::queue::{Disposition, delivery_count};

use crate::engine::Engine;
use crate::metrics::Metrics;

pub async fn handle(engine: &Engine, metrics: &Metrics, delivery: &Delivery) -> Disposition {
    let queue = first_death_queue(delivery);
    metrics.dead_letters.with_label_values(&[&queue]).inc();
    let kind = delivery
        .properties
        .kind()
        .as_ref()
        .map(|k| k.as_str().to_owned())
        .unwrap_or_default();
    let poison = |what: &str| {
        NodeError::new(
            ErrorClass::Poison,
            format!(
                "poison message: {what} (dead-lettered from {queue} after {} deliveries)",
                delivery_count(delivery)
            ),
        )
    };
    let outcome = match kind.as_str() {
        NodeTask::TYPE => match messages::decode::<NodeTask>(&delivery.data) {
            Ok(task) => {
                let error = poison(
                    "the task was delivered too often without a result, or could not be processed",
                );
                engine
                    .fail_attempt(
                        task.run_id,
                        task.workspace_id,
                        (&task.node_id, task.item_index),
                        task.attempt,
                        error,
                    )
                    .await
            }
            Err(e) => return undecodable(&queue, &e),
        },
        RunRequested::TYPE => match messages::decode::<RunRequested>(&delivery.data) {
            Ok(request) => {
                engine
                    .fail_run(
                        request.run_id,
                        request.workspace_id,
                        poison("the run request could not be processed"),
                    )
                    .await
            }
            Err(e) => return undecodable(&queue, &e),
        },
        NodeResult::TYPE => match messages::decode::<NodeResult>(&delivery.data) {
            Ok(result) => {
                engine
                    .fail_run(
                        result.run_id,
                        result.workspace_id,
                        poison("a node result could not be processed"),
                    )
                    .await
            }
            Err(e) => return undecodable(&queue, &e),
        },
        other => {
            tracing::error!(queue, kind = other, "dead letter of unknown type dropped");
            return Disposition::Ack;
        }
    };
    match outcome {
        Ok(()) => Disposition::Ack,
        Err(e) => {
            tracing::warn!(error = %e, "could not record a dead letter yet; retrying");
            Disposition::Retry
        }
    }
}

fn undecodable(queue: &str, error: &messages::DecodeError) -> Disposition {
    tracing::error!(queue, error = %error, "undecodable dead letter dropped: it names no run");
    Disposition::Ack
}

/// The queue a message was first dead-lettered from (RabbitMQ's `x-first-death-queue`).
fn first_death_queue(delivery: &Delivery) -> String {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-first-death-queue").cloned())
        .and_then(|value| match value {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

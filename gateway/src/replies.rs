//! The gateway's private reply queue (architecture §4, `weft.replies`): how an HTTP request
//! waiting on work done elsewhere gets its answer back: the worker's `NodeResult` of an
//! action executed directly, or the scheduler's `RunFinished` of a webhook that responds
//! on completion.
//!
//! Each gateway process declares one exclusive, auto-delete queue with a name of its own
//! (`<namespace>.replies.<uuid>`) and consumes it for its whole life. A task published
//! with `reply_to` set to that name is executed by a worker like any other (the same code
//! path), and the worker publishes its result to the default exchange with the queue's
//! name as the routing key. The waiting request is found by the message's `run_id`: fresh
//! for each direct execution, the run's own for a webhook.
//!
//! Replies are transient: a reply lost with a broker restart leaves its request to time
//! out (504), which is what the caller is told. Nothing else depends on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use rand::Rng;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_domain::ids::RunId;
use weft_domain::messages::{self, Message, NodeResult, RunFinished};
use weft_runtime::queue::{self, Broker, QueueError, Topology};

/// How long a request waits for the reply consumer when the gateway has just started or
/// the broker connection is being re-established.
const READY_WAIT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A message that came back on the reply queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A worker's result for a task sent with this queue as its `reply_to`.
    Result(NodeResult),
    /// A run whose `reply_to` is this queue ended.
    Finished(RunFinished),
}

impl Reply {
    fn run_id(&self) -> RunId {
        match self {
            Self::Result(result) => result.run_id,
            Self::Finished(finished) => finished.run_id,
        }
    }

    /// Reads a delivery by its AMQP `type` (every publisher of the fleet sets it).
    fn decode(delivery: &Delivery) -> Result<Self, messages::DecodeError> {
        let kind = delivery
            .properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str());
        if kind == Some(RunFinished::TYPE) {
            messages::decode(&delivery.data).map(Self::Finished)
        } else {
            messages::decode(&delivery.data).map(Self::Result)
        }
    }
}

/// The reply queue of this process and the requests waiting on it.
pub struct Replies {
    queue: String,
    waiting: Mutex<HashMap<RunId, oneshot::Sender<Reply>>>,
    /// Whether the queue exists and is being consumed: a reply published now arrives.
    ready: watch::Sender<bool>,
}

impl Replies {
    pub fn new(topology: &Topology) -> Arc<Self> {
        Arc::new(Self {
            queue: format!("{}.replies.{}", topology.namespace, Uuid::new_v4().simple()),
            waiting: Mutex::new(HashMap::new()),
            ready: watch::Sender::new(false),
        })
    }

    /// The queue name a task's `reply_to` carries.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, oneshot::Sender<Reply>>> {
        // Entries are inserted and removed whole: a panic elsewhere cannot leave the map
        // half-updated.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (briefly) until replies can arrive; `false` if the broker is not reachable.
    pub async fn until_ready(&self) -> bool {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(READY_WAIT, ready.wait_for(|ready| *ready))
            .await
            .is_ok_and(|changed| changed.is_ok())
    }

    /// Registers a request for the reply about `run_id`: call before publishing what
    /// leads to it, so a fast reply is not missed.
    pub fn expect(self: &Arc<Self>, run_id: RunId) -> Pending {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(run_id, sender);
        Pending {
            replies: Arc::clone(self),
            run_id,
            receiver,
        }
    }

    /// Hands a reply to the request waiting for it; `false` when none is (it timed out,
    /// or the client went away).
    fn deliver(&self, reply: Reply) -> bool {
        let Some(sender) = self.lock().remove(&reply.run_id()) else {
            return false;
        };
        sender.send(reply).is_ok()
    }

    /// Declares and consumes the reply queue until `shutdown`, re-declaring it after a lost
    /// connection (an exclusive queue goes with its connection) with backoff.
    pub async fn consume(self: Arc<Self>, broker: Broker, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = self.consume_once(&broker, &shutdown, &mut backoff).await;
            self.ready.send_replace(false);
            match outcome {
                Ok(()) => return,
                Err(e) => {
                    let pause = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                    tracing::warn!(queue = %self.queue, error = %e, retry_in_ms = pause.as_millis() as u64, "reply queue lost its broker connection");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn consume_once(
        &self,
        broker: &Broker,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), QueueError> {
        let connection = queue::connect(broker, "weft-gateway replies").await?;
        let channel = connection.create_channel().await?;
        channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        // No acks: a reply is useful only now, to the request waiting for it.
        let mut consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "weft-gateway replies".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        *backoff = Duration::from_millis(100);
        self.ready.send_replace(true);
        tracing::info!(queue = %self.queue, "consuming replies");
        let outcome = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => match Reply::decode(&delivery) {
                        Ok(reply) => {
                            let run_id = reply.run_id();
                            if !self.deliver(reply) {
                                tracing::debug!(%run_id, "a reply came after its request stopped waiting");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable reply dropped"),
                    },
                    Some(Err(e)) => break Err(QueueError::Amqp(e)),
                    None => break Err(QueueError::Unavailable("the broker cancelled the reply consumer".into())),
                },
            }
        };
        drop(channel.close(200, "replies stopping".into()).await);
        drop(connection.close(200, "replies stopping".into()).await);
        outcome
    }
}

/// A request waiting for one reply. Dropping it (on timeout, or when the client goes
/// away) forgets the request, so a late reply is discarded.
pub struct Pending {
    replies: Arc<Replies>,
    run_id: RunId,
    receiver: oneshot::Receiver<Reply>,
}

impl Pending {
    /// The reply, or `None` if none came `within`.
    pub async fn wait(mut self, within: Duration) -> Option<Reply> {
        tokio::time::timeout(within, &mut self.receiver)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.replies.lock().remove(&self.run_id);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::Value;
    use weft_domain::messages::{Outcome, VERSION};

    use super::*;
    use weft_domain::ids::WorkspaceId;
    use weft_domain::run::RunStatus;

    fn result(run_id: RunId) -> NodeResult {
        NodeResult {
            v: VERSION,
            run_id,
            workspace_id: WorkspaceId::generate(),
            node_id: "execute".into(),
            item_index: None,
            attempt: 1,
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome: Outcome::Success {
                output: Value::Null,
            },
            connection: None,
        }
    }

    #[test]
    fn each_process_has_its_own_queue_in_the_namespace() {
        let topology = Topology::new("weft");
        let (a, b) = (Replies::new(&topology), Replies::new(&topology));
        assert!(a.queue().starts_with("weft.replies."), "{}", a.queue());
        assert_ne!(a.queue(), b.queue());
    }

    #[tokio::test]
    async fn a_reply_reaches_the_request_waiting_for_its_run() {
        let replies = Replies::new(&Topology::new("weft"));
        let (first, second) = (RunId::generate(), RunId::generate());
        let waiting_first = replies.expect(first);
        let waiting_second = replies.expect(second);
        assert!(replies.deliver(Reply::Result(result(second))));
        let got = waiting_second
            .wait(Duration::from_secs(1))
            .await
            .expect("delivered");
        assert!(
            matches!(&got, Reply::Result(r) if r.run_id == second),
            "{got:?}"
        );
        assert!(
            waiting_first
                .wait(Duration::from_millis(10))
                .await
                .is_none(),
            "another run's reply is not this one's"
        );
    }

    #[tokio::test]
    async fn the_end_of_a_run_reaches_the_webhook_waiting_for_it() {
        let replies = Replies::new(&Topology::new("weft"));
        let run_id = RunId::generate();
        let pending = replies.expect(run_id);
        let finished = RunFinished {
            v: VERSION,
            run_id,
            workspace_id: WorkspaceId::generate(),
            status: RunStatus::Completed,
            response: serde_json::json!({"status": 200}),
        };
        assert!(replies.deliver(Reply::Finished(finished.clone())));
        assert_eq!(
            pending.wait(Duration::from_secs(1)).await,
            Some(Reply::Finished(finished))
        );
    }

    #[tokio::test]
    async fn a_request_that_stopped_waiting_is_forgotten() {
        let replies = Replies::new(&Topology::new("weft"));
        let run_id = RunId::generate();
        let pending = replies.expect(run_id);
        assert!(pending.wait(Duration::from_millis(1)).await.is_none());
        assert!(
            replies.lock().is_empty(),
            "the timed-out request left no entry"
        );
        assert!(
            !replies.deliver(Reply::Result(result(run_id))),
            "a late reply finds nobody"
        );
    }
}

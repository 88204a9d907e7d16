//! A worker on the real broker: a task with `reply_to` answers to that queue (the gateway
//! executing an action directly), a reply queue that is gone does not make the task run
//! again and again, and a task due in less than the shortest delay tier waits in the
//! worker instead of another trip through the broker.

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_domain::ids::{RunId, WorkspaceId};
use weft_domain::messages::{self, NodeResult, NodeTask, Outcome, VERSION};
use weft_runtime::queue::{self, Publisher, Topology};
use weft_testkit::{Upstream, amqp_url, broker};
use weft_worker::{Config, Worker};

const KEYS: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

struct Setup {
    topology: Topology,
    publisher: std::sync::Arc<Publisher>,
    connection: Connection,
    channel: Channel,
    stop: CancellationToken,
    worker: JoinHandle<()>,
}

impl Setup {
    async fn start() -> Self {
        let namespace = format!("weft_test_{}", Uuid::new_v4().simple());
        let topology = Topology::new(&namespace);
        let config = Config::try_parse_from([
            "weft-worker",
            "--amqp-url",
            &amqp_url(),
            "--namespace",
            &namespace,
            "--master-keys",
            KEYS,
            "--egress-allow",
            "127.0.0.0/8",
            "--shutdown-timeout",
            "2s",
        ])
        .expect("worker configuration parses");
        let worker = Worker::new(config).expect("worker starts");
        let ops = TcpListener::bind("127.0.0.1:0").await.expect("ops port");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let worker = tokio::spawn(async move {
            worker
                .serve(ops, async move { stopped.cancelled().await })
                .await
                .expect("worker serves");
        });
        let connection = queue::connect(&broker(), "replies test")
            .await
            .expect("broker reachable");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("topology");
        let publisher = Publisher::new(broker(), "replies test publisher", topology.clone());
        Self {
            topology,
            publisher,
            connection,
            channel,
            stop,
            worker,
        }
    }

    /// A private reply queue, as the gateway declares one.
    async fn reply_queue(&self) -> (String, Consumer) {
        let declared = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("reply queue");
        let name = declared.name().to_string();
        let consumer = self
            .channel
            .basic_consume(
                name.as_str().into(),
                "replies test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume replies");
        (name, consumer)
    }

    async fn send(&self, task: &NodeTask) {
        let tasks = self.topology.tasks();
        self.publisher
            .publish(&tasks, &tasks, task)
            .await
            .expect("task published");
    }

    async fn results_waiting(&self) -> u32 {
        self.channel
            .queue_declare(
                self.topology.results().as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("results queue exists")
            .message_count()
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.worker.await;
        self.publisher.close().await;
        let _ = self.topology.delete(&self.channel).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn task(url: String, reply_to: Option<String>) -> NodeTask {
    NodeTask {
        v: VERSION,
        run_id: RunId::generate(),
        workspace_id: WorkspaceId::generate(),
        node_id: "direct".into(),
        item_index: None,
        attempt: 1,
        connector: "http".into(),
        action: "request".into(),
        input: json!({"url": url}),
        timeout_ms: 5_000,
        ready_at: Utc::now(),
        not_before: None,
        call: None,
        reply_to,
    }
}

async fn next_result(consumer: &mut Consumer) -> NodeResult {
    let delivery = tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .expect("a reply within 15 s")
        .expect("the reply stream is open")
        .expect("a delivery");
    messages::decode(&delivery.data).expect("a node result")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_goes_to_the_reply_queue_instead_of_the_results_queue() {
    let setup = Setup::start().await;
    let upstream = Upstream::start().await;
    let (reply_to, mut replies) = setup.reply_queue().await;
    let sent = task(format!("{}/direct", upstream.url), Some(reply_to));
    setup.send(&sent).await;
    let result = next_result(&mut replies).await;
    assert_eq!(
        (result.run_id, result.node_id.as_str()),
        (sent.run_id, "direct")
    );
    assert!(
        matches!(&result.outcome, Outcome::Success { output } if output["status"] == 200),
        "{result:?}"
    );
    assert_eq!(
        setup.results_waiting().await,
        0,
        "nothing went to the scheduler"
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_queue_that_is_gone_drops_the_result_instead_of_running_the_task_again() {
    let setup = Setup::start().await;
    let upstream = Upstream::start().await;
    let gone = format!("weft_test_gone_{}", Uuid::new_v4().simple());
    setup
        .send(&task(format!("{}/orphan", upstream.url), Some(gone)))
        .await;
    let (reply_to, mut replies) = setup.reply_queue().await;
    setup
        .send(&task(format!("{}/after", upstream.url), Some(reply_to)))
        .await;
    next_result(&mut replies).await;
    // A task given back to the queue would run again after half a second, up to the
    // delivery limit; wait well past a few such rounds. A sleep: a redelivery is delayed
    // by time alone, and nothing else in this worker-only set-up follows it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        upstream.received_on("/orphan").len(),
        1,
        "the orphaned task ran once and was acknowledged"
    );
    assert_eq!(setup.results_waiting().await, 0);
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_due_sooner_than_the_shortest_tier_runs_when_due() {
    let setup = Setup::start().await;
    let upstream = Upstream::start().await;
    let (reply_to, mut replies) = setup.reply_queue().await;
    let wait = Duration::from_millis(150);
    let due = Instant::now() + wait;
    let delayed = NodeTask {
        not_before: Some(Utc::now() + chrono::Duration::from_std(wait).expect("short")),
        ..task(format!("{}/due", upstream.url), Some(reply_to))
    };
    setup.send(&delayed).await;
    let result = next_result(&mut replies).await;
    assert!(
        matches!(result.outcome, Outcome::Success { .. }),
        "{result:?}"
    );
    let received = upstream.received_on("/due");
    assert_eq!(received.len(), 1);
    assert!(
        received[0].at >= due,
        "the task ran {:?} before it was due",
        due - received[0].at
    );
    setup.stop().await;
}

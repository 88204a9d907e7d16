//! A stand-in for a worker that takes tasks and never acknowledges them: a hung worker
//! while it lives, a crashed one once it is closed (the broker then redelivers). A test
//! that plays the worker itself acknowledges what it took with [`FakeWorker::done`].

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, Consumer};
use weft_domain::messages::{self, NodeTask};
use weft_runtime::queue::{self, Topology};

pub struct FakeWorker {
    connection: Connection,
    consumer: Consumer,
    /// Deliveries taken and never settled.
    held: Vec<Delivery>,
}

impl FakeWorker {
    /// Consumes the namespace's task queue, one task at a time.
    pub async fn start(topology: &Topology) -> Self {
        let connection = queue::connect(&crate::broker(), "fake worker")
            .await
            .expect("broker reachable");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("topology");
        channel
            .basic_qos(1, BasicQosOptions { global: false })
            .await
            .expect("qos");
        let consumer = channel
            .basic_consume(
                topology.tasks().as_str().into(),
                "fake worker".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Self {
            connection,
            consumer,
            held: Vec::new(),
        }
    }

    /// The next task, held unacknowledged; `None` when none comes within `within`.
    pub async fn take(&mut self, within: Duration) -> Option<NodeTask> {
        let delivery = tokio::time::timeout(within, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        let task = messages::decode(&delivery.data).expect("a node task");
        self.held.push(delivery);
        Some(task)
    }

    /// Acknowledges every task taken so far, as a worker does once it sent their results;
    /// the next ones can then be taken.
    pub async fn done(&mut self) {
        for delivery in self.held.drain(..) {
            let acked = delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack reaches the broker");
            assert!(acked, "the channel of a held task is still open");
        }
    }

    /// Drops the connection like a crashed process: what it held goes back to the queue.
    pub async fn crash(self) {
        drop(self.held);
        self.connection
            .close(320, "simulated crash".into())
            .await
            .expect("connection drops");
    }
}

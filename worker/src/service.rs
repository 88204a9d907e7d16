//! Wires the worker together: the connector engine, the result publisher, the task consumer
//! and the operations server.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weft_runtime::queue::{self, ConsumerSpec, Publisher, Topology};
use weft_runtime::telemetry::{self, Readiness};

use weft_runtime::egress::EgressPolicy;

use crate::config::Config;
use crate::engine::Engine;
use crate::execute::Executor;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("operations server: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Worker {
    config: Config,
    executor: Arc<Executor>,
}

impl Worker {
    pub fn new(config: Config) -> Result<Self, StartError> {
        let topology = Topology::new(&config.broker.namespace);
        let publisher = Publisher::new(config.broker.broker(), "weft-worker publisher", topology);
        let policy =
            EgressPolicy::new(config.egress_allow.clone()).through(config.egress_proxy.clone());
        let executor = Arc::new(Executor {
            engine: Engine::new(
                policy,
                config.keys.master_keys.clone(),
                config.max_response_bytes,
            )?,
            publisher,
            metrics: Metrics::new(),
        });
        Ok(Self { config, executor })
    }

    /// Consumes tasks until `shutdown` resolves, then drains in-flight tasks; what is
    /// unfinished after the drain timeout goes back to the queue.
    pub async fn serve(
        self,
        ops: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let token = CancellationToken::new();
        let topology = self.executor.publisher.topology().clone();
        let spec = ConsumerSpec {
            broker: self.config.broker.broker(),
            queue: topology.tasks(),
            topology,
            prefetch: self.config.concurrency,
            name: "weft-worker tasks".to_owned(),
            drain_timeout: self.config.process.shutdown_timeout,
        };
        let executor = self.executor.clone();
        let consumer = tokio::spawn(queue::consume(
            spec,
            move |delivery| {
                let executor = executor.clone();
                async move { executor.handle(&delivery).await }
            },
            token.clone(),
        ));

        let publisher = self.executor.publisher.clone();
        let readiness: Readiness = Arc::new(move || {
            let publisher = publisher.clone();
            Box::pin(async move { vec![("broker", publisher.is_connected().await)] })
        });
        let ops_token = token.clone();
        let ops_server = tokio::spawn(telemetry::serve_ops(
            ops,
            self.executor.metrics.registry.clone(),
            readiness,
            async move { ops_token.cancelled().await },
        ));

        shutdown.await;
        tracing::info!("shutting down: draining in-flight tasks");
        token.cancel();
        if let Err(e) = consumer.await {
            tracing::warn!(error = %e, "task consumer ended abnormally");
        }
        self.executor.publisher.close().await;
        match ops_server.await {
            Ok(result) => result?,
            Err(e) => tracing::warn!(error = %e, "operations server task failed"),
        }
        Ok(())
    }
}

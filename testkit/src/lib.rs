//! A Weft fleet started in-process against the real PostgreSQL and RabbitMQ, for
//! integration tests: each fleet gets its own database (copied from a migrated template)
//! and its own broker namespace, so tests run in parallel. Third-party APIs are stood in
//! for by [`Upstream`], a local HTTP server that records what it receives.
//!
//! Environment: `WEFT_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `WEFT_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

mod database;
mod fake_worker;
pub mod oidc;
mod people;
pub mod smtp;
pub mod startup;
mod upstream;

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use clap::Parser;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_domain::ids::{RunId, ScenarioId, WorkspaceId};
use weft_domain::run::RunStatus;
use weft_gateway::RunAccepted;
pub use weft_gateway::{ItemView, NodeRunView, RunDetail, RunSummary};
use weft_runtime::queue::{self, Broker, Topology};

pub use database::TestDatabase;
pub use fake_worker::FakeWorker;
pub use people::{PASSWORD, Person, link_token, read, session_cookie};
pub use upstream::{Recorded, Reply, Upstream};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn amqp_url() -> String {
    std::env::var("WEFT_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The test broker, as connections and publishers take it.
pub fn broker() -> Broker {
    Broker::new(&amqp_url(), None)
}

/// A random 32-byte master key ring.
fn master_keys() -> String {
    let key = [*Uuid::new_v4().as_bytes(), *Uuid::new_v4().as_bytes()].concat();
    format!(
        "test:{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// What tests look up in a run as the API returns it.
pub trait RunExt {
    /// The run's node `id`; panics naming the nodes it has when there is none.
    fn node(&self, id: &str) -> &NodeRunView;
}

impl RunExt for RunDetail {
    fn node(&self, id: &str) -> &NodeRunView {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .unwrap_or_else(|| {
                let ids: Vec<&str> = self.nodes.iter().map(|node| node.id.as_str()).collect();
                panic!(
                    "run {} has no node {id}; its nodes: {ids:?}",
                    self.summary.id
                )
            })
    }
}

/// What tests look up in a node of a run.
pub trait NodeExt {
    /// The items of a `for_each` node that started; panics for any other node.
    fn items(&self) -> &[ItemView];

    /// Item `index` of a `for_each` node; panics when the node has no such item.
    fn item(&self, index: usize) -> &ItemView {
        self.items()
            .get(index)
            .unwrap_or_else(|| panic!("no item {index} in {:?}", self.items()))
    }
}

impl NodeExt for NodeRunView {
    fn items(&self) -> &[ItemView] {
        self.items
            .as_deref()
            .unwrap_or_else(|| panic!("node {} has no items: {self:?}", self.id))
    }
}

/// An optional JSON field of a view (a node's `output`, a run's `error`) read as the API
/// writes it: `null` when absent, so tests index into it like any JSON.
pub trait OrNull {
    fn or_null(&self) -> &Value;
}

impl OrNull for Option<Value> {
    fn or_null(&self) -> &Value {
        const NULL: &Value = &Value::Null;
        self.as_ref().unwrap_or(NULL)
    }
}

/// A run as JSON, for failure messages.
pub fn shown(run: &RunDetail) -> String {
    serde_json::to_string(run).unwrap_or_else(|error| format!("{run:?} ({error})"))
}

/// An `http.request` action node.
pub fn http_node(id: &str, after: &[&str], input: Value) -> Value {
    json!({"id": id, "type": "action", "connector": "http", "action": "request", "after": after, "input": input})
}

/// Checks again every 50 ms until `check` gives `Ok`, and returns its value; panics after
/// `timeout` with `what` and the last `Err` (what was seen instead).
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One in-process service and how to stop it.
pub struct Service {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Base URL of its metrics address (`/metrics`, `/healthz`, `/readyz`).
    pub ops: String,
}

impl Service {
    /// Stops gracefully (drains in-flight work) and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stops at once, like a killed process: in-flight work is abandoned unacked.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A service on a runtime (and threads) of its own, like a process: killing it ends every
/// task it spawned, where aborting a [`Service`]'s task leaves the tasks it spawned with
/// `tokio::spawn` running.
pub struct Process {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Base URL of its metrics address (`/metrics`, `/healthz`, `/readyz`).
    pub ops: String,
}

impl Process {
    /// Runs `serve` (given the bound ops listener) on a new runtime on a thread of its own.
    async fn start<F, Fut>(name: &str, serve: F) -> Self
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let ops = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ops port");
        ops.set_nonblocking(true)
            .expect("non-blocking ops listener");
        let url = format!("http://{}", ops.local_addr().expect("bound address"));
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("service runtime builds");
                runtime.block_on(async move {
                    let ops = TcpListener::from_std(ops).expect("ops listener on the runtime");
                    tokio::select! {
                        () = serve(ops) => {}
                        _ = killed => {}
                    }
                });
                // Drops every task at once, without letting any of them run again.
                runtime.shutdown_background();
            })
            .expect("service thread starts");
        Self {
            kill: Some(kill),
            ops: url,
        }
    }

    /// Ends it at once, like kill -9: nothing is drained or acknowledged, its connections
    /// drop and the broker requeues what it had not acknowledged.
    pub fn kill(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.end();
    }
}

pub struct Fleet {
    /// Base URL of the gateway's REST API.
    pub api: String,
    /// Base URL of the gateway's metrics address.
    pub gateway_ops: String,
    pub namespace: String,
    pub db: TestDatabase,
    pub client: reqwest::Client,
    keys: String,
    /// Flags every gateway of this fleet gets on top of the test defaults.
    gateway_flags: Vec<String>,
    gateway: Option<Service>,
    extra: Vec<Service>,
    schedulers: Vec<Service>,
    workers: Vec<Service>,
}

/// A workspace and its API key.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub api_key: String,
}

impl Fleet {
    /// A gateway, one scheduler and one worker.
    pub async fn start() -> Self {
        Self::with(1, 1).await
    }

    pub async fn with(schedulers: usize, workers: usize) -> Self {
        Self::with_gateway_flags(schedulers, workers, &[]).await
    }

    /// Like [`Fleet::with`], the gateway started with `flags` too (e.g. `--signup open`).
    pub async fn with_gateway_flags(schedulers: usize, workers: usize, flags: &[&str]) -> Self {
        let db = TestDatabase::create().await;
        let namespace = format!("weft_test_{}", Uuid::new_v4().simple());
        let mut fleet = Self {
            api: String::new(),
            gateway_ops: String::new(),
            namespace,
            db,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("test HTTP client builds"),
            keys: master_keys(),
            gateway_flags: flags.iter().map(|flag| (*flag).to_owned()).collect(),
            gateway: None,
            extra: Vec::new(),
            schedulers: Vec::new(),
            workers: Vec::new(),
        };
        fleet.start_gateway().await;
        for _ in 0..schedulers {
            fleet.add_scheduler().await;
        }
        for _ in 0..workers {
            fleet.add_worker().await;
        }
        fleet
    }

    async fn start_gateway(&mut self) {
        let (api, service) = self.spawn_gateway(&amqp_url()).await;
        self.api = api;
        self.gateway_ops = service.ops.clone();
        self.gateway = Some(service);
    }

    /// Starts one more gateway on the same database, talking to the broker at
    /// `amqp_url` (an unreachable one shows how triggers are refused); returns the base
    /// URLs of its API and of its metrics address.
    pub async fn gateway_with_broker(&mut self, amqp_url: &str) -> (String, String) {
        let (api, service) = self.spawn_gateway(amqp_url).await;
        let ops = service.ops.clone();
        self.extra.push(service);
        (api, ops)
    }

    async fn spawn_gateway(&self, amqp_url: &str) -> (String, Service) {
        let api = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind API port");
        let ops = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ops port");
        let api_url = url_of(&api);
        let defaults = [
            "weft-gateway",
            "--database-url",
            &self.db.url,
            "--database-pool-size",
            "4",
            "--amqp-url",
            amqp_url,
            "--namespace",
            &self.namespace,
            "--master-keys",
            &self.keys,
            "--admin-token",
            ADMIN_TOKEN,
            "--webhook-max-body",
            "65536",
            // OAuth providers stood in for by local servers send users back here.
            "--public-url",
            &api_url,
            "--egress-allow",
            "127.0.0.0/8",
        ];
        let flags = self.gateway_flags.iter().map(String::as_str);
        let config = weft_gateway::Config::try_parse_from(defaults.into_iter().chain(flags))
            .expect("gateway test configuration parses");
        let gateway = weft_gateway::Gateway::new(config)
            .await
            .expect("gateway starts");
        let service = spawn(url_of(&ops), move |stop| async move {
            gateway
                .serve(api, ops, async move { stop.cancelled().await })
                .await
                .expect("gateway serves");
        });
        (api_url, service)
    }

    /// The fleet's own schedulers, in the order they started.
    pub fn schedulers(&self) -> &[Service] {
        &self.schedulers
    }

    /// The fleet's own workers, in the order they started.
    pub fn workers(&self) -> &[Service] {
        &self.workers
    }

    /// Starts one more scheduler that the fleet keeps and stops with itself.
    pub async fn add_scheduler(&mut self) {
        let scheduler = self.spawn_scheduler().await;
        self.schedulers.push(scheduler);
    }

    /// Starts one more worker that the fleet keeps and stops with itself.
    pub async fn add_worker(&mut self) {
        let worker = self.spawn_worker().await;
        self.workers.push(worker);
    }

    /// Stops the fleet's scheduler `index` gracefully.
    pub async fn stop_scheduler(&mut self, index: usize) {
        self.schedulers.remove(index).stop().await;
    }

    /// Kills the fleet's worker `index` abruptly, as a crash would.
    pub fn kill_worker(&mut self, index: usize) {
        self.workers.remove(index).kill();
    }

    /// Starts one more scheduler on the same database and namespace.
    pub async fn spawn_scheduler(&self) -> Service {
        let ops = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ops port");
        let config = self.scheduler_config();
        let scheduler = weft_scheduler::Scheduler::new(config)
            .await
            .expect("scheduler starts");
        spawn(url_of(&ops), move |stop| async move {
            scheduler
                .serve(ops, async move { stop.cancelled().await })
                .await
                .expect("scheduler serves");
        })
    }

    /// Starts one more scheduler like [`Fleet::spawn_scheduler`], on a runtime of its own
    /// so that [`Process::kill`] ends all of it.
    pub async fn spawn_scheduler_process(&self) -> Process {
        let config = self.scheduler_config();
        Process::start("weft-scheduler", move |ops| async move {
            let scheduler = weft_scheduler::Scheduler::new(config)
                .await
                .expect("scheduler starts");
            scheduler
                .serve(ops, std::future::pending())
                .await
                .expect("scheduler serves");
        })
        .await
    }

    fn scheduler_config(&self) -> weft_scheduler::Config {
        weft_scheduler::Config::try_parse_from([
            "weft-scheduler",
            "--database-url",
            &self.db.url,
            "--database-pool-size",
            "4",
            "--amqp-url",
            &amqp_url(),
            "--namespace",
            &self.namespace,
            "--sweep-interval",
            "500ms",
            "--requeue-after",
            "2s",
            // Tests of lost tasks wait for a node's deadline: keep it short.
            "--node-deadline-grace",
            "2s",
            "--shutdown-timeout",
            "5s",
        ])
        .expect("scheduler test configuration parses")
    }

    /// Starts one more worker on the namespace.
    pub async fn spawn_worker(&self) -> Service {
        let ops = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ops port");
        let config = self.worker_config();
        let worker = weft_worker::Worker::new(config).expect("worker starts");
        spawn(url_of(&ops), move |stop| async move {
            worker
                .serve(ops, async move { stop.cancelled().await })
                .await
                .expect("worker serves");
        })
    }

    /// Starts one more worker like [`Fleet::spawn_worker`], on a runtime of its own so
    /// that [`Process::kill`] ends all of it.
    pub async fn spawn_worker_process(&self) -> Process {
        let config = self.worker_config();
        Process::start("weft-worker", move |ops| async move {
            let worker = weft_worker::Worker::new(config).expect("worker starts");
            worker
                .serve(ops, std::future::pending())
                .await
                .expect("worker serves");
        })
        .await
    }

    fn worker_config(&self) -> weft_worker::Config {
        weft_worker::Config::try_parse_from([
            "weft-worker",
            "--amqp-url",
            &amqp_url(),
            "--namespace",
            &self.namespace,
            "--master-keys",
            &self.keys,
            "--egress-allow",
            "127.0.0.0/8",
            "--concurrency",
            "16",
            "--shutdown-timeout",
            "5s",
        ])
        .expect("worker test configuration parses")
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.namespace)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// How many messages wait, ready, in `queue` (one of [`Fleet::topology`]'s), as the
    /// broker counts them: delivered but unacknowledged ones are not counted.
    pub async fn messages_ready(&self, queue: &str) -> u32 {
        let connection = queue::connect(&broker(), "weft-testkit queue depth")
            .await
            .expect("broker connection");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap_or_else(|error| panic!("queue {queue} exists: {error}"));
        let _ = connection.close(200, "done".into()).await;
        declared.message_count()
    }

    /// The Prometheus exposition served at `ops` (a service's metrics address).
    pub async fn metrics(&self, ops: &str) -> String {
        self.client
            .get(format!("{ops}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Creates a workspace through the admin API.
    pub async fn workspace(&self) -> Workspace {
        let response = self
            .client
            .post(self.url("/api/v1/admin/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "test"}))
            .send()
            .await
            .expect("gateway answers");
        assert_eq!(response.status(), 201, "workspace creation");
        let body: Value = response.json().await.expect("JSON body");
        Workspace {
            id: body["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("workspace id: {body}")),
            api_key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// Sends a JSON request with the workspace's key; returns status and JSON body.
    pub async fn call(
        &self,
        workspace: &Workspace,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&workspace.api_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("gateway answers")).await
    }

    /// Creates and activates a scenario; returns its id and webhook path.
    pub async fn active_scenario(
        &self,
        workspace: &Workspace,
        definition: Value,
    ) -> (ScenarioId, String) {
        let (status, created) = self
            .call(workspace, "POST", "/api/v1/scenarios", Some(definition))
            .await;
        assert_eq!(status, 201, "scenario creation: {created}");
        let id: ScenarioId = created["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("scenario id: {created}"));
        let (status, activated) = self
            .call(
                workspace,
                "POST",
                &format!("/api/v1/scenarios/{id}/activate"),
                None,
            )
            .await;
        assert_eq!(status, 200, "activation: {activated}");
        let path = created["webhook"]["path"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (id, path)
    }

    /// Fires a webhook with a JSON body; returns the run id from the 202.
    pub async fn fire(&self, hook_path: &str, body: Value) -> RunId {
        let response = self
            .client
            .post(self.url(hook_path))
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(status, 202, "webhook: {body}");
        accepted(&body)
    }

    /// Starts a manual run of `scenario` with `body` as its trigger body; returns its id.
    pub async fn start_run(
        &self,
        workspace: &Workspace,
        scenario: ScenarioId,
        body: Value,
    ) -> RunId {
        let path = format!("/api/v1/scenarios/{scenario}/runs");
        let answer: RunAccepted = self.typed(workspace, "POST", &path, Some(body), 202).await;
        answer.run_id
    }

    /// Starts a run of a new one-node scenario that calls `url`; returns its id. What a
    /// check that something did *not* happen waits on: the run is requested after what the
    /// test did, and goes through the same queues, scheduler and worker, so once it has
    /// finished they have dealt with the earlier messages too.
    pub async fn witness_run(&self, workspace: &Workspace, url: &str) -> RunId {
        let definition = json!({
            "name": "witness",
            "trigger": {"type": "manual"},
            "nodes": [http_node("witness", &[], json!({"method": "POST", "url": url}))]
        });
        let (scenario, _) = self.active_scenario(workspace, definition).await;
        self.start_run(workspace, scenario, json!({})).await
    }

    /// Like [`Fleet::witness_run`], and waits until the run completed.
    pub async fn witness(&self, workspace: &Workspace, url: &str) {
        let run = self.witness_run(workspace, url).await;
        let run = self
            .wait_for_run(workspace, run, Duration::from_secs(30))
            .await;
        assert_eq!(
            run.summary.status,
            RunStatus::Completed,
            "witness run: {}",
            shown(&run)
        );
    }

    /// The run as `GET /api/v1/runs/{id}` shows it; panics, with the body, on any answer
    /// but 200.
    pub async fn get_run(&self, workspace: &Workspace, run: RunId) -> RunDetail {
        let path = format!("/api/v1/runs/{run}");
        self.typed(workspace, "GET", &path, None, 200).await
    }

    /// Cancels a run; panics, with the body, on any answer but 200. Returns the run as
    /// the cancel left it.
    pub async fn cancel_run(&self, workspace: &Workspace, run: RunId) -> RunDetail {
        let path = format!("/api/v1/runs/{run}/cancel");
        self.typed(workspace, "POST", &path, None, 200).await
    }

    /// Sends a request like [`Fleet::call`] and reads its answer as `T`; panics, with the
    /// body, unless the status is `expected` and the body reads as `T`.
    async fn typed<T: DeserializeOwned>(
        &self,
        workspace: &Workspace,
        method: &str,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> T {
        let (status, answer) = self.call(workspace, method, path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        serde_json::from_value(answer.clone()).unwrap_or_else(|error| {
            panic!(
                "{method} {path}: the answer does not read as {} ({error}): {answer}",
                std::any::type_name::<T>()
            )
        })
    }

    /// The runs of `scenario`, newest first, as the run list shows them (one page of up
    /// to 200).
    pub async fn runs_of(&self, workspace: &Workspace, scenario: ScenarioId) -> Vec<RunSummary> {
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<RunSummary>,
        }
        let path = format!("/api/v1/runs?scenario_id={scenario}&limit=200");
        let page: Page = self.typed(workspace, "GET", &path, None, 200).await;
        page.items
    }

    /// Polls a run until it reaches a final status, and returns it.
    pub async fn wait_for_run(
        &self,
        workspace: &Workspace,
        run: RunId,
        timeout: Duration,
    ) -> RunDetail {
        self.wait_for_run_where(workspace, run, timeout, "finished", |run| {
            run.summary.status.is_finished()
        })
        .await
    }

    /// Polls a run until `done` holds for it (`what` says what that means, for the
    /// failure message), and returns it.
    pub async fn wait_for_run_where(
        &self,
        workspace: &Workspace,
        run: RunId,
        timeout: Duration,
        what: &str,
        done: impl Fn(&RunDetail) -> bool,
    ) -> RunDetail {
        eventually(&format!("run {run} {what}"), timeout, || async {
            let detail = self.get_run(workspace, run).await;
            if done(&detail) {
                Ok(detail)
            } else {
                Err(shown(&detail))
            }
        })
        .await
    }

    /// Creates a connection through the API (`{connector, name, config, credentials}`);
    /// returns it as the API shows it.
    pub async fn connection(&self, workspace: &Workspace, body: Value) -> Value {
        let (status, created) = self
            .call(workspace, "POST", "/api/v1/connections", Some(body))
            .await;
        assert_eq!(status, 201, "connection creation: {created}");
        created
    }

    /// Registers a connector manifest in the workspace through the API.
    pub async fn register_connector(&self, workspace: &Workspace, manifest: Value) -> Value {
        let (status, created) = self
            .call(workspace, "POST", "/api/v1/connectors", Some(manifest))
            .await;
        assert_eq!(status, 201, "connector registration: {created}");
        created
    }

    /// The fleet's database as `pg_dump` writes it (schema and data, plain SQL): to check
    /// that a secret is stored nowhere in clear.
    pub async fn pg_dump(&self) -> String {
        let url = self.db.url.clone();
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("pg_dump")
                .arg("--dbname")
                .arg(&url)
                .output()
                .expect("pg_dump runs (install the PostgreSQL client tools)");
            assert!(
                output.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .await
        .expect("pg_dump task")
    }

    /// A direct database client, for assertions the API does not expose.
    pub async fn pg(&self) -> tokio_postgres::Client {
        self.db.connect().await
    }

    /// A pool on the fleet's database, for what the operator's commands do
    /// (`weft_gateway::setup`, housekeeping).
    pub fn pool(&self) -> deadpool_postgres::Pool {
        let url: weft_runtime::tls::DatabaseUrl =
            self.db.url.parse().expect("the test database URL parses");
        weft_runtime::db::pool(&url, None, 2).expect("a pool on the test database")
    }

    /// The fleet's `WEFT_MASTER_KEYS`, for tests of what is encrypted under them.
    pub fn master_keys(&self) -> &str {
        &self.keys
    }

    /// Stops every service gracefully.
    pub async fn stop(mut self) {
        for service in self
            .workers
            .drain(..)
            .chain(self.schedulers.drain(..))
            .chain(self.extra.drain(..))
        {
            service.stop().await;
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let services = self
            .workers
            .drain(..)
            .chain(self.schedulers.drain(..))
            .chain(self.extra.drain(..));
        for service in services.chain(self.gateway.take()) {
            service.kill();
        }
        let namespace = self.namespace.clone();
        // Clean up on a thread of its own: Drop cannot await, and the test's runtime may
        // be shutting down.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime builds");
            runtime.block_on(async move {
                if let Ok(connection) = queue::connect(&broker(), "weft-testkit cleanup").await
                    && let Ok(channel) = connection.create_channel().await
                {
                    let _ = Topology::new(namespace).delete(&channel).await;
                    let _ = connection.close(200, "done".into()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The run id of a `202` answer ([`RunAccepted`]: a webhook's, a manual run's, a
/// replay's).
pub fn accepted(body: &Value) -> RunId {
    serde_json::from_value::<RunAccepted>(body.clone())
        .unwrap_or_else(|error| panic!("not a run acceptance ({error}): {body}"))
        .run_id
}

fn url_of(listener: &TcpListener) -> String {
    format!("http://{}", listener.local_addr().expect("bound address"))
}

fn spawn<F, Fut>(ops: String, run: F) -> Service
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(stop.clone()));
    Service { stop, task, ops }
}

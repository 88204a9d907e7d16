//! The message handlers. Each handles one message in one transaction that starts by
//! locking the run row (so results of one run are serialized across replicas), commits,
//! publishes what follows with confirms, and only then lets the message be acked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures_util::future::{join_all, try_join_all};
use rand::Rng;
use tracing::{Instrument, Span};
use weft_domain::graph::{Applied, Dispatch, NodeStatus, RunContext, RunOutcome, RunState};
use weft_domain::ids::{RunId, WorkspaceId};
use weft_domain::messages::{
    ErrorClass, NodeError, NodeResult, NodeTask, Outcome, RunFinished, RunRequested, VERSION,
};
use weft_domain::scenario::{NodeKind, Scenario};
use weft_domain::template::Templates;
use weft_runtime::queue::QueueError;
use weft_runtime::trace;

use crate::connectors::Connectors;
use crate::dispatch::{Dispatcher, Next};
use crate::metrics::Metrics;
use crate::run_cache::{LARGEST_CACHED_RESULT, RunCache};
use crate::store::{self, DbError, DefinitionError, Definitions, Run};
use weft_domain::run::RunStatus;

/// A failure worth another delivery of the message (the database or broker is away).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("could not publish tasks: {0}")]
    Queue(#[from] QueueError),
}

impl From<tokio_postgres::Error> for EngineError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for EngineError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(DbError::Pool(e))
    }
}

pub struct Engine {
    pool: Pool,
    definitions: Definitions,
    connectors: Connectors,
    templates: Templates,
    dispatcher: Dispatcher,
    metrics: Metrics,
    /// Added to each task's own timeout and delay to give its deadline.
    deadline_grace: Duration,
    run_cache: RunCache,
}

/// A result as it arrived: its size decides whether its run's state stays small enough to
/// cache; its span is the one its message is handled in.
pub struct Received {
    pub result: NodeResult,
    pub message_bytes: usize,
    pub span: Span,
}

/// What [`Engine::advance`] leaves to do after the commit.
struct Advanced {
    next: Next,
    /// The run completed or failed in this step.
    over: bool,
    /// Node rows were written (the run's revision went up by one).
    wrote: bool,
}

impl Engine {
    pub fn new(
        pool: Pool,
        dispatcher: Dispatcher,
        metrics: Metrics,
        deadline_grace: Duration,
        run_cache: RunCache,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            definitions: Definitions::default(),
            connectors: Connectors::default(),
            templates: Templates::new(),
            dispatcher,
            metrics,
            deadline_grace,
            run_cache,
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Takes up a recorded run: a run no longer `queued` was taken up before, and a
    /// second request changes nothing.
    ///
    /// Like every handler here, it names the run on the span of the message it handles.
    pub async fn take_up(&self, request: &RunRequested) -> Result<(), EngineError> {
        trace::record_run(request.run_id, request.workspace_id);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(run) = store::lock_run(&tx, request.run_id, request.workspace_id).await? else {
            tracing::warn!(run_id = %request.run_id, "run requested that does not exist; ignoring");
            return Ok(());
        };
        trace::record_scenario(run.scenario_id);
        if run.status != RunStatus::Queued {
            return Ok(());
        }
        let now = Utc::now();
        let scenario = match self.definitions.get(&tx, &run).await {
            Ok(scenario) => scenario,
            Err(DefinitionError::Db(e)) => return Err(e.into()),
            Err(unusable) => {
                let error = NodeError::new(ErrorClass::Permanent, unusable.to_string());
                let value = serde_json::to_value(&error).unwrap_or_default();
                store::finish_run(&tx, &run, RunStatus::Failed, Some(&value), now).await?;
                tx.commit().await?;
                self.finished(&run, "failed", now);
                return Ok(());
            }
        };
        let run = Run {
            started_at: Some(now),
            connector_pins: self
                .connectors
                .pins(&tx, run.workspace_id, &scenario)
                .await?,
            ..run
        };
        store::start_run(&tx, &run, now, scenario.timeout).await?;
        let mut state = if run.replay_of.is_some() {
            // A replay starts from the node runs the gateway copied from the original.
            RunState::resume(&scenario, store::load_nodes(&tx, &run).await?)
        } else {
            RunState::new(&scenario)
        };
        let advanced = self
            .advance(&tx, &run, &scenario, &mut state, Vec::new(), now)
            .await?;
        tx.commit().await?;
        self.keep(&run, state, &advanced);
        tracing::debug!(run_id = %run.id, tasks = advanced.next.tasks.len(), "run started");
        self.dispatcher.send(&advanced.next).await?;
        Ok(())
    }

    /// Caches a running run's state as just committed, for its next result.
    fn keep(&self, run: &Run, mut state: RunState, advanced: &Advanced) {
        if advanced.over {
            self.run_cache.forget(run.id);
            return;
        }
        store::as_stored(&mut state);
        let revision = run.revision + i64::from(advanced.wrote);
        self.run_cache.put(run.id, revision, state);
    }

    /// Records a node attempt's result; a duplicate or stale result changes nothing.
    pub async fn record(&self, result: NodeResult) -> Result<(), EngineError> {
        let received = Received {
            result,
            message_bytes: 0,
            span: Span::current(),
        };
        self.record_all(vec![received])
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Records results, several in one transaction: their runs are locked first, in id
    /// order (so two batches cannot deadlock), each run's results are applied in order
    /// while different runs' statements are pipelined, and one commit ends it all.
    /// If the batch fails, each result is tried alone, so one bad result fails only itself.
    /// Returns one outcome per result, in order.
    pub async fn record_all(&self, results: Vec<Received>) -> Vec<Result<(), EngineError>> {
        if results.len() > 1 {
            match self.record_together(&results).await {
                Ok(outcomes) => return outcomes,
                Err(e) => {
                    tracing::warn!(error = %e, results = results.len(), "recording a batch of results failed; recording each alone")
                }
            }
        }
        let alone = results.iter().map(|received| async move {
            match self.record_together(std::slice::from_ref(received)).await {
                Ok(mut outcome) => outcome.pop().unwrap_or(Ok(())),
                Err(e) => Err(e),
            }
        });
        join_all(alone).await
    }

    /// One transaction for `results`; the outcome of publishing what each led to.
    async fn record_together(
        &self,
        results: &[Received],
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let keys: Vec<(RunId, WorkspaceId)> = results
            .iter()
            .map(|r| (r.result.run_id, r.result.workspace_id))
            .collect();
        let mut runs = store::lock_runs(&tx, &keys).await?;
        // Results of one run are applied in the order they came, each on the last one's state.
        let mut by_run: HashMap<RunId, Vec<(usize, &Received)>> = HashMap::new();
        for (index, received) in results.iter().enumerate() {
            by_run
                .entry(received.result.run_id)
                .or_default()
                .push((index, received));
        }
        let locked = &tx;
        let groups = by_run.into_values().map(|group| {
            let mut first = runs.remove(&group[0].1.result.run_id);
            async move {
                let mut recorded = Vec::with_capacity(group.len());
                for (position, (index, received)) in group.into_iter().enumerate() {
                    let result = &received.result;
                    let run = match position {
                        0 => first.take(),
                        // Locked already: read again for the revision the last one left.
                        _ => store::lock_run(locked, result.run_id, result.workspace_id).await?,
                    };
                    let Some(run) = run else {
                        break;
                    };
                    let after = self
                        .record_locked(locked, run, result, received.message_bytes)
                        .instrument(received.span.clone())
                        .await?;
                    recorded.push((index, after));
                }
                Ok::<_, EngineError>(recorded)
            }
        });
        let recorded = try_join_all(groups).await?;
        tx.commit().await?;

        let mut outcomes: Vec<Result<(), EngineError>> = results.iter().map(|_| Ok(())).collect();
        let sends = recorded.into_iter().flatten().filter_map(|(index, after)| {
            let (run, state, advanced) = after?;
            self.keep(&run, state, &advanced);
            let span = results[index].span.clone();
            Some(async move {
                let sent = self.dispatcher.send(&advanced.next).instrument(span).await;
                (index, sent)
            })
        });
        for (index, sent) in join_all(sends).await {
            outcomes[index] = sent.map_err(EngineError::from);
        }
        Ok(outcomes)
    }

    /// Applies one result to its locked run; returns what to keep and send after the
    /// commit, if anything.
    async fn record_locked(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        run: Run,
        result: &NodeResult,
        message_bytes: usize,
    ) -> Result<Option<(Run, RunState, Advanced)>, EngineError> {
        trace::record_run(result.run_id, result.workspace_id);
        trace::record_node(&result.node_id, result.attempt);
        trace::record_scenario(run.scenario_id);
        if let Some(update) = &result.connection {
            store::update_connection(tx, result.workspace_id, update).await?;
        }
        let scenario = match self.definitions.get(tx, &run).await {
            Ok(scenario) => scenario,
            Err(DefinitionError::Db(e)) => return Err(e.into()),
            Err(_) => return Ok(None),
        };
        if message_bytes > LARGEST_CACHED_RESULT {
            self.run_cache.too_large(run.id);
        }
        let cached = match run.status {
            RunStatus::Running => self.run_cache.take(run.id, run.revision),
            _ => None,
        };
        let source = if cached.is_some() {
            "cache"
        } else {
            "database"
        };
        self.metrics.state_reads.with_label_values(&[source]).inc();
        let mut state = match cached {
            Some(state) => state,
            None => store::load_nodes(tx, &run).await?,
        };
        let jitter = rand::rng().random_range(0.5..=1.0);
        let now = Utc::now();
        let retry = match state.apply_result(&scenario, result, jitter) {
            Applied::Ignored => {
                let unchanged = Advanced {
                    next: Next::default(),
                    over: run.status != RunStatus::Running,
                    wrote: false,
                };
                return Ok(Some((run, state, unchanged)));
            }
            Applied::Recorded => None,
            Applied::Retry(dispatch) => Some(dispatch),
        };
        let advanced = if run.status == RunStatus::Running {
            if let Some(dispatch) = &retry {
                self.metrics
                    .node_retries
                    .with_label_values(&[connector_of(&scenario, &dispatch.node_id)])
                    .inc();
            }
            self.advance(
                tx,
                &run,
                &scenario,
                &mut state,
                retry.into_iter().collect(),
                now,
            )
            .await?
        } else {
            // The run is over (cancelled, failed, timed out): record the result, start nothing.
            if let Some(dispatch) = retry
                && let Some(node) = state.nodes.get_mut(&dispatch.node_id)
            {
                match node.items.as_mut().zip(dispatch.item_index) {
                    Some((items, index)) => {
                        if let Some(item) = items.get_mut(index as usize) {
                            item.record.status = NodeStatus::Cancelled;
                            item.record.finished_at = Some(now);
                            item.deadline_at = None;
                        }
                    }
                    None => {
                        node.record.status = NodeStatus::Cancelled;
                        node.record.finished_at = Some(now);
                    }
                }
            }
            let wrote = store::save_nodes(tx, &run, &scenario, &state, &HashMap::new()).await?;
            Advanced {
                next: Next::default(),
                over: true,
                wrote,
            }
        };
        Ok(Some((run, state, advanced)))
    }

    /// Evaluates the graph, writes what changed, finishes the run when it is over, and
    /// returns the tasks to publish after the commit (and the attempts refused before
    /// dispatch, to record as failures).
    async fn advance(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        run: &Run,
        scenario: &Scenario,
        state: &mut RunState,
        mut dispatch: Vec<Dispatch>,
        now: DateTime<Utc>,
    ) -> Result<Advanced, EngineError> {
        let context = RunContext {
            run_id: run.id,
            trigger: run.trigger.clone(),
            started_at: run.started_at.unwrap_or(now),
            now,
        };
        let step = state.advance(scenario, &context, &self.templates);
        match &step.outcome {
            None => dispatch.extend(step.dispatch),
            Some(RunOutcome::Completed) => {
                store::finish_run(tx, run, RunStatus::Completed, None, now).await?;
                self.finished(run, "completed", now);
            }
            Some(RunOutcome::Failed { node, error }) => {
                dispatch.clear();
                let error = store::run_error(node, error);
                store::finish_run(tx, run, RunStatus::Failed, Some(&error), now).await?;
                self.finished(run, "failed", now);
            }
        }
        let tasks: Vec<NodeTask> = dispatch
            .iter()
            .filter_map(|d| Dispatcher::task(run, scenario, d, now))
            .collect();
        let mut resolved = self
            .connectors
            .resolve(tx, run, scenario, tasks, now)
            .await?;
        if let (Some(outcome), Some(queue)) = (&step.outcome, &run.reply_to) {
            let status = match outcome {
                RunOutcome::Completed => RunStatus::Completed,
                RunOutcome::Failed { .. } => RunStatus::Failed,
            };
            resolved.reply = Some((
                queue.clone(),
                RunFinished {
                    v: VERSION,
                    run_id: run.id,
                    workspace_id: run.workspace_id,
                    status,
                    response: state.response(scenario, outcome),
                },
            ));
        }
        // A task's deadline counts from when it is due: a retry's backoff or a delay
        // node's wait comes before its own timeout and the grace.
        let mut deadlines = HashMap::new();
        for task in &resolved.tasks {
            let due = task.not_before.unwrap_or(now).max(now);
            let budget = chrono::Duration::milliseconds(
                i64::try_from(task.timeout_ms).unwrap_or(i64::MAX / 2),
            ) + chrono::Duration::from_std(self.deadline_grace).unwrap_or_default();
            let deadline = due
                .checked_add_signed(budget)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let item = task.item_index.and_then(|index| {
                let items = state.nodes.get_mut(&task.node_id)?.items.as_mut()?;
                items.get_mut(usize::try_from(index).ok()?)
            });
            match item {
                Some(item) => item.deadline_at = Some(deadline),
                None => {
                    deadlines.insert(task.node_id.clone(), deadline);
                }
            }
        }
        let wrote = store::save_nodes(tx, run, scenario, state, &deadlines).await?;
        Ok(Advanced {
            next: resolved,
            over: step.outcome.is_some(),
            wrote,
        })
    }

    fn finished(&self, run: &Run, status: &str, now: DateTime<Utc>) {
        if run.test {
            return;
        }
        self.metrics
            .runs_finished
            .with_label_values(&[status])
            .inc();
        if let Some(started) = run.started_at {
            let seconds = (now - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics
                .run_duration
                .with_label_values::<&str>(&[])
                .observe(seconds);
        }
    }

    /// Fails a run whose request could not be processed (a dead-lettered RunRequested).
    pub async fn fail_run(
        &self,
        run_id: RunId,
        workspace_id: WorkspaceId,
        error: NodeError,
    ) -> Result<(), EngineError> {
        self.end_run(run_id, workspace_id, RunStatus::Failed, error)
            .await
    }

    /// Ends a run that passed its deadline: it is `timed_out`, its unfinished nodes cancelled.
    pub async fn time_out(
        &self,
        run_id: RunId,
        workspace_id: WorkspaceId,
    ) -> Result<(), EngineError> {
        let error = NodeError::new(ErrorClass::Timeout, "the run passed its timeout");
        self.end_run(run_id, workspace_id, RunStatus::TimedOut, error)
            .await
    }

    async fn end_run(
        &self,
        run_id: RunId,
        workspace_id: WorkspaceId,
        status: RunStatus,
        error: NodeError,
    ) -> Result<(), EngineError> {
        trace::record_run(run_id, workspace_id);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(run) = store::lock_run(&tx, run_id, workspace_id).await? else {
            return Ok(());
        };
        trace::record_scenario(run.scenario_id);
        if !matches!(run.status, RunStatus::Queued | RunStatus::Running) {
            return Ok(());
        }
        let now = Utc::now();
        if let Ok(scenario) = self.definitions.get(&tx, &run).await {
            let mut state = store::load_nodes(&tx, &run).await?;
            for node in state.nodes.values_mut() {
                node.cancel(now);
            }
            store::save_nodes(&tx, &run, &scenario, &state, &HashMap::new()).await?;
        }
        let value = serde_json::to_value(&error).unwrap_or_default();
        store::finish_run(&tx, &run, status, Some(&value), now).await?;
        tx.commit().await?;
        self.run_cache.forget(run.id);
        self.finished(&run, status.as_str(), now);
        Ok(())
    }

    /// Records a failure for one attempt of a node (or of one item of a `for_each` node),
    /// as if a worker had sent it: used for tasks past their deadline and for
    /// dead-lettered tasks.
    pub async fn fail_attempt(
        &self,
        run_id: RunId,
        workspace_id: WorkspaceId,
        node: (&str, Option<u32>),
        attempt: u32,
        error: NodeError,
    ) -> Result<(), EngineError> {
        let now = Utc::now();
        let (node_id, item_index) = node;
        let result = NodeResult {
            v: VERSION,
            run_id,
            workspace_id,
            node_id: node_id.to_owned(),
            item_index,
            attempt,
            started_at: now,
            finished_at: now,
            outcome: Outcome::Failure { error },
            connection: None,
        };
        self.record(result).await
    }
}

fn connector_of<'a>(scenario: &'a Scenario, node_id: &str) -> &'a str {
    match scenario.node(node_id).map(|n| &n.kind) {
        Some(NodeKind::Action { connector, .. }) => connector,
        _ => "none",
    }
}

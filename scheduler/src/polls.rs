//! Poll triggers (architecture §5): a connector's trigger of kind `poll` is a request a worker
//! sends every `interval`; each item it lists with an id not seen before starts one run.
//!
//! Every active scenario triggered by polling has a `poll_state` row. Each pass of every
//! scheduler first brings the rows in line with the scenarios (one scheduler at a time):
//! a row is created for a scenario newly active, and deleted, with the ids it saw, for a
//! scenario no longer active or polling something else, so that the next activation
//! records a new baseline. It then claims the due rows one at a time (`FOR UPDATE SKIP
//! LOCKED`: each poll is sent by one scheduler), moves them a whole interval on and sends
//! the poll's request to the workers as a task whose `reply_to` is the polls queue.
//!
//! Every scheduler consumes the polls queue. A poll's answer is handled in one
//! transaction that locks its row: the items are read with the manifest's JSONPaths, each
//! id is claimed in `poll_seen` (`ON CONFLICT DO NOTHING`) and each id newly claimed
//! records its run, so an answer delivered twice, or an item listed by every poll, starts
//! a run once. The first poll after activation (all its pages) only records the ids it
//! sees: the baseline. When the manifest declares a cursor, the next page is requested at
//! once, as page `n + 1` of the same poll.
//!
//! A poll is identified by the run id its tasks carry (`poll_state.poll_id`) and its page
//! by their `item_index`; an answer for any other poll or page is stale and ignored. A
//! poll whose answer never comes (a worker died, a publish failed) is lost after its
//! request's timeout and the deadline grace, and the row is claimed again.
//!
//! A failed poll (the request failed, or its answer does not have the manifest's shape)
//! starts nothing: the next one waits exponentially longer, and the error is recorded on
//! the row and as the connection's `last_error` (cleared by the next successful poll, when
//! it is still that error).
//!
//! What a poll asks and how its answer is read are plain functions over data, in
//! `weft_domain::poll`; this module holds the transactions and the publishing around them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::{Pool, Transaction};
use serde_json::Value;

use weft_domain::ids::{ConnectionId, ConnectorVersionId, RunId, ScenarioId, WorkspaceId};
use weft_domain::manifest::Manifest;
use weft_domain::messages::{NodeResult, NodeTask, Outcome, VERSION};
use weft_domain::poll::{
    DEFAULT_INTERVAL, PollSpec, backoff, interval, next_cursor, page_request, poll_spec,
    read_items, trigger,
};
use weft_domain::run::RunKind;
use weft_domain::scenario::{DEFAULT_NODE_TIMEOUT, PollTrigger, TriggerKind};
use weft_runtime::queue::Publisher;
use weft_runtime::runs::NewRun;

use crate::connectors::{CallError, Connectors, parse_connection_id};
use crate::engine::EngineError;
use crate::metrics::{Metrics, PollOutcome};
use crate::store;
use crate::triggered::{self, Fired, announce};

/// Pages one poll follows its cursor through; an API that always answers with a next
/// cursor must not keep a poll going forever.
pub const MAX_PAGES: u32 = 100;

/// Polls one pass sends at most; more due wait for the next pass.
const MAX_CLAIMS_PER_PASS: usize = 1000;

/// Arbitrary, fixed: the advisory lock of the pass that brings the rows in line with the
/// scenarios, so two schedulers never delete the same rows in different orders.
const SYNC_LOCK: i64 = 0x7765_6674_706f_6c6c;

/// What the operator configures.
#[derive(Debug, Clone, Copy)]
pub struct PollSettings {
    /// The longest a failing trigger waits between polls.
    pub max_backoff: Duration,
    /// Item ids kept per scenario: the newest ones. It must exceed what one poll lists,
    /// or ids of the same poll are forgotten and their items start runs again.
    pub seen_limit: u32,
    /// Added to a poll request's timeout to give when the poll counts as lost.
    pub lost_after: Duration,
}

/// A wait as the database clock's offset; one too long for it saturates.
fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

/// The active scenarios whose current version polls, with what they poll.
macro_rules! polled {
    () => {
        "WITH polled AS (
           SELECT s.id, s.workspace_id,
                  v.definition #>> '{trigger,connector}' AS connector,
                  v.definition #>> '{trigger,trigger}' AS trigger_key,
                  v.definition #>> '{trigger,connection}' AS connection
           FROM scenarios s
           JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
           WHERE s.status = 'active' AND s.deleted_at IS NULL
             AND v.definition #>> '{trigger,type}' = 'poll'
             AND v.definition #>> '{trigger,connector}' IS NOT NULL
             AND v.definition #>> '{trigger,trigger}' IS NOT NULL
         ) "
    };
}

/// Joins a state row `st` to its active scenario `s` and current version `v`, when that
/// version still polls what the row is for.
macro_rules! current {
    () => {
        " JOIN scenarios s ON s.id = st.scenario_id
          JOIN scenario_versions v ON v.scenario_id = s.id AND v.version = s.current_version
          WHERE s.status = 'active' AND s.deleted_at IS NULL
            AND v.definition #>> '{trigger,type}' = 'poll'
            AND v.definition #>> '{trigger,connector}' = st.connector
            AND v.definition #>> '{trigger,trigger}' = st.trigger_key
            AND (v.definition #>> '{trigger,connection}') IS NOT DISTINCT FROM st.connection "
    };
}

/// A state row, locked, with its scenario's current version.
struct State {
    scenario_id: ScenarioId,
    workspace_id: WorkspaceId,
    connector: String,
    trigger_key: String,
    connection: Option<String>,
    failures: i32,
    last_error: Option<String>,
    poll_page: i32,
    poll_baseline: bool,
    poll_version: Option<ConnectorVersionId>,
    version: i32,
    /// The scenario's `trigger` object.
    trigger: Value,
    /// The database's clock, the one every scheduler shares.
    now: DateTime<Utc>,
}

const STATE_COLUMNS: &str =
    "st.scenario_id, st.workspace_id, st.connector, st.trigger_key, st.connection,
     st.failures, st.last_error, st.poll_page, st.poll_baseline, st.poll_version,
     s.current_version, v.definition -> 'trigger' AS trigger, now() AS now";

impl State {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            scenario_id: row.try_get("scenario_id")?,
            workspace_id: row.try_get("workspace_id")?,
            connector: row.try_get("connector")?,
            trigger_key: row.try_get("trigger_key")?,
            connection: row.try_get("connection")?,
            failures: row.try_get("failures")?,
            last_error: row.try_get("last_error")?,
            poll_page: row.try_get("poll_page")?,
            poll_baseline: row.try_get("poll_baseline")?,
            poll_version: row.try_get("poll_version")?,
            version: row.try_get("current_version")?,
            trigger: row.try_get("trigger")?,
            now: row.try_get("now")?,
        })
    }

    /// The connection, when the trigger names one that is an id.
    fn connection_id(&self) -> Option<ConnectionId> {
        self.connection
            .as_deref()
            .and_then(|id| id.parse::<ConnectionId>().ok())
    }
}

/// One page of a poll: the poll's id, the page's number, and the cursor that asks for it.
/// A poll's tasks and results carry its id where a run's goes, so it is a [`RunId`].
#[derive(Debug, Clone, Copy)]
struct Page<'a> {
    poll_id: RunId,
    number: u32,
    cursor: Option<&'a str>,
}

/// What a poll handler publishes after its commit.
#[derive(Default)]
struct After {
    runs: Vec<Fired>,
    task: Option<NodeTask>,
}

pub struct Polls {
    pool: Pool,
    publisher: Arc<Publisher>,
    metrics: Metrics,
    connectors: Connectors,
    settings: PollSettings,
}

impl Polls {
    pub fn new(
        pool: Pool,
        publisher: Arc<Publisher>,
        metrics: Metrics,
        settings: PollSettings,
    ) -> Self {
        Self {
            pool,
            publisher,
            metrics,
            connectors: Connectors::default(),
            settings,
        }
    }

    /// One pass: brings the state rows in line with the scenarios, then sends the polls
    /// that are due.
    pub async fn pass(&self) -> Result<(), EngineError> {
        self.sync().await?;
        for _ in 0..MAX_CLAIMS_PER_PASS {
            if !self.claim().await? {
                break;
            }
        }
        Ok(())
    }

    /// Creates the rows of scenarios newly polling and deletes those of scenarios no
    /// longer polling what their row is for; skipped while another scheduler does it.
    async fn sync(&self) -> Result<(), EngineError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SYNC_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(());
        }
        let forget = tx
            .prepare_cached(concat!(
                polled!(),
                "DELETE FROM poll_state st WHERE NOT EXISTS (
                   SELECT 1 FROM polled p
                   WHERE p.id = st.scenario_id AND p.connector = st.connector
                     AND p.trigger_key = st.trigger_key
                     AND p.connection IS NOT DISTINCT FROM st.connection)"
            ))
            .await?;
        let forgotten = tx.execute(&forget, &[]).await?;
        let create = tx
            .prepare_cached(concat!(
                polled!(),
                "INSERT INTO poll_state (scenario_id, workspace_id, connector, trigger_key, connection)
                 SELECT id, workspace_id, connector, trigger_key, connection FROM polled
                 ON CONFLICT (scenario_id) DO NOTHING"
            ))
            .await?;
        let created = tx.execute(&create, &[]).await?;
        tx.commit().await?;
        if forgotten + created > 0 {
            tracing::info!(
                created,
                forgotten,
                "poll triggers started and stopped with their scenarios"
            );
        }
        Ok(())
    }

    /// Claims one due poll and sends its first page; `false` when none is due.
    async fn claim(&self) -> Result<bool, EngineError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx
            .prepare_cached(&format!(
                "SELECT {STATE_COLUMNS} FROM poll_state st {}
                   AND st.next_poll_at <= now()
                   AND (st.poll_id IS NULL OR st.poll_deadline <= now())
                 ORDER BY st.next_poll_at
                 LIMIT 1
                 FOR UPDATE OF st SKIP LOCKED",
                current!()
            ))
            .await?;
        let Some(row) = tx.query_opt(&statement, &[]).await? else {
            return Ok(false);
        };
        let state = State::from_row(&row)?;
        let chosen = match PollTrigger::parse(&state.trigger) {
            Ok(trigger) => trigger.interval,
            Err(invalid) => {
                let message = format!("the scenario's poll trigger is not valid: {invalid}");
                self.fail(&tx, &state, DEFAULT_INTERVAL, &message, None)
                    .await?;
                tx.commit().await?;
                return Ok(true);
            }
        };
        let found = self
            .connectors
            .poll_manifest(&tx, state.workspace_id, &state.connector, None)
            .await?;
        let Some((version, manifest)) = found else {
            let message = format!(
                "connector `{}` is neither built in nor registered in this workspace",
                state.connector
            );
            self.fail(&tx, &state, interval(chosen, None), &message, None)
                .await?;
            tx.commit().await?;
            return Ok(true);
        };
        let spec = match poll_spec(&manifest, &state.trigger_key) {
            Ok(spec) => spec,
            Err(message) => {
                self.fail(&tx, &state, interval(chosen, None), &message, None)
                    .await?;
                tx.commit().await?;
                return Ok(true);
            }
        };
        let every = interval(chosen, Some(spec.interval));
        let poll_id = RunId::generate();
        let first = Page {
            poll_id,
            number: 0,
            cursor: None,
        };
        let task = match self.task(&tx, &state, &manifest, &spec, first).await {
            Ok(task) => task,
            Err(CallError::Refused(refused)) => {
                self.fail(&tx, &state, every, &refused.to_string(), None)
                    .await?;
                tx.commit().await?;
                return Ok(true);
            }
            Err(CallError::Db(e)) => return Err(e.into()),
        };
        let start = tx
            .prepare_cached(
                "UPDATE poll_state SET poll_id = $2, poll_page = 0, poll_baseline = NOT baseline_done,
                     poll_version = $3, poll_deadline = $4, next_poll_at = $5, updated_at = now()
                 WHERE scenario_id = $1",
            )
            .await?;
        tx.execute(
            &start,
            &[
                &state.scenario_id,
                &poll_id,
                &version,
                &self.deadline(&task, state.now),
                &(state.now + delta(every)),
            ],
        )
        .await?;
        tx.commit().await?;
        self.send(task).await;
        Ok(true)
    }

    /// The task of one page of a poll.
    async fn task(
        &self,
        tx: &Transaction<'_>,
        state: &State,
        manifest: &Manifest,
        spec: &PollSpec<'_>,
        page: Page<'_>,
    ) -> Result<NodeTask, CallError> {
        let connection_id = state
            .connection
            .as_deref()
            .map(parse_connection_id)
            .transpose()?;
        let (request, input) = page_request(spec.request, spec.cursor.zip(page.cursor));
        let call = self
            .connectors
            .poll_call(tx, state.workspace_id, manifest, &request, connection_id)
            .await?;
        let timeout = request
            .timeout
            .as_deref()
            .and_then(|text| humantime::parse_duration(text).ok())
            .unwrap_or(DEFAULT_NODE_TIMEOUT);
        Ok(NodeTask {
            v: VERSION,
            run_id: page.poll_id,
            workspace_id: state.workspace_id,
            node_id: format!("poll:{}", state.trigger_key),
            item_index: Some(page.number),
            attempt: 1,
            connector: state.connector.clone(),
            action: state.trigger_key.clone(),
            input,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            ready_at: call.not_before.unwrap_or(state.now),
            not_before: call.not_before,
            call: Some(Box::new(call.call)),
            reply_to: Some(self.publisher.topology().polls()),
        })
    }

    /// When a poll whose task is `task` counts as lost.
    fn deadline(&self, task: &NodeTask, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = task.not_before.unwrap_or(now).max(now);
        start + delta(Duration::from_millis(task.timeout_ms)) + delta(self.settings.lost_after)
    }

    /// Publishes a poll's task. A task the broker does not take leaves its poll to be
    /// claimed again once it counts as lost.
    async fn send(&self, task: NodeTask) {
        let (exchange, routing_key) = self.publisher.topology().route_task(&task, Utc::now());
        if let Err(e) = self.publisher.publish(&exchange, &routing_key, &task).await {
            tracing::warn!(poll_id = %task.run_id, error = %e, "could not send a poll's request; it will be sent again once the poll counts as lost");
        }
    }

    /// Records a failed poll: no poll in flight, the next one later, the error on the row
    /// and on the connection.
    async fn fail(
        &self,
        tx: &Transaction<'_>,
        state: &State,
        every: Duration,
        message: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), EngineError> {
        let failures = u32::try_from(state.failures).unwrap_or(0).saturating_add(1);
        let wait = backoff(every, failures, self.settings.max_backoff, retry_after);
        let statement = tx
            .prepare_cached(
                "UPDATE poll_state SET poll_id = NULL, poll_deadline = NULL, failures = failures + 1,
                     last_error = $2, next_poll_at = $3, updated_at = now()
                 WHERE scenario_id = $1",
            )
            .await?;
        tx.execute(
            &statement,
            &[&state.scenario_id, &message, &(state.now + delta(wait))],
        )
        .await?;
        if let Some(connection_id) = state.connection_id() {
            let statement = tx
                .prepare_cached(
                    "UPDATE connections SET last_error = $3, updated_at = now()
                     WHERE id = $1 AND workspace_id = $2",
                )
                .await?;
            tx.execute(&statement, &[&connection_id, &state.workspace_id, &message])
                .await?;
        }
        self.metrics
            .polls
            .with_label_values(&[PollOutcome::Failure.as_str()])
            .inc();
        tracing::warn!(
            scenario_id = %state.scenario_id,
            failures,
            retry_in_s = wait.as_secs(),
            error = %message,
            "poll failed; it starts nothing and the next one waits longer"
        );
        Ok(())
    }

    /// Handles the answer to one page of a poll.
    pub async fn handle(&self, result: &NodeResult) -> Result<(), EngineError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx
            .prepare_cached(&format!(
                "SELECT {STATE_COLUMNS} FROM poll_state st {}
                   AND st.poll_id = $1 AND st.workspace_id = $2
                 FOR UPDATE OF st",
                current!()
            ))
            .await?;
        let row = tx
            .query_opt(&statement, &[&result.run_id, &result.workspace_id])
            .await?;
        // Stored whatever became of the poll: a refreshed token may have replaced the one
        // the connection had.
        if let Some(update) = &result.connection {
            store::update_connection(&tx, result.workspace_id, update).await?;
        }
        let Some(row) = row else {
            tx.commit().await?;
            tracing::debug!(poll_id = %result.run_id, "answer of a poll no longer in flight; ignored");
            return Ok(());
        };
        let state = State::from_row(&row)?;
        let page = u32::try_from(state.poll_page).unwrap_or(0);
        if result.item_index != Some(page) {
            tx.commit().await?;
            tracing::debug!(poll_id = %result.run_id, page = ?result.item_index, "answer of a page already handled; ignored");
            return Ok(());
        }
        let after = self.answer(&tx, &state, result, page).await?;
        tx.commit().await?;
        announce(
            &self.publisher,
            &self.metrics,
            TriggerKind::Poll,
            after.runs,
        )
        .await;
        if let Some(task) = after.task {
            self.send(task).await;
        }
        Ok(())
    }

    async fn answer(
        &self,
        tx: &Transaction<'_>,
        state: &State,
        result: &NodeResult,
        page: u32,
    ) -> Result<After, EngineError> {
        let chosen = PollTrigger::parse(&state.trigger)
            .ok()
            .and_then(|trigger| trigger.interval);
        let found = self
            .connectors
            .poll_manifest(tx, state.workspace_id, &state.connector, state.poll_version)
            .await?;
        let Some((_, manifest)) = found else {
            let message = format!(
                "connector `{}` is no longer registered in this workspace",
                state.connector
            );
            self.fail(tx, state, interval(chosen, None), &message, None)
                .await?;
            return Ok(After::default());
        };
        let spec = match poll_spec(&manifest, &state.trigger_key) {
            Ok(spec) => spec,
            Err(message) => {
                self.fail(tx, state, interval(chosen, None), &message, None)
                    .await?;
                return Ok(After::default());
            }
        };
        let every = interval(chosen, Some(spec.interval));
        let answer = match &result.outcome {
            Outcome::Success { output } => output,
            Outcome::Failure { error } => {
                let retry_after = error.retry_after_ms.map(Duration::from_millis);
                self.fail(tx, state, every, &error.message, retry_after)
                    .await?;
                return Ok(After::default());
            }
        };
        let read = read_items(answer, spec.items, spec.id).and_then(|items| {
            let next = match spec.cursor {
                Some(cursor) => next_cursor(answer, cursor)?,
                None => None,
            };
            Ok((items, next))
        });
        let (items, next) = match read {
            Ok(read) => read,
            Err(message) => {
                let message = format!("the poll's answer does not fit the trigger: {message}");
                self.fail(tx, state, every, &message, None).await?;
                return Ok(After::default());
            }
        };
        if items.without_id > 0 {
            tracing::warn!(
                scenario_id = %state.scenario_id,
                skipped = items.without_id,
                id = spec.id,
                "polled items without an id were skipped: they cannot be told apart"
            );
        }
        let runs = self.claim_items(tx, state, items.found).await?;

        let next = next.filter(|_| {
            let more = page + 1 < MAX_PAGES;
            if !more {
                tracing::warn!(scenario_id = %state.scenario_id, pages = MAX_PAGES, "poll stopped following its cursor at the page limit");
            }
            more
        });
        if let Some(cursor) = next {
            let next_page = Page {
                poll_id: result.run_id,
                number: page + 1,
                cursor: Some(&cursor),
            };
            let task = self.task(tx, state, &manifest, &spec, next_page).await;
            return match task {
                Ok(task) => {
                    let statement = tx
                        .prepare_cached(
                            "UPDATE poll_state SET poll_page = $2, poll_deadline = $3, updated_at = now()
                             WHERE scenario_id = $1",
                        )
                        .await?;
                    let next_page = i32::try_from(page + 1).unwrap_or(i32::MAX);
                    tx.execute(
                        &statement,
                        &[
                            &state.scenario_id,
                            &next_page,
                            &self.deadline(&task, state.now),
                        ],
                    )
                    .await?;
                    Ok(After {
                        runs,
                        task: Some(task),
                    })
                }
                Err(CallError::Refused(refused)) => {
                    self.fail(tx, state, every, &refused.to_string(), None)
                        .await?;
                    Ok(After { runs, task: None })
                }
                Err(CallError::Db(e)) => Err(e.into()),
            };
        }
        self.complete(tx, state).await?;
        Ok(After { runs, task: None })
    }

    /// Claims the ids of one page and records a run for each item newly seen (none for
    /// a baseline). Only the newest ids are kept.
    async fn claim_items(
        &self,
        tx: &Transaction<'_>,
        state: &State,
        items: Vec<(String, Value)>,
    ) -> Result<Vec<Fired>, EngineError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
        let claim = tx
            .prepare_cached(
                "INSERT INTO poll_seen (scenario_id, item_id)
                 SELECT $1, id FROM unnest($2::text[]) WITH ORDINALITY AS listed (id, position)
                 ORDER BY position
                 ON CONFLICT (scenario_id, item_id) DO NOTHING
                 RETURNING item_id",
            )
            .await?;
        let claimed: HashSet<String> = tx
            .query(&claim, &[&state.scenario_id, &ids])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if !claimed.is_empty() {
            let prune = tx
                .prepare_cached(
                    "DELETE FROM poll_seen WHERE scenario_id = $1 AND seq <= (
                       SELECT seq FROM poll_seen WHERE scenario_id = $1
                       ORDER BY seq DESC OFFSET $2 LIMIT 1)",
                )
                .await?;
            let keep = i64::from(self.settings.seen_limit);
            tx.execute(&prune, &[&state.scenario_id, &keep]).await?;
        }
        if state.poll_baseline {
            return Ok(Vec::new());
        }
        let mut fired = Vec::with_capacity(claimed.len());
        for (id, item) in items {
            if !claimed.contains(&id) {
                continue;
            }
            let trigger = trigger(item);
            let run = NewRun {
                id: RunId::generate(),
                workspace_id: state.workspace_id,
                scenario_id: state.scenario_id,
                version: Some(state.version),
                kind: RunKind::Poll,
                trigger: &trigger,
                reply_to: None,
                replay_of: None,
            };
            fired.extend(triggered::record(tx, &run).await?);
        }
        Ok(fired)
    }

    /// Ends a poll whose pages all came: the baseline is recorded if it was one, and the
    /// failures are over.
    async fn complete(&self, tx: &Transaction<'_>, state: &State) -> Result<(), EngineError> {
        let statement = tx
            .prepare_cached(
                "UPDATE poll_state SET poll_id = NULL, poll_deadline = NULL, failures = 0,
                     last_error = NULL, baseline_done = baseline_done OR poll_baseline,
                     updated_at = now()
                 WHERE scenario_id = $1",
            )
            .await?;
        tx.execute(&statement, &[&state.scenario_id]).await?;
        if let (Some(connection_id), Some(error)) = (state.connection_id(), &state.last_error) {
            // Only the error a poll put there: anything else is another part's to clear.
            let statement = tx
                .prepare_cached(
                    "UPDATE connections SET last_error = NULL, updated_at = now()
                     WHERE id = $1 AND workspace_id = $2 AND status = 'active' AND last_error = $3",
                )
                .await?;
            tx.execute(&statement, &[&connection_id, &state.workspace_id, error])
                .await?;
        }
        let outcome = if state.poll_baseline {
            PollOutcome::Baseline
        } else {
            PollOutcome::Success
        };
        self.metrics
            .polls
            .with_label_values(&[outcome.as_str()])
            .inc();
        Ok(())
    }
}

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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::{Pool, Transaction};
use serde_json::{Value, json};

use weft_domain::connector;
use weft_domain::ids::{ConnectionId, ConnectorVersionId, RunId, ScenarioId, WorkspaceId};
use weft_domain::manifest::{Cursor, Manifest, RequestSpec, Trigger};
use weft_domain::messages::{NodeResult, NodeTask, Outcome, VERSION};
use weft_domain::run::RunKind;
use weft_domain::scenario::{DEFAULT_NODE_TIMEOUT, MIN_POLL_INTERVAL, PollTrigger, TriggerKind};
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

// ---- the pure part ----

/// The poll trigger `key` of a manifest, as a poll needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSpec<'a> {
    pub interval: &'a str,
    pub request: &'a RequestSpec,
    pub items: &'a str,
    pub id: &'a str,
    pub cursor: Option<&'a Cursor>,
}

/// Finds the poll trigger `key`; `Err` says why there is none.
pub fn poll_spec<'a>(manifest: &'a Manifest, key: &str) -> Result<PollSpec<'a>, String> {
    let polls = || {
        manifest
            .triggers
            .iter()
            .filter(|t| matches!(t, Trigger::Poll { .. }))
            .map(Trigger::key)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match manifest.triggers.iter().find(|t| t.key() == key) {
        Some(Trigger::Poll {
            interval,
            request,
            items,
            id,
            cursor,
            ..
        }) => Ok(PollSpec {
            interval,
            request,
            items,
            id,
            cursor: cursor.as_ref(),
        }),
        Some(Trigger::Webhook { .. }) => Err(format!(
            "trigger `{key}` of connector `{}` is a webhook trigger, not a poll trigger (its poll triggers: {})",
            manifest.key,
            polls()
        )),
        None => Err(format!(
            "connector `{}` has no trigger `{key}` (its poll triggers: {})",
            manifest.key,
            polls()
        )),
    }
}

/// The interval of a trigger whose manifest is unknown (a failed poll still waits).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How often to poll: the scenario's interval, or the manifest's, never below the minimum.
pub fn interval(chosen: Option<Duration>, manifest: Option<&str>) -> Duration {
    // The manifest's interval was checked when it was registered.
    let interval = chosen
        .or_else(|| manifest.and_then(|text| humantime::parse_duration(text).ok()))
        .unwrap_or(DEFAULT_INTERVAL);
    interval.max(MIN_POLL_INTERVAL)
}

/// How long to wait after the `failures`-th failed poll in a row: the interval doubled
/// for each, up to `max` (but never less than the interval), and at least what the
/// upstream asked for in `Retry-After`.
pub fn backoff(
    interval: Duration,
    failures: u32,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = interval.saturating_mul(2u32.saturating_pow(failures.min(31)));
    let capped = doubled.min(max.max(interval));
    capped.max(retry_after.unwrap_or_default())
}

/// The items of one answer, with their ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Items {
    /// Each item with its id, in the order of the answer; an id listed twice only once.
    pub found: Vec<(String, Value)>,
    /// Items whose id path finds nothing: they cannot be told apart, so they are skipped.
    pub without_id: usize,
}

/// Reads the items of a poll's answer (`{status, headers, body}`) with the manifest's
/// `items` path, and each item's id with its `id` path. Ids are compared as text.
pub fn read_items(answer: &Value, items_path: &str, id_path: &str) -> Result<Items, String> {
    let items = match connector::select(items_path, answer)? {
        Value::Array(items) => items,
        Value::Null => {
            return Err(format!(
                "the answer has nothing at `{items_path}`, where the trigger's items should be"
            ));
        }
        other => {
            return Err(format!(
                "the answer has {} at `{items_path}`, not a list of items",
                kind_of(&other)
            ));
        }
    };
    let mut seen = HashSet::new();
    let mut found = Vec::with_capacity(items.len());
    let mut without_id = 0;
    for item in items {
        let id = match connector::select(id_path, &item)? {
            Value::Null => None,
            Value::String(text) => Some(text),
            // Arrays come from a path that selects several values: not one identity.
            Value::Array(_) => None,
            other => Some(other.to_string()),
        };
        match id {
            Some(id) if !id.is_empty() => {
                if seen.insert(id.clone()) {
                    found.push((id, item));
                }
            }
            _ => without_id += 1,
        }
    }
    Ok(Items { found, without_id })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The cursor of the next page, when the answer has one: text or a number at the
/// cursor's `next` path; null, absent or empty ends the poll.
pub fn next_cursor(answer: &Value, cursor: &Cursor) -> Result<Option<String>, String> {
    match connector::select(&cursor.next, answer)? {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => Ok(Some(text)),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(format!(
            "the answer has {} at `{}`, not a cursor (text or a number)",
            kind_of(&other),
            cursor.next
        )),
    }
}

/// The request of one page and the input its templates see. The cursor goes in as
/// `input.cursor`, never into a template: it comes from the upstream, and text with
/// `{{` in it would otherwise be rendered.
pub fn page_request(
    request: &RequestSpec,
    cursor: Option<(&Cursor, &str)>,
) -> (RequestSpec, Value) {
    let mut request = request.clone();
    let Some((cursor, value)) = cursor else {
        return (request, json!({}));
    };
    request
        .query
        .insert(cursor.param.clone(), json!("{{ input.cursor }}"));
    (request, json!({ "cursor": value }))
}

/// The payload of a run started by a polled item, shaped like every trigger
/// (`trigger.body` is the item).
pub fn trigger(item: Value) -> Value {
    json!({"body": item, "headers": {}, "query": {}, "method": "POLL"})
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

// ---- the database and broker edges ----

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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_domain::manifest;

    fn manifest() -> Manifest {
        manifest::validate(&json!({
            "key": "acme", "name": "Acme", "version": "1.0.0", "base_url": "https://acme.test",
            "actions": [{"key": "get", "name": "Get", "request": {"method": "GET", "path": "/x"}}],
            "triggers": [
                {"kind": "poll", "key": "new_contact", "name": "New contact", "interval": "5m",
                 "request": {"method": "GET", "path": "/contacts", "query": {"limit": 50}},
                 "items": "$.body.data", "id": "$.id",
                 "cursor": {"param": "after", "next": "$.body.next"}},
                {"kind": "webhook", "key": "deleted", "name": "Deleted", "signature": "github"}
            ]
        }))
        .expect("a valid manifest")
    }

    #[test]
    fn the_poll_trigger_is_found_by_key_and_other_triggers_are_named() {
        let manifest = manifest();
        let spec = poll_spec(&manifest, "new_contact").expect("a poll trigger");
        assert_eq!(
            (
                spec.interval,
                spec.items,
                spec.id,
                spec.request.path.as_str()
            ),
            ("5m", "$.body.data", "$.id", "/contacts")
        );
        assert_eq!(spec.cursor.map(|c| c.param.as_str()), Some("after"));
        assert_eq!(
            poll_spec(&manifest, "deleted"),
            Err("trigger `deleted` of connector `acme` is a webhook trigger, not a poll trigger (its poll triggers: new_contact)".into())
        );
        assert_eq!(
            poll_spec(&manifest, "gone"),
            Err("connector `acme` has no trigger `gone` (its poll triggers: new_contact)".into())
        );
    }

    #[test]
    fn the_interval_is_the_scenarios_or_the_manifests_and_never_below_the_minimum() {
        assert_eq!(
            interval(Some(Duration::from_secs(2)), Some("5m")),
            Duration::from_secs(2)
        );
        assert_eq!(interval(None, Some("5m")), Duration::from_secs(300));
        assert_eq!(interval(None, Some("0s")), MIN_POLL_INTERVAL);
        assert_eq!(interval(None, None), DEFAULT_INTERVAL);
        assert_eq!(
            interval(Some(Duration::from_millis(10)), Some("5m")),
            MIN_POLL_INTERVAL
        );
    }

    #[test]
    fn failures_double_the_wait_up_to_the_cap_and_honour_retry_after() {
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=7)
            .map(|failures| backoff(minute, failures, hour, None).as_secs())
            .collect();
        assert_eq!(waits, [120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff(minute, u32::MAX, hour, None), hour);
        // A cap below the interval never makes a failing trigger poll faster.
        assert_eq!(backoff(hour, 3, minute, None), hour);
        assert_eq!(
            backoff(minute, 1, hour, Some(Duration::from_secs(900))),
            Duration::from_secs(900)
        );
        assert_eq!(
            backoff(minute, 1, hour, Some(Duration::from_secs(5))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn items_are_read_with_their_ids_as_text_in_answer_order() {
        let answer = json!({"status": 200, "body": {"data": [
            {"id": 7, "name": "a"}, {"id": "x-1"}, {"name": "no id"}, {"id": 7, "name": "again"},
            {"id": ""}, {"id": true}
        ]}});
        let items = read_items(&answer, "$.body.data", "$.id").expect("items");
        let ids: Vec<&str> = items.found.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["7", "x-1", "true"]);
        assert_eq!(items.found[0].1["name"], "a", "the first of a repeated id");
        assert_eq!(items.without_id, 2);

        let nested = json!({"body": {"pages": [{"items": [{"id": 1}]}, {"items": [{"id": 2}]}]}});
        let items = read_items(&nested, "$.body.pages[*].items[*]", "$.id").expect("items");
        assert_eq!(
            items.found.len(),
            2,
            "a path selecting several values lists them"
        );

        let top = json!({"body": [{"id": 1}]});
        assert_eq!(
            read_items(&top, "$.body", "$.id")
                .expect("a body that is the list")
                .found
                .len(),
            1
        );
    }

    #[test]
    fn an_answer_without_the_list_says_what_it_found() {
        let answer = json!({"body": {"data": {"id": 1}}});
        assert_eq!(
            read_items(&answer, "$.body.data", "$.id"),
            Err("the answer has an object at `$.body.data`, not a list of items".into())
        );
        assert_eq!(
            read_items(&answer, "$.body.items", "$.id"),
            Err(
                "the answer has nothing at `$.body.items`, where the trigger's items should be"
                    .into()
            )
        );
        assert!(read_items(&answer, "$[", "$.id").is_err());
    }

    #[test]
    fn the_next_cursor_is_text_or_a_number_and_absent_ends_the_poll() {
        let cursor = Cursor {
            param: "after".into(),
            next: "$.body.next".into(),
        };
        let next = |body: Value| next_cursor(&json!({ "body": body }), &cursor);
        assert_eq!(next(json!({"next": "c2"})), Ok(Some("c2".into())));
        assert_eq!(next(json!({"next": 40})), Ok(Some("40".into())));
        assert_eq!(next(json!({"next": null})), Ok(None));
        assert_eq!(next(json!({"next": ""})), Ok(None));
        assert_eq!(next(json!({})), Ok(None));
        assert_eq!(
            next(json!({"next": {"page": 2}})),
            Err(
                "the answer has an object at `$.body.next`, not a cursor (text or a number)".into()
            )
        );
    }

    #[test]
    fn a_page_request_carries_the_cursor_as_input_never_as_a_template() {
        let manifest = manifest();
        let spec = poll_spec(&manifest, "new_contact").expect("a poll trigger");
        let cursor = spec.cursor.expect("a cursor");
        let (first, input) = page_request(spec.request, None);
        assert_eq!(&first, spec.request);
        assert_eq!(input, json!({}));

        let (next, input) = page_request(spec.request, Some((cursor, "{{ 7 * 7 }}")));
        assert_eq!(next.query["after"], json!("{{ input.cursor }}"));
        assert_eq!(next.query["limit"], json!(50));
        assert_eq!(input, json!({"cursor": "{{ 7 * 7 }}"}));
        let call = weft_domain::messages::ActionCall::new(
            &manifest,
            &manifest::Action {
                key: String::new(),
                name: String::new(),
                description: None,
                input_schema: Value::Null,
                output_schema: Value::Null,
                request: next,
                response: Default::default(),
                idempotency: None,
            },
            None,
        );
        let prepared = connector::prepare(&call, &input, &weft_domain::template::Templates::new())
            .expect("the request renders");
        assert_eq!(
            prepared.url.as_str(),
            "https://acme.test/contacts?after=%7B%7B+7+*+7+%7D%7D&limit=50",
            "the cursor is sent as it came"
        );
    }

    #[test]
    fn a_polled_run_is_triggered_like_any_other() {
        assert_eq!(
            trigger(json!({"id": 3})),
            json!({"body": {"id": 3}, "headers": {}, "query": {}, "method": "POLL"})
        );
        let names: Vec<&str> = PollOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["baseline", "success", "failure"]);
    }
}

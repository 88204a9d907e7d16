//! Fault injection (issue 8): a steady stream of webhooks while, one after the other, a
//! worker and a scheduler are killed, RabbitMQ and PostgreSQL are restarted, and every
//! connection to both is cut (a network blip). Then, from
//! the database and the upstream's log: nothing accepted is lost or stuck, no node ran
//! twice, and how many upstream calls repeated and how long each recovery took.
//!
//! Run it with `deploy/local/faults.sh`: that starts a private RabbitMQ node and a private
//! PostgreSQL cluster (`deploy/local/fault-services.sh`), points the test at them through
//! the variables below, and removes them afterwards, so it runs beside other tests.
//! Ignored by default because, without those variables, it restarts the machine's shared
//! broker and database, which would break every test running beside it.
//!
//! The restarts and the blip run shell commands: `WEFT_FAULT_BROKER_STOP`,
//! `WEFT_FAULT_BROKER_START`, `WEFT_FAULT_DB_RESTART`, `WEFT_FAULT_BLIP`; queue consumers are counted with `WEFT_FAULT_RABBITMQCTL`
//! (default `rabbitmqctl`, the local default node). The broker and database are the
//! testkit's `WEFT_TEST_AMQP_URL` and `WEFT_TEST_DATABASE_URL`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_testkit::{Fleet, Reply, Upstream, http_node};

/// Webhooks sent, one every `PACE`: 300 over 30 s.
const WEBHOOKS: u64 = 300;
const PACE: Duration = Duration::from_millis(100);
/// A sender answered 503 tries again after this, up to `SEND_ATTEMPTS` times in all.
const RESEND_AFTER: Duration = Duration::from_millis(500);
const SEND_ATTEMPTS: u32 = 60;
/// How long the upstream takes to answer: keeps a few runs in flight at every fault.
const UPSTREAM_DELAY: Duration = Duration::from_millis(300);
/// How long everything accepted may take to finish once the load ends.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a restarted dependency may take to answer again.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_BROKER_STOP: &str = "rabbitmqctl -q stop_app";
const DEFAULT_BROKER_START: &str = "rabbitmqctl -q start_app && rabbitmqctl -q await_startup";
const DEFAULT_BLIP: &str = "rabbitmqctl -q close_all_connections 'network blip' && \
     psql -h 127.0.0.1 -U postgres -d postgres -qAtc \
     \"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
       WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()\"";
const DEFAULT_DB_RESTART: &str = "pg_ctlcluster --skip-systemctl-redirect \
     \"$(ls /etc/postgresql | sort -V | head -n1)\" main restart";
const DEFAULT_RABBITMQCTL: &str = "rabbitmqctl";

/// One webhook delivery attempt as its sender saw it.
#[derive(Debug, Clone)]
struct Attempt {
    /// `<webhook>-<attempt>`: travels through the run into the upstream calls.
    key: String,
    sent: Instant,
    /// The HTTP status, or `None` when no answer came (the request hung or failed).
    status: Option<u16>,
    run_id: Option<String>,
}

/// One injected fault and when it began.
#[derive(Debug, Clone)]
struct Fault {
    name: &'static str,
    at: Instant,
}

/// How long a fault command may take: RabbitMQ 3.10's `stop_app` was seen to hang.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

fn shell(variable: &str, default: &str) {
    let command = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}` ({variable}): {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while child.try_wait().expect("fault command status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "`{command}` ({variable}) did not finish in {COMMAND_TIMEOUT:?}: the service may \
                 be left down (faults.sh removes its private ones; check shared ones by hand: \
                 `rabbitmqctl status`, `pg_isready`)"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("fault command output");
    assert!(
        output.status.success(),
        "`{command}` ({variable}) failed: {}{} — run deploy/local/faults.sh as root, or set \
         {variable} to the command that does this here",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

async fn run_shell(variable: &'static str, default: &'static str) {
    tokio::task::spawn_blocking(move || shell(variable, default))
        .await
        .expect("fault command task");
}

/// The consumers of `queue` as `rabbitmqctl` lists them: `None` where the default
/// `rabbitmqctl` cannot tell; a `WEFT_FAULT_RABBITMQCTL` that fails or does not list the
/// queue (a node other than the test's broker) is an error.
fn consumers(queue: &str) -> Option<u32> {
    let configured = std::env::var("WEFT_FAULT_RABBITMQCTL").ok();
    let rabbitmqctl = configured.as_deref().unwrap_or(DEFAULT_RABBITMQCTL);
    let command = format!("{rabbitmqctl} -q list_queues name consumers");
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output();
    let listed = output.as_ref().ok().and_then(|output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let (name, count) = line.split_once('\t')?;
                (name == queue).then(|| count.trim().parse().ok())?
            })
    });
    if configured.is_some() && listed.is_none() {
        match &output {
            Ok(output) => panic!(
                "`{command}` (WEFT_FAULT_RABBITMQCTL) does not list {queue}: it must reach the \
                 broker of WEFT_TEST_AMQP_URL ({}) {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => panic!("cannot run `{command}` (WEFT_FAULT_RABBITMQCTL): {e}"),
        }
    }
    listed
}

/// Waits until `queue` has `expected` consumers: a killed service's are gone and its
/// replacement's are there. Skipped where the default `rabbitmqctl` cannot tell.
async fn wait_consumers(queue: &str, expected: u32) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let name = queue.to_owned();
        let seen = tokio::task::spawn_blocking(move || consumers(&name))
            .await
            .expect("rabbitmqctl task");
        if seen.is_none_or(|n| n == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} has {seen:?} consumers, not {expected}, 15 s after a kill and a restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn readyz(client: &reqwest::Client, ops: &str) -> Option<u16> {
    client
        .get(format!("{ops}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Polls `/readyz` of `ops` until it answers `status`; returns how long that took.
async fn wait_readyz(client: &reqwest::Client, ops: &str, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = readyz(client, ops).await;
        if seen == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ops}/readyz still answers {seen:?}, not {status}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends webhook `n`, again after a 503 like a real sender, recording every attempt.
async fn deliver(client: reqwest::Client, url: String, n: u64, log: Arc<Mutex<Vec<Attempt>>>) {
    for attempt in 0..SEND_ATTEMPTS {
        let key = format!("{n}-{attempt}");
        let sent = Instant::now();
        let answer = client.post(&url).json(&json!({"key": key})).send().await;
        let (status, run_id) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (Some(status), body["run_id"].as_str().map(str::to_owned))
            }
            Err(_) => (None, None),
        };
        let retry = status == Some(503);
        log.lock().expect("attempt log").push(Attempt {
            key,
            sent,
            status,
            run_id,
        });
        if !retry {
            return;
        }
        tokio::time::sleep(RESEND_AFTER).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "restarts RabbitMQ and PostgreSQL: run with deploy/local/faults.sh (private ones)"]
async fn a_fleet_under_load_loses_nothing_to_kills_and_restarts() {
    // Schedulers and workers run as processes of their own, so that a kill ends all of it.
    let fleet = Fleet::with(0, 0).await;
    let mut schedulers = vec![
        fleet.spawn_scheduler_process().await,
        fleet.spawn_scheduler_process().await,
    ];
    let mut workers = vec![
        fleet.spawn_worker_process().await,
        fleet.spawn_worker_process().await,
    ];
    let upstream = Upstream::start().await;
    for path in ["/first", "/second"] {
        upstream.script(path, vec![Reply::echo().after(UPSTREAM_DELAY)]);
    }
    let workspace = fleet.workspace().await;
    let definition = json!({
        "name": "faults",
        "trigger": {"type": "webhook"},
        "settings": {"retry": {"max_attempts": 5, "initial": "200ms", "max": "2s"}},
        "nodes": [
            {"id": "prepare", "type": "transform", "output": {"key": "{{ trigger.body.key }}"}},
            http_node("first", &["prepare"], json!({"method": "POST", "url": format!("{}/first", upstream.url),
                "body": {"key": "{{ nodes.prepare.output.key }}"}})),
            http_node("second", &["first"], json!({"method": "POST", "url": format!("{}/second", upstream.url),
                "body": {"key": "{{ nodes.prepare.output.key }}", "first": "{{ nodes.first.output.status }}"}}))
        ]
    });
    let (_, hook) = fleet.active_scenario(&workspace, definition).await;
    let probe = reqwest::Client::new();

    let log = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let start = Instant::now();
    let load = {
        let (client, url, log) = (fleet.client.clone(), fleet.url(&hook), log.clone());
        tokio::spawn(async move {
            let mut senders = tokio::task::JoinSet::new();
            let mut pace = tokio::time::interval(PACE);
            for n in 0..WEBHOOKS {
                pace.tick().await;
                senders.spawn(deliver(client.clone(), url.clone(), n, log.clone()));
            }
            while let Some(sent) = senders.join_next().await {
                sent.expect("webhook sender");
            }
        })
    };

    let mut faults = Vec::new();
    let at = |seconds: u64| tokio::time::sleep_until((start + Duration::from_secs(seconds)).into());

    at(4).await;
    faults.push(Fault {
        name: "kill -9 a worker",
        at: Instant::now(),
    });
    workers.remove(0).kill();
    workers.push(fleet.spawn_worker_process().await);
    wait_consumers(&fleet.topology().tasks(), 2).await;

    at(10).await;
    faults.push(Fault {
        name: "kill -9 a scheduler",
        at: Instant::now(),
    });
    schedulers.remove(0).kill();
    schedulers.push(fleet.spawn_scheduler_process().await);
    wait_consumers(&fleet.topology().results(), 2).await;

    at(16).await;
    faults.push(Fault {
        name: "restart RabbitMQ",
        at: Instant::now(),
    });
    run_shell("WEFT_FAULT_BROKER_STOP", DEFAULT_BROKER_STOP).await;
    wait_readyz(&probe, &fleet.gateway_ops, 503, Duration::from_secs(10)).await;
    eprintln!(
        "faults: gateway /readyz is 503 {:?} after the broker stopped",
        faults[2].at.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    run_shell("WEFT_FAULT_BROKER_START", DEFAULT_BROKER_START).await;
    let broker_back = Instant::now();
    wait_readyz(&probe, &fleet.gateway_ops, 200, RECOVERY_TIMEOUT).await;
    eprintln!(
        "faults: broker down for {:?}; gateway /readyz is 200 again {:?} after it started",
        broker_back - faults[2].at,
        broker_back.elapsed()
    );

    at(24).await;
    faults.push(Fault {
        name: "restart PostgreSQL",
        at: Instant::now(),
    });
    run_shell("WEFT_FAULT_DB_RESTART", DEFAULT_DB_RESTART).await;
    wait_readyz(&probe, &fleet.gateway_ops, 200, RECOVERY_TIMEOUT).await;

    at(28).await;
    faults.push(Fault {
        name: "network blip (every connection cut)",
        at: Instant::now(),
    });
    run_shell("WEFT_FAULT_BLIP", DEFAULT_BLIP).await;
    wait_readyz(&probe, &fleet.gateway_ops, 200, RECOVERY_TIMEOUT).await;

    load.await.expect("load driver");
    let load_ended = Instant::now();
    let attempts = log.lock().expect("attempt log").clone();
    let accepted: HashMap<String, &Attempt> = attempts
        .iter()
        .filter(|a| a.status == Some(202))
        .map(|a| (a.run_id.clone().expect("a 202 names its run"), a))
        .collect();
    let mut statuses = BTreeMap::<String, usize>::new();
    for a in &attempts {
        let status = a.status.map_or("no answer".to_owned(), |s| s.to_string());
        *statuses.entry(status).or_default() += 1;
    }

    // Everything accepted reaches a final state.
    let db = fleet.pg().await;
    let unfinished = loop {
        let row = db
            .query_one(
                "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')",
                &[],
            )
            .await
            .expect("count unfinished runs");
        let unfinished: i64 = row.get(0);
        if unfinished == 0 || load_ended.elapsed() > SETTLE_TIMEOUT {
            break unfinished;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let settled_after = load_ended.elapsed();

    let runs = db
        .query("SELECT id::text, status, trigger FROM runs", &[])
        .await
        .expect("runs");
    let nodes = db
        .query(
            "SELECT run_id::text, node_id, status, attempts FROM node_runs",
            &[],
        )
        .await
        .expect("node runs");
    let received = upstream.received();

    // Upstream calls per (path, key).
    let mut calls = HashMap::<(String, String), Vec<Instant>>::new();
    for call in &received {
        let key = call.body["key"].as_str().unwrap_or_default().to_owned();
        calls
            .entry((call.path.clone(), key))
            .or_default()
            .push(call.at);
    }
    let repeated: usize = calls.values().map(|at| at.len() - 1).sum();

    // Recovery: completions (a run's first final call) pause at a fault; how long from
    // the fault until they resume, i.e. the end of the longest pause after it.
    let final_call = |key: &str| {
        calls
            .get(&("/second".to_owned(), key.to_owned()))
            .and_then(|at| at.iter().min().copied())
    };
    let mut completions: Vec<Instant> = accepted
        .values()
        .filter_map(|a| final_call(&a.key))
        .collect();
    completions.sort();
    for (i, fault) in faults.iter().enumerate() {
        let until = faults.get(i + 1).map_or(load_ended, |next| next.at);
        let refused = attempts
            .iter()
            .filter(|a| a.status == Some(503) && a.sent >= fault.at && a.sent < until)
            .count();
        let pause = completions
            .windows(2)
            .filter(|pair| pair[1] > fault.at && pair[1] < until)
            .map(|pair| (pair[1] - pair[0].max(fault.at), pair[1]))
            .max();
        let (paused, resumed) = pause.map_or((Duration::ZERO, Duration::ZERO), |(paused, at)| {
            (paused, at - fault.at)
        });
        eprintln!(
            "faults: {:<20} {refused:>3} deliveries answered 503; completions paused {paused:>6.2?}, resumed {resumed:>6.2?} after the fault",
            fault.name
        );
    }
    for (run_id, a) in &accepted {
        if let Some(done) = final_call(&a.key)
            && done - a.sent > Duration::from_secs(5)
        {
            let detail = db
                .query(
                    "SELECT node_id, status, attempts, queued_at::text, started_at::text, finished_at::text
                     FROM node_runs WHERE run_id = $1::text::uuid ORDER BY position",
                    &[run_id],
                )
                .await
                .expect("slow run's nodes");
            let detail: Vec<String> = detail
                .iter()
                .map(|r| {
                    format!(
                        "{} {} x{} q={:?} s={:?} f={:?}",
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i32>(2),
                        r.get::<_, Option<String>>(3),
                        r.get::<_, Option<String>>(4),
                        r.get::<_, Option<String>>(5)
                    )
                })
                .collect();
            let offsets: Vec<String> = faults
                .iter()
                .map(|f| format!("{} at {:?}", f.name, f.at.saturating_duration_since(a.sent)))
                .collect();
            eprintln!(
                "faults: slow run {run_id} ({}) took {:?}; faults after its 202: {offsets:?}; nodes: {detail:?}",
                a.key,
                done - a.sent
            );
        }
    }
    let attempts_over_one = nodes
        .iter()
        .filter(|row| row.get::<_, i32>("attempts") > 1)
        .count();
    eprintln!(
        "faults: {WEBHOOKS} webhooks, {} deliveries by status {statuses:?}; {} runs accepted; \
         {} upstream calls of which {repeated} repeated; {attempts_over_one} node runs took more \
         than one attempt; all settled {settled_after:?} after the load ended",
        attempts.len(),
        accepted.len(),
        received.len(),
    );

    assert_eq!(
        unfinished, 0,
        "runs still queued or running {SETTLE_TIMEOUT:?} after the load"
    );
    assert!(
        attempts.iter().all(|a| matches!(a.status, Some(202 | 503))),
        "every delivery is answered 202, or 503 while a dependency is down: {statuses:?}"
    );
    assert_eq!(
        accepted.len() as u64,
        WEBHOOKS,
        "every webhook is accepted in the end (a sender retries 503s)"
    );

    let by_id: HashMap<String, (String, Value)> = runs
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    for (run_id, attempt) in &accepted {
        let (status, _) = by_id
            .get(run_id)
            .unwrap_or_else(|| panic!("run {run_id} answered 202 is not recorded"));
        assert_eq!(status, "completed", "run {run_id} ({})", attempt.key);
        assert!(
            final_call(&attempt.key).is_some(),
            "the upstream never saw run {run_id}'s final call ({})",
            attempt.key
        );
    }
    // A delivery answered 503 started nothing: its run, if recorded, never ran.
    let refused: HashSet<&str> = attempts
        .iter()
        .filter(|a| a.status != Some(202))
        .map(|a| a.key.as_str())
        .collect();
    for (run_id, (status, trigger)) in &by_id {
        if accepted.contains_key(run_id) {
            continue;
        }
        assert_eq!(
            status, "failed",
            "run {run_id} was not accepted yet is {status}: {trigger}"
        );
    }
    for (path, key) in calls.keys() {
        assert!(
            !refused.contains(key.as_str()),
            "{path} was called for delivery {key}, which was answered 503"
        );
    }

    // One row per (run, node), each completed, in every accepted run.
    let mut per_run = HashMap::<String, Vec<(String, String)>>::new();
    for row in &nodes {
        per_run
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    for run_id in accepted.keys() {
        let mut nodes = per_run.remove(run_id).unwrap_or_default();
        nodes.sort();
        let expected: Vec<(String, String)> = ["first", "prepare", "second"]
            .iter()
            .map(|id| ((*id).to_owned(), "completed".to_owned()))
            .collect();
        assert_eq!(nodes, expected, "nodes of run {run_id}");
    }
    let twice = db
        .query(
            "SELECT run_id, node_id FROM node_runs GROUP BY run_id, node_id HAVING count(*) > 1",
            &[],
        )
        .await
        .expect("duplicate node runs");
    assert!(twice.is_empty(), "{} node runs recorded twice", twice.len());

    for ops in schedulers
        .iter()
        .chain(&workers)
        .map(|s| s.ops.clone())
        .chain([fleet.gateway_ops.clone()])
    {
        assert_eq!(readyz(&probe, &ops).await, Some(200), "{ops}/readyz");
    }
    fleet.stop().await;
}

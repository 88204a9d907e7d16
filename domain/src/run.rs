//! What a run is, as every service sees it: its status, the one definition the gateway
//! (API, filters), the scheduler (the engine's transitions) and the messages
//! (`RunFinished`) share, and what started it. Both are stored by name in `runs`
//! (`status`, `trigger_kind`; architecture §9).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scenario::TriggerKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Whether the run is over: nothing changes it any more but a replay (a new run).
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is none of [`RunStatus`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run status `{found}`: expected one of queued, running, completed, failed, cancelled, timed_out"
)]
pub struct UnknownRunStatus {
    pub found: String,
}

impl FromStr for RunStatus {
    type Err = UnknownRunStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| UnknownRunStatus {
                found: text.to_owned(),
            })
    }
}

/// What started a run: one of the scenario's triggers, a test run from the editor, or a
/// replay of an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunKind {
    Webhook,
    Schedule,
    Poll,
    Manual,
    /// A test run: left out of the run metrics.
    Test,
    Replay,
}

impl RunKind {
    pub const ALL: [Self; 6] = [
        Self::Webhook,
        Self::Schedule,
        Self::Poll,
        Self::Manual,
        Self::Test,
        Self::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Schedule => "schedule",
            Self::Poll => "poll",
            Self::Manual => "manual",
            Self::Test => "test",
            Self::Replay => "replay",
        }
    }

    /// Whether only an active scenario takes such a run. Its own triggers stop with a
    /// paused scenario; a person may still run, test or replay it by hand.
    pub fn requires_active_scenario(self) -> bool {
        matches!(self, Self::Webhook | Self::Schedule | Self::Poll)
    }
}

impl From<TriggerKind> for RunKind {
    fn from(kind: TriggerKind) -> Self {
        match kind {
            TriggerKind::Webhook => Self::Webhook,
            TriggerKind::Schedule => Self::Schedule,
            TriggerKind::Poll => Self::Poll,
            TriggerKind::Manual => Self::Manual,
        }
    }
}

/// A trigger kind name that is none of [`RunKind`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown run trigger kind `{found}`: expected one of webhook, schedule, poll, manual, test, replay"
)]
pub struct UnknownRunKind {
    pub found: String,
}

impl FromStr for RunKind {
    type Err = UnknownRunKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownRunKind {
                found: text.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_their_names_only() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).expect("serializes"),
                serde_json::Value::from(status.as_str())
            );
        }
        let error = "done".parse::<RunStatus>().expect_err("not a status");
        assert!(error.to_string().contains("`done`"), "{error}");
        assert!("Queued".parse::<RunStatus>().is_err());
    }

    #[test]
    fn kinds_parse_from_their_names_and_only_triggers_need_an_active_scenario() {
        for kind in RunKind::ALL {
            assert_eq!(kind.as_str().parse::<RunKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("serializes"),
                serde_json::Value::from(kind.as_str())
            );
        }
        assert!("cron".parse::<RunKind>().is_err());
        let by_hand: Vec<RunKind> = RunKind::ALL
            .into_iter()
            .filter(|kind| !kind.requires_active_scenario())
            .collect();
        assert_eq!(by_hand, [RunKind::Manual, RunKind::Test, RunKind::Replay]);
        assert_eq!(RunKind::from(TriggerKind::Poll), RunKind::Poll);
    }

    #[test]
    fn only_queued_and_running_runs_are_unfinished() {
        let unfinished: Vec<RunStatus> = RunStatus::ALL
            .into_iter()
            .filter(|status| !status.is_finished())
            .collect();
        assert_eq!(unfinished, [RunStatus::Queued, RunStatus::Running]);
    }
}

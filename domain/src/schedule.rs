//! Cron schedules (architecture §5): a pattern of 5 fields, or 6 with seconds first, read on the
//! wall clock of an IANA time zone. Pure: this module says at which instants a schedule
//! ticks; the scheduler decides which ticks to fire.
//!
//! Daylight saving time follows croner's rules (OCPS, as Vixie cron): across a spring-forward
//! gap a fixed-time job runs just after the gap and interval jobs skip the missing times;
//! across a fall-back overlap a fixed-time job runs once and interval jobs run in both passes.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: Tz = Tz::UTC;

/// A valid, firing schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

/// Why a schedule cannot be used, by the trigger field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trigger.{field}: {message}")]
pub struct ScheduleProblem {
    /// `cron` or `timezone`.
    pub field: &'static str,
    pub message: String,
}

impl Schedule {
    /// Parses a cron pattern and an optional IANA time zone (UTC when absent), reporting
    /// every problem found.
    pub fn new(pattern: &str, timezone: Option<&str>) -> Result<Self, Vec<ScheduleProblem>> {
        let mut problems = Vec::new();
        let zone = match timezone {
            None => Some(DEFAULT_TIMEZONE),
            Some(name) => Tz::from_str(name)
                .map_err(|_| {
                    problems.push(ScheduleProblem {
                        field: "timezone",
                        message: format!(
                            "unknown time zone `{name}` (expected an IANA name such as `Europe/Paris` or `UTC`)"
                        ),
                    })
                })
                .ok(),
        };
        let cron = parse_cron(pattern)
            .map_err(|message| {
                problems.push(ScheduleProblem {
                    field: "cron",
                    message,
                })
            })
            .ok();
        match (cron, zone) {
            (Some(cron), Some(zone)) => {
                let schedule = Self { cron, zone };
                // A pattern that parses may still name no real time (`0 0 31 2 *`). Any
                // pattern without a year repeats within the 400-year Gregorian cycle, so
                // one search from a fixed instant tells, whenever the check runs.
                if schedule.next_after(DateTime::UNIX_EPOCH).is_none() {
                    return Err(vec![ScheduleProblem {
                        field: "cron",
                        message: format!("`{pattern}` matches no date, so it would never fire"),
                    }]);
                }
                Ok(schedule)
            }
            _ => Err(problems),
        }
    }

    /// The first tick strictly after `instant`; `None` if the pattern never matches again.
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Croner reads whole seconds: start from the second that holds `instant`, so a
        // tick at that second (not after `instant`) is passed over.
        let start = instant.duration_trunc(TimeDelta::seconds(1)).ok()?;
        self.cron
            .find_next_occurrence(&start.with_timezone(&self.zone), false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The last tick strictly before `instant`; `None` if there is none.
    pub fn last_before(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // As in `next_after`, rounded the other way: a tick at the whole second just
        // below `instant` is before it.
        let start = instant.duration_round_up(TimeDelta::seconds(1)).ok()?;
        self.cron
            .find_previous_occurrence(&start.with_timezone(&self.zone), false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` in {}", self.cron.pattern, self.zone.name())
    }
}

/// Five fields, or six with seconds first; no year field.
fn parse_cron(pattern: &str) -> Result<Cron, String> {
    let fields = pattern.split_whitespace().count();
    // Croner also reads `@daily` and its kin; they stand for 5 fields, so are accepted.
    if !pattern.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "`{pattern}` has {fields} fields: expected 5 (minute hour day-of-month month day-of-week), or 6 with seconds first"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(pattern)
        .map_err(|e| format!("`{pattern}` is not a valid cron pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Paris;

    fn schedule(pattern: &str, timezone: Option<&str>) -> Schedule {
        Schedule::new(pattern, timezone).expect("a valid schedule")
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("an RFC 3339 instant")
    }

    /// The first `count` ticks after `start`, as UTC RFC 3339 strings.
    fn ticks(schedule: &Schedule, start: &str, count: usize) -> Vec<String> {
        let mut at = utc(start);
        (0..count)
            .map(|_| {
                at = schedule.next_after(at).expect("a next tick");
                at.to_rfc3339()
            })
            .collect()
    }

    fn problems(pattern: &str, timezone: Option<&str>) -> Vec<String> {
        Schedule::new(pattern, timezone)
            .expect_err("invalid")
            .iter()
            .map(ScheduleProblem::to_string)
            .collect()
    }

    #[test]
    fn five_fields_tick_on_the_minute_and_six_read_seconds_first() {
        let every_five_minutes = schedule("*/5 * * * *", None);
        assert_eq!(
            ticks(&every_five_minutes, "2026-01-10T12:03:30Z", 3),
            [
                "2026-01-10T12:05:00+00:00",
                "2026-01-10T12:10:00+00:00",
                "2026-01-10T12:15:00+00:00"
            ]
        );
        let every_fifteen_seconds = schedule("*/15 * * * * *", None);
        assert_eq!(
            ticks(&every_fifteen_seconds, "2026-01-10T12:00:07Z", 4),
            [
                "2026-01-10T12:00:15+00:00",
                "2026-01-10T12:00:30+00:00",
                "2026-01-10T12:00:45+00:00",
                "2026-01-10T12:01:00+00:00"
            ]
        );
        let at_second_five = schedule("5 0 9 * * MON", None);
        assert_eq!(
            ticks(&at_second_five, "2026-01-10T12:00:00Z", 2),
            ["2026-01-12T09:00:05+00:00", "2026-01-19T09:00:05+00:00"]
        );
    }

    #[test]
    fn ticks_are_strictly_after_and_strictly_before_even_within_a_second() {
        let every_second = schedule("* * * * * *", None);
        let at = utc("2026-01-10T12:00:00Z");
        assert_eq!(
            every_second.next_after(at),
            Some(utc("2026-01-10T12:00:01Z"))
        );
        let within = utc("2026-01-10T12:00:00.300Z");
        assert_eq!(
            every_second.next_after(within),
            Some(utc("2026-01-10T12:00:01Z"))
        );
        assert_eq!(every_second.last_before(within), Some(at));
        assert_eq!(
            every_second.last_before(at),
            Some(utc("2026-01-10T11:59:59Z"))
        );
    }

    #[test]
    fn wall_clock_times_are_read_in_the_time_zone() {
        let nine_in_paris = schedule("0 9 * * *", Some("Europe/Paris"));
        // CET (UTC+1) in winter, CEST (UTC+2) in summer.
        assert_eq!(
            ticks(&nine_in_paris, "2026-01-10T12:00:00Z", 1),
            ["2026-01-11T08:00:00+00:00"]
        );
        assert_eq!(
            ticks(&nine_in_paris, "2026-07-10T12:00:00Z", 1),
            ["2026-07-11T07:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_in_paris_moves_fixed_times_past_the_gap_and_skips_it_for_intervals() {
        // 2026-03-29: at 02:00 CET the clock jumps to 03:00 CEST; 02:30 does not exist.
        let half_past_two = schedule("30 2 * * *", Some("Europe/Paris"));
        assert_eq!(
            ticks(&half_past_two, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, just after the gap, once
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        let half_hourly = schedule("*/30 * * * *", Some("Europe/Paris"));
        assert_eq!(
            ticks(&half_hourly, "2026-03-29T00:15:00Z", 3),
            [
                "2026-03-29T00:30:00+00:00", // 01:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST: 02:00 and 02:30 never happen
                "2026-03-29T01:30:00+00:00", // 03:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_in_paris_runs_fixed_times_once_and_intervals_in_both_passes() {
        // 2026-10-25: at 03:00 CEST the clock goes back to 02:00 CET; 02:00-03:00 happens twice.
        let half_past_two = schedule("30 2 * * *", Some("Europe/Paris"));
        assert_eq!(
            ticks(&half_past_two, "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00+00:00", // 02:30 CEST, the first pass only
                "2026-10-26T01:30:00+00:00", // 02:30 CET
            ]
        );
        let half_hourly = schedule("*/30 * * * *", Some("Europe/Paris"));
        assert_eq!(
            ticks(&half_hourly, "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:00:00+00:00", // 02:00 CET
                "2026-10-25T01:30:00+00:00", // 02:30 CET
                "2026-10-25T02:00:00+00:00", // 03:00 CET
            ]
        );
        // Backwards over the same hour: the same instants, in reverse.
        let mut at = utc("2026-10-25T02:00:00Z");
        let mut back = Vec::new();
        for _ in 0..4 {
            at = half_hourly.last_before(at).expect("a previous tick");
            back.push(at.with_timezone(&Paris).to_rfc3339());
        }
        assert_eq!(
            back,
            [
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+02:00",
            ]
        );
        assert_eq!(
            Paris.with_ymd_and_hms(2026, 10, 25, 2, 30, 0).earliest(),
            Some(utc("2026-10-25T00:30:00Z").with_timezone(&Paris))
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_named_with_their_cause() {
        assert_eq!(
            problems("* * * *", None),
            [
                "trigger.cron: `* * * *` has 4 fields: expected 5 (minute hour day-of-month month day-of-week), or 6 with seconds first"
            ]
        );
        assert!(problems("0 0 0 1 1 * 2030", None)[0].contains("has 7 fields"));
        let found = problems("61 * * * *", Some("Mars/Olympus"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("trigger.timezone: unknown time zone `Mars/Olympus`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("trigger.cron: `61 * * * *` is not a valid cron pattern"),
            "{found:?}"
        );
        assert_eq!(
            problems("0 0 31 2 *", None),
            ["trigger.cron: `0 0 31 2 *` matches no date, so it would never fire"]
        );
        assert!(Schedule::new("@hourly", Some("UTC")).is_ok());
    }
}

//! CPU and memory of the processes under test, sampled from `/proc` once a second: each
//! Weft process, the mock upstream, this driver, RabbitMQ (`beam.smp`) and PostgreSQL
//! (every `postgres` process, summed).

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// Processes found by their command name.
const POSTGRES_COMM: &str = "postgres";
const RABBITMQ_COMM: &str = "beam.smp";

/// One group's figures at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSample {
    pub name: String,
    pub pids: usize,
    /// Share of one core over the last interval (200 = two cores busy).
    pub cpu_percent: f64,
    /// Resident set, summed over the group's processes.
    pub rss_mib: f64,
    /// Proportional set size summed over the group's processes (shared pages counted
    /// once): the fair figure for PostgreSQL's many backends sharing their buffers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pss_mib: Option<f64>,
}

pub struct ProcessSampler {
    ticks_per_second: f64,
    own_pid: u32,
    /// Processes this driver started, by pid.
    known: HashMap<u32, String>,
    /// Whether to name Weft processes found by command name (a fleet not started here).
    discover: bool,
    discovered: HashMap<u32, String>,
    last_ticks: HashMap<u32, u64>,
    last_at: Option<Instant>,
}

impl ProcessSampler {
    /// `known`: the processes started by this driver, by pid and name. When empty, Weft
    /// processes are found by their command names.
    pub fn new(known: Vec<(u32, String)>) -> Self {
        Self {
            ticks_per_second: clock_ticks_per_second(),
            own_pid: std::process::id(),
            discover: known.is_empty(),
            known: known.into_iter().collect(),
            discovered: HashMap::new(),
            last_ticks: HashMap::new(),
            last_at: None,
        }
    }

    /// Only this process, RabbitMQ and PostgreSQL.
    pub fn services_only() -> Self {
        Self {
            discover: false,
            ..Self::new(Vec::new())
        }
    }

    /// The figures of every group now; CPU over the time since the previous call (the
    /// first call only sets the baseline and reports zero CPU).
    pub fn sample(&mut self) -> Vec<ProcSample> {
        let now = Instant::now();
        let elapsed = self.last_at.map(|at| now.duration_since(at).as_secs_f64());
        let mut groups: Vec<ProcSample> = Vec::new();
        let mut ticks_now = HashMap::new();
        for (pid, comm) in processes() {
            let Some(name) = self.group_of(pid, &comm) else {
                continue;
            };
            let Some(ticks) = read(pid, "stat").as_deref().and_then(parse_stat_ticks) else {
                continue;
            };
            ticks_now.insert(pid, ticks);
            let cpu = match (elapsed, self.last_ticks.get(&pid)) {
                (Some(seconds), Some(&before)) if seconds > 0.0 => {
                    ticks.saturating_sub(before) as f64 / self.ticks_per_second / seconds * 100.0
                }
                // Started during the interval: everything it used, it used in it.
                (Some(seconds), None) if seconds > 0.0 => {
                    ticks as f64 / self.ticks_per_second / seconds * 100.0
                }
                _ => 0.0,
            };
            let rss = read(pid, "status")
                .as_deref()
                .and_then(|s| parse_kib(s, "VmRSS:"))
                .unwrap_or(0) as f64
                / 1024.0;
            let pss = (comm == POSTGRES_COMM)
                .then(|| read(pid, "smaps_rollup"))
                .flatten()
                .as_deref()
                .and_then(|s| parse_kib(s, "Pss:"))
                .map(|kib| kib as f64 / 1024.0);
            match groups.iter_mut().find(|g| g.name == name) {
                Some(group) => {
                    group.pids += 1;
                    group.cpu_percent += cpu;
                    group.rss_mib += rss;
                    if let Some(pss) = pss {
                        group.pss_mib = Some(group.pss_mib.unwrap_or(0.0) + pss);
                    }
                }
                None => groups.push(ProcSample {
                    name,
                    pids: 1,
                    cpu_percent: cpu,
                    rss_mib: rss,
                    pss_mib: pss,
                }),
            }
        }
        self.last_ticks = ticks_now;
        self.last_at = Some(now);
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        groups
    }

    fn group_of(&mut self, pid: u32, comm: &str) -> Option<String> {
        if pid == self.own_pid {
            return Some("loadtest driver".to_owned());
        }
        if let Some(name) = self.known.get(&pid) {
            return Some(name.clone());
        }
        match comm {
            POSTGRES_COMM => return Some("postgresql".to_owned()),
            RABBITMQ_COMM => return Some("rabbitmq".to_owned()),
            _ => {}
        }
        if !self.discover {
            return None;
        }
        if let Some(name) = self.discovered.get(&pid) {
            return Some(name.clone());
        }
        let base = match comm {
            "weft-gateway" => "gateway",
            "weft-scheduler" => "scheduler",
            "weft-worker" => "worker",
            "weft-loadtest" => "mock",
            _ => return None,
        };
        let n = self
            .discovered
            .values()
            .filter(|name| name.starts_with(base))
            .count();
        let name = format!("{base}-{}", n + 1);
        self.discovered.insert(pid, name.clone());
        Some(name)
    }
}

/// Every process's pid and command name.
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let comm = read(pid, "comm")?;
            Some((pid, comm.trim_end().to_owned()))
        })
        .collect()
}

fn read(pid: u32, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()
}

/// User plus system CPU time, in clock ticks, from `/proc/<pid>/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status` or `smaps_rollup`, in KiB.
pub fn parse_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat` times: 100 on every mainstream Linux, but
/// asked of `getconf` rather than assumed.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (weft (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 123456789 2048 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn memory_lines_are_read_in_kib() {
        let status = "Name:\tweft-worker\nVmPeak:\t  90000 kB\nVmRSS:\t   23456 kB\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(23456));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        let rollup = "Rss:               12000 kB\nPss:                4000 kB\nPss_Anon: 100 kB\n";
        assert_eq!(parse_kib(rollup, "Pss:"), Some(4000));
    }

    #[test]
    fn this_process_is_sampled_as_the_driver() {
        let mut sampler = ProcessSampler::new(vec![(1, "init".into())]);
        let first = sampler.sample();
        let driver = first
            .iter()
            .find(|g| g.name == "loadtest driver")
            .expect("own process sampled");
        assert!(driver.rss_mib > 0.0);
        assert_eq!(driver.cpu_percent, 0.0);
        // Burn a little CPU, then the second sample sees it.
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(60);
        while Instant::now() < until {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert_ne!(x, 1);
        let second = sampler.sample();
        let driver = second
            .iter()
            .find(|g| g.name == "loadtest driver")
            .expect("own process sampled");
        assert!(driver.cpu_percent > 0.0, "{driver:?}");
    }
}

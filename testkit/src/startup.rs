//! A service's binary started as a process, for tests of what it says at start-up: how
//! it refuses a setting, what it warns about.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Long enough for a binary to parse its configuration and exit, even on a busy machine.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A distinctive random text to put inside a secret: if it shows up in the output, the
/// secret leaked. Hex digits, so it also fits in base64 key material.
pub fn marker() -> String {
    format!("5ec7e7{}", Uuid::new_v4().simple())
}

/// A file holding `content` (removed when dropped), for the `_FILE` settings.
pub struct SecretFile {
    pub path: PathBuf,
}

impl SecretFile {
    pub fn new(content: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("weft-test-secret-{}", Uuid::new_v4().simple()));
        std::fs::write(&path, content).expect("secret file written");
        Self { path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How a process ended, and what it printed.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Exited {
    /// The process refused its configuration as a bad setting should be refused: exit
    /// code 2 and one line on stderr naming `variable`, and `secret` nowhere in its output.
    pub fn assert_refused(&self, variable: &str, secret: &str) {
        assert_eq!(self.code, Some(2), "exit code: {self:#?}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {self:#?}");
        assert!(lines[0].contains(variable), "names {variable}: {self:#?}");
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the secret appears in the output: {self:#?}"
        );
    }
}

/// Where a binary that unexpectedly starts goes instead of the shared servers: nowhere.
const NOWHERE: [(&str, &str); 4] = [
    ("WEFT_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
    ("WEFT_DATABASE_URL", "postgres://postgres@127.0.0.1:1/weft"),
    ("WEFT_HTTP_ADDR", "127.0.0.1:0"),
    ("WEFT_METRICS_ADDR", "127.0.0.1:0"),
];

/// The command for `binary` with `args`, and nothing in its environment but `env` and,
/// for what `env` does not set (nor its `_FILE` variant), [`NOWHERE`]: no `WEFT_*` or
/// `OTEL_*` variable of the test's own environment leaks in.
fn command(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let given = |name: &str| {
        env.iter()
            .any(|(set, _)| *set == name || *set == format!("{name}_FILE"))
    };
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_clear()
        .envs(NOWHERE.into_iter().filter(|(name, _)| !given(name)))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `binary` until it exits; panics if it is still running after 30 s.
pub fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Exited {
    let mut child = command(binary, args, env)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the process") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{binary} still runs after {EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    })
}

/// Starts `binary` and returns the first line it writes to stdout (its logs) for which
/// `wanted` holds, or `None` if it exits or 30 s pass first. The process is killed then.
pub fn first_log_line(
    binary: &str,
    env: &[(&str, &str)],
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut child = command(binary, &[], env)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let mut found = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) if wanted(&line) => {
                found = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found
}

//! Test support for the real Prometheus: a private `prometheus` server per
//! test on a free loopback port, with its own temporary storage, scraping
//! the given targets every second and loading the given rule files; and
//! `promtool`. Killed (and its directory removed) on drop.
//!
//! Without the binaries, [`prometheus_available`] writes one `SKIPPED:`
//! line straight to stderr (past libtest's capture, so it shows in a plain
//! `cargo test`) and returns false, unless `LAYERS_REQUIRE_PROMETHEUS=1`,
//! when it panics. `.ci/run` sets that variable.
//!
//! Include with `#[path = "support/prometheus.rs"] mod prometheus_support;`.
#![allow(dead_code)]

use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to start and answer `/-/ready`.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Whether `prometheus` and `promtool` can be run; else the skip/panic policy.
pub fn prometheus_available() -> bool {
    let runs = |bin: &str| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let found = runs("prometheus") && runs("promtool");
    if !found {
        if std::env::var("LAYERS_REQUIRE_PROMETHEUS").as_deref() == Ok("1") {
            panic!("prometheus/promtool not installed, and LAYERS_REQUIRE_PROMETHEUS=1");
        }
        static REPORTED: std::sync::Once = std::sync::Once::new();
        REPORTED.call_once(|| {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: tests/prometheus.rs: the tests that need prometheus pass without running \
                 (not installed: apt-get install prometheus; LAYERS_REQUIRE_PROMETHEUS=1 makes this a failure)"
            );
        });
    }
    found
}

/// The repository's root (where `config/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `promtool` with `args` in the repository root; returns its output,
/// panicking with it when the exit status is not success.
pub fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// A `prometheus` server this test started.
pub struct PrometheusServer {
    addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl PrometheusServer {
    /// Starts a server scraping `targets` (job `layers-gateway`) every
    /// second and evaluating `rule_files` every second.
    pub fn start(targets: &[SocketAddr], rule_files: &[&Path]) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!(
            "layers-prometheus-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("\"{}\"", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: layers-gateway\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: [{}]\n",
            rules.join(", "),
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml");
        // The port is free when chosen; another process could take it first.
        for _ in 0..5 {
            let mut s = PrometheusServer {
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                dir: dir.clone(),
                child: None,
            };
            if s.spawn() {
                return s;
            }
        }
        panic!("could not start prometheus; its log:\n{}", read_log(&dir));
    }

    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("data").display()))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--storage.tsdb.retention.time=1h")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        self.child = Some(child);
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false; // exited: port taken?
                }
            }
            if http_get(self.addr, "/-/ready").is_some_and(|(status, _)| status == 200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        false
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Prometheus's own log so far (for failure messages).
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    /// `GET /api/v1/query?query=<expr>`: the decoded JSON answer (its
    /// `status` is `success` or `error`).
    pub fn query(&self, expr: &str) -> Value {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (_, body) = http_get(self.addr, &path).expect("prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `GET <path>` as JSON (e.g. `/api/v1/rules`).
    pub fn get_json(&self, path: &str) -> Value {
        let (_, body) = http_get(self.addr, path).expect("prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
}

/// Every byte but unreserved characters (RFC 3986) as `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blocking HTTP/1.0 GET (Prometheus closes the connection after the
/// answer): status and body, or `None` when nothing answered. Bounded by
/// a 5 s read timeout.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

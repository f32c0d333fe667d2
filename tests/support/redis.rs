//! Test support for cluster mode: a private `redis-server` per test, on a
//! free loopback port, never persisting (`--save "" --appendonly no`), that
//! a test can SIGKILL and restart on the same port; and a TCP proxy in front
//! of it that a test can cut (a network partition of one instance).
//!
//! Without `redis-server` on PATH, [`RedisServer::start`] returns `None`
//! (the test returns, and libtest counts it as passed: stable Rust has no
//! "skipped" outcome), unless `LAYERS_REQUIRE_REDIS=1`, when it panics. The
//! first skip in a test binary writes one line, `SKIPPED: ...`, straight to
//! the process's stderr: libtest captures `print!`/`eprint!` of a passing
//! test, not writes to the stderr handle, so the line shows in a plain
//! `cargo test` run, once per test binary.
//!
//! Include with `#[path = "support/redis.rs"] mod redis_support;`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `redis-server` this test started. Killed on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// More `redis-server` arguments (TLS, ACL users).
    extra: Vec<String>,
    /// The ACL user and password this harness connects as, if not default.
    auth: Option<(String, String)>,
}

/// Whether `redis-server` can be run; else the skip/panic policy.
fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("LAYERS_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!("redis-server not installed, and LAYERS_REQUIRE_REDIS=1");
        }
        report_skip();
    }
    found
}

/// Writes the skip line once per test binary, past libtest's capture.
fn report_skip() {
    static REPORTED: std::sync::Once = std::sync::Once::new();
    REPORTED.call_once(|| {
        use std::io::Write;
        let exe = std::env::current_exe().ok();
        let binary = exe
            .as_deref()
            .and_then(|p| p.file_stem())
            .and_then(|s| s.to_str())
            .map_or("?", |s| s.split('-').next().unwrap_or(s))
            .to_owned();
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: tests/{binary}.rs: the tests that need redis-server pass without running \
             (not installed: apt-get install redis-server; LAYERS_REQUIRE_REDIS=1 makes this a failure)"
        );
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free port, or `None` when the test must skip.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(Vec::new(), None)
    }

    /// As `start`, with more server arguments, connecting (`url`,
    /// `connection`, `cmd`) as `auth`'s user when given.
    pub fn start_with(extra: Vec<String>, auth: Option<(String, String)>) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "layers-redis-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The port is free when chosen; another process could take it before
        // redis binds it, so try a few.
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                child: None,
                extra: extra.clone(),
                auth: auth.clone(),
            };
            if s.spawn() {
                return Some(s);
            }
        }
        panic!("could not start redis-server");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return false; // exited: port taken?
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut c).is_ok()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        match &self.auth {
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// SIGKILL (no shutdown, no save) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    /// SIGSTOP: the server holds its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} redis-server");
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A plain synchronous connection (for raw commands in tests).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test redis")
    }

    /// Runs one raw command, e.g. `r.cmd(&["XTRIM", "s", "MAXLEN", "1"])`.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.connection();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to a Redis server that can be cut: every open connection is
/// closed and new ones are closed on accept, until healed. Runs on the
/// current tokio runtime.
pub struct Partition {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut: connection tasks of an older generation end.
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    pub async fn to(target: SocketAddr) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (c, g) = (cut.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::Acquire) {
                    drop(inbound);
                    continue;
                }
                let mut rx = g.subscribe();
                let born = *rx.borrow();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Partition {
            addr,
            cut,
            generation,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Whether something listens on `addr` (a quick TCP connect).
pub fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// A `redis-sentinel` this test started, monitoring one master as
/// `name` (quorum 2, down after `down_after_ms`). Killed on drop.
pub struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Sentinel {
    /// Starts one on a free port, or `None` when the test must skip (the
    /// same policy as `RedisServer::start`, for `redis-sentinel`).
    pub fn start(master_port: u16, name: &str, down_after_ms: u64) -> Option<Sentinel> {
        let found = Command::new("redis-sentinel")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("LAYERS_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("redis-sentinel not installed, and LAYERS_REQUIRE_REDIS=1");
            }
            report_skip();
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "layers-sentinel-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for _ in 0..5 {
            let port = free_port();
            // Sentinel rewrites its config file: it must be its own.
            let conf = dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {name} {down_after_ms}\n\
                     sentinel failover-timeout {name} 2000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir.display()
                ),
            )
            .expect("sentinel config");
            let child = Command::new("redis-sentinel")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-sentinel");
            let mut s = Sentinel {
                port,
                dir: dir.clone(),
                child: Some(child),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(Ok(Some(_))) = s.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                if listening(s.addr()) {
                    return Some(s);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            s.kill();
        }
        panic!("could not start redis-sentinel");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Runs one raw command on this sentinel.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test sentinel");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

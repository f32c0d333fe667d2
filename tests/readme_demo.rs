//! The README's demo section and `layers-gateway demo` agree line by line,
//! and every printed command gets the answer its comment names.
//!
//! The demo runs on free ports (through `--config`); the README shows the
//! default ports, which are mapped to the test's before lines are compared.

mod support;

use bytes::Bytes;
use http::Method;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Reply, TestClient};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_layers-gateway");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The addresses the README shows (the embedded config's defaults).
const README_GATEWAY: &str = "127.0.0.1:8080";
const README_ADMIN: &str = "127.0.0.1:9091";
const README_ORIGIN: &str = "127.0.0.1:8081";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The demo's printed lines, and the running demo (killed on drop).
struct Demo {
    lines: Vec<String>,
    child: tokio::process::Child,
    gateway: SocketAddr,
    admin: SocketAddr,
    origin: SocketAddr,
    /// Everything the demo wrote to stdout after its commands (its log).
    rest: tokio::task::JoinHandle<String>,
}

async fn start_demo(name: &str) -> Demo {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readme-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (gw, admin, origin) = (free_port(), free_port(), free_port());
    let shipped = |f: &str| PathBuf::from(MANIFEST_DIR).join("config").join(f);
    let text = std::fs::read_to_string(shipped("gateway.toml"))
        .unwrap()
        .replacen(
            &format!("\"{README_GATEWAY}\""),
            &format!("\"127.0.0.1:{gw}\""),
            1,
        )
        .replacen(
            &format!("\"{README_ADMIN}\""),
            &format!("\"127.0.0.1:{admin}\""),
            1,
        )
        .replacen(
            &format!("\"http://{README_ORIGIN}\""),
            &format!("\"http://127.0.0.1:{origin}\""),
            1,
        )
        .replacen(
            "keys_file = \"keys.toml\"",
            &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
            1,
        );
    for port in [gw, admin, origin] {
        assert!(text.contains(&format!(":{port}\"")), "port {port} written");
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--config", path.to_str().unwrap()])
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = out.next_line().await.unwrap() {
            let done = line.contains("Ctrl-C stops the demo.");
            lines.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "demo did not print its commands: {lines:#?}"
    );
    // Keep draining stdout (the access log) so the demo never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(l)) = out.next_line().await {
            all.push_str(&l);
            all.push('\n');
        }
        all
    });
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    Demo {
        lines,
        child,
        gateway: addr(gw),
        admin: addr(admin),
        origin: addr(origin),
        rest,
    }
}

impl Demo {
    /// A README line with the README's addresses replaced by this demo's.
    fn localize(&self, readme_line: &str) -> String {
        readme_line
            .replace(README_GATEWAY, &self.gateway.to_string())
            .replace(README_ADMIN, &self.admin.to_string())
            .replace(README_ORIGIN, &self.origin.to_string())
    }

    fn curl_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.starts_with("curl "))
            .cloned()
            .collect()
    }

    /// `X=value` lines printed by the demo, as variables.
    fn variables(&self) -> HashMap<String, String> {
        self.lines
            .iter()
            .filter_map(|l| {
                let (name, rest) = l.split_once('=')?;
                let ok = name.len() == 1 && name.chars().all(|c| c.is_ascii_uppercase());
                ok.then(|| {
                    (
                        name.to_owned(),
                        rest.split_whitespace().next().unwrap_or("").to_owned(),
                    )
                })
            })
            .collect()
    }

    /// SIGTERM, then the exit status and the rest of stdout.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("still running").to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => {
                let _ = self.child.kill().await;
                panic!("demo did not exit within 20 s of SIGTERM");
            }
        };
        let rest = tokio::time::timeout(Duration::from_secs(5), self.rest)
            .await
            .expect("stdout closes")
            .unwrap();
        (status, rest)
    }
}

/// The fenced block of the README that holds the demo's variables (`K=`).
fn readme_demo_block() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in readme.lines() {
        match (&mut cur, line.starts_with("```")) {
            (None, true) => cur = Some(Vec::new()),
            (Some(_), true) => blocks.push(cur.take().unwrap()),
            (Some(b), false) => b.push(line.to_owned()),
            (None, false) => {}
        }
    }
    let mut demo: Vec<Vec<String>> = blocks
        .into_iter()
        .filter(|b| b.iter().any(|l| l.starts_with("K=")))
        .collect();
    assert_eq!(demo.len(), 1, "one README block shows the demo's commands");
    demo.remove(0)
}

/// Splits a shell line into words: single quotes, double quotes with `$X`
/// expanded from `vars`, stopping at an unquoted `|` or `#`.
fn shell_words(line: &str, vars: &HashMap<String, String>) -> Vec<String> {
    let (mut words, mut cur, mut in_word) = (Vec::new(), String::new(), false);
    let (mut single, mut double) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => {
                single = !single;
                in_word = true;
            }
            '"' if !single => {
                double = !double;
                in_word = true;
            }
            '$' if !single => {
                let mut name = String::new();
                while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_') {
                    name.push(n);
                    chars.next();
                }
                cur.push_str(
                    vars.get(&name)
                        .unwrap_or_else(|| panic!("${name} is not printed: {line}")),
                );
                in_word = true;
            }
            '|' | '#' if !single && !double => break,
            c if c.is_whitespace() && !single && !double => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// One printed curl command.
#[derive(Debug)]
struct Curl {
    method: Method,
    headers: Vec<(String, String)>,
    addr: SocketAddr,
    path: String,
    /// The comment after `#`: `200, x-cache: MISS`.
    answer: String,
    /// `grep PATTERN` after a pipe.
    grep: Option<String>,
}

fn parse_curl(line: &str, vars: &HashMap<String, String>) -> Curl {
    let words = shell_words(line, vars);
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{line}");
    let (mut method, mut headers, mut url) = (Method::GET, Vec::new(), None);
    let mut it = words.into_iter().skip(1);
    while let Some(w) = it.next() {
        match w.as_str() {
            "-X" => method = it.next().unwrap().parse().unwrap(),
            "-H" => {
                let h = it.next().unwrap();
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-w" => assert_eq!(it.next().as_deref(), Some("\\n"), "{line}"),
            "-i" | "-s" => {}
            u if u.starts_with("http://") => url = Some(u.to_owned()),
            other => panic!("unexpected curl argument {other:?} in {line}"),
        }
    }
    let url = url.unwrap_or_else(|| panic!("no URL in {line}"));
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let after = |sep: &str| line.split_once(sep).map(|(_, a)| a.trim().to_owned());
    Curl {
        method,
        headers,
        addr: authority.parse().unwrap_or_else(|e| panic!("{authority}: {e}")),
        path: if path.is_empty() { "/".into() } else { path.into() },
        answer: after("   # ").unwrap_or_default(),
        grep: after("| grep "),
    }
}

async fn exec(c: &Curl) -> Reply {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tokio::time::timeout(
        Duration::from_secs(10),
        TestClient::new(c.addr).send(c.method.clone(), &c.path, &headers, Bytes::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer in time to {c:?}"))
}

/// The lines compared between README and demo: the curl commands and the
/// variables that do not change between runs (`T=`, the admin token, does).
fn compared(line: &str) -> bool {
    ["curl ", "K=", "R=", "B=", "C=", "A="]
        .iter()
        .any(|p| line.starts_with(p))
}

/// Whether a reply is the answer a command's comment names.
fn answered_as_commented(c: &Curl, r: &Reply) -> bool {
    let mut parts = c.answer.split(", ");
    let status_ok = parts
        .next()
        .is_none_or(|s| s.is_empty() || s == r.status.as_str());
    let cache_ok = parts.all(|p| match p.strip_prefix("x-cache: ") {
        Some(want) => r.header("x-cache") == Some(want),
        None => true,
    });
    let grep_ok = c
        .grep
        .as_ref()
        .is_none_or(|g| String::from_utf8_lossy(&r.body).contains(g.as_str()));
    status_ok && cache_ok && grep_ok
}

#[tokio::test]
async fn the_readme_shows_exactly_the_curl_commands_the_demo_prints() {
    let demo = start_demo("lines").await;
    let readme: Vec<String> = readme_demo_block()
        .iter()
        .filter(|l| compared(l))
        .map(|l| demo.localize(l))
        .collect();
    let printed: Vec<String> = demo.lines.iter().filter(|l| compared(l)).cloned().collect();
    assert_eq!(readme, printed, "README demo block vs demo output");
    assert!(printed.iter().filter(|l| l.starts_with("curl ")).count() >= 12);
    let (status, _) = demo.stop().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn every_printed_command_gets_the_answer_its_comment_names() {
    let demo = start_demo("answers").await;
    let vars = demo.variables();
    for name in ["K", "R", "B", "C", "A", "T"] {
        assert!(vars.contains_key(name), "${name} printed: {:#?}", demo.lines);
    }
    let cmds: Vec<Curl> = demo.curl_lines().iter().map(|l| parse_curl(l, &vars)).collect();
    let targets = [demo.gateway, demo.admin, demo.origin];
    assert!(cmds.iter().all(|c| targets.contains(&c.addr)), "{cmds:#?}");
    assert!(
        cmds.iter().any(|c| c.addr == demo.origin),
        "a command regenerates at the simulator"
    );
    let mut bodies = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        // After a regenerate at the simulator, its webhook reaches the
        // gateway in the background: a pasted command comes later than
        // that; here the next read waits for it (bounded).
        let after_simulator = i > 0 && cmds[i - 1].addr == demo.origin;
        let mut reply = exec(c).await;
        for _ in 0..100 {
            if !after_simulator || answered_as_commented(c, &reply) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            reply = exec(c).await;
        }
        assert!(
            answered_as_commented(c, &reply),
            "command {i} {c:?}\nanswered {} x-cache {:?}: {}",
            reply.status,
            reply.x_cache(),
            String::from_utf8_lossy(&reply.body)
        );
        bodies.push(String::from_utf8_lossy(&reply.body).into_owned());
    }
    // The regenerates changed the asset ids: the old one ($A) is gone from
    // each container read after them, and each read differs from the last.
    let asset = &vars["A"];
    let reads: Vec<&String> = cmds
        .iter()
        .zip(&bodies)
        .filter(|(c, _)| {
            c.addr == demo.gateway
                && c.path == format!("/v1/content/{}", vars["C"])
                && c.answer.contains("200")
        })
        .map(|(_, b)| b)
        .collect();
    assert!(reads[0].contains(asset.as_str()), "the first read shows $A");
    assert!(
        reads[2..].iter().all(|b| !b.contains(asset.as_str())),
        "after regenerate, $A is gone"
    );
    assert_ne!(
        reads[2], reads[3],
        "the simulator's regenerate changed the container"
    );
    // Logs (after the commands) carry no ANSI colour codes: stdout is a pipe.
    let (status, log) = demo.stop().await;
    assert!(status.success(), "{status:?}");
    assert!(log.contains("INFO"), "the access log is on stdout: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escape codes in a piped log: {log:?}"
    );
}

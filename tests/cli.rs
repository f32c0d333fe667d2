//! The `layers-gateway` binary as an operator runs it: `check-config`,
//! `hash-key` and `demo`.

mod support;

use bytes::Bytes;
use http::Method;
use layers_gateway::auth::KeyStore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::TestClient;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_layers-gateway");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Exit code for a bad config or bad input.
const EXIT_BAD_CONFIG: i32 = 64;

/// A well-formed key that is not one of the demo keys.
const NEW_KEY: &str = "lp_live_01HZC11TEST0000X_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";
const NEW_KEY_SECRET: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-_01234";

fn shipped(file: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join("config").join(file)
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The shipped config with `keys_file` pointing at the shipped keys file by
/// absolute path, then `edit` applied.
fn config_copy(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(shipped("gateway.toml")).unwrap();
    let keys_line = "keys_file = \"keys.toml\"";
    assert!(text.contains(keys_line), "the shipped config names keys.toml");
    let text = text.replace(
        keys_line,
        &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// Runs the binary to completion (bounded), with `stdin` if given.
fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(MANIFEST_DIR)
        .env_remove("RUST_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let o = run(&["check-config", "config/gateway.toml"], None);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
}

#[test]
fn check_config_refuses_an_unknown_key_and_names_it() {
    let dir = scratch("unknown-key");
    let path = config_copy(&dir, |t| {
        t.replacen("[cache]\n", "[cache]\nsurprise_knob = 7\n", 1)
    });
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(stderr(&o).contains("surprise_knob"), "stderr: {}", stderr(&o));
    // A misspelled section is refused the same way.
    let path = config_copy(&dir, |t| t.replacen("[cache]\n", "[cahce]\n", 1));
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(stderr(&o).contains("cahce"), "stderr: {}", stderr(&o));
}

#[test]
fn check_config_refuses_a_zero_ttl_naming_cache_ttl_secs() {
    let dir = scratch("zero-ttl");
    let path = config_copy(&dir, |t| {
        assert!(t.contains("ttl_secs = 300"));
        t.replacen("ttl_secs = 300", "ttl_secs = 0", 1)
    });
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(stderr(&o).contains("cache.ttl_secs"), "stderr: {}", stderr(&o));
}

#[test]
fn check_config_refuses_a_missing_keys_file_naming_auth_keys_file() {
    let dir = scratch("missing-keys");
    let absent = dir.join("no-such-keys.toml");
    let path = config_copy(&dir, |t| {
        let shipped_keys = format!("keys_file = {:?}", shipped("keys.toml").display().to_string());
        t.replace(
            &shipped_keys,
            &format!("keys_file = {:?}", absent.display().to_string()),
        )
    });
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(stderr(&o).contains("auth.keys_file"), "stderr: {}", stderr(&o));
    // A keys file relative to the config's own directory is found there.
    let path = config_copy(&dir, |t| {
        let shipped_keys = format!("keys_file = {:?}", shipped("keys.toml").display().to_string());
        t.replace(&shipped_keys, "keys_file = \"relative-keys.toml\"")
    });
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "not there yet");
    std::fs::copy(shipped("keys.toml"), dir.join("relative-keys.toml")).unwrap();
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}

#[test]
fn hash_key_prints_an_entry_the_key_store_accepts() {
    let o = run(
        &["hash-key", "--org", "org_x", "--scopes", "content:read"],
        Some(&format!("{NEW_KEY}\n")),
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let entry = String::from_utf8(o.stdout).unwrap();
    assert!(entry.contains("[[keys]]"), "{entry}");
    let sha = hex::encode(Sha256::digest(NEW_KEY.as_bytes()));
    assert!(entry.contains(&format!("sha256 = \"{sha}\"")), "{entry}");
    assert!(!entry.contains(NEW_KEY_SECRET), "the secret is never printed");

    let store = KeyStore::parse(&entry).expect("the printed entry is a valid keys file");
    assert_eq!(store.len(), 1);
    let p = store.authenticate(NEW_KEY, None).expect("the key authenticates");
    assert_eq!(&*p.org, "org_x");
    assert_eq!(p.scopes.names(), ["content:read"]);
    assert_eq!(&*p.key_id, "01HZC11TEST0000X");
    let other_secret = NEW_KEY.replace("abcdef", "abcdeg");
    assert!(store.authenticate(&other_secret, None).is_err());
    assert!(
        store.authenticate(NEW_KEY, Some("test")).is_err(),
        "a live key is not a test key"
    );
}

#[test]
fn hash_key_refuses_a_malformed_key_or_scope() {
    for bad in ["not-a-key\n", "lp_prod_01HZC11TEST0000X_abc\n", "\n"] {
        let o = run(&["hash-key", "--org", "org_x"], Some(bad));
        assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "{bad:?}");
        assert!(o.stdout.is_empty(), "{bad:?}: nothing printed");
        assert!(!stderr(&o).is_empty());
    }
    let o = run(
        &["hash-key", "--org", "org_x", "--scopes", "content:reed"],
        Some(&format!("{NEW_KEY}\n")),
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(o.stdout.is_empty());
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

/// One request printed as a curl command.
#[derive(Debug)]
struct Curl {
    method: Method,
    headers: Vec<(String, String)>,
    addr: SocketAddr,
    path: String,
}

/// Splits a shell line into words (single quotes only, as the demo prints),
/// stopping at a pipe.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            '|' if !quoted => break,
            c if c.is_whitespace() && !quoted => {
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

fn parse_curl(line: &str) -> Curl {
    let words = shell_words(line);
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{line}");
    let mut method = Method::GET;
    let mut headers = Vec::new();
    let mut url = None;
    let mut it = words.into_iter().skip(1);
    while let Some(w) = it.next() {
        match w.as_str() {
            "-X" => method = it.next().unwrap().parse().unwrap(),
            "-H" => {
                let h = it.next().unwrap();
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-i" | "-s" => {}
            u if u.starts_with("http://") => url = Some(u.to_owned()),
            other => panic!("unexpected curl argument {other:?} in {line}"),
        }
    }
    let url = url.unwrap_or_else(|| panic!("no URL in {line}"));
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Curl {
        method,
        headers,
        addr: authority.parse().unwrap_or_else(|e| panic!("{authority}: {e}")),
        path: if path.is_empty() { "/".into() } else { path.into() },
    }
}

async fn exec(c: &Curl) -> support::Reply {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tokio::time::timeout(
        Duration::from_secs(10),
        TestClient::new(c.addr).send(c.method.clone(), &c.path, &headers, Bytes::new()),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer in time to {c:?}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn demo_prints_curl_commands_that_do_what_they_say() {
    let dir = scratch("demo");
    let (gw, admin, origin) = (free_port(), free_port(), free_port());
    let path = config_copy(&dir, |t| {
        let t = t
            .replacen(
                "listen = \"127.0.0.1:8080\"",
                &format!("listen = \"127.0.0.1:{gw}\""),
                1,
            )
            .replacen(
                "listen = \"127.0.0.1:9091\"",
                &format!("listen = \"127.0.0.1:{admin}\""),
                1,
            )
            .replacen(
                "url = \"http://127.0.0.1:8081\"",
                &format!("url = \"http://127.0.0.1:{origin}\""),
                1,
            );
        for port in [gw, admin, origin] {
            assert!(t.contains(&format!(":{port}\"")), "port {port} written");
        }
        t
    });
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--config", path.to_str().unwrap()])
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("Ctrl-C stops the demo.");
            printed.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(ready, Ok(true)),
        "demo did not print its commands: {printed:#?}"
    );
    // Keep draining stdout so the demo never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let cmds: Vec<Curl> = printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .map(parse_curl)
        .collect();
    assert_eq!(cmds.len(), 9, "{printed:#?}");
    let gw_addr: SocketAddr = format!("127.0.0.1:{gw}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    assert!(cmds[..7].iter().all(|c| c.addr == gw_addr), "{cmds:#?}");
    assert!(cmds[7..].iter().all(|c| c.addr == admin_addr), "{cmds:#?}");

    // Read a container twice: MISS, then HIT.
    let first = exec(&cmds[0]).await;
    assert_eq!((first.status.as_u16(), first.x_cache()), (200, Some("MISS")));
    let second = exec(&cmds[0]).await;
    assert_eq!((second.status.as_u16(), second.x_cache()), (200, Some("HIT")));
    assert_eq!(first.body, second.body);
    let container = first.json();
    // One asset descriptor.
    let asset = exec(&cmds[1]).await;
    assert_eq!(asset.status, 200);
    assert_eq!(asset.json()["containerId"], container["id"]);
    let old_asset_id = asset.json()["assetId"].as_str().unwrap().to_owned();
    assert_eq!(container["assets"][0]["assetId"], old_asset_id.as_str());
    // Regenerate through the gateway: new asset ids; the old one is 404 at once.
    assert_eq!(cmds[2].method, Method::POST);
    let regen = exec(&cmds[2]).await;
    assert_eq!(regen.status, 200, "{}", String::from_utf8_lossy(&regen.body));
    let new_ids: Vec<String> = regen.json()["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["assetId"].as_str().unwrap().to_owned())
        .collect();
    assert!(!new_ids.contains(&old_asset_id), "{new_ids:?}");
    assert!(cmds[3].path.ends_with(&old_asset_id));
    exec(&cmds[3]).await.assert_error(404, "NOT_FOUND");
    let reread = exec(&cmds[0]).await;
    assert_eq!(reread.status, 200);
    // (The old-asset read above already refilled the container: this may be
    // a HIT, but of the regenerated container.)
    assert!(!String::from_utf8_lossy(&reread.body).contains(&old_asset_id));
    assert_eq!(reread.json()["assets"][0]["assetId"], new_ids[0].as_str());
    // A read-only key cannot regenerate; no key is 401; another org sees 404.
    let r = exec(&cmds[4]).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.json()["error"]["details"]["requiredScope"], "content:write");
    exec(&cmds[5]).await.assert_error(401, "UNAUTHENTICATED");
    exec(&cmds[6]).await.assert_error(404, "NOT_FOUND");
    // Purge, after which the container is read from the origin again.
    assert_eq!(exec(&cmds[0]).await.x_cache(), Some("HIT"));
    let purge = exec(&cmds[7]).await;
    assert_eq!(purge.status, 200, "{}", String::from_utf8_lossy(&purge.body));
    assert_eq!(purge.json()["status"], "purged");
    assert_eq!(exec(&cmds[0]).await.x_cache(), Some("MISS"));
    // Metrics.
    let metrics = exec(&cmds[8]).await;
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("layers_gateway_"));

    // SIGTERM stops the demo cleanly.
    let pid = child.id().expect("still running");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let status = match status {
        Ok(s) => s.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            panic!("demo did not exit within 20 s of SIGTERM");
        }
    };
    assert!(status.success(), "demo exit status after SIGTERM: {status:?}");
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    assert!(
        tokio::net::TcpStream::connect(gw_addr).await.is_err(),
        "the gateway port is closed after exit"
    );
}

/// `serve` reloads its keys file on SIGHUP: a key removed from the file is
/// refused right after the signal, with the periodic check far away.
#[tokio::test]
async fn serve_reloads_the_keys_file_on_sighup() {
    let dir = scratch("sighup");
    let keys = dir.join("keys.toml");
    let entry = layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "standard").unwrap();
    std::fs::write(&keys, &entry).unwrap();
    let (gw, admin) = (free_port(), free_port());
    let path = config_copy(&dir, |t| {
        t.replacen(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{gw}\""),
            1,
        )
        .replacen(
            "listen = \"127.0.0.1:9091\"",
            &format!("listen = \"127.0.0.1:{admin}\""),
            1,
        )
        .replace(
            &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
            &format!("keys_file = {:?}", keys.display().to_string()),
        )
        .replace("reload_poll_secs = 5", "reload_poll_secs = 3600")
        // No origin listens here: an authenticated whoami is a 502, a refused one a 401.
        .replace(
            "url = \"http://127.0.0.1:8081\"",
            &format!("url = \"http://127.0.0.1:{}\"", free_port()),
        )
    });
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let client = TestClient::new(SocketAddr::from(([127, 0, 0, 1], gw)));
    let whoami = || async {
        let addr = SocketAddr::from(([127, 0, 0, 1], gw));
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return None;
        }
        Some(
            client
                .send(Method::GET, "/v1/whoami", &[("x-api-key", NEW_KEY)], Bytes::new())
                .await
                .status
                .as_u16(),
        )
    };
    let mut status = None;
    for _ in 0..100 {
        status = whoami().await;
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(502), "the key authenticates before the reload");

    std::fs::write(&keys, "# every key revoked\n").unwrap();
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let mut after = None;
    for _ in 0..100 {
        after = whoami().await;
        if after == Some(401) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        after,
        Some(401),
        "a key removed from the file is refused after SIGHUP"
    );
    child.kill().await.unwrap();
}

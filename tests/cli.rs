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
    run_in(args, stdin, &[], Path::new(MANIFEST_DIR))
}

/// `run` with environment variables set.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(args, None, env, Path::new(MANIFEST_DIR))
}

fn run_in(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)], dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
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
        // The command may refuse its arguments and exit before reading stdin.
        let _ = pipe.write_all(input.as_bytes());
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
fn check_config_accepts_the_shipped_config_only_with_allow_demo_keys() {
    // config/gateway.toml is the demo's config: its keys file holds the
    // published demo keys, which serve refuses unless told otherwise.
    let o = run(&["check-config", "config/gateway.toml"], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("published demo keys"),
        "stderr: {}",
        stderr(&o)
    );
    let o = run(
        &["check-config", "config/gateway.toml", "--allow-demo-keys"],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
}

#[test]
fn check_config_accepts_the_production_example_with_real_keys() {
    let dir = scratch("production");
    let text = std::fs::read_to_string(shipped("production.example.toml")).unwrap();
    assert!(text.contains("env = \"live\""), "auth.env = live");
    assert!(text.contains("format = \"json\""), "JSON logs");
    let keys = dir.join("keys.toml");
    let entry =
        layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["content:read"], "standard").unwrap();
    std::fs::write(&keys, entry).unwrap();
    let keys_line = "keys_file = \"/etc/layers-gateway/keys.toml\"";
    assert!(text.contains(keys_line), "the example names its keys file");
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        text.replace(
            keys_line,
            &format!("keys_file = {:?}", keys.display().to_string()),
        ),
    )
    .unwrap();
    let o = run_env(
        &["check-config", path.to_str().unwrap()],
        &[("LAYERS_WEBHOOK_SECRETS", "s1")],
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    // The one thing left to the operator: the admin token.
    let warnings: Vec<String> = stderr(&o).lines().map(str::to_owned).collect();
    assert!(
        warnings
            .iter()
            .all(|w| w.starts_with("warning: admin.token_sha256") || w.starts_with("warning: origin.url")),
        "{warnings:#?}"
    );
    // The example with the demo keys file is refused.
    let demo = std::fs::read_to_string(&path).unwrap().replace(
        &format!("keys_file = {:?}", keys.display().to_string()),
        &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
    );
    std::fs::write(&path, demo).unwrap();
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
}

/// check-config on `text` as a config next to the shipped keys file, with the
/// demo keys allowed (so only the point under test can fail).
fn check_text(name: &str, edit: impl FnOnce(String) -> String) -> Output {
    let dir = scratch(name);
    let path = config_copy(&dir, edit);
    run(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        None,
    )
}

#[test]
fn check_config_refuses_a_log_level_that_is_not_a_level() {
    let o = check_text("log-level", |t| {
        t.replacen("level = \"info\"", "level = \"verbose\"", 1)
    });
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("log.level: \"verbose\" is not a level"),
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn check_config_refuses_a_bad_tracing_section_with_a_clear_error() {
    for (name, from, to, want) in [
        (
            "tracing-ratio",
            "sample_ratio = 0.01",
            "sample_ratio = 1.5",
            "tracing.sample_ratio: must be between 0 and 1",
        ),
        (
            "tracing-endpoint",
            "endpoint = \"http://127.0.0.1:4318/v1/traces\"",
            "endpoint = \"udp://collector:4318\"",
            "tracing.endpoint: scheme must be http or https",
        ),
    ] {
        let o = check_text(name, |t| {
            assert!(t.contains(from), "the shipped config has {from}");
            t.replacen(from, to, 1)
        });
        assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "stderr: {}", stderr(&o));
    }
}

#[test]
fn check_config_names_the_dotted_field_of_a_type_error() {
    let o = check_text("type-error", |t| {
        t.replacen("max_inflight = 512", "max_inflight = \"many\"", 1)
    });
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(
        stderr(&o).contains("origin.max_inflight: invalid type"),
        "stderr: {}",
        stderr(&o)
    );
    // A rule the origin guard refuses names config keys, not internal names.
    let o = check_text("guard-names", |t| {
        t.replacen("max_inflight_per_org = 64", "max_inflight_per_org = 600", 1)
    });
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    let e = stderr(&o);
    assert!(
        e.contains("origin.max_inflight_per_org: must be less than origin.max_inflight (512)"),
        "{e}"
    );
    assert!(!e.contains("global_max"), "{e}");
}

#[test]
fn check_config_refuses_an_empty_file() {
    let dir = scratch("empty");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, "# only a comment\n\n").unwrap();
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    assert!(stderr(&o).contains("the file is empty"), "stderr: {}", stderr(&o));
}

#[test]
fn check_config_refuses_an_unknown_tier_in_the_keys_file() {
    let dir = scratch("tier");
    let keys = dir.join("keys.toml");
    let good = layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "pilot").unwrap();
    let other = NEW_KEY.replace("0000X", "0000Y");
    let gold = layers_gateway::auth::keys::keys_file_entry(&other, "org_x", &["*"], "gold").unwrap();
    std::fs::write(&keys, format!("{good}{good}{gold}").replacen("0000X", "0000Z", 1)).unwrap();
    let path = config_copy(&dir, |t| {
        t.replace(
            &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
            &format!("keys_file = {:?}", keys.display().to_string()),
        )
    });
    let o = run(&["check-config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("keys[2].tier: unknown tier \"gold\""),
        "stderr: {}",
        stderr(&o)
    );
}

#[test]
fn check_config_warns_about_surprising_values_and_still_passes() {
    let o = check_text("warnings", |t| t.replacen("enabled = true", "enabled = false", 1));
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("warning: shaping.enabled: false"), "{e}");
    assert!(e.contains("warning: auth.env: unset"), "{e}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("warnings)"));
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [&["--help"][..], &["serve", "--help"], &["check-config", "--help"]] {
        let o = run(args, None);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        for code in ["Exit codes:", "  0 ", "  1 ", "  2 ", "  64 "] {
            assert!(out.contains(code), "{args:?} --help lacks {code:?}: {out}");
        }
    }
    let o = run(&["no-such-command"], None);
    assert_eq!(o.status.code(), Some(2), "a usage error exits 2");
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
    let o = run(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        None,
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "not there yet");
    std::fs::copy(shipped("keys.toml"), dir.join("relative-keys.toml")).unwrap();
    let o = run(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        None,
    );
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
fn hash_key_refuses_an_empty_org_and_an_unknown_tier() {
    for (args, field) in [
        (&["hash-key", "--org", ""][..], "--org"),
        (&["hash-key", "--org", "  "], "--org"),
        (&["hash-key", "--org", "org_x", "--tier", "gold"], "--tier"),
    ] {
        let o = run(args, Some(&format!("{NEW_KEY}\n")));
        assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing printed");
        assert!(stderr(&o).starts_with(field), "{args:?}: {}", stderr(&o));
    }
    // A tier the given config defines is accepted.
    let dir = scratch("hash-key-tier");
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        "[shaping.tiers.gold]\nread_light_per_min = 1\nwrite_light_per_min = 1\nlong_running_per_min = 1\ndaily_writes = 1\n",
    )
    .unwrap();
    let o = run(
        &[
            "hash-key",
            "--org",
            "org_x",
            "--tier",
            "gold",
            "--config",
            path.to_str().unwrap(),
        ],
        Some(&format!("{NEW_KEY}\n")),
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("tier = \"gold\""));
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
// serve
// ---------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

    // `keys = []`: a file naming no `keys` at all is refused as
    // half-written while keys are in force (docs/auth.md).
    std::fs::write(&keys, "keys = [] # every key revoked\n").unwrap();
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

/// `serve` re-reads its config file on SIGHUP: a changed tier shows in the
/// next answer's `X-RateLimit-Limit`, without a restart.
#[tokio::test]
async fn serve_reloads_its_config_file_on_sighup() {
    let dir = scratch("sighup-config");
    let keys = dir.join("keys.toml");
    let entry = layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "standard").unwrap();
    std::fs::write(&keys, &entry).unwrap();
    let (gw, admin) = (free_port(), free_port());
    let path = serve_config(&dir, gw, admin, &keys);
    let original = std::fs::read_to_string(&path).unwrap();
    assert!(original.contains("read_light_per_min = 120\n"));
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], gw));
    let client = TestClient::new(addr);
    let limit = || async {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return None;
        }
        let r = client
            .send(Method::GET, "/v1/whoami", &[("x-api-key", NEW_KEY)], Bytes::new())
            .await;
        r.header("x-ratelimit-limit").map(str::to_owned)
    };
    let mut seen = None;
    for _ in 0..100 {
        seen = limit().await;
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.as_deref(), Some("120"), "the standard tier at start");

    std::fs::write(
        &path,
        original.replacen("read_light_per_min = 120\n", "read_light_per_min = 240\n", 1),
    )
    .unwrap();
    let pid = child.id().expect("running").to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    for _ in 0..100 {
        seen = limit().await;
        if seen.as_deref() == Some("240") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.as_deref(), Some("240"), "the reloaded tier, same process");
    child.kill().await.unwrap();
}

/// `serve` reopens its access log file on SIGUSR1: after logrotate renamed
/// the file, the next lines go to a new file of the old name.
#[tokio::test]
async fn serve_reopens_the_access_log_on_sigusr1() {
    let dir = scratch("sigusr1");
    let keys = dir.join("keys.toml");
    let entry = layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "standard").unwrap();
    std::fs::write(&keys, &entry).unwrap();
    let log = dir.join("access.log");
    let (gw, admin) = (free_port(), free_port());
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
            .replace(
                &format!("keys_file = {:?}", shipped("keys.toml").display().to_string()),
                &format!("keys_file = {:?}", keys.display().to_string()),
            )
            // No origin listens here: an authenticated whoami is a 502.
            .replace(
                "url = \"http://127.0.0.1:8081\"",
                &format!("url = \"http://127.0.0.1:{}\"", free_port()),
            );
        assert!(t.contains("path = \"stdout\"\n") && t.contains("flush_ms = 1000\n"));
        t.replacen(
            "path = \"stdout\"\n",
            &format!("path = {:?}\n", log.display().to_string()),
            1,
        )
        .replacen("flush_ms = 1000\n", "flush_ms = 10\n", 1)
    });
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], gw));
    let client = TestClient::new(addr);
    let whoami = |rid: &'static str| {
        let client = &client;
        async move {
            tokio::net::TcpStream::connect(addr).await.ok()?;
            let h = [("x-api-key", NEW_KEY), ("x-request-id", rid)];
            Some(
                client
                    .send(Method::GET, "/v1/whoami", &h, Bytes::new())
                    .await
                    .status
                    .as_u16(),
            )
        }
    };
    // Polls (bounded) until `file` holds `rid`.
    async fn wait_for_line(file: &Path, rid: &str) -> bool {
        for _ in 0..200 {
            if std::fs::read_to_string(file).is_ok_and(|t| t.contains(rid)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
    let mut up = None;
    for _ in 0..100 {
        up = whoami("req_beforeRotation").await;
        if up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up, Some(502));
    assert!(
        wait_for_line(&log, "req_beforeRotation").await,
        "first line written"
    );
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    // The reopen is asynchronous: ask until a line lands in the new file.
    let mut reopened = false;
    for _ in 0..10 {
        // No origin: 502, or 503 once the origin's breaker has opened
        // (a slow machine asks more often before the line lands).
        let status = whoami("req_afterRotation").await;
        assert!(matches!(status, Some(502 | 503)), "{status:?}");
        if wait_for_line(&log, "req_afterRotation").await {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a new access.log was created after SIGUSR1");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("req_beforeRotation"), "{old}");
    assert!(
        !log.exists()
            || !std::fs::read_to_string(&log)
                .unwrap()
                .contains("req_beforeRotation")
    );
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped config on the given ports, keys file `keys` (absolute).
fn serve_config(dir: &Path, gw: u16, admin: u16, keys: &Path) -> PathBuf {
    config_copy(dir, |t| {
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
    })
}

#[test]
fn serve_refuses_the_published_demo_keys_unless_allowed() {
    let dir = scratch("serve-demo-keys");
    let (gw, admin) = (free_port(), free_port());
    let path = serve_config(&dir, gw, admin, &shipped("keys.toml"));
    let o = run(&["serve", "--config", path.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("auth.keys_file") && e.contains("published demo keys") && e.contains("--allow-demo-keys"),
        "{e}"
    );
    // With --allow-demo-keys it starts: a port in use then stops it at bind,
    // which shows it got past every check.
    let taken = std::net::TcpListener::bind(("127.0.0.1", gw)).unwrap();
    let o = run(
        &["serve", "--config", path.to_str().unwrap(), "--allow-demo-keys"],
        None,
    );
    drop(taken);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
}

#[test]
fn serve_names_the_listener_and_address_that_cannot_bind() {
    let dir = scratch("serve-bind");
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "standard").unwrap(),
    )
    .unwrap();
    for field in ["server.listen", "admin.listen"] {
        let (gw, admin) = (free_port(), free_port());
        let path = serve_config(&dir, gw, admin, &keys);
        let port = if field == "server.listen" { gw } else { admin };
        let taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let o = run(&["serve", "--config", path.to_str().unwrap()], None);
        drop(taken);
        assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
        let want = format!("{field} 127.0.0.1:{port}: address in use");
        assert!(stderr(&o).contains(&want), "want {want:?} in: {}", stderr(&o));
    }
}

#[test]
fn serve_outside_the_checkout_says_where_it_looked_for_the_config() {
    let dir = scratch("serve-elsewhere");
    let o = run_in(&["serve"], None, &[], &dir);
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    let e = stderr(&o);
    assert!(e.contains("config/gateway.toml"), "{e}");
    assert!(
        e.contains("hint: ") && e.contains("--config") && e.contains(dir.to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn check_config_refuses_cluster_tls_and_credential_settings_that_cannot_work() {
    let cluster = |extra: &str| {
        let extra = extra.to_owned();
        move |t: String| format!("{t}\n[cluster]\nredis_url = \"rediss://127.0.0.1:6380/\"\n{extra}")
    };
    let o = check_text("cluster-ca", cluster("tls_ca_file = \"/nonexistent/ca.pem\"\n"));
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("cluster.tls_ca_file: /nonexistent/ca.pem"),
        "{}",
        stderr(&o)
    );

    let o = check_text(
        "cluster-password",
        cluster("password_env = \"LAYERS_CLI_TEST_UNSET_PASSWORD\"\n"),
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("cluster.password_env: environment variable LAYERS_CLI_TEST_UNSET_PASSWORD is not set"),
        "{}",
        stderr(&o)
    );

    // Set, the secret is read but never shown, even when something else fails.
    let dir = scratch("cluster-secret");
    let path = config_copy(
        &dir,
        cluster("password_env = \"LAYERS_CLI_TEST_PASSWORD\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
    );
    let o = run_env(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        &[("LAYERS_CLI_TEST_PASSWORD", "cli-s3cret-value")],
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG));
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains("cli-s3cret-value"), "{all}");

    // The cluster secret (it signs every stream entry) is required ...
    let o = check_text("cluster-no-secret", cluster(""));
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("cluster.secret: must be set"),
        "{}",
        stderr(&o)
    );
    // ... and, given through the environment, accepted and never shown.
    let dir = scratch("cluster-secret-env");
    let path = config_copy(&dir, cluster("secret_env = \"LAYERS_CLI_TEST_CLUSTER_SECRET\"\n"));
    let o = run_env(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        &[("LAYERS_CLI_TEST_CLUSTER_SECRET", "cli-cluster-secret-value")],
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let all = format!("{}{}", stderr(&o), String::from_utf8_lossy(&o.stdout));
    assert!(!all.contains("cli-cluster-secret-value"), "{all}");

    // A container's fence record in Redis keeps 4096 revoked ids: an
    // instance may not hold more than a joiner would learn.
    let dir = scratch("cluster-revoked-cap");
    let path = config_copy(&dir, |t| {
        let t = cluster("secret_env = \"LAYERS_CLI_TEST_CLUSTER_SECRET\"\n")(t);
        t.replacen(
            "max_revoked_per_container = 4096",
            "max_revoked_per_container = 5000",
            1,
        )
    });
    let o = run_env(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        &[("LAYERS_CLI_TEST_CLUSTER_SECRET", "cli-cluster-secret-value")],
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("invalidation.max_revoked_per_container: at most 4096 in cluster mode"),
        "{}",
        stderr(&o)
    );

    // A fence record scored past the longest retention was written by no
    // gateway and is removed: an instance may not keep fences longer.
    let dir = scratch("cluster-retention-cap");
    let path = config_copy(&dir, |t| {
        let t = cluster("secret_env = \"LAYERS_CLI_TEST_CLUSTER_SECRET\"\n")(t);
        t.replacen("revoked_ttl_secs = 86400", "revoked_ttl_secs = 2600000", 1)
    });
    let o = run_env(
        &["check-config", path.to_str().unwrap(), "--allow-demo-keys"],
        &[("LAYERS_CLI_TEST_CLUSTER_SECRET", "cli-cluster-secret-value")],
    );
    assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("invalidation.revoked_ttl_secs: at most 2592000 (30 days) in cluster mode"),
        "{}",
        stderr(&o)
    );
}

/// Black-box round 74, D2: the log subscriber wrote to stdout from the
/// thread that logged. With stdout a pipe nobody reads (a log shipper that
/// stopped), once the pipe was full every worker that logged a line blocked
/// in `write`, and the whole gateway hung, `/healthz` and `/metrics`
/// included. Lines that do not fit are now dropped and counted.
#[tokio::test]
async fn serve_keeps_answering_when_nobody_reads_its_stdout() {
    let dir = scratch("stdout-stalled");
    let keys = dir.join("keys.toml");
    let entry = layers_gateway::auth::keys::keys_file_entry(NEW_KEY, "org_x", &["*"], "standard").unwrap();
    std::fs::write(&keys, &entry).unwrap();
    let (gw, admin) = (free_port(), free_port());
    let path = serve_config(&dir, gw, admin, &keys);
    // Every refused key logs a line from the worker that refused it.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("refusals_per_sec = 10\n"));
    std::fs::write(
        &path,
        text.replacen("refusals_per_sec = 10\n", "refusals_per_sec = 1000000\n", 1),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // never read
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let admin_client = TestClient::new(SocketAddr::from(([127, 0, 0, 1], admin)));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", admin)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A line or two of log each: past a pipe's 64 KiB and the gateway's
    // queue of 4,096 lines.
    let client = TestClient::new(SocketAddr::from(([127, 0, 0, 1], gw)));
    let bad = NEW_KEY.replace('a', "b");
    for i in 0..6000 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client.send(
                Method::GET,
                "/v1/whoami",
                &[("x-api-key", bad.as_str())],
                Bytes::new(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("request {i} hung: the gateway waits for its stdout"));
        assert_eq!(r.status, 401);
    }
    let metrics = tokio::time::timeout(
        Duration::from_secs(10),
        admin_client.send(Method::GET, "/metrics", &[], Bytes::new()),
    )
    .await
    .expect("/metrics hung");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("layers_gateway_log_lines_dropped_total "))
        .and_then(|v| v.parse().ok())
        .expect("log_lines_dropped_total exported");
    assert!(dropped > 0.0, "no line dropped: {dropped}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Black-box round 74, D4: `check-config` passed durations that then broke
/// `serve`: a cache TTL past what moka takes panicked it at start, and a
/// revocation TTL past the end of time panicked a worker on every delete,
/// the invalidation half applied. Every duration is held to a year.
#[test]
fn check_config_refuses_a_duration_past_a_year_naming_it() {
    for (line, huge) in [
        ("ttl_secs = 300", "ttl_secs = 100000000000"),
        ("tombstone_secs = ", "tombstone_secs = 9223372036854775807 #"),
        ("revoked_ttl_secs = ", "revoked_ttl_secs = 10000000000000000000 #"),
    ] {
        let o = check_text("huge-duration", |t| {
            assert!(t.contains(line), "{line}");
            t.replacen(line, huge, 1)
        });
        let field = huge.split(' ').next().unwrap();
        assert_eq!(o.status.code(), Some(EXIT_BAD_CONFIG), "{huge}: {}", stderr(&o));
        assert!(stderr(&o).contains(field), "{huge}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

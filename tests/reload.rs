//! Live config reload (`POST /admin/reload`; SIGHUP runs the same code):
//! a changed tier applies to the next request on the same connection, an
//! invalid file changes nothing and says why, restart-only settings are
//! named, and a request in flight finishes under the settings it started
//! with.

mod support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use layers_gateway::app::App;
use layers_gateway::config::Config;
use layers_gateway::demo::DEMO_KEYS_FILE;
use layers_gateway::origin::{HttpUpstream, Upstream};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// A bound on waits for the gateway (never a timing assertion).
const WAIT: Duration = Duration::from_secs(10);

/// A gateway started from a config file on disk (with the demo keys next
/// to it), in front of the simulator.
struct FileGateway {
    sim: layers_gateway::demo::Simulator,
    app: App,
    dir: PathBuf,
    origin_url: String,
    _origin_stop: tokio::sync::watch::Sender<bool>,
}

fn config_text(origin_url: &str, pilot_read_per_min: u32, extra: &str) -> String {
    let token_hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ADMIN_TOKEN.as_bytes()));
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{token_hash}\"\n\n\
         [origin]\nurl = \"{origin_url}\"\ntimeout_ms = 5000\n\n[webhooks]\nsecrets = [\"{WEBHOOK_SECRET}\"]\n\n\
         [shaping.tiers.pilot]\nread_light_per_min = {pilot_read_per_min}\nwrite_light_per_min = 600\n\
         long_running_per_min = 60\ndaily_writes = 100000\n\n{extra}"
    )
}

impl FileGateway {
    async fn start() -> FileGateway {
        let sim = demo_simulator();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_url = format!("http://{}", listener.local_addr().unwrap());
        let (origin_stop, mut rx) = tokio::sync::watch::channel(false);
        tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        let dir = std::env::temp_dir().join(format!(
            "layers-reload-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keys.toml"), DEMO_KEYS_FILE).unwrap();
        std::fs::write(dir.join("gateway.toml"), config_text(&origin_url, 1000, "")).unwrap();
        let cfg = Config::load(&dir.join("gateway.toml")).unwrap();
        let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
        let app = App::start(cfg, demo_keys(), upstream).await.unwrap();
        // Started as `serve --allow-demo-keys` would start it.
        app.gateway
            .state()
            .reload
            .set_source(dir.join("gateway.toml"), true);
        app.gateway.authenticator().allow_demo_keys(true);
        FileGateway {
            sim,
            app,
            dir,
            origin_url,
            _origin_stop: origin_stop,
        }
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("gateway.toml"), text).unwrap();
    }

    async fn reload(&self) -> (u16, Value) {
        let r = TestClient::new(self.app.admin_addr)
            .send(
                Method::POST,
                "/admin/reload",
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                Bytes::new(),
            )
            .await;
        (r.status.as_u16(), r.json())
    }

    async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let r = TestClient::new(self.app.admin_addr)
            .send(Method::GET, "/metrics", &[], Bytes::new())
            .await;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    async fn stop(self) {
        self.app.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 connection to the partner port, kept open across requests.
struct OneConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    closed: tokio::task::JoinHandle<()>,
}

impl OneConnection {
    async fn open(addr: std::net::SocketAddr) -> OneConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        let closed = tokio::spawn(async move {
            let _ = conn.await;
        });
        OneConnection { sender, closed }
    }

    /// A GET with the admin demo key (tier `pilot`): status and
    /// `X-RateLimit-Limit`.
    async fn get(&mut self, path: &str) -> (u16, String) {
        self.sender.ready().await.expect("the connection is still open");
        let req = Request::get(path)
            .header("host", "gateway")
            .header("x-api-key", admin_key())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, self.sender.send_request(req))
            .await
            .expect("answered in time")
            .expect("answered on the same connection");
        let status = resp.status().as_u16();
        let limit = resp
            .headers()
            .get("x-ratelimit-limit")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        resp.into_body().collect().await.unwrap();
        (status, limit)
    }
}

#[tokio::test]
async fn a_tier_change_applies_to_the_next_request_on_the_same_connection() {
    let g = FileGateway::start().await;
    let mut conn = OneConnection::open(g.app.addr).await;
    let (status, limit) = conn.get("/v1/whoami").await;
    assert_eq!((status, limit.as_str()), (200, "1000"));

    g.write_config(&config_text(&g.origin_url, 2400, ""));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"], "applied");
    assert_eq!(
        answer["applied"],
        serde_json::json!(["shaping.tiers"]),
        "{answer}"
    );
    assert_eq!(answer["restartRequired"], serde_json::json!([]), "{answer}");

    let (status, limit) = conn.get("/v1/whoami").await;
    assert_eq!(
        (status, limit.as_str()),
        (200, "2400"),
        "the new tier, same connection"
    );
    assert!(!conn.closed.is_finished(), "the connection was not dropped");
    assert_eq!(
        g.metric("layers_gateway_config_reloads_total{result=\"applied\"}")
            .await,
        Some(1.0)
    );
    g.stop().await;
}

#[tokio::test]
async fn an_invalid_file_is_refused_with_its_reason_and_the_old_settings_stay() {
    let g = FileGateway::start().await;
    let mut conn = OneConnection::open(g.app.addr).await;
    // A tier change that would apply, next to a field that fails validation.
    g.write_config(&config_text(
        &g.origin_url,
        2400,
        "[cache]\nttl_secs = \"five\"\n",
    ));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["status"], "refused");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("cache.ttl_secs"),
        "the reason names the field: {error}"
    );
    let path = g.dir.join("gateway.toml").display().to_string();
    assert_eq!(error.matches(&path).count(), 1, "the file is named once: {error}");
    assert_eq!(answer["applied"], serde_json::json!([]));

    let (status, limit) = conn.get("/v1/whoami").await;
    assert_eq!((status, limit.as_str()), (200, "1000"), "the old tier stays");
    assert_eq!(
        g.metric("layers_gateway_config_reloads_total{result=\"refused\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        g.metric("layers_gateway_config_reloads_total{result=\"applied\"}")
            .await,
        Some(0.0)
    );

    // The admin listener remembers the last outcome.
    let last = TestClient::new(g.app.admin_addr)
        .send(
            Method::GET,
            "/admin/reload",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            Bytes::new(),
        )
        .await
        .json();
    assert_eq!(last["lastReload"]["status"], "refused");

    // A file that does not parse at all is refused the same way.
    g.write_config("[server\nlisten = ");
    let (code, answer) = g.reload().await;
    assert_eq!(code, 422, "{answer}");
    let (status, limit) = conn.get("/v1/whoami").await;
    assert_eq!((status, limit.as_str()), (200, "1000"));
    g.stop().await;
}

#[tokio::test]
async fn restart_only_settings_are_named_and_the_rest_still_applies() {
    let g = FileGateway::start().await;
    let text = config_text(
        &g.origin_url,
        3000,
        "[cache]\nttl_secs = 30\nmax_entries = 1000\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"\n\n[admin]",
        "listen = \"127.0.0.1:1\"\n\n[admin]",
    )
    .replace(
        "timeout_ms = 5000\n",
        "timeout_ms = 6000\nbreaker_failures = 9\nmax_inflight = 100\n",
    );
    g.write_config(&text);
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["applied"],
        serde_json::json!([
            "shaping.tiers",
            "cache.ttl_secs",
            "origin.max_inflight",
            "origin.breaker_failures"
        ]),
        "{answer}"
    );
    assert_eq!(
        answer["restartRequired"],
        serde_json::json!(["server.listen", "origin (other fields)", "cache (other fields)"]),
        "{answer}"
    );
    assert_eq!(
        g.app.gateway.state().cache.ttls().ttl,
        Duration::from_secs(30),
        "the new TTL is in force"
    );
    let origin = &g.app.gateway.state().origin;
    assert_eq!(origin.breaker().settings().failure_threshold, 9);
    assert_eq!(origin.guard().settings().global_max, 100);
    // Still serving on the port it started on.
    let r = TestClient::new(g.app.addr).get("/v1/whoami", &admin_key()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3000"));
    g.stop().await;
}

#[tokio::test]
async fn a_request_in_flight_during_a_reload_completes_under_its_settings() {
    let g = FileGateway::start().await;
    let (id, _) = first_container(&g.sim);
    let gate = g.sim.hold();
    let client = TestClient::new(g.app.addr);
    let path = format!("/v1/content/{id}");
    let in_flight = tokio::spawn(async move { client.get(&path, &admin_key()).await });
    // The request has passed the limiter and waits on the origin.
    let deadline = tokio::time::Instant::now() + WAIT;
    while g.sim.container_gets() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fill never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    g.write_config(&config_text(&g.origin_url, 2400, ""));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    gate.release();
    let r = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("1000"),
        "admitted under the tier it started with"
    );
    let r = TestClient::new(g.app.addr)
        .get(&format!("/v1/content/{id}"), &admin_key())
        .await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("2400"));
    g.stop().await;
}

#[tokio::test]
async fn reload_needs_the_admin_token() {
    let g = FileGateway::start().await;
    let r = TestClient::new(g.app.admin_addr)
        .send(Method::POST, "/admin/reload", &[], Bytes::new())
        .await;
    r.assert_error(401, "UNAUTHENTICATED");
    g.stop().await;
}

/// An HS256 secret for the reload test's JWT issuer, in the environment
/// (set once per test binary, before any gateway reads it).
const JWT_SECRET_ENV: &str = "LAYERS_GATEWAY_RELOAD_TEST_JWT_SECRET";
const JWT_SECRET: &str = "reload-test-secret-of-at-least-32-bytes!!";

fn hs256_token(issuer: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let exp = unix_now() + 600;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": issuer, "aud": "layers-gateway", "org_id": "org_jwt", "sub": "batch", "exp": exp})
            .to_string(),
    );
    let msg = format!("{header}.{claims}");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, JWT_SECRET.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, msg.as_bytes()).as_ref());
    format!("{msg}.{sig}")
}

#[tokio::test]
async fn a_jwt_issuer_added_by_a_reload_is_trusted_from_the_next_request() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var(JWT_SECRET_ENV, JWT_SECRET));
    let g = FileGateway::start().await;
    let token = hs256_token("reload-batch");
    let whoami = || async {
        TestClient::new(g.app.addr)
            .send(
                Method::GET,
                "/v1/whoami",
                &[("authorization", &format!("Bearer {token}"))],
                Bytes::new(),
            )
            .await
    };
    // No issuer yet: refused by the gateway before any rate decision.
    let r = whoami().await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(r.header("x-ratelimit-limit"), None);

    let issuer = format!(
        "[[auth.jwt.issuers]]\nissuer = \"reload-batch\"\naudience = \"layers-gateway\"\nshared_secret_env = \"{JWT_SECRET_ENV}\"\n"
    );
    g.write_config(&config_text(&g.origin_url, 1000, &issuer));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["applied"], serde_json::json!(["auth.jwt"]), "{answer}");
    // Authenticated now (org_jwt, tier standard): the limiter decided.
    let r = whoami().await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("120"), "{:?}", r.headers);

    // And removed again: refused.
    g.write_config(&config_text(&g.origin_url, 1000, ""));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    whoami().await.assert_error(401, "UNAUTHENTICATED");
    g.stop().await;
}

const GOLD_KEY: &str = "lp_test_01HZG0DD00000000_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

/// The tiers a keys file may name follow the config in force: a tier a
/// reload adds can be used by the next keys file, and a tier a key in
/// force uses cannot be removed under it.
#[tokio::test]
async fn keys_file_tiers_follow_the_config_reload() {
    use layers_gateway::auth::keys::keys_file_entry;
    use layers_gateway::auth::reload::{reload_keys_file, Trigger};
    let g = FileGateway::start().await;
    let gold = "[shaping.tiers.gold]\nread_light_per_min = 7\nwrite_light_per_min = 7\n\
                long_running_per_min = 7\ndaily_writes = 700\n";
    g.write_config(&config_text(&g.origin_url, 1000, gold));
    let (code, answer) = g.reload().await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    let keys = g.dir.join("keys.toml");
    let entry = keys_file_entry(GOLD_KEY, "org_gold", &["content:read"], "gold").unwrap();
    std::fs::write(&keys, format!("{DEMO_KEYS_FILE}\n{entry}")).unwrap();
    let auth = g.app.gateway.state().auth.clone();
    let loaded = reload_keys_file(&keys, &auth, Trigger::Signal).await;
    assert!(
        loaded.is_ok(),
        "a tier added by the config reload is known: {loaded:?}"
    );
    let r = TestClient::new(g.app.addr)
        .send(
            Method::GET,
            "/v1/whoami",
            &[("x-api-key", GOLD_KEY)],
            Bytes::new(),
        )
        .await;
    // The gateway let it through under its tier; the origin (the demo
    // simulator, which has its own keys) answers for whoami.
    assert_ne!(r.status, 429);
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("7"),
        "the gold key is limited by its tier"
    );
    // Removing gold while a key in force uses it is refused, whole.
    g.write_config(&config_text(&g.origin_url, 2400, ""));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("\"gold\""), "{error}");
    let r = TestClient::new(g.app.addr)
        .send(
            Method::GET,
            "/v1/whoami",
            &[("x-api-key", GOLD_KEY)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("7"), "nothing changed");
    g.stop().await;
}

/// Whether the gateway lets `key` through on the partner port: its
/// answer carries the limit of the key's tier (the gateway's 401 carries
/// none; the demo simulator behind it knows only the demo keys).
async fn authenticates(g: &FileGateway, key: &str) -> bool {
    let r = TestClient::new(g.app.addr)
        .send(Method::GET, "/v1/whoami", &[("x-api-key", key)], Bytes::new())
        .await;
    r.header("x-ratelimit-limit").is_some()
}

/// Black-box round 74, D1: the README says `POST /admin/reload` re-reads
/// the config file and the keys file, as SIGHUP does. It re-read and
/// checked the keys file but never put it in force: a key removed from the
/// file kept working until the watcher's next poll (never, with a long
/// `reload_poll_secs`).
#[tokio::test]
async fn admin_reload_puts_the_keys_file_in_force() {
    use layers_gateway::auth::keys::keys_file_entry;
    let g = FileGateway::start().await;
    let admin = admin_key();
    assert!(authenticates(&g, &admin).await);
    let entry = keys_file_entry(GOLD_KEY, "org_gold", &["content:read"], "pilot").unwrap();
    std::fs::write(g.dir.join("keys.toml"), &entry).unwrap();
    let (code, answer) = g.reload().await;
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("applied")),
        "{answer}"
    );
    assert!(
        !authenticates(&g, &admin).await,
        "a key removed from the file still works"
    );
    assert!(
        authenticates(&g, GOLD_KEY).await,
        "a key added to the file is refused"
    );
    g.stop().await;
}

/// Black-box round 74, D3: an empty keys file (a `>` redirect truncates
/// before it writes; a copy cut short) parsed as a file with no keys, and
/// every reload path put it in force: every partner got 401. While keys are
/// in force, one that does not name `keys` is refused as half-written, by
/// the config reload and by the keys-file watcher; `keys = []` still
/// removes them all.
#[tokio::test]
async fn an_empty_keys_file_is_refused_while_keys_are_in_force() {
    use layers_gateway::auth::reload::{reload_keys_file, Trigger};
    let g = FileGateway::start().await;
    let admin = admin_key();
    let keys = g.dir.join("keys.toml");
    for cut in ["", "\n  \n", "# keys\n"] {
        std::fs::write(&keys, cut).unwrap();
        let (code, answer) = g.reload().await;
        assert_eq!(code, 422, "{cut:?}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("half-written"),
            "{answer}"
        );
        let auth = g.app.gateway.state().auth.clone();
        for trigger in [Trigger::Changed, Trigger::Signal] {
            assert!(
                reload_keys_file(&keys, &auth, trigger).await.is_err(),
                "{cut:?} {trigger:?}"
            );
        }
        assert!(
            authenticates(&g, &admin).await,
            "{cut:?}: the keys in force were dropped"
        );
    }
    std::fs::write(&keys, "keys = []\n").unwrap();
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert!(
        !authenticates(&g, &admin).await,
        "an explicit empty list removes every key"
    );
    g.stop().await;
}

/// Black-box round 83: `serve`, `check-config` and `POST /admin/reload`
/// refuse a keys file holding the published demo keys (one with every
/// scope), but the keys-file watcher's next poll, or a SIGHUP, put it in
/// force on a gateway started without `--allow-demo-keys`.
#[tokio::test]
async fn a_reload_never_puts_the_demo_keys_in_force_unless_the_start_allowed_them() {
    use layers_gateway::auth::keys::keys_file_entry;
    use layers_gateway::auth::reload::{reload_keys_file, Trigger};
    let g = FileGateway::start().await;
    let auth = g.app.gateway.state().auth.clone();
    auth.allow_demo_keys(false);
    let keys = g.dir.join("keys.toml");
    let own = keys_file_entry(GOLD_KEY, "org_gold", &["content:read"], "pilot").unwrap();
    std::fs::write(&keys, &own).unwrap();
    assert!(reload_keys_file(&keys, &auth, Trigger::Changed).await.is_ok());
    let admin = admin_key();
    assert!(!authenticates(&g, &admin).await);

    std::fs::write(&keys, format!("{own}\n{DEMO_KEYS_FILE}")).unwrap();
    for trigger in [Trigger::Changed, Trigger::Signal] {
        let refused = reload_keys_file(&keys, &auth, trigger).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("demo keys")),
            "{trigger:?}: {refused:?}"
        );
        assert!(
            !authenticates(&g, &admin).await,
            "{trigger:?}: the demo admin key went in force"
        );
        assert!(authenticates(&g, GOLD_KEY).await, "the keys in force stay");
    }
    g.stop().await;
}

/// An ES256 key and its public JWK (kid `kid`).
fn es256_key(kid: &str) -> (aws_lc_rs::signature::EcdsaKeyPair, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let p = k.public_key().as_ref().to_vec();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])});
    (k, jwk)
}

fn es256_token(key: &aws_lc_rs::signature::EcdsaKeyPair, kid: &str, issuer: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header =
        URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"iss": issuer, "aud": "layers-gateway", "org_id": "org_jwt", "sub": "batch",
            "exp": unix_now() + 600})
        .to_string(),
    );
    let msg = format!("{header}.{claims}");
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), msg.as_bytes())
        .unwrap();
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Black-box round 83: a key removed from an issuer's `jwks_file` (a
/// compromised key, withdrawn) kept working after `POST /admin/reload`,
/// which answered `applied: []`: only a change to `auth.jwt` itself rebuilt
/// the issuers. The file's content is now read and compared.
#[tokio::test]
async fn a_key_removed_from_a_jwks_file_is_refused_after_a_reload() {
    let g = FileGateway::start().await;
    let (old, old_jwk) = es256_key("old");
    let (new, new_jwk) = es256_key("new");
    let jwks = g.dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({"keys": [old_jwk, new_jwk]}).to_string()).unwrap();
    let issuer = "[[auth.jwt.issuers]]\nissuer = \"file-idp\"\naudience = \"layers-gateway\"\n\
                  algorithms = [\"ES256\"]\njwks_file = \"jwks.json\"\n";
    g.write_config(&config_text(&g.origin_url, 1000, issuer));
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    let authenticated = |token: String| {
        let addr = g.app.addr;
        async move {
            let r = TestClient::new(addr)
                .send(
                    Method::GET,
                    "/v1/whoami",
                    &[("authorization", &format!("Bearer {token}"))],
                    Bytes::new(),
                )
                .await;
            r.header("x-ratelimit-limit").is_some()
        }
    };
    assert!(authenticated(es256_token(&old, "old", "file-idp")).await);

    // The same config, the file without the old key.
    std::fs::write(&jwks, serde_json::json!({"keys": [new_jwk]}).to_string()).unwrap();
    let (code, answer) = g.reload().await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["applied"],
        serde_json::json!(["auth.jwt.issuers[].jwks_file (content)"]),
        "{answer}"
    );
    assert!(
        !authenticated(es256_token(&old, "old", "file-idp")).await,
        "the withdrawn key still authenticates"
    );
    assert!(authenticated(es256_token(&new, "new", "file-idp")).await);

    // Nothing changed: nothing applied.
    let (_, answer) = g.reload().await;
    assert_eq!(answer["applied"], serde_json::json!([]), "{answer}");
    g.stop().await;
}

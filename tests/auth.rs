//! Authentication sources through `Authenticator`: JWTs (JWKS by URL and
//! file, HS256 shared secret), origin introspection, keys-file reload, and
//! the attack set.
//!
//! Test keys (RSA 2048, EC P-256, Ed25519) are generated here with aws-lc-rs
//! at run time; only their public parts go into JWKS documents. JWKS URLs
//! are served by a tiny hyper server on 127.0.0.1:0 that counts requests
//! per path and can be switched to fail.
//!
//! Paused-clock tests that also talk over loopback TCP hold the clock with
//! [`hold_clock`]: a blocking task in flight stops tokio from auto-advancing
//! (so a fetch deadline does not fire while the socket is merely waiting),
//! and time moves only by `tokio::time::advance`.

#[path = "support/logs.rs"]
mod logs;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use layers_gateway::auth::authenticator::{AuthError, Authenticator};
use layers_gateway::auth::keys::keys_file_entry;
use layers_gateway::auth::reload::{watch_keys_file, ReloadReport};
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, FailureMode, Simulator, DEMO_CONTAINERS_JSON, DEMO_KEYS_FILE};
use layers_gateway::error::GatewayError;
use layers_gateway::metrics::Metrics;
use layers_gateway::origin::{HttpUpstream, OriginClient, Upstream};
use layers_gateway::shaping::clock::UnixClock;
use logs::Captured;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;
use tokio::sync::Notify;

const T0: i64 = 1_800_000_000;
const IDP: &str = "https://idp.example.test";
const SVC: &str = "https://svc.example.test";
const FILE_ISS: &str = "https://file.example.test";
const AUD: &str = "layers-gateway";
const SECRET_ENV: &str = "LAYERS_GATEWAY_TEST_JWT_SECRET";
const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";

/// Sets the HS256 secret once. Every test calls it first, so no test reads
/// the environment while it is written.
fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var(SECRET_ENV, SECRET));
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------- keys

enum Kind {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct TestKey {
    kid: &'static str,
    alg: &'static str,
    kind: Kind,
}

impl TestKey {
    fn rsa(kid: &'static str) -> TestKey {
        let k = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        TestKey {
            kid,
            alg: "RS256",
            kind: Kind::Rsa(k),
        }
    }

    fn ec(kid: &'static str) -> TestKey {
        let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        TestKey {
            kid,
            alg: "ES256",
            kind: Kind::Ec(k),
        }
    }

    fn ed(kid: &'static str) -> TestKey {
        TestKey {
            kid,
            alg: "EdDSA",
            kind: Kind::Ed(Ed25519KeyPair::generate().unwrap()),
        }
    }

    /// The public JWK.
    fn jwk(&self) -> Value {
        match &self.kind {
            Kind::Rsa(k) => {
                let p = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": b64(p.modulus().big_endian_without_leading_zero()),
                    "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Kind::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Kind::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "x": b64(k.public_key().as_ref())})
            }
        }
    }

    /// The public key bytes an attacker could find (for the HS256 confusion).
    fn public_bytes(&self) -> Vec<u8> {
        match &self.kind {
            Kind::Rsa(k) => k.public_key().as_ref().to_vec(),
            Kind::Ec(k) => k.public_key().as_ref().to_vec(),
            Kind::Ed(k) => k.public_key().as_ref().to_vec(),
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.kind {
            Kind::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .unwrap();
                sig
            }
            Kind::Ec(k) => k.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec(),
            Kind::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    fn token(&self, claims: &Value) -> String {
        self.token_with(json!({"alg": self.alg, "typ": "JWT", "kid": self.kid}), claims)
    }

    fn token_with(&self, header: Value, claims: &Value) -> String {
        jwt(&header, claims, |m| self.sign(m))
    }
}

fn hmac(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
}

fn jwt(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", b64(sig))
}

/// Generated once per test binary (RSA generation takes a moment).
struct Keys {
    rsa: TestKey,
    rsa2: TestKey,
    ec: TestKey,
    ed: TestKey,
    /// Signs tokens; never published anywhere.
    attacker: TestKey,
    file_ec: TestKey,
    file_rsa: TestKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    rsa: TestKey::rsa("rsa-1"),
    rsa2: TestKey::rsa("rsa-2"),
    ec: TestKey::ec("ec-1"),
    ed: TestKey::ed("ed-1"),
    attacker: TestKey::ec("attacker"),
    file_ec: TestKey::ec("file-ec"),
    file_rsa: TestKey::rsa("file-rsa"),
});

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// Standard claims of a token valid at `now` (unix seconds).
fn claims(iss: &str, now: i64) -> Value {
    json!({"iss": iss, "aud": AUD, "sub": "user-1", "org_id": "org_jwt", "scope": "content:read jobs:read",
        "tier": "pilot", "iat": now, "exp": now + 300})
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

fn api_key(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-api-key", key.parse().unwrap());
    h
}

fn rejected(r: Result<Arc<layers_gateway::auth::Principal>, AuthError>) -> &'static str {
    match r {
        Err(AuthError::Rejected(reason)) => reason,
        Err(e) => panic!("expected a refusal, got {e:?}"),
        Ok(p) => panic!("expected a refusal, got a principal for {}", p.org),
    }
}

// ---------------------------------------------------------------- JWKS server

#[derive(Default)]
struct ServerState {
    jwks: Mutex<String>,
    fail: AtomicBool,
    /// Answers nothing while set (a hung identity provider).
    hang: AtomicBool,
    hits: Mutex<HashMap<String, u64>>,
}

/// A JWKS endpoint on loopback: `/jwks.json` serves the current set (or 503
/// while failing); every path is counted.
struct JwksServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

impl JwksServer {
    async fn start(set: &Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        *state.jwks.lock().unwrap() = set.to_string();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move {
                        *st.hits
                            .lock()
                            .unwrap()
                            .entry(req.uri().path().to_owned())
                            .or_default() += 1;
                        if st.hang.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let (status, body) = if req.uri().path() != "/jwks.json" {
                            (StatusCode::NOT_FOUND, String::new())
                        } else if st.fail.load(Ordering::SeqCst) {
                            (StatusCode::SERVICE_UNAVAILABLE, String::new())
                        } else {
                            (StatusCode::OK, st.jwks.lock().unwrap().clone())
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        JwksServer { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set(&self, set: &Value) {
        *self.state.jwks.lock().unwrap() = set.to_string();
    }

    fn fail(&self, on: bool) {
        self.state.fail.store(on, Ordering::SeqCst);
    }

    fn hang(&self, on: bool) {
        self.state.hang.store(on, Ordering::SeqCst);
    }

    fn hits(&self, path: &str) -> u64 {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total_hits(&self) -> u64 {
        self.state.hits.lock().unwrap().values().sum()
    }
}

/// While held, tokio's paused clock does not auto-advance (a blocking task
/// is in flight), so loopback I/O completes before any deadline; time moves
/// only by `tokio::time::advance`. Released on drop.
struct ClockHold(Option<std::sync::mpsc::Sender<()>>);

fn hold_clock() -> ClockHold {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    ClockHold(Some(tx))
}

impl Drop for ClockHold {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// Lets spawned tasks run (and their loopback I/O complete) until `done`,
/// without moving the paused clock. Bounded by wall time.
async fn settle(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------- setups

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("layers-gateway-auth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn jwt_config(jwks_url: &str, dir: &Path) -> Config {
    jwt_config_with(jwks_url, dir, "")
}

/// `jwt_config` with `extra` lines in `[auth.jwt]`.
fn jwt_config_with(jwks_url: &str, dir: &Path, extra: &str) -> Config {
    std::fs::write(
        dir.join("file-jwks.json"),
        jwks(&[&KEYS.file_ec, &KEYS.file_rsa]).to_string(),
    )
    .unwrap();
    let text = format!(
        r#"
[auth.jwt]
leeway_secs = 30
jwks_max_age_secs = 300
unknown_kid_refresh_secs = 10
jwks_stale_grace_secs = 600
jwks_fetch_timeout_ms = 2000
{extra}

[[auth.jwt.issuers]]
issuer = "{IDP}"
audience = "{AUD}"
jwks_url = "{jwks_url}"

[[auth.jwt.issuers]]
issuer = "{SVC}"
audience = ["{AUD}", "another"]
shared_secret_env = "{SECRET_ENV}"

[[auth.jwt.issuers]]
issuer = "{FILE_ISS}"
audience = "{AUD}"
algorithms = ["ES256"]
jwks_file = "file-jwks.json"
"#
    );
    let cfg = Config::parse(&text, dir.to_path_buf()).unwrap();
    cfg.auth.jwt.validate().unwrap();
    cfg
}

/// An authenticator with the three JWT issuers, the JWKS served at
/// `/jwks.json` of `server`, and the clock at `T0`.
fn jwt_auth(server: &JwksServer, dir: &TempDir) -> Arc<Authenticator> {
    let cfg = jwt_config(&server.url("/jwks.json"), &dir.0);
    Arc::new(Authenticator::with_clock(&cfg, Arc::default(), None, UnixClock::starting_at(T0)).unwrap())
}

fn published() -> Value {
    jwks(&[&KEYS.rsa, &KEYS.ec, &KEYS.ed])
}

// ---------------------------------------------------------------- JWT: valid tokens

#[tokio::test]
async fn tokens_of_every_algorithm_map_to_a_principal() {
    init();
    let dir = TempDir::new("valid");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    for key in [&KEYS.rsa, &KEYS.ec, &KEYS.ed] {
        let p = auth
            .authenticate(&bearer(&key.token(&claims(IDP, T0))))
            .await
            .unwrap();
        assert_eq!(
            (&*p.org, &*p.key_id, &*p.tier),
            ("org_jwt", "user-1", "pilot"),
            "{}",
            key.alg
        );
        assert_eq!(p.scopes.names(), ["content:read", "jobs:read"]);
    }
    // HS256 with the shared secret; organizationId, scp array, default tier,
    // unknown scope names ignored.
    let c = json!({"iss": SVC, "aud": ["another"], "sub": "svc-7", "organizationId": "org_svc",
        "scp": ["content:write", "no:such-scope"], "exp": T0 + 60});
    let token = jwt(&json!({"alg": "HS256", "typ": "JWT"}), &c, |m| {
        hmac(SECRET.as_bytes(), m)
    });
    let p = auth.authenticate(&bearer(&token)).await.unwrap();
    assert_eq!((&*p.org, &*p.key_id, &*p.tier), ("org_svc", "svc-7", "standard"));
    assert_eq!(p.scopes.names(), ["content:write"]);
    // The JWKS file issuer, and a token in X-Api-Key works too.
    let p = auth
        .authenticate(&api_key(&KEYS.file_ec.token(&claims(FILE_ISS, T0))))
        .await
        .unwrap();
    assert_eq!(&*p.org, "org_jwt");
    // One fetch for all of that.
    assert_eq!(server.hits("/jwks.json"), 1);
}

// ---------------------------------------------------------------- JWT: attack set

#[tokio::test]
async fn alg_none_in_any_casing_is_refused_with_or_without_a_signature() {
    init();
    let dir = TempDir::new("none");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let c = claims(IDP, T0);
    for alg in ["none", "None", "NONE", "nOnE", " none"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
        let unsigned = format!("{}.{}.", b64(header.to_string()), b64(c.to_string()));
        assert_eq!(
            rejected(auth.authenticate(&bearer(&unsigned)).await),
            "jwt_alg_none",
            "{alg}"
        );
        let signed = KEYS.rsa.token_with(header, &c);
        assert_eq!(
            rejected(auth.authenticate(&bearer(&signed)).await),
            "jwt_alg_none",
            "{alg}"
        );
    }
    assert_eq!(server.total_hits(), 0, "refused before any key lookup");
}

#[tokio::test]
async fn a_public_key_used_as_an_hs256_secret_is_refused() {
    init();
    let dir = TempDir::new("confusion");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let c = claims(IDP, T0);
    let pk_der = KEYS.rsa.public_bytes();
    let jwk_text = KEYS.rsa.jwk().to_string();
    let n = URL_SAFE_NO_PAD
        .decode(KEYS.rsa.jwk()["n"].as_str().unwrap())
        .unwrap();
    for secret in [pk_der.as_slice(), jwk_text.as_bytes(), n.as_slice()] {
        for alg in ["HS256", "HS384", "HS512"] {
            let token = jwt(&json!({"alg": alg, "kid": "rsa-1"}), &c, |m| hmac(secret, m));
            assert_eq!(
                rejected(auth.authenticate(&bearer(&token)).await),
                "jwt_alg_not_allowed"
            );
        }
    }
    // The file issuer (asymmetric keys) refuses HS256 the same way.
    let fc = claims(FILE_ISS, T0);
    let token = jwt(&json!({"alg": "HS256", "kid": "file-ec"}), &fc, |m| {
        hmac(&KEYS.file_ec.public_bytes(), m)
    });
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_alg_not_allowed"
    );
    // And the shared-secret issuer refuses anything but HS256.
    let sc = claims(SVC, T0);
    let token = KEYS.rsa.token_with(json!({"alg": "RS256", "kid": "rsa-1"}), &sc);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_alg_not_allowed"
    );
}

#[tokio::test]
async fn algorithms_outside_the_allowlist_are_refused() {
    init();
    let dir = TempDir::new("allowlist");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    // The file issuer allows ES256 only; its file also publishes an RSA key.
    let fc = claims(FILE_ISS, T0);
    let rs = KEYS.file_rsa.token(&fc);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&rs)).await),
        "jwt_alg_not_allowed"
    );
    assert!(auth.authenticate(&bearer(&KEYS.file_ec.token(&fc))).await.is_ok());
    // Names are exact: no case folding, nothing unknown.
    let c = claims(IDP, T0);
    for alg in ["rs256", "Rs256", "RS1", "PS999", "ES512", ""] {
        let token = KEYS.rsa.token_with(json!({"alg": alg, "kid": "rsa-1"}), &c);
        assert_eq!(
            rejected(auth.authenticate(&bearer(&token)).await),
            "jwt_alg_not_allowed",
            "{alg:?}"
        );
    }
    // RS384 is a real algorithm, not on the IdP's list (RS256, ES256, EdDSA).
    let token = KEYS.rsa.token_with(json!({"alg": "RS384", "kid": "rsa-1"}), &c);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_alg_not_allowed"
    );
}

#[tokio::test]
async fn embedded_jwk_jku_x5u_and_x5c_are_ignored_and_never_fetched() {
    init();
    let dir = TempDir::new("embedded");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let c = claims(IDP, T0);
    let evil = server.url("/evil-jwks.json");
    let x5u = server.url("/evil-cert.pem");
    // Signed by the attacker, carrying the attacker's own key every way.
    let embedded = json!({"alg": "ES256", "kid": "attacker", "jwk": KEYS.attacker.jwk(), "jku": evil,
        "x5u": x5u, "x5c": ["MIIBfake"]});
    let token = KEYS.attacker.token_with(embedded, &c);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_unknown_kid"
    );
    // The same with the kid of a published key: the embedded key is not used.
    let borrowed = json!({"alg": "ES256", "kid": "ec-1", "jwk": KEYS.attacker.jwk(), "jku": evil});
    let token = KEYS.attacker.token_with(borrowed, &c);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_bad_signature"
    );
    // A genuine token that also names a jku verifies with the configured keys.
    let genuine = json!({"alg": "ES256", "kid": "ec-1", "jku": evil, "x5u": x5u});
    assert!(auth
        .authenticate(&bearer(&KEYS.ec.token_with(genuine, &c)))
        .await
        .is_ok());
    assert_eq!(server.hits("/evil-jwks.json"), 0);
    assert_eq!(server.hits("/evil-cert.pem"), 0);
    assert_eq!(server.total_hits(), server.hits("/jwks.json"));
}

#[tokio::test]
async fn kids_with_path_and_sql_characters_are_only_unknown() {
    init();
    let dir = TempDir::new("kids");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let c = claims(IDP, T0);
    let long = "k".repeat(300);
    for kid in [
        "../../../../etc/passwd",
        "..%2f..%2fjwks.json",
        "/jwks.json",
        "' OR '1'='1' --",
        "rsa-1'; DROP TABLE keys; --",
        "rsa-1\u{0}",
        "${jndi:ldap://x}",
        "",
    ] {
        let token = KEYS.attacker.token_with(json!({"alg": "ES256", "kid": kid}), &c);
        assert_eq!(
            rejected(auth.authenticate(&bearer(&token)).await),
            "jwt_unknown_kid",
            "{kid:?}"
        );
    }
    let token = KEYS.attacker.token_with(json!({"alg": "ES256", "kid": long}), &c);
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token)).await),
        "jwt_malformed"
    );
    // Only the configured URL was ever requested: no kid became a path.
    assert_eq!(server.total_hits(), server.hits("/jwks.json"));
    assert!(server.hits("/jwks.json") <= 1);
}

#[tokio::test]
async fn claims_and_shape_are_checked() {
    init();
    let dir = TempDir::new("claims");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let k = &KEYS.ec;
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(IDP, T0);
        f(&mut c);
        k.token(&c)
    };
    let cases: Vec<(&str, String)> = vec![
        ("jwt_expired", with(&|c| c["exp"] = json!(T0 - 31))),
        ("jwt_not_yet_valid", with(&|c| c["nbf"] = json!(T0 + 31))),
        (
            "jwt_unknown_issuer",
            with(&|c| c["iss"] = json!("https://evil.example.test")),
        ),
        ("jwt_unknown_issuer", with(&|c| c["iss"] = json!(null))),
        ("jwt_wrong_audience", with(&|c| c["aud"] = json!("someone-else"))),
        ("jwt_wrong_audience", with(&|c| c["aud"] = json!(["x", "y"]))),
        (
            "jwt_wrong_audience",
            with(&|c| c.as_object_mut().unwrap().remove("aud").map(drop).unwrap()),
        ),
        (
            "jwt_missing_exp",
            with(&|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap()),
        ),
        ("jwt_malformed", with(&|c| c["exp"] = json!("tomorrow"))),
        (
            "jwt_missing_claims",
            with(&|c| c.as_object_mut().unwrap().remove("org_id").map(drop).unwrap()),
        ),
        (
            "jwt_missing_claims",
            with(&|c| c.as_object_mut().unwrap().remove("sub").map(drop).unwrap()),
        ),
    ];
    for (reason, token) in &cases {
        assert_eq!(
            rejected(auth.authenticate(&bearer(token)).await),
            *reason,
            "{token}"
        );
    }
    // Inside the leeway both ways.
    let edge = with(&|c| {
        c["exp"] = json!(T0 - 29);
        c["nbf"] = json!(T0 + 29);
    });
    assert!(auth.authenticate(&bearer(&edge)).await.is_ok());
    // Signatures: a flipped byte, another key under a published kid, the
    // signature of another token.
    let good = k.token(&claims(IDP, T0));
    let (msg, sig) = good.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[5] ^= 1;
    let flipped = format!("{msg}.{}", b64(&raw));
    let other_key = KEYS
        .attacker
        .token_with(json!({"alg": "ES256", "kid": "ec-1"}), &claims(IDP, T0));
    let mut c2 = claims(IDP, T0);
    c2["org_id"] = json!("org_other");
    let swapped = format!("{}.{}", k.token(&c2).rsplit_once('.').unwrap().0, sig);
    for token in [&flipped, &other_key, &swapped] {
        assert_eq!(
            rejected(auth.authenticate(&bearer(token)).await),
            "jwt_bad_signature"
        );
    }
    // Shape: truncated, extra segments, bad base64, bad JSON, empty parts.
    let parts: Vec<&str> = good.split('.').collect();
    for token in [
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
        format!("!!!.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", b64("{not json"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64("{\"iss\": "), parts[2]),
        "..".to_owned(),
        format!("{}..{}", parts[0], parts[2]),
    ] {
        assert_eq!(
            rejected(auth.authenticate(&bearer(&token)).await),
            "jwt_malformed",
            "{token}"
        );
    }
    // A crit header names an extension nobody here understands.
    let crit = k.token_with(
        json!({"alg": "ES256", "kid": "ec-1", "crit": ["b64"], "b64": false}),
        &claims(IDP, T0),
    );
    assert_eq!(rejected(auth.authenticate(&bearer(&crit)).await), "jwt_malformed");
}

// ---------------------------------------------------------------- JWKS by URL, paused clock

#[tokio::test(start_paused = true)]
async fn unknown_kids_fetch_the_jwks_at_most_once_per_interval() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("kid-storm");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let clock = UnixClock::starting_at(T0);
    assert!(auth
        .authenticate(&bearer(&KEYS.rsa.token(&claims(IDP, T0))))
        .await
        .is_ok());
    assert_eq!(server.hits("/jwks.json"), 1);
    let random_kid_token = |i: u32| {
        let kid = format!("kid-{:016x}-{i}", rand::random::<u64>());
        let header = json!({"alg": "ES256", "kid": kid});
        // The signature is never reached: the kid is unknown.
        format!(
            "{}.{}.{}",
            b64(header.to_string()),
            b64(claims(IDP, clock.now_unix()).to_string()),
            b64([7u8; 64])
        )
    };
    // Within the interval of the first fetch: no fetch at all.
    for i in 0..10_000 {
        assert_eq!(
            rejected(auth.authenticate(&bearer(&random_kid_token(i))).await),
            "jwt_unknown_kid"
        );
    }
    assert_eq!(server.hits("/jwks.json"), 1);
    // Each later interval: exactly one fetch, however many kids; 9 s after
    // it, still none.
    for interval in 1..=3u64 {
        tokio::time::advance(Duration::from_secs(10)).await;
        for i in 0..10_000 {
            assert_eq!(
                rejected(auth.authenticate(&bearer(&random_kid_token(i))).await),
                "jwt_unknown_kid"
            );
        }
        assert_eq!(server.hits("/jwks.json"), 1 + interval);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            rejected(auth.authenticate(&bearer(&random_kid_token(0))).await),
            "jwt_unknown_kid"
        );
        assert_eq!(server.hits("/jwks.json"), 1 + interval);
    }
    // Concurrent unknown kids share one fetch (single flight).
    tokio::time::advance(Duration::from_secs(10)).await;
    let before = server.hits("/jwks.json");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let (auth, token) = (auth.clone(), random_kid_token(i));
        tasks.spawn(async move { rejected(auth.authenticate(&bearer(&token)).await) });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), "jwt_unknown_kid");
    }
    assert_eq!(server.hits("/jwks.json"), before + 1);
}

#[tokio::test(start_paused = true)]
async fn rotation_new_kid_after_one_refresh_removed_key_after_max_age() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("rotation");
    let server = JwksServer::start(&jwks(&[&KEYS.rsa])).await;
    let auth = jwt_auth(&server, &dir);
    let clock = UnixClock::starting_at(T0);
    let token = |k: &TestKey| k.token(&claims(IDP, clock.now_unix()));
    assert!(auth.authenticate(&bearer(&token(&KEYS.rsa))).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 1);
    // The issuer publishes a second key; a token signed with it arrives
    // once the interval since the last fetch has passed: one refresh.
    server.set(&jwks(&[&KEYS.rsa, &KEYS.rsa2]));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(auth.authenticate(&bearer(&token(&KEYS.rsa2))).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 2);
    // The old key is withdrawn: it keeps working until the set's max age...
    server.set(&jwks(&[&KEYS.rsa2]));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(auth.authenticate(&bearer(&token(&KEYS.rsa))).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 2);
    // ...and not a moment after.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        rejected(auth.authenticate(&bearer(&token(&KEYS.rsa))).await),
        "jwt_unknown_kid"
    );
    assert_eq!(server.hits("/jwks.json"), 3);
    assert!(auth.authenticate(&bearer(&token(&KEYS.rsa2))).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 3);
}

#[tokio::test(start_paused = true)]
async fn jwks_down_uses_the_last_good_set_then_answers_unavailable() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("jwks-down");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let clock = UnixClock::starting_at(T0);
    let token = || KEYS.ed.token(&claims(IDP, clock.now_unix()));
    assert!(auth.authenticate(&bearer(&token())).await.is_ok());
    server.fail(true);
    // Past max age (300 s): the refresh fails, the last good set is used.
    tokio::time::advance(Duration::from_secs(301)).await;
    assert!(auth.authenticate(&bearer(&token())).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 2);
    // Failed refreshes are retried at most once per interval (behind the
    // answer, once one has failed).
    assert!(auth.authenticate(&bearer(&token())).await.is_ok());
    assert_eq!(server.hits("/jwks.json"), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(auth.authenticate(&bearer(&token())).await.is_ok());
    for _ in 0..10_000 {
        if server.hits("/jwks.json") == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(server.hits("/jwks.json"), 3);
    // Past max age + stale grace (300 + 600 s): 503, never 401, never a pass.
    tokio::time::advance(Duration::from_secs(900 - 311)).await;
    let e = auth.authenticate(&bearer(&token())).await.unwrap_err();
    assert_eq!(
        e,
        AuthError::Unavailable {
            retry_after_secs: 10,
            reason: "jwks_unavailable"
        }
    );
    assert_eq!(GatewayError::from(e).status, StatusCode::SERVICE_UNAVAILABLE);
    // Other issuers are not affected.
    let svc = jwt(&json!({"alg": "HS256"}), &claims(SVC, clock.now_unix()), |m| {
        hmac(SECRET.as_bytes(), m)
    });
    assert!(auth.authenticate(&bearer(&svc)).await.is_ok());
    // The endpoint comes back: the next attempt restores service.
    server.fail(false);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(auth.authenticate(&bearer(&token())).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_jwks_never_fetched_is_unavailable_not_refused() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("jwks-never");
    let server = JwksServer::start(&published()).await;
    server.fail(true);
    let auth = jwt_auth(&server, &dir);
    let t = KEYS.rsa.token(&claims(IDP, T0));
    for _ in 0..100 {
        assert!(matches!(
            auth.authenticate(&bearer(&t)).await,
            Err(AuthError::Unavailable {
                reason: "jwks_unavailable",
                ..
            })
        ));
    }
    assert_eq!(server.hits("/jwks.json"), 1, "one attempt per interval");
    // Garbage from the endpoint is no better than an outage.
    server.fail(false);
    server.set(&json!({"keys": "nope"}));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(matches!(
        auth.authenticate(&bearer(&t)).await,
        Err(AuthError::Unavailable { .. })
    ));
    server.set(&published());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_background_refresher_fetches_ahead_of_requests() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("refresher");
    let server = JwksServer::start(&jwks(&[&KEYS.rsa])).await;
    let auth = jwt_auth(&server, &dir);
    auth.start_background();
    settle(|| server.hits("/jwks.json") == 1).await;
    server.set(&jwks(&[&KEYS.rsa2]));
    tokio::time::advance(Duration::from_secs(300)).await;
    settle(|| server.hits("/jwks.json") == 2).await;
    let clock = UnixClock::starting_at(T0 + 300);
    let t = KEYS.rsa2.token(&claims(IDP, clock.now_unix()));
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    let old = KEYS.rsa.token(&claims(IDP, clock.now_unix()));
    assert_eq!(
        rejected(auth.authenticate(&bearer(&old)).await),
        "jwt_unknown_kid"
    );
    assert_eq!(server.hits("/jwks.json"), 2, "requests did not fetch");
    // Dropping the authenticator stops its refresher.
    drop(auth);
    tokio::time::advance(Duration::from_secs(600)).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.hits("/jwks.json"), 2);
}

/// `[[auth.jwt.issuers]]` tables (in `jwt_config_with`'s `extra`) for more
/// issuers of the same audience, each with its own key source line.
fn more_issuers(issuers: &[(&str, &str)]) -> String {
    issuers
        .iter()
        .map(|(iss, source)| {
            format!("[[auth.jwt.issuers]]\nissuer = \"{iss}\"\naudience = \"{AUD}\"\n{source}\n\n")
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_every_fetched_key_set_while_the_identity_provider_is_down() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("reload-keeps-jwks");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    assert!(auth
        .authenticate(&bearer(&KEYS.rsa.token(&claims(IDP, T0))))
        .await
        .is_ok());
    assert_eq!(server.hits("/jwks.json"), 1);
    server.fail(true);
    // The operator adds an unrelated issuer while the IdP is down.
    let other = more_issuers(&[("https://other.example.test", "jwks_file = \"file-jwks.json\"")]);
    let cfg = jwt_config_with(&server.url("/jwks.json"), &dir.0, &other);
    auth.replace_jwt(auth.build_jwt(&cfg).unwrap());
    let after = auth.authenticate(&bearer(&KEYS.ec.token(&claims(IDP, T0)))).await;
    assert!(
        after.is_ok(),
        "the last good set survives the reload: {:?}",
        after.err()
    );
    // A reload that changes how the URL is fetched keeps the set as well.
    let cfg = jwt_config_with(&server.url("/jwks.json"), &dir.0, "jwks_max_bytes = 100000");
    auth.replace_jwt(auth.build_jwt(&cfg).unwrap());
    let after = auth.authenticate(&bearer(&KEYS.ed.token(&claims(IDP, T0)))).await;
    assert!(
        after.is_ok(),
        "kept across a changed fetch setting: {:?}",
        after.err()
    );
    // Past max age the set is stale, and still good within the grace.
    tokio::time::advance(Duration::from_secs(400)).await;
    let clock = UnixClock::starting_at(T0 + 400);
    let late = auth
        .authenticate(&bearer(&KEYS.rsa.token(&claims(IDP, clock.now_unix()))))
        .await;
    assert!(late.is_ok(), "stale but within the grace: {:?}", late.err());
}

#[tokio::test(start_paused = true)]
async fn issuers_that_share_a_jwks_url_share_one_fetch() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("shared-jwks-url");
    let server = JwksServer::start(&published()).await;
    let url = format!("jwks_url = \"{}\"", server.url("/jwks.json"));
    let (second, third) = ("https://second.example.test", "https://third.example.test");
    let auth = jwt_auth_with(&server, &dir, &more_issuers(&[(second, &url), (third, &url)]));
    for iss in [IDP, second, third] {
        let r = auth
            .authenticate(&bearer(&KEYS.rsa.token(&claims(iss, T0))))
            .await;
        assert!(r.is_ok(), "{iss}: {:?}", r.err());
    }
    assert_eq!(
        server.hits("/jwks.json"),
        1,
        "one fetch for three issuers of one URL"
    );
    auth.start_background();
    tokio::time::advance(Duration::from_secs(300)).await;
    settle(|| server.hits("/jwks.json") >= 2).await;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        server.hits("/jwks.json"),
        2,
        "one refresh per interval for the URL"
    );
}

// ---------------------------------------------------------------- verified-token cache, paused clock

/// An authenticator as `jwt_auth` builds it, with `extra` lines in `[auth.jwt]`.
fn jwt_auth_with(server: &JwksServer, dir: &TempDir, extra: &str) -> Arc<Authenticator> {
    let cfg = jwt_config_with(&server.url("/jwks.json"), &dir.0, extra);
    Arc::new(Authenticator::with_clock(&cfg, Arc::default(), None, UnixClock::starting_at(T0)).unwrap())
}

/// Answers the verified-token cache gave so far.
fn cache_hits(auth: &Authenticator) -> u64 {
    auth.jwt().unwrap().token_cache().hits()
}

fn hs256(c: &Value) -> String {
    jwt(&json!({"alg": "HS256", "typ": "JWT"}), c, |m| {
        hmac(SECRET.as_bytes(), m)
    })
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_is_refused_from_the_first_millisecond_past_exp() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("cache-exp");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let mut c = claims(SVC, T0);
    c["exp"] = json!(T0 + 100);
    let t = hs256(&c);
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 0, "verified, then remembered");
    // exp + leeway (30 s) is T0 + 130 s: remembered until the millisecond before.
    tokio::time::advance(Duration::from_millis(129_999)).await;
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(rejected(auth.authenticate(&bearer(&t)).await), "jwt_expired");
    assert_eq!(cache_hits(&auth), 1);
}

#[tokio::test(start_paused = true)]
async fn the_configured_maximum_age_caps_a_cached_token() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("cache-max-age");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth_with(&server, &dir, "cache_max_age_secs = 60");
    let t = hs256(&claims(SVC, T0));
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 1);
    // At 60 s it is verified again (still valid), and remembered afresh.
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 1);
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 2);
}

#[tokio::test(start_paused = true)]
async fn a_kid_withdrawn_from_the_jwks_is_not_answered_from_the_cache() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("cache-rotation");
    let server = JwksServer::start(&jwks(&[&KEYS.ec, &KEYS.ed])).await;
    let auth = jwt_auth(&server, &dir);
    let withdrawn = KEYS.ec.token(&claims(IDP, T0));
    let kept = KEYS.ed.token(&claims(IDP, T0));
    for t in [&withdrawn, &kept, &withdrawn, &kept] {
        assert!(auth.authenticate(&bearer(t)).await.is_ok());
    }
    assert_eq!(cache_hits(&auth), 2);
    assert_eq!(server.hits("/jwks.json"), 1);
    // The issuer withdraws ec-1 and adds rsa-2; a token with the new kid
    // makes the gateway fetch the set again, long before its max age.
    server.set(&jwks(&[&KEYS.ed, &KEYS.rsa2]));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(auth
        .authenticate(&bearer(&KEYS.rsa2.token(&claims(IDP, T0 + 10))))
        .await
        .is_ok());
    assert_eq!(server.hits("/jwks.json"), 2);
    // The remembered ec-1 token is checked against the new set: refused.
    assert_eq!(
        rejected(auth.authenticate(&bearer(&withdrawn)).await),
        "jwt_unknown_kid"
    );
    // A kid still published is verified again once, then remembered.
    let hits = cache_hits(&auth);
    assert!(auth.authenticate(&bearer(&kept)).await.is_ok());
    assert_eq!(cache_hits(&auth), hits);
    assert!(auth.authenticate(&bearer(&kept)).await.is_ok());
    assert_eq!(cache_hits(&auth), hits + 1);
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_is_refused_once_its_jwks_is_due_for_a_refresh_and_the_kid_is_gone() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("cache-max-age-jwks");
    let server = JwksServer::start(&jwks(&[&KEYS.ec, &KEYS.ed])).await;
    let auth = jwt_auth_with(&server, &dir, "cache_max_age_secs = 3600");
    let mut c = claims(IDP, T0);
    c["exp"] = json!(T0 + 3000);
    let t = KEYS.ec.token(&c);
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    // Withdrawn at the issuer; nothing makes the gateway fetch before the
    // set's max age (300 s), when an uncached token would see it gone.
    server.set(&jwks(&[&KEYS.ed]));
    tokio::time::advance(Duration::from_millis(299_999)).await;
    assert!(auth.authenticate(&bearer(&t)).await.is_ok());
    assert_eq!(cache_hits(&auth), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(rejected(auth.authenticate(&bearer(&t)).await), "jwt_unknown_kid");
    assert_eq!(server.hits("/jwks.json"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_token_with_the_same_claims_and_another_signature_is_not_a_cache_hit() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("cache-forged");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let forge = |genuine: &str, sig: Vec<u8>| {
        let (signed, _) = genuine.rsplit_once('.').unwrap();
        format!("{signed}.{}", b64(sig))
    };
    // HS256: the genuine token is remembered; the same header and claims
    // signed with another secret are verified, and refused.
    let genuine = hs256(&claims(SVC, T0));
    assert!(auth.authenticate(&bearer(&genuine)).await.is_ok());
    assert!(auth.authenticate(&bearer(&genuine)).await.is_ok());
    assert_eq!(cache_hits(&auth), 1);
    let (signed, _) = genuine.rsplit_once('.').unwrap();
    let forged = forge(
        &genuine,
        hmac(b"another-secret-0123456789abcdef-x", signed.as_bytes()),
    );
    assert_eq!(
        rejected(auth.authenticate(&bearer(&forged)).await),
        "jwt_bad_signature"
    );
    // ES256 (file issuer): signed by the attacker's key under the same kid.
    let genuine = KEYS.file_ec.token(&claims(FILE_ISS, T0));
    assert!(auth.authenticate(&bearer(&genuine)).await.is_ok());
    assert!(auth.authenticate(&bearer(&genuine)).await.is_ok());
    assert_eq!(cache_hits(&auth), 2);
    let (signed, _) = genuine.rsplit_once('.').unwrap();
    let forged = forge(&genuine, KEYS.attacker.sign(signed.as_bytes()));
    assert_eq!(
        rejected(auth.authenticate(&bearer(&forged)).await),
        "jwt_bad_signature"
    );
    assert_eq!(cache_hits(&auth), 2);
}

#[tokio::test]
async fn the_verified_token_cache_holds_at_most_its_configured_entries() {
    init();
    let dir = TempDir::new("cache-bound");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth_with(&server, &dir, "cache_max_entries = 50");
    for i in 0..500 {
        let mut c = claims(SVC, T0);
        c["sub"] = json!(format!("user-{i}"));
        assert!(auth.authenticate(&bearer(&hs256(&c))).await.is_ok());
    }
    let n = auth.jwt().unwrap().token_cache().len();
    assert!((1..=50).contains(&n), "{n} entries");
    // Off: nothing is remembered.
    let off = jwt_auth_with(&server, &dir, "cache_max_entries = 0");
    let t = hs256(&claims(SVC, T0));
    for _ in 0..3 {
        assert!(off.authenticate(&bearer(&t)).await.is_ok());
    }
    assert_eq!(cache_hits(&off), 0);
}

// ---------------------------------------------------------------- introspection

/// The demo simulator over TCP as the origin, and an authenticator with
/// `auth.source = source` in front of it.
struct Origin {
    sim: Simulator,
    stop: tokio::sync::watch::Sender<bool>,
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
}

const UNKNOWN_KEY: &str = "lp_test_01HZNNKNWN00000Z_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

async fn origin_auth(source: &str, file_keys: KeyStore) -> Origin {
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    let sim = Simulator::from_json(DEMO_CONTAINERS_JSON, keys).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(sim.clone().serve(listener, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let text =
        format!("[origin]\nurl = \"http://{addr}\"\ntimeout_ms = 2000\n\n[auth]\nsource = \"{source}\"\n");
    let cfg = Config::parse(&text, PathBuf::new()).unwrap();
    let upstream: Arc<dyn Upstream> = Arc::new(HttpUpstream::new(&cfg.origin).unwrap());
    let metrics = Arc::new(Metrics::new(false, 10));
    let origin = OriginClient::new(upstream, &cfg, metrics.clone(), Arc::new(AtomicBool::new(false)));
    let auth = Authenticator::with_clock(
        &cfg,
        Arc::new(file_keys),
        Some(origin),
        UnixClock::starting_at(T0),
    )
    .unwrap();
    Origin {
        sim,
        stop,
        auth: Arc::new(auth),
        metrics,
    }
}

impl Origin {
    /// Waits for background refreshes in flight to be answered and cached.
    async fn settled(&self) {
        self.auth.introspector().unwrap().settle().await;
    }

    fn whoami_calls(&self) -> u64 {
        self.sim.request_count("GET", "/v1/whoami")
    }

    /// whoami calls the gateway attempted, answered or not (origin metrics).
    fn attempts(&self) -> u64 {
        ["200", "401", "502", "503", "504", "error", "timeout"]
            .iter()
            .map(|s| {
                self.metrics
                    .origin_requests
                    .with_label_values(&["/v1/whoami", s])
                    .get()
            })
            .sum()
    }
}

#[tokio::test(start_paused = true)]
async fn introspection_asks_the_origin_once_per_key_per_ttl() {
    init();
    let _hold = hold_clock();
    let o = origin_auth("origin", KeyStore::default()).await;
    let reader = demo_key("reader");
    let p = o.auth.authenticate(&api_key(&reader)).await.unwrap();
    assert_eq!(&*p.org, "org_demo_a");
    for _ in 0..50 {
        assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    }
    assert_eq!(o.whoami_calls(), 1);
    // Concurrent first requests for another key: one call (single flight).
    let admin = demo_key("admin");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (auth, key) = (o.auth.clone(), admin.clone());
        tasks.spawn(async move { auth.authenticate(&api_key(&key)).await.map(|p| p.org.clone()) });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(&*r.unwrap().unwrap(), "org_demo_a");
    }
    assert_eq!(o.whoami_calls(), 2);
    // After the positive TTL (60 s), one more call per key.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    assert_eq!(o.whoami_calls(), 2);
    // The cached principal answers at once; the refresh runs behind it.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    o.settled().await;
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    assert_eq!(o.whoami_calls(), 3);
    // Malformed keys never reach the origin.
    assert_eq!(
        rejected(o.auth.authenticate(&api_key("lp_test_nope")).await),
        "malformed"
    );
    assert_eq!(o.whoami_calls(), 3);
    let _ = o.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn introspection_caches_refusals_briefly() {
    init();
    let _hold = hold_clock();
    let o = origin_auth("origin", KeyStore::default()).await;
    for _ in 0..20 {
        assert_eq!(
            rejected(o.auth.authenticate(&api_key(UNKNOWN_KEY)).await),
            "origin_rejected"
        );
    }
    assert_eq!(o.whoami_calls(), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        rejected(o.auth.authenticate(&api_key(UNKNOWN_KEY)).await),
        "origin_rejected"
    );
    assert_eq!(o.whoami_calls(), 2);
    let _ = o.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn origin_failing_keeps_cached_principals_within_ttl_plus_grace() {
    init();
    let _hold = hold_clock();
    let o = origin_auth("origin", KeyStore::default()).await;
    let reader = demo_key("reader");
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    for status in [502, 503, 504] {
        o.sim.set_failure(Some(FailureMode::Status(status)));
        tokio::time::advance(Duration::from_secs(61)).await;
        // Expired, the origin fails: the cached principal keeps working.
        assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok(), "{status}");
        // An uncached key is not let through: 503 with Retry-After.
        let e = o
            .auth
            .authenticate(&api_key(&demo_key("admin")))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            AuthError::Unavailable {
                retry_after_secs: 5,
                reason: "introspection_unavailable"
            },
            "{status}"
        );
    }
    // Past TTL + grace (60 + 300 s from the last good answer): unavailable.
    tokio::time::advance(Duration::from_secs(360 - 183)).await;
    assert!(matches!(
        o.auth.authenticate(&api_key(&reader)).await,
        Err(AuthError::Unavailable { .. })
    ));
    let _ = o.stop.send(true);
}

#[tokio::test(start_paused = true)]
async fn origin_down_cached_key_works_uncached_key_is_unavailable() {
    init();
    let _hold = hold_clock();
    let o = origin_auth("origin", KeyStore::default()).await;
    let reader = demo_key("reader");
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    // The origin goes away entirely (connections refused).
    let _ = o.stop.send(true);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    // Within the TTL nothing is asked.
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    assert_eq!(o.attempts(), 1);
    // Past it, one failed attempt; the cached principal keeps working and
    // the origin is asked again at most every 5 s.
    tokio::time::advance(Duration::from_secs(120)).await;
    for _ in 0..20 {
        assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
        o.settled().await;
    }
    assert_eq!(o.attempts(), 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    o.settled().await;
    assert_eq!(o.attempts(), 3);
    let e = o
        .auth
        .authenticate(&api_key(&demo_key("partner_b")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AuthError::Unavailable {
                retry_after_secs: 5,
                ..
            }
        ),
        "{e:?}"
    );
    // Usable until TTL + grace (60 + 300 s) after the last good answer.
    tokio::time::advance(Duration::from_secs(234)).await;
    assert!(o.auth.authenticate(&api_key(&reader)).await.is_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(
        o.auth.authenticate(&api_key(&reader)).await,
        Err(AuthError::Unavailable { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn both_checks_the_file_first_and_decides_key_ids_it_holds() {
    init();
    let _hold = hold_clock();
    let reader = demo_key("reader");
    let file =
        KeyStore::parse(&keys_file_entry(&reader, "org_from_file", &["content:read"], "partner").unwrap())
            .unwrap();
    let o = origin_auth("both", file).await;
    let p = o.auth.authenticate(&api_key(&reader)).await.unwrap();
    assert_eq!(&*p.org, "org_from_file");
    assert_eq!(o.whoami_calls(), 0, "a key the file holds is checked locally");
    // A wrong secret for a key id the file holds is refused, after the same
    // whoami call an unknown id costs (so timing does not tell which ids
    // the file holds).
    let wrong = format!("{}x", &reader[..reader.len() - 1]);
    assert_eq!(
        rejected(o.auth.authenticate(&api_key(&wrong)).await),
        "wrong_secret"
    );
    assert_eq!(o.whoami_calls(), 1);
    // A key id the file does not hold goes to the origin.
    let p = o
        .auth
        .authenticate(&api_key(&demo_key("partner_b")))
        .await
        .unwrap();
    assert_eq!(&*p.org, "org_demo_b");
    assert_eq!(o.whoami_calls(), 2);
    let _ = o.stop.send(true);
}

// ---------------------------------------------------------------- keys-file reload

const KEY_A: &str = "lp_test_01HZRKYA00000000_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";
const KEY_B: &str = "lp_test_01HZRKYB00000000_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

fn keys_file(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| keys_file_entry(k, "org_reload", &["content:read"], "standard").unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Watched {
    _dir: TempDir,
    path: PathBuf,
    auth: Arc<Authenticator>,
    hup: Arc<Notify>,
    stop: tokio::sync::watch::Sender<bool>,
    reports: tokio::sync::watch::Receiver<ReloadReport>,
}

async fn watched(name: &str, poll: Duration) -> Watched {
    let dir = TempDir::new(name);
    let path = dir.0.join("keys.toml");
    std::fs::write(&path, keys_file(&[KEY_A, KEY_B])).unwrap();
    let cfg = Config::parse("", dir.0.clone()).unwrap();
    let keys = KeyStore::load(&path).unwrap();
    let auth = Arc::new(Authenticator::new(&cfg, Arc::new(keys), None).unwrap());
    let hup = Arc::new(Notify::new());
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let reports = auth.reload_reports();
    tokio::spawn(watch_keys_file(
        path.clone(),
        auth.clone(),
        poll,
        hup.clone(),
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    let mut w = Watched {
        _dir: dir,
        path,
        auth,
        hup,
        stop,
        reports,
    };
    // The watcher loads the file once when it starts.
    w.wait(|r| r.reloaded == 1).await;
    w
}

impl Watched {
    async fn wait(&mut self, f: impl Fn(&ReloadReport) -> bool) -> ReloadReport {
        tokio::time::timeout(Duration::from_secs(10), self.reports.wait_for(|r| f(r)))
            .await
            .expect("reload outcome within 10 s")
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn sighup_reload_revokes_at_once_and_refuses_a_bad_file() {
    init();
    let mut w = watched("reload-hup", Duration::from_secs(3600)).await;
    assert!(w.auth.authenticate(&api_key(KEY_A)).await.is_ok());
    std::fs::write(&w.path, keys_file(&[KEY_B])).unwrap();
    w.hup.notify_one();
    let r = w.wait(|r| r.reloaded == 2).await;
    assert_eq!(r.keys, 1);
    assert_eq!(
        rejected(w.auth.authenticate(&api_key(KEY_A)).await),
        "unknown_key"
    );
    assert!(w.auth.authenticate(&api_key(KEY_B)).await.is_ok());
    // Garbage: refused, the previous keys stay in force.
    std::fs::write(&w.path, "[[keys]]\nkey_id = \"nope\"\n").unwrap();
    w.hup.notify_one();
    let r = w.wait(|r| r.refused == 1).await;
    assert!(r.last_error.unwrap().contains("keys.toml"));
    assert!(w.auth.authenticate(&api_key(KEY_B)).await.is_ok());
    assert_eq!(
        rejected(w.auth.authenticate(&api_key(KEY_A)).await),
        "unknown_key"
    );
    // A missing file is refused the same way.
    std::fs::remove_file(&w.path).unwrap();
    w.hup.notify_one();
    w.wait(|r| r.refused == 2).await;
    assert!(w.auth.authenticate(&api_key(KEY_B)).await.is_ok());
    let _ = w.stop.send(true);
}

#[tokio::test]
async fn a_reloaded_keys_file_naming_an_unknown_tier_is_refused_and_the_old_keys_stay() {
    init();
    let mut w = watched("reload-tier", Duration::from_secs(3600)).await;
    let gold = keys_file(&[KEY_B]).replace("tier = \"standard\"", "tier = \"gold\"");
    assert!(gold.contains("\"gold\""));
    std::fs::write(&w.path, gold).unwrap();
    w.hup.notify_one();
    let r = w.wait(|r| r.refused == 1).await;
    let e = r.last_error.unwrap();
    assert!(e.contains("keys[0].tier: unknown tier \"gold\""), "{e}");
    assert!(
        w.auth.authenticate(&api_key(KEY_A)).await.is_ok(),
        "the old keys stay"
    );
    let _ = w.stop.send(true);
}

#[tokio::test]
async fn polling_notices_content_changes_and_logs_a_bad_file_once() {
    init();
    let mut w = watched("reload-poll", Duration::from_millis(20)).await;
    // Same size, new content (key B replaced by key A's twin C).
    let key_c = KEY_B.replace("RKYB", "RKYC");
    std::fs::write(&w.path, keys_file(&[KEY_A, &key_c])).unwrap();
    w.wait(|r| r.reloaded == 2).await;
    assert_eq!(
        rejected(w.auth.authenticate(&api_key(KEY_B)).await),
        "unknown_key"
    );
    assert!(w.auth.authenticate(&api_key(&key_c)).await.is_ok());
    std::fs::write(&w.path, "not toml at all [").unwrap();
    w.wait(|r| r.refused == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.reports.borrow().refused,
        1,
        "the same bad content is refused once"
    );
    assert!(w.auth.authenticate(&api_key(KEY_A)).await.is_ok());
    std::fs::write(&w.path, keys_file(&[&key_c])).unwrap();
    w.wait(|r| r.reloaded == 3).await;
    assert_eq!(
        rejected(w.auth.authenticate(&api_key(KEY_A)).await),
        "unknown_key"
    );
    let _ = w.stop.send(true);
}

// ---------------------------------------------------------------- identical refusals

#[tokio::test]
async fn every_refusal_is_the_same_401_whatever_the_reason() {
    init();
    let dir = TempDir::new("identical");
    let server = JwksServer::start(&published()).await;
    let mut cfg = jwt_config(&server.url("/jwks.json"), &dir.0);
    // This gateway takes live keys only; KEY_A is a test key.
    cfg.auth.env = Some("live".into());
    let file = KeyStore::parse(&keys_file(&[KEY_A])).unwrap();
    let auth = Authenticator::with_clock(&cfg, Arc::new(file), None, UnixClock::starting_at(T0)).unwrap();
    let c = claims(IDP, T0);
    let mut expired = c.clone();
    expired["exp"] = json!(T0 - 100);
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"}).to_string()),
        b64(c.to_string())
    );
    let hs = jwt(&json!({"alg": "HS256", "kid": "rsa-1"}), &c, |m| {
        hmac(&KEYS.rsa.public_bytes(), m)
    });
    let unknown_kid = KEYS.attacker.token(&c);
    let mut wrong_aud = c.clone();
    wrong_aud["aud"] = json!("nope");
    let cases: Vec<HeaderMap> = vec![
        HeaderMap::new(),
        api_key("lp_test_short"),
        api_key(&KEY_A.replace("RKYA", "RKYZ")),
        api_key(&KEY_A.replace("abcdef", "abcdeg")),
        api_key(KEY_A),
        bearer(&none),
        bearer(&hs),
        bearer(&unknown_kid),
        bearer(&KEYS.ec.token(&expired)),
        bearer(&KEYS.ec.token(&wrong_aud)),
        bearer("a.b"),
    ];
    let mut reasons = Vec::new();
    let mut bodies = std::collections::HashSet::new();
    for h in &cases {
        let e = auth.authenticate(h).await.unwrap_err();
        let AuthError::Rejected(reason) = e else {
            panic!("{e:?} is not a refusal")
        };
        reasons.push(reason);
        let g = GatewayError::from(e);
        assert_eq!(g.status, StatusCode::UNAUTHORIZED);
        assert!(g.retry_after_secs.is_none());
        bodies.insert(g.envelope("req_same"));
    }
    assert_eq!(bodies.len(), 1, "one body for every refusal");
    assert_eq!(
        reasons,
        [
            "missing",
            "malformed",
            "unknown_key",
            "wrong_secret",
            "env_mismatch",
            "jwt_alg_none",
            "jwt_alg_not_allowed",
            "jwt_unknown_kid",
            "jwt_expired",
            "jwt_wrong_audience",
            "jwt_malformed",
        ]
    );
}

// ---------------------------------------------------------------- docs

#[test]
fn the_config_examples_in_docs_auth_md_are_valid() {
    init();
    let doc = include_str!("../docs/auth.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3, "keys file, JWT issuers, introspection");
    for block in blocks {
        let cfg = Config::parse(block, PathBuf::new()).unwrap_or_else(|e| panic!("{e}\n{block}"));
        cfg.auth.jwt.validate().unwrap();
        cfg.auth.introspection.validate().unwrap();
    }
}

// ---------------------------------------------------------------- through the gateway

/// Requires the service wiring (`Gateway` authenticating through `Authenticator`).
#[tokio::test]
async fn through_the_gateway_every_refusal_is_one_401_and_an_outage_a_503() {
    use http_body_util::BodyExt;
    use layers_gateway::origin::SimulatorUpstream;
    use layers_gateway::service::Gateway;
    init();
    let dir = TempDir::new("gateway");
    let server = JwksServer::start(&published()).await;
    server.fail(true);
    let cfg = jwt_config(&server.url("/jwks.json"), &dir.0);
    let keys = KeyStore::parse(DEMO_KEYS_FILE).unwrap();
    let sim = Simulator::from_json(
        DEMO_CONTAINERS_JSON,
        Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap()),
    )
    .unwrap();
    let gw = Gateway::new(cfg, keys, Arc::new(SimulatorUpstream(sim)));
    let call = |h: Vec<(&'static str, String)>| {
        let gw = gw.clone();
        async move {
            let mut b = Request::get("/v1/whoami").header("x-request-id", "req_same");
            for (k, v) in h {
                b = b.header(k, v);
            }
            let resp = gw.handle(b.body(Full::new(Bytes::new())).unwrap()).await;
            let (parts, body) = resp.into_parts();
            (parts, body.collect().await.unwrap().to_bytes())
        }
    };
    let c = claims(SVC, unix_now());
    let mut expired = c.clone();
    expired["exp"] = json!(unix_now() - 3600);
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none"}).to_string()),
        b64(c.to_string())
    );
    let hs_expired = jwt(&json!({"alg": "HS256"}), &expired, |m| hmac(SECRET.as_bytes(), m));
    let mut bodies = std::collections::HashSet::new();
    for h in [
        vec![],
        vec![("x-api-key", "lp_test_nope".to_owned())],
        vec![("authorization", format!("Bearer {none}"))],
        vec![("authorization", format!("Bearer {hs_expired}"))],
        vec![("x-api-key", KEY_A.to_owned())],
    ] {
        let (parts, body) = call(h).await;
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    // The IdP's JWKS is down and was never fetched: 503 with Retry-After.
    let (parts, body) = call(vec![(
        "authorization",
        format!("Bearer {}", KEYS.rsa.token(&claims(IDP, unix_now()))),
    )])
    .await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(parts.headers["retry-after"], "10");
    let m = String::from_utf8(gw.state().metrics.render()).unwrap();
    for reason in [
        "missing",
        "malformed",
        "jwt_alg_none",
        "jwt_expired",
        "unknown_key",
        "jwks_unavailable",
    ] {
        assert!(
            m.contains(&format!(
                "layers_gateway_auth_failures_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}\n{m}"
        );
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Black-box round 83: with `source = "origin"` and the origin down, random
/// well-formed keys (no valid key needed) wrote an "origin unreachable"
/// warning each, 200 a second, past `log.refusals_per_sec`.
#[tokio::test(start_paused = true)]
async fn keys_introspected_while_the_origin_is_down_cannot_flood_the_log() {
    init();
    let _hold = hold_clock();
    let logs = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    let o = origin_auth("origin", KeyStore::default()).await;
    let _ = o.stop.send(true);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    const N: usize = 200;
    for i in 0..N {
        let key = format!("lp_test_DEM0ZZZZ{i:08}_{}", "A".repeat(43));
        assert!(o.auth.authenticate(&api_key(&key)).await.is_err());
    }
    let text = logs.text();
    let lines = text.matches("introspection: origin unreachable").count();
    assert!(lines >= 1, "the failure is still logged:\n{text}");
    assert!(
        lines <= 10,
        "{lines} warnings for {N} keys (log.refusals_per_sec = 10)"
    );
}

/// Whether `task` finishes while the (held) clock stands still.
async fn finishes_without_time<T>(task: &tokio::task::JoinHandle<T>) -> bool {
    for _ in 0..10_000 {
        if task.is_finished() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

/// Black-box round 83: with the JWKS server hanging, once the set passed its
/// max age every token of the issuer (cached ones too) waited out the fetch
/// timeout behind the refresh: about 5 s for half of the requests, for as
/// long as the outage lasted. The request that starts the refresh waits for
/// it; the others, and every request once it has failed, answer from the
/// last good set at once.
#[tokio::test(start_paused = true)]
async fn a_hung_jwks_server_stalls_no_token_beyond_the_one_refresh() {
    init();
    let _hold = hold_clock();
    let dir = TempDir::new("jwks-hang");
    let server = JwksServer::start(&published()).await;
    let auth = jwt_auth(&server, &dir);
    let clock = UnixClock::starting_at(T0);
    let token = KEYS.ed.token(&claims(IDP, clock.now_unix()));
    assert!(auth.authenticate(&bearer(&token)).await.is_ok());
    server.hang(true);
    tokio::time::advance(Duration::from_secs(301)).await;
    let first = {
        let (auth, t) = (auth.clone(), token.clone());
        tokio::spawn(async move { auth.authenticate(&bearer(&t)).await.is_ok() })
    };
    assert!(
        !finishes_without_time(&first).await,
        "the refresh's own request waits for it"
    );
    let second = {
        let (auth, t) = (auth.clone(), token.clone());
        tokio::spawn(async move { auth.authenticate(&bearer(&t)).await.is_ok() })
    };
    assert!(
        finishes_without_time(&second).await,
        "a request waited behind the hung refresh"
    );
    assert!(second.await.unwrap());
    // The fetch times out (2 s): the first answers from the last good set.
    tokio::time::advance(Duration::from_secs(3)).await;
    assert!(first.await.unwrap());
    // Past the interval, the next attempt runs behind the answer.
    tokio::time::advance(Duration::from_secs(10)).await;
    let third = {
        let (auth, t) = (auth.clone(), token.clone());
        tokio::spawn(async move { auth.authenticate(&bearer(&t)).await.is_ok() })
    };
    assert!(
        finishes_without_time(&third).await,
        "a request waited for a retry"
    );
    assert!(third.await.unwrap());
}

//! Entry points for the parsers that read untrusted bytes, shared by the
//! `cargo fuzz` targets in `fuzz/` and by `tests/fuzz_corpora.rs`, which
//! runs every committed corpus file through them on stable. Each takes
//! arbitrary bytes, must never panic, and asserts the invariants its parser
//! promises (a panic is a finding).
//!
//! Not part of the gateway's API; public only so the fuzz crate can call it.

use crate::auth::jwt::JwtVerifier;
use crate::auth::keys::{parse_key, KeyStore};
use crate::config::Config;
use crate::events::webhook::{parse_event, sign, WebhookVerifier};
use crate::ids::{
    encode_asset_id, is_well_formed_request_id, parse_asset_id, request_id_from_header, request_id_value,
    valid_asset_id,
};
use crate::routes::{is_canonical, Route, RouteTable};
use crate::shaping::clock::UnixClock;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, Method};
use std::future::Future;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::PUT,
];

static ROUTES: LazyLock<RouteTable> = LazyLock::new(|| {
    RouteTable::from_config(&Config::parse("", PathBuf::new()).expect("defaults are valid"))
});

/// The route parser: first byte picks the method and whether there is a
/// query, the rest is the raw path.
pub fn route(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(sel) % METHODS.len()];
    let r = ROUTES.route(method, path, sel & 0x80 != 0);
    if !is_canonical(path) {
        assert_eq!(r, Route::BadPath, "a non-canonical path was routed: {path:?}");
    }
    if let Route::Container(_) | Route::Asset(..) = r {
        assert!(path.starts_with("/v1/content/"), "{path:?}");
    }
    // An asset id is canonical, and its one spelling reads back as it.
    let asset = match &r {
        Route::Asset(_, a) => Some(a.as_ref()),
        Route::ContentVariant { asset, .. } => asset.as_deref(),
        _ => None,
    };
    if let Some(a) = asset {
        assert!(valid_asset_id(a), "{path:?} routed asset id {a:?}");
        let spelled = encode_asset_id(a);
        assert_eq!(parse_asset_id(&spelled).as_deref(), Some(a), "{path:?}");
    }
    let _ = (
        ROUTES.required_scope(&r),
        ROUTES.class(method, &r),
        ROUTES.template(&r),
    );
}

static KEYS: LazyLock<KeyStore> =
    LazyLock::new(|| KeyStore::parse(crate::demo::DEMO_KEYS_FILE).expect("demo keys are valid"));

/// The API key parser, and the keys-file check behind it.
pub fn key(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(p) = parse_key(s) {
        assert!(s.starts_with("lp_") && p.key_id.len() == 16, "{s:?}");
        assert!(p.env == "live" || p.env == "test");
    }
    let _ = KEYS.authenticate(s, None);
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", v);
        let _ = crate::auth::presented_credential(&h);
    }
}

const WEBHOOK_SECRET: &[u8] = b"fuzz-webhook-secret";
const NOW: i64 = 1_800_000_000;

static WEBHOOKS: LazyLock<WebhookVerifier> =
    LazyLock::new(|| WebhookVerifier::new(vec![WEBHOOK_SECRET.to_vec()], Duration::from_secs(300)));

/// The webhook signature header: up to the first newline is the header,
/// the rest the body. A body signed properly always verifies.
pub fn webhook_signature(data: &[u8]) {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = WEBHOOKS.verify(Some(header), body, NOW);
    let good = sign(WEBHOOK_SECRET, NOW, body);
    assert!(WEBHOOKS.verify(Some(good.as_bytes()), body, NOW).is_ok());
}

/// The webhook body (event JSON).
pub fn webhook_body(data: &[u8]) {
    let _ = parse_event(data);
}

/// The container this entry's bodies must name (the corpus uses it).
const FUZZ_CONTAINER: u128 = 7;

/// An origin's container body through the fill's reader
/// (`cache::entry::render`, which reads only the members it checks and
/// cuts revoked asset objects out of the origin's bytes), with every asset
/// id starting `rev` revoked. What it would serve is JSON, and holds no
/// revoked asset: read again, it cuts nothing and lists none.
pub fn container_body(data: &[u8]) {
    let id = crate::ids::ContainerId::from_u128(FUZZ_CONTAINER);
    let revoked = |a: &str| a.starts_with("rev");
    let Ok(r) = crate::cache::entry::render(&bytes::Bytes::copy_from_slice(data), id, revoked) else {
        return;
    };
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(&r.body).is_ok(),
        "served bytes are not JSON: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    let again = crate::cache::entry::render(&r.body, id, revoked).expect("what is served reads again");
    assert!(!again.removed_revoked, "a revoked asset was left in");
    assert!(again.all_asset_ids.iter().all(|a| !revoked(a)));
    if !r.removed_revoked {
        assert_eq!(&r.body[..], data, "bytes with nothing revoked are served as sent");
    }
}

/// An origin's error envelope kept as bytes (`GatewayError::origin_answer`)
/// and answered with another request id: still the envelope, carrying
/// that id, everything else as the origin sent it.
pub fn error_envelope(data: &[u8]) {
    use crate::error::GatewayError;
    let Some(e) = GatewayError::origin_answer(http::StatusCode::NOT_FOUND, &http::HeaderMap::new(), data)
    else {
        return;
    };
    let out = e.envelope("req_fuzz");
    // Read as the gateway reads it: it may hold legal JSON (`1e400`) that
    // serde_json cannot hold as a value.
    use crate::cache::entry::json;
    let text = std::str::from_utf8(&out).expect("an envelope answered is UTF-8");
    let lossy = || String::from_utf8_lossy(&out).into_owned();
    let [error] = json::members(text, ["error"])
        .expect("JSON")
        .expect("an object")
        .values;
    let [rid, code] = json::object_members(error.expect("error"), ["requestId", "code"])
        .unwrap_or_else(|| panic!("{}", lossy()))
        .values;
    assert_eq!(
        rid.and_then(json::string).as_deref(),
        Some("req_fuzz"),
        "{}",
        lossy()
    );
    assert_eq!(
        code.and_then(json::string).as_deref(),
        Some(e.code_str()),
        "{}",
        lossy()
    );
}

const JWT_SECRET_ENV: &str = "LAYERS_FUZZ_JWT_SECRET";

static JWT: LazyLock<JwtVerifier> = LazyLock::new(|| {
    // Only this entry reads it.
    std::env::set_var(JWT_SECRET_ENV, "fuzz-jwt-secret-of-at-least-32-bytes!!");
    let cfg = Config::parse(
        &format!(
            "[auth.jwt]\n[[auth.jwt.issuers]]\nissuer = \"fuzz\"\naudience = \"layers\"\nshared_secret_env = \"{JWT_SECRET_ENV}\"\n"
        ),
        PathBuf::new(),
    )
    .expect("fuzz JWT config is valid");
    JwtVerifier::new(&cfg.auth.jwt, &PathBuf::new(), UnixClock::starting_at(NOW)).expect("verifier")
});

/// The JWT header (and the rest of the token): the bytes as a whole token,
/// and as the header of a token with valid claims.
pub fn jwt(data: &[u8]) {
    let claims = format!(
        r#"{{"iss":"fuzz","aud":"layers","sub":"s","org_id":"o","exp":{}}}"#,
        NOW + 60
    );
    let wrapped = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(data),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(b"sig")
    );
    if let Ok(token) = std::str::from_utf8(data) {
        run_ready(JWT.verify(token));
    }
    run_ready(JWT.verify(&wrapped));
}

/// Polls a future that must not wait on anything (a shared-secret issuer
/// never fetches keys).
fn run_ready<F: Future>(f: F) {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(f.as_mut().poll(&mut cx), Poll::Ready(_)),
        "a shared-secret JWT check waited"
    );
}

/// The request-id parser: a well-formed id is kept as is, anything else is
/// replaced by a fresh well-formed one.
pub fn request_id(data: &[u8]) {
    let kept = request_id_from_header(Some(data));
    assert!(is_well_formed_request_id(kept.as_bytes()), "{kept:?}");
    if is_well_formed_request_id(data) {
        assert_eq!(kept.as_bytes(), data);
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let out = request_id_value(Some(&v));
        assert!(is_well_formed_request_id(out.as_bytes()));
    }
}

/// The config loader: any text either parses and validates or is an error
/// that names its field; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, PathBuf::new()) {
        assert!(!e.is_empty());
    }
}

/// The `Accept-Encoding` parser: any field value picks a coding among
/// those available (identity always among them), and a coding the field
/// gives weight 0 is never picked over one it accepts.
pub fn accept_encoding(data: &[u8]) {
    use crate::accept_encoding::{Accepted, Encoding};
    let mut a = Accepted::default();
    a.add_field(data);
    for available in [
        &[][..],
        &[Encoding::Gzip][..],
        &[Encoding::Br, Encoding::Gzip][..],
    ] {
        let e = a.choose(available);
        assert!(e == Encoding::Identity || available.contains(&e), "{e:?}");
        if e != Encoding::Identity {
            assert!(a.weight(e).is_some(), "picked an unacceptable {e:?}");
        }
        let best = available.iter().filter_map(|&x| a.weight(x)).max();
        if let (Some(best), Some(got)) = (best, a.weight(e)) {
            assert!(
                got >= best || e == Encoding::Identity,
                "{e:?} is not the heaviest"
            );
        }
    }
    if let Ok(v) = HeaderValue::from_bytes(data) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, v);
        assert_eq!(Accepted::from_headers(&h), a);
    }
}

/// The `If-None-Match` parser: every tag it yields is quoted with no quote
/// inside, and a field matches each tag it yields (weak comparison).
pub fn if_none_match(data: &[u8]) {
    use crate::conditional::{field, tags, value_matches, Field};
    let Field::List(list) = field(data) else {
        assert!(value_matches(data, b"\"x\""));
        return;
    };
    for t in tags(list) {
        assert!(t.opaque.len() >= 2 && t.opaque[0] == b'"' && t.opaque[t.opaque.len() - 1] == b'"');
        assert!(!t.opaque[1..t.opaque.len() - 1].contains(&b'"'));
        assert!(
            value_matches(data, t.opaque),
            "{:?}",
            String::from_utf8_lossy(t.opaque)
        );
    }
    assert!(!value_matches(data, b"\"not\"a-tag\""));
}

/// An entry point: arbitrary bytes in, a panic on a finding.
pub type Entry = fn(&[u8]);

/// Every target by name, for the corpus runner.
pub const TARGETS: [(&str, Entry); 11] = [
    ("route", route),
    ("key", key),
    ("webhook_signature", webhook_signature),
    ("webhook_body", webhook_body),
    ("jwt", jwt),
    ("request_id", request_id),
    ("config", config),
    ("accept_encoding", accept_encoding),
    ("if_none_match", if_none_match),
    ("container_body", container_body),
    ("error_envelope", error_envelope),
];

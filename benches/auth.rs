//! Authentication micro-benchmarks through `Authenticator::authenticate`:
//! one API-key check (keys file), one JWT verification per algorithm
//! (RS256 with RSA 2048, ES256 with P-256, EdDSA with Ed25519: JWKS file
//! issuers; HS256: shared-secret issuer). Each future is polled once with a
//! no-op waker and must be ready: none of these paths waits on anything.
//!
//! Figures measured once in quick mode on the shared 2-core build machine
//! (`cargo bench --bench auth -- --quick`, jsonwebtoken 11.1 with aws-lc-rs,
//! other builds finishing; criterion's estimate):
//!
//! | benchmark            | time/request |
//! |----------------------|--------------|
//! | auth/api_key_file    | 306 ns       |
//! | auth/jwt_rs256       | 26.5 µs      |
//! | auth/jwt_es256       | 73.4 µs      |
//! | auth/jwt_eddsa       | 36.6 µs      |
//! | auth/jwt_hs256       | 4.0 µs       |
//!
//! The `_cached` rows answer the same token from the verified-token cache
//! (a SHA-256 of the whole token and a lookup). Measured 30 Nov 2026 in
//! quick mode while other builds ran (load average 4 to 6), in the same
//! run: api_key_file 235 ns, jwt_es256 82.8 µs, jwt_es256_cached 493 ns,
//! jwt_hs256 4.3 µs, jwt_hs256_cached 635 ns.
//!
//! The API-key check is one SHA-256 of the key, a hash-map lookup and a
//! constant-time compare. A JWT check also decodes the header and payload
//! twice (once to choose the issuer and check `alg`, then inside
//! `jsonwebtoken`), builds the principal, and verifies the signature. The
//! signature dominates every asymmetric figure; with HS256 the JSON work is
//! most of the 4 µs.
//!
//! Keys are generated at start with aws-lc-rs; only public JWKs are written
//! (to a temporary directory removed at the end).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use layers_gateway::auth::authenticator::Authenticator;
use layers_gateway::auth::KeyStore;
use layers_gateway::config::Config;
use layers_gateway::demo::{demo_key, DEMO_KEYS_FILE};
use serde_json::{json, Value};
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

const SECRET_ENV: &str = "LAYERS_GATEWAY_BENCH_JWT_SECRET";
const SECRET: &str = "0123456789abcdef0123456789abcdef-bench-only";

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn token(alg: &str, kid: &str, iss: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let claims = json!({"iss": iss, "aud": "layers-gateway", "sub": "user-1", "org_id": "org_bench",
        "scope": "content:read", "exp": 4_000_000_000u64});
    let msg = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", b64(sig))
}

/// Polls once with a no-op waker; the future must be ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("authentication waited on something"),
    }
}

fn bearer(t: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {t}").parse().unwrap());
    h
}

fn bench(c: &mut Criterion) {
    // Single-threaded here, before anything reads the environment.
    std::env::set_var(SECRET_ENV, SECRET);
    let rng = SystemRandom::new();
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let ed = Ed25519KeyPair::generate().unwrap();
    let rp = rsa.public_key();
    let ep = ec.public_key().as_ref();
    let set: Value = json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "n": b64(rp.modulus().big_endian_without_leading_zero()),
            "e": b64(rp.exponent().big_endian_without_leading_zero())},
        {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&ep[1..33]), "y": b64(&ep[33..65])},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.public_key().as_ref())},
    ]});
    let dir = std::env::temp_dir().join(format!("layers-gateway-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("jwks.json"), set.to_string()).unwrap();
    // `cache_entries` 0: every token verified; else the verified-token cache.
    let cfg = |cache_entries: u64| {
        Config::parse(
            &format!(
                "[auth.jwt]\ncache_max_entries = {cache_entries}\n\
                 [[auth.jwt.issuers]]\nissuer = \"https://idp\"\naudience = \"layers-gateway\"\njwks_file = \"jwks.json\"\n\
                 [[auth.jwt.issuers]]\nissuer = \"https://svc\"\naudience = \"layers-gateway\"\nshared_secret_env = \"{SECRET_ENV}\"\n"
            ),
            dir.clone(),
        )
        .unwrap()
    };
    let keys = Arc::new(KeyStore::parse(DEMO_KEYS_FILE).unwrap());
    let auth = Authenticator::new(&cfg(0), keys.clone(), None).unwrap();
    let cached = Authenticator::new(&cfg(10_000), keys, None).unwrap();

    let mut g = c.benchmark_group("auth");
    let mut key = HeaderMap::new();
    key.insert("x-api-key", demo_key("reader").parse().unwrap());
    g.bench_function("api_key_file", |b| {
        b.iter(|| black_box(ready(auth.authenticate(black_box(&key))).unwrap()))
    });
    let tokens = [
        (
            "jwt_rs256",
            token("RS256", "rsa", "https://idp", |m| {
                let mut s = vec![0; rsa.public_modulus_len()];
                rsa.sign(&RSA_PKCS1_SHA256, &rng, m, &mut s).unwrap();
                s
            }),
        ),
        (
            "jwt_es256",
            token("ES256", "ec", "https://idp", |m| {
                ec.sign(&rng, m).unwrap().as_ref().to_vec()
            }),
        ),
        (
            "jwt_eddsa",
            token("EdDSA", "ed", "https://idp", |m| ed.sign(m).as_ref().to_vec()),
        ),
        (
            "jwt_hs256",
            token("HS256", "", "https://svc", |m| {
                let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
                aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
            }),
        ),
    ];
    for (name, t) in &tokens {
        let h = bearer(t);
        assert!(ready(auth.authenticate(&h)).is_ok(), "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| black_box(ready(auth.authenticate(black_box(&h))).unwrap()))
        });
    }
    // The verified-token cache: the same tokens, answered from memory.
    for (name, t) in tokens
        .iter()
        .filter(|(n, _)| matches!(*n, "jwt_es256" | "jwt_hs256"))
    {
        let h = bearer(t);
        assert!(ready(cached.authenticate(&h)).is_ok(), "{name}");
        g.bench_function(format!("{name}_cached"), |b| {
            b.iter(|| black_box(ready(cached.authenticate(black_box(&h))).unwrap()))
        });
    }
    let hits = cached.jwt().unwrap().token_cache().hits();
    assert!(hits > 0, "the cached rows were answered from memory");
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
